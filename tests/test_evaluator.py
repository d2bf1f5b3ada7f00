"""The one evaluator: every task a preset has gets its official protocol through `jaxrestore eval`,
on the inference engine; test sets are named in one module, checked against MANIFEST.tsv, and
fingerprinted. Models without shared weights run as tiny random networks on tiny folders."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image

import jaxrestore
from jaxrestore import cli, datasets
from jaxrestore.eval import protocol as proto
from jaxrestore.eval.evaluator import Evaluator
from jaxrestore.eval.testset import TestSetError, list_sha256, prepare

# Small networks per architecture (random weights): only the wiring is under test here.
TINY = {
    'dncnn': ['depth=3', 'features=8'],
    'swinir': ['embed_dim=6', 'depths=(1,)', 'num_heads=(1,)', 'num_feat=8'],
    'restormer': ['dim=8', 'num_blocks=(1,1,1,1)', 'num_refinement_blocks=1', 'heads=(1,1,1,1)'],
    'promptir': ['num_blocks=(1,1,1,1)', 'num_refinement_blocks=1'],
    'hair': ['num_blocks=(1,1,1,1)', 'num_refinement_blocks=1'],
}
# One preset per task (bundled weights where there are any) and how its test folder is laid out.
FAMILIES = {
    'gray_dn': ('dncnn-gray-25', 'clean', []),
    'color_dn': ('dncnn-color-blind', 'clean', ['--noise', '25']),
    'jpeg_car': ('trained-dncnn-gray-car20', 'clean', []),
    'color_jpeg_car': ('swinir-color-car10', 'clean', []),
    'classical_sr': ('swinir-classical-x2', 'sr', []),
    'lightweight_sr': ('swinir-lightweight-x2', 'sr', []),
    'real_sr': ('swinir-real-x4-m-psnr', 'lq_gt', []),
    'motion_deblur': ('restormer-motion-deblur', 'paired', []),
    'real_dn': ('restormer-real-dn', 'paired', []),
    'blind_restore': ('swinir-diffbir-general', 'paired', []),
    'derain': ('restormer-derain', 'paired', []),
    'defocus_deblur': ('restormer-defocus-single', 'paired', []),
    'defocus_deblur_dual': ('restormer-defocus-dual', 'dual', []),
    'all_in_one': ('promptir-3d', 'clean', ['--task', 'denoise', '--noise', '15']),
}


def test_every_preset_task_has_a_protocol():
  tasks = {p.task for p in jaxrestore.presets().values()}
  assert tasks <= set(proto.TASKS), f'tasks without an evaluation protocol: {sorted(tasks - set(proto.TASKS))}'
  assert tasks <= set(FAMILIES), f'tasks missing from this test: {sorted(tasks - set(FAMILIES))}'


def _crops(data_dir, n=2, size=(40, 48)):
  h, w = size
  rgb = np.asarray(Image.open(data_dir / 'testsets' / 'Kodak24' / 'kodim01.png').convert('RGB'))
  return [rgb[i * 50:i * 50 + h, i * 30:i * 30 + w] for i in range(n)]


def _layout(kind, root, data_dir, scale, gray):
  crops = _crops(data_dir)
  save = lambda arr, path: (path.parent.mkdir(parents=True, exist_ok=True),
                            Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(path))
  if kind == 'clean':
    for i, c in enumerate(crops):
      save(c.mean(2, keepdims=True).astype(np.uint8) if gray else c, root / f'{i}.png')
    return ['--dataset', str(root)]
  small = [np.asarray(Image.fromarray(c).resize((c.shape[1] // scale, c.shape[0] // scale), Image.BICUBIC))
           for c in crops]
  if kind == 'sr':
    for i, (c, s) in enumerate(zip(crops, small)):
      save(c, root / 'HR' / f'im{i}.png')
      save(s, root / 'LR_bicubic' / f'X{scale}' / f'im{i}x{scale}.png')
    return ['--dataset', str(root)]
  if kind == 'lq_gt':
    for i, (c, s) in enumerate(zip(crops, small)):
      save(c, root / 'gt' / f'{i}.png')
      save(s, root / 'lq' / f'{i}.png')
    return ['--lq', str(root / 'lq'), '--gt', str(root / 'gt')]
  noisy = [np.clip(c.astype(int) + 9, 0, 255).astype(np.uint8) for c in crops]
  if kind == 'paired':
    for i, (c, n) in enumerate(zip(crops, noisy)):
      save(c, root / 'target' / f'{i}.png')
      save(n, root / 'input' / f'{i}.png')
    return ['--dataset', str(root)]
  if kind == 'dual':  # DPDD's layout; 8-bit here (the real set is 16-bit)
    for i, (c, n) in enumerate(zip(crops, noisy)):
      save(c, root / 'test_c' / 'target' / f'{i}.png')
      save(n, root / 'test_l' / 'source' / f'{i}.png')
      save(n[:, ::-1].copy(), root / 'test_r' / 'source' / f'{i}.png')
    return ['--dataset', str(root)]
  raise AssertionError(kind)


@pytest.mark.parametrize('task', sorted(FAMILIES))
def test_eval_runs_for_every_task_family(task, data_dir, tmp_path, capsys):
  name, kind, extra = FAMILIES[task]
  preset = jaxrestore.get_preset(name)
  assert preset.task == task
  where = _layout(kind, tmp_path / 'set', data_dir, preset.scale, gray=preset.channels == 1)
  args = ['eval', '--model', name, *where, *extra, '--json', str(tmp_path / 'r.json')]
  if not preset.bundled_weights:
    args += ['--random-weights'] + [a for kv in TINY[preset.architecture] for a in ('--set', kv)]
  code = cli.main(args)
  out, err = capsys.readouterr()
  assert code == 0, err
  assert 'average: ' in out and 'list sha256' in out
  report = json.loads((tmp_path / 'r.json').read_text())
  assert len(report['images']) == 2 and report['task'] == task
  assert len(report['image_list_sha256']) == 64
  assert all(np.isfinite(v) for v in report['mean'].values())
  if not preset.bundled_weights:
    assert '--random-weights' in err and report['weights'] == 'random'


def test_paired_protocol_on_rain100h(data_dir, tmp_path, capsys):
  """restormer-derain (tiny, random) on the shared Rain100H: input/ + target/, every file checked
  against MANIFEST.tsv before scoring, Y-channel scores as Restormer's evaluate_PSNR_SSIM.m."""
  args = ['eval', '--model', 'restormer-derain', '--dataset', 'Rain100H', '--random-weights', '--quiet',
          '--limit', '12', '--json', str(tmp_path / 'r.json'), '--csv', str(tmp_path / 'r.csv')]
  for kv in TINY['restormer']:
    args += ['--set', kv]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  assert '24 file(s) verified against' in out and 'MANIFEST.tsv' in out
  report = json.loads((tmp_path / 'r.json').read_text())
  assert list(report['mean']) == ['psnr_y', 'ssim_y', 'psnr', 'ssim']
  names = sorted(report['images'])
  folder = data_dir / 'testsets' / 'Rain100H'
  files = [(role, n, hashlib.sha256((folder / sub / n).read_bytes()).hexdigest())
           for n in names for role, sub in (('gt', 'target'), ('lq', 'input'))]
  assert report['image_list_sha256'] == list_sha256(files)
  assert report['image_list_sha256'] in out
  rows = (tmp_path / 'r.csv').read_text().splitlines()
  assert rows[0] == 'image,psnr_y,ssim_y,psnr,ssim' and rows[-2].startswith('mean,')
  assert rows[-1] == f'image_list_sha256,{report["image_list_sha256"]},,,'


def test_derain_y_channel_is_matlabs_rgb2ycbcr():
  rgb = np.random.default_rng(0).integers(0, 256, (31, 17, 3), dtype=np.uint8)
  y = proto.matlab_y_uint8(rgb)
  ref = 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
  np.testing.assert_array_equal(y, np.round(ref).astype(np.uint8))


def test_dpdd_scores_match_restormer_utils():
  from skimage.metrics import structural_similarity
  rng = np.random.default_rng(0)
  gt = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
  out = np.clip(gt / 65535 + rng.normal(0, 0.02, gt.shape), 0, 1).astype(np.float32)
  row = proto.score(out, gt, proto.Protocol(task='defocus_deblur'))
  target = np.float32(gt) / 65535.
  assert row['psnr'] == pytest.approx(10 * np.log10(1 / np.mean((target - out) ** 2)), abs=1e-9)
  assert row['ssim'] == pytest.approx(structural_similarity(target, out, data_range=1, channel_axis=2), abs=1e-6)
  assert row['mae'] == pytest.approx(np.mean(np.abs(target - out)), abs=1e-7)


def test_checksum_mismatch_names_the_file_and_stops(data_dir, tmp_path, capsys, monkeypatch):
  folder = tmp_path / 'testsets' / 'Tiny'
  folder.mkdir(parents=True)
  lines = ['path\tsize_bytes\tsha256']
  for name in ('01.png', '02.png'):
    data = (data_dir / 'testsets' / 'Set12' / name).read_bytes()
    (folder / name).write_bytes(data)
    lines.append(f'testsets/Tiny/{name}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}')
  (tmp_path / 'MANIFEST.tsv').write_text('\n'.join(lines) + '\n')
  monkeypatch.setenv('JAXRESTORE_DATA', str(tmp_path))
  base = ['eval', '--model', 'dncnn-gray-25', '--dataset', 'Tiny', '--quiet']
  assert cli.main(base) == 0
  assert '2 file(s) verified against' in capsys.readouterr().out
  altered = bytearray((folder / '02.png').read_bytes())
  altered[-20] ^= 1
  (folder / '02.png').write_bytes(bytes(altered))
  assert cli.main(base + ['--skip-unreadable']) == 1  # an altered file is never skipped
  out, err = capsys.readouterr()
  assert 'average' not in out and '02.png: checksum mismatch' in err and '01.png' not in err
  (folder / '02.png').unlink()
  assert cli.main(base) == 1
  assert '02.png: listed in' in capsys.readouterr().err


def test_test_set_names_resolve_in_one_module(data_dir, tmp_path, monkeypatch):
  monkeypatch.delenv('JAXRESTORE_DATA', raising=False)
  with pytest.raises(FileNotFoundError, match=r'\$JAXRESTORE_DATA is not set'):
    datasets.resolve('Set12')
  assert datasets.resolve('Set12', data_dir) == data_dir / 'testsets' / 'Set12'
  assert datasets.resolve('bsd68', data_dir) == data_dir / 'testsets' / 'BSD68'
  assert datasets.resolve(str(tmp_path)) == tmp_path
  monkeypatch.setenv('JAXRESTORE_DATA', str(data_dir))
  assert datasets.resolve('Rain100H') == data_dir / 'testsets' / 'Rain100H'
  with pytest.raises(FileNotFoundError, match='neither a folder nor found'):
    datasets.resolve('NoSuchSet')
  manifest, entries = datasets.manifest_entries(data_dir / 'testsets' / 'Classic5')
  assert manifest == data_dir / 'MANIFEST.tsv' and len(entries) == 5


def test_evaluator_runs_on_the_inference_engine_and_sees_new_weights(data_dir):
  import jax
  from flax import nnx
  model = jaxrestore.load('dncnn-gray-25')
  protocol = proto.protocol_for(jaxrestore.get_preset('dncnn-gray-25'), model.config)
  evaluator = Evaluator(model)
  test_set = prepare(proto.build_samples(protocol, dataset=data_dir / 'testsets' / 'Set12')[:1], protocol)
  first = evaluator.evaluate(test_set, protocol).mean()['psnr']
  nnx.update(model, jax.tree.map(lambda a: a * 0.5, nnx.state(model, nnx.Param)))
  second = evaluator.evaluate(test_set, protocol).mean()['psnr']
  assert first > 29 and abs(first - second) > 1  # a cache serving the old weights would repeat `first`


def test_unreadable_images_stop_before_scoring(tmp_path):
  good = np.full((16, 16), 128, np.uint8)
  Image.fromarray(good).save(tmp_path / 'a.png')
  (tmp_path / 'b.png').write_bytes(b'')
  protocol = proto.Protocol(task='gray_dn', noise_level=15)
  samples = proto.build_samples(protocol, dataset=tmp_path)
  with pytest.raises(TestSetError, match=r'(?s)--skip-unreadable.*b\.png: empty file'):
    prepare(samples, protocol, name='t')
  kept = prepare(samples, protocol, name='t', skip_unreadable=True)
  assert [s.name for s in kept.samples] == ['a.png'] and kept.skipped[0][0] == 'b.png'
  assert re.fullmatch(r'[0-9a-f]{64}', kept.list_sha256)


def test_rain100h_layout_is_found(data_dir):
  samples = proto.build_samples(proto.Protocol(task='derain'), dataset=data_dir / 'testsets' / 'Rain100H')
  assert len(samples) == 100
  assert all(s.lq.parent.name == 'input' and s.gt.parent.name == 'target' and s.lq.name == s.gt.name
             for s in samples)


def test_dual_pixel_takes_left_and_right_views(tmp_path):
  """The 6-channel input is [left RGB, right RGB], as Restormer's dual-pixel test script builds it."""
  rng = np.random.default_rng(0)
  views = {}
  for sub in ('test_l/source', 'test_r/source', 'test_c/target'):
    (tmp_path / sub).mkdir(parents=True)
    views[sub] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(views[sub]).save(tmp_path / sub / 'x.png')
  protocol = proto.Protocol(task='defocus_deblur_dual')
  (sample,) = proto.build_samples(protocol, dataset=tmp_path)
  lq, gt = proto.make_pair(sample, protocol)
  np.testing.assert_array_equal(lq[..., :3], views['test_l/source'] / np.float32(255))
  np.testing.assert_array_equal(lq[..., 3:], views['test_r/source'] / np.float32(255))
  np.testing.assert_array_equal(gt, views['test_c/target'])


def test_a_latent_component_points_to_its_pipeline(capsys):
  """dreamclear-1024 is a latent denoiser: eval and restore say which pipeline restores images."""
  for args in (['eval', '--model', 'dreamclear-1024', '--dataset', 'Set5', '--random-weights'],
               ['restore', 'x.png', '-o', 'out_never_written', '--model', 'dreamclear-1024']):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "component of the 'dreamclear' pipeline" in err and '--model dreamclear' in err, err
