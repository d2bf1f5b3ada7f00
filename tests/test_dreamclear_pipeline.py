"""DreamClear end to end (`jaxrestore.pipelines`): tiny random weights for every component written in
the official formats (DiT `.pth` with `state_dict`, diffusers VAE folder, transformers T5 folder with
a sentencepiece model trained here, DiffBIR-layout SwinIR `.ckpt`), run through the API and the CLI
glue on a 72x100 image; the pieces of test.py the pipeline reimplements (PIL2Tensor sizes, torch's
bicubic resize, T5Embedder's caption cleaning) against references; clear errors for bad inputs."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from PIL import Image

from jaxrestore import cli as jaxrestore_cli
from jaxrestore.diffusion import IDDPM
from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.models import dreamclear as dc
from jaxrestore.pipelines import captions
from jaxrestore.pipelines import dreamclear as dcp

from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402  (after conftest's shim)

REPO = Path(__file__).resolve().parent.parent




from torch_reference import no_torchvision  # noqa: E402

with no_torchvision():
  from diffusers import AutoencoderKL as TorchAutoencoderKL
  from transformers import T5Config as HFT5Config
  from transformers import T5EncoderModel

CAPTION_WIDTH = 32
DIT = dict(input_size=16, patch_size=2, in_channels=4, hidden_size=72, depth=1, num_heads=None, mlp_ratio=2.0,
           pred_sigma=True, caption_channels=CAPTION_WIDTH, model_max_length=120, lewei_scale=2.0,
           copy_blocks_num=1, num_experts=3)
VAE = dict(in_channels=3, out_channels=3, down_block_types=['DownEncoderBlock2D'] * 4,
           up_block_types=['UpDecoderBlock2D'] * 4, block_out_channels=[8, 8, 16, 16], layers_per_block=1,
           latent_channels=4, norm_num_groups=4, sample_size=64)
T5 = dict(d_kv=8, d_ff=48, num_heads=4, num_layers=2, dropout_rate=0.0, feed_forward_proj='gated-gelu')
SWINIR = dict(embed_dim=12, depths=(2,), num_heads=(2,), mlp_ratio=2.0, in_chans=3, img_size=8, window_size=8,
              upscale=8, upsampler='nearest+conv', resi_connection='1conv')
SMALL = dict(upscale=1, min_size=64)   # 72x100 -> 64x128 at the networks, latent 8x16


# ----- tiny official-format weights -----------------------------------------------------------------------

def _write_dit(path: Path, seed: int = 0) -> None:
  cfg = dc.DreamClearConfig(**DIT)
  rng = np.random.default_rng(seed)
  sd = {}
  for key, shape in dc.torch_state_dict_shapes(cfg).items():
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    sd[key] = torch.from_numpy((rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32))
  torch.save({'state_dict': sd}, path)


def _write_vae(folder: Path) -> None:
  torch.manual_seed(0)
  TorchAutoencoderKL(**VAE).save_pretrained(folder)


def _corpus(n=600):
  rnd = random.Random(0)
  words = ('a photo of the cat dog sitting on red blue sofa in front window light sunny day with trees and '
           'city street night people walking old building river bridge mountain snow portrait detailed').split()
  return [' '.join(rnd.choice(words) for _ in range(rnd.randint(3, 12))) for _ in range(n)]


def _write_t5(folder: Path, width: int = CAPTION_WIDTH, spiece: Path | None = None) -> Path:
  """A transformers T5 encoder folder with a sentencepiece model (<pad>=0, </s>=1, <unk>=2)."""
  import sentencepiece as spm
  folder.mkdir(parents=True)
  if spiece is None:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus()), model_prefix=str(folder / 'spiece'),
                                   vocab_size=120, hard_vocab_limit=False, model_type='unigram', pad_id=0,
                                   eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  else:
    (folder / 'spiece.model').write_bytes(spiece.read_bytes())
  torch.manual_seed(1)
  T5EncoderModel(HFT5Config(vocab_size=256, d_model=width, **T5)).save_pretrained(folder)
  return folder / 'spiece.model'


def _write_swinir(path: Path) -> None:
  torch.manual_seed(2)
  model = TorchSwinIR(**SWINIR, start_unshuffle=8)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.05)
  sd = {('module.conv_first.1.' + k[len('conv_first.'):] if k.startswith('conv_first.') else 'module.' + k): v
        for k, v in model.state_dict().items()}
  torch.save({'state_dict': sd}, path)


@pytest.fixture(scope='module')
def weights_dir(tmp_path_factory) -> Path:
  root = tmp_path_factory.mktemp('dreamclear_weights')
  _write_dit(root / 'DreamClear-1024.pth')
  _write_vae(root / 'sd-vae-ft-ema')
  _write_t5(root / 't5-v1_1-xxl')
  _write_swinir(root / 'general_swinir_v1.ckpt')
  return root


@pytest.fixture(scope='module')
def pipe(weights_dir):
  return dcp.DreamClear.load(weights_dir, dtype=None)   # float32: exact comparisons


@pytest.fixture(scope='module')
def photo() -> np.ndarray:
  """72 x 100 RGB: smooth gradients plus noise."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:72, 0:100]
  base = np.stack([xx / 100, yy / 72, (xx + yy) / 172], axis=-1) * 200 + 20
  return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def seed0(pipe, photo):
  return pipe(photo, key=0, steps=50, **SMALL)


# ----- end to end through the API ------------------------------------------------------------------------

def test_end_to_end_size_trace_and_empty_caption_note(seed0):
  r = seed0
  assert r.image.shape == (72, 100, 3) and r.image.dtype == np.uint8
  assert r.processing_size == (64, 128) and r.latent_size == (8, 16) and not r.tiled
  assert r.steps == 50
  # Every respaced step, from t = 999 down, each reported once (the original timesteps).
  assert [t for _, t in r.trace] == list(IDDPM('50').timestep_map[::-1])
  assert [k for k, _ in r.trace] == list(range(50))
  assert r.caption == '' and any('empty caption' in n for n in r.notes)
  assert np.isfinite(r.latent).all() and r.image.std() > 0
  assert set(r.timings) >= {'resize', 'swinir', 'vae_encode', 't5', 'sampling', 'vae_decode', 'color_fix',
                            'resize_back'}


def test_deterministic_in_the_seed(pipe, photo, seed0):
  again = pipe(photo, key=0, steps=50, **SMALL)
  np.testing.assert_array_equal(again.latent, seed0.latent)
  np.testing.assert_array_equal(again.image, seed0.image)
  other = pipe(photo, key=1, steps=50, **SMALL)
  assert np.abs(other.latent - seed0.latent).max() > 1e-2
  assert not np.array_equal(other.image, seed0.image)


def test_prompt_changes_the_result_and_has_no_note(pipe, photo, seed0):
  r = pipe(photo, 'A photo of a CAT on a red sofa.', key=0, steps=50, **SMALL)
  assert not any('empty caption' in n for n in r.notes)
  assert r.cleaned_caption == 'a photo of a cat on a red sofa.'
  assert np.abs(r.latent - seed0.latent).max() > 1e-3


def test_bfloat16_default_runs_with_float32_sampler_state(weights_dir, photo, seed0):
  """The default precision: bfloat16 DiT and T5 weights (float32 norms / softmax inside, float32
  sampler arithmetic), float32 VAE and SwinIR."""
  pipe16 = dcp.DreamClear.load(weights_dir)
  assert pipe16.denoiser.base_model.blocks[0].attn.qkv.kernel.dtype == jnp.bfloat16
  assert pipe16.vae.encoder.conv_in.kernel.dtype == jnp.float32
  feats, _ = pipe16.embed_captions(['a photo'])
  assert feats.dtype == jnp.bfloat16 and pipe16.t5.blocks[0].attn.q.kernel.dtype == jnp.bfloat16
  r = pipe16(photo, key=0, steps=50, **SMALL)
  assert r.image.shape == (72, 100, 3) and r.steps == 50
  assert r.latent.dtype == np.float32 and np.isfinite(r.latent).all()


def test_t5_blockwise_equals_the_whole_encoder(pipe):
  """The pipeline runs T5 one block at a time (bounded float32 copies on CPU): same features."""
  from jaxrestore.models import t5 as t5_model
  ids, mask = pipe.tokenizer(['', 'a photo of a cat on a red sofa'], max_length=120)
  whole = np.asarray(t5_model.encode(pipe.t5, jnp.asarray(ids), jnp.asarray(mask)))
  blockwise = np.asarray(dcp.t5_encode_blockwise(pipe.t5, jnp.asarray(ids), jnp.asarray(mask)))
  assert np.abs(whole - blockwise).max() <= 1e-5 * np.abs(whole).max()


def test_upscale_sets_the_output_size(pipe, photo):
  """Output = input x upscale (rounded); 1.2 keeps the 64 x 128 processing size (no recompilation)."""
  r = pipe(photo, key=0, steps=50, upscale=1.2, min_size=64)
  assert r.processing_size == (64, 128) and r.image.shape == (86, 120, 3)


def _latents(pipe, photo, size=(64, 128)):
  lq = dcp.pil_bicubic(photo, size)[None]
  pre = np.clip(np.asarray(nnx.jit(lambda m, x: m(x))(pipe.swinir, lq)), 0, 1)
  enc = lambda x: np.asarray(pipe.vae.encode(2 * x - 1)) * dcp.LATENT_SCALE
  return enc(lq), enc(pre)


def test_sampler_is_the_library_loop_with_test_py_conditioning(pipe, photo):
  """The pipeline's batched loop equals `GaussianDiffusion.sample` (LRE at t=999, the pair repeated,
  noise per step from the key) driving `forward_with_cfg` with [caption, null caption] and the
  caption's mask, img_hw 1024^2 and aspect ratio 1 (test.py's constants)."""
  r = pipe(photo, 'a red sofa', key=7, steps=50, **SMALL)
  lat_lq, lat_pre = _latents(pipe, photo)
  caption, mask = pipe.embed_captions(['a red sofa'])
  model = pipe.denoiser
  graphdef, state = nnx.split(model)
  pair = jnp.concatenate([caption, model.null_caption(1).astype(caption.dtype)])

  def model_fn(x, t, state):
    m = nnx.merge(graphdef, state)
    return m.forward_with_cfg(x, t, pair, 4.5, caption_mask=mask, c_lq=lat_lq, c_pre=lat_pre,
                              img_hw=np.array([[1024.0, 1024.0]]), aspect_ratio=np.array([[1.0]]))

  ref = IDDPM('50').sample(model_fn, jax.random.key(7), lre_latent=lat_pre, repeat=2, model_args=(state,))
  err = float(np.abs(np.asarray(ref[0]) - r.latent).max())
  assert err <= 1e-4 * max(1.0, float(np.abs(r.latent).max())), err


PAIR = dict(prompts=[None, 'a photo'], keys=[0, 3])


@pytest.fixture(scope='module')
def pair_images(photo):
  return [photo, np.ascontiguousarray(photo[::-1])]


@pytest.fixture(scope='module')
def batch_pair(pipe, pair_images):
  return pipe.restore_batch(pair_images, PAIR['prompts'], keys=PAIR['keys'], steps=50, **SMALL)


def test_batch_keeps_images_apart(pipe, pair_images, batch_pair, seed0):
  """A batch of two equals two single runs: per-image keys, and cross_de never mixes the images."""
  single = pipe(pair_images[1], 'a photo', key=3, steps=50, **SMALL)
  assert [r.steps for r in batch_pair] == [50, 50]
  # Random weights drive the latents to |x| ~ 1e3: float32 agreement is relative.
  scale = float(np.abs(seed0.latent).max())
  assert np.abs(batch_pair[0].latent - seed0.latent).max() <= 1e-5 * scale
  assert np.abs(batch_pair[1].latent - single.latent).max() <= 1e-5 * scale
  assert np.abs(batch_pair[0].latent - batch_pair[1].latent).max() > 1e-2


def test_tile_at_least_the_latent_is_untiled_and_identical(pipe, photo, seed0):
  whole = pipe(photo, key=0, steps=50, latent_tile=16, **SMALL)    # latent 8 x 16 fits one tile
  assert not whole.tiled
  np.testing.assert_array_equal(whole.latent, seed0.latent)
  np.testing.assert_array_equal(whole.image, seed0.image)
  never = pipe(photo, key=0, steps=50, latent_tile=None, **SMALL)
  np.testing.assert_array_equal(never.latent, seed0.latent)
  tiled = pipe(photo, key=0, steps=50, latent_tile=8, latent_overlap=4, **SMALL)   # 8 x 8 tiles at 0, 4, 8
  assert tiled.tiled and tiled.image.shape == (72, 100, 3) and tiled.steps == 50
  assert np.isfinite(tiled.latent).all() and np.abs(tiled.latent - seed0.latent).max() > 0


MESH_SCRIPT = r"""
import os
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
import json, sys
import jax, numpy as np
from jaxrestore.pipelines import dreamclear as dcp
from jaxrestore.train import sharding
assert jax.device_count() == 4
weights, photo_file = sys.argv[1:]
photo = np.load(photo_file)
images, prompts, keys = [photo, np.ascontiguousarray(photo[::-1])], [None, 'a photo'], [0, 3]
mesh = sharding.make_mesh(data=2, model=2)
sharded = dcp.DreamClear.load(weights, dtype=None, mesh=mesh)
got = sharded.restore_batch(images, prompts, keys=keys, steps=50, upscale=1, min_size=64)
qkv = sharded.denoiser.base_model.blocks[0].attn.qkv.kernel[...]
t5_q = sharded.t5.blocks[0].attn.q.kernel[...]
np.save(photo_file + '.latents.npy', np.stack([g.latent for g in got]))
print('RESULT ' + json.dumps(dict(
    spec=str(tuple(qkv.sharding.spec)), devices=len(qkv.sharding.device_set), t5_spec=str(tuple(t5_q.sharding.spec)),
    steps=[g.steps for g in got], shapes=[list(g.image.shape) for g in got])))
"""


def test_mesh_shards_dit_and_t5_and_splits_images(weights_dir, photo, batch_pair, tmp_path):
  """On 4 simulated CPU devices (data=2 x model=2): the DiT laid out by its rule table, the two images
  split along data; the result equals the single-device run."""
  np.save(tmp_path / 'photo.npy', photo)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-c', MESH_SCRIPT, str(weights_dir), str(tmp_path / 'photo.npy')], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.split('RESULT ', 1)[1])
  assert result['spec'] == result['t5_spec'] == "('data', 'model')" and result['devices'] == 4
  assert result['steps'] == [50, 50] and result['shapes'] == [[72, 100, 3]] * 2
  got = np.load(str(tmp_path / 'photo.npy') + '.latents.npy')
  ref = np.stack([r.latent for r in batch_pair])
  assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), np.abs(got - ref).max()


# ----- test.py's image handling ----------------------------------------------------------------------------

def _pil2tensor_sizes(h, w, upscale, min_size):
  """PIL2Tensor's arithmetic, restated: scale, remember the output size, grow to min_size, round to 64."""
  w, h = w * upscale, h * upscale
  out = (round(h), round(w))
  if min(w, h) < min_size:
    f = min_size / min(w, h)
    w, h = w * f, h * f
  return (int(np.round(h / 64.0)) * 64, int(np.round(w / 64.0)) * 64), out


@pytest.mark.parametrize('h, w, upscale, min_size', [
    (72, 100, 4, 1024), (72, 100, 1, 1024), (512, 512, 4, 1024), (1024, 1056, 1, 1024), (300, 97, 2.5, 1024),
    (1000, 1500, 1, 1024), (72, 100, 1, 64), (40, 200, 1, 64)])
def test_processing_size_is_pil2tensors(h, w, upscale, min_size):
  assert dcp.processing_size(h, w, upscale, min_size) == _pil2tensor_sizes(h, w, upscale, min_size)


def test_resizes_match_pil_and_torch():
  rng = np.random.default_rng(4)
  img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  ref = np.asarray(Image.fromarray(img).resize((128, 64), Image.BICUBIC)).astype(np.float64) / 255
  np.testing.assert_array_equal(dcp.pil_bicubic(img, (64, 128)), ref.astype(np.float32))
  x = rng.random((64, 128, 3), dtype=np.float32)
  for size in ((37, 53), (72, 100), (64, 128), (150, 301)):
    want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(2, 0, 1))[None], size=size, mode='bicubic')
    want = want[0].numpy().transpose(1, 2, 0)
    got = dcp.torch_bicubic(x, size)
    assert got.shape == want.shape and np.abs(got - want).max() <= 4e-6, size   # float32, FMA or not
    # Tensor2PIL's truncation: identical bytes except where float rounding crosses an integer.
    trunc = (want * 255.0).clip(0, 255).astype(np.uint8)
    assert np.mean(dcp.to_uint8_truncated(got) != trunc) < 1e-3


def test_caption_cleaning_follows_t5embedder_rules():
  clean = captions.preprocess_caption
  # The URL rules take 'https://' and 'example.com/img' apart; '.png' loses 'png' to the media rule.
  assert clean('A Photo of <b>a cat</b> at https://example.com/img.png') == 'a photo of a cat at .'
  assert clean('Hello%20World #123 photo_2019.jpg') == 'hello world'
  assert clean('“Quoted” text — and IP 192.168.0.1') == '"quoted" text - and ip'
  assert clean('@user look at this-is-my-cute-cat_pic') == 'look at this is my cute cat pic'
  assert clean('free shipping on product jc6640 size 1920x1080') == 'on product size'
  assert clean('  "whole quoted"  ') == 'whole quoted' and clean('') == ''


# ----- bad inputs ----------------------------------------------------------------------------------------

def _partial_dir(tmp_path, weights_dir, drop):
  root = tmp_path / f'without_{drop}'
  root.mkdir()
  for item in weights_dir.iterdir():
    if not item.name.startswith(drop):
      (root / item.name).symlink_to(item)
  return root


@pytest.mark.parametrize('drop, needle', [('DreamClear-1024', 'denoiser'), ('sd-vae-ft-ema', 'vae'),
                                          ('t5-v1_1-xxl', 't5'), ('general_swinir_v1', 'swinir')])
def test_missing_component_is_named(tmp_path, weights_dir, drop, needle):
  with pytest.raises(dcp.MissingComponentError, match=rf'missing 1 component\(s\): {needle}: .*{drop}'):
    dcp.DreamClear.load(_partial_dir(tmp_path, weights_dir, drop), dtype=None, eager=False)


def test_missing_folder_and_files_inside_components(tmp_path, weights_dir):
  with pytest.raises(dcp.MissingComponentError, match='does not exist'):
    dcp.DreamClear.load(tmp_path / 'nowhere')
  root = _partial_dir(tmp_path, weights_dir, 'sd-vae-ft-ema')
  (root / 'sd-vae-ft-ema').mkdir()                      # a folder without config.json
  with pytest.raises(FileNotFoundError, match='sd-vae-ft-ema: no config.json'):
    dcp.DreamClear.load(root, dtype=None, eager=False)


def test_t5_of_the_wrong_width_is_refused(tmp_path, weights_dir):
  root = _partial_dir(tmp_path, weights_dir, 't5-v1_1-xxl')
  _write_t5(root / 't5-v1_1-xxl', width=48, spiece=weights_dir / 't5-v1_1-xxl' / 'spiece.model')
  with pytest.raises(CheckpointMismatchError, match=r'48-wide features .* expects 32 caption channels'):
    dcp.DreamClear.load(root, dtype=None, eager=False)


def test_a_component_of_another_architecture_is_refused(weights_dir):
  with pytest.raises(CheckpointMismatchError, match="not DiffBIR's SwinIR cleaner"):
    dcp.DreamClear.load(weights_dir, swinir=weights_dir / 'DreamClear-1024.pth', eager=False)


def test_image_too_small(pipe, photo):
  with pytest.raises(ValueError, match=r'image of 7x5 pixels is too small'):
    pipe(photo[:5, :7], steps=1)
  with pytest.raises(ValueError, match=r'rounds to 0x0 .* raise min_size'):
    pipe(photo[:20, :30], steps=1, upscale=1, min_size=16)
  with pytest.raises(ValueError, match='color_align'):
    pipe(photo, color_align='hist')


# ----- the CLI glue ----------------------------------------------------------------------------------------

def _run(argv):
  """`jaxrestore restore ... --model dreamclear` exactly as a user runs it."""
  return jaxrestore_cli.main(['restore', *argv, '--model', 'dreamclear'])


def test_cli_restores_names_the_caption_and_never_overwrites(tmp_path, weights_dir, photo, seed0, capsys):
  src = tmp_path / 'in'
  src.mkdir()
  Image.fromarray(photo).save(src / 'photo.png')
  Image.fromarray(photo[::-1]).save(src / 'second.png')
  out = tmp_path / 'out'
  common = ['--weights-dir', str(weights_dir), '--upscale', '1', '--min-size', '64', '--dtype', 'fp32']
  code = _run([str(src / 'photo.png'), '-o', str(out), *common])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  assert 'photo.png: no caption given: the empty caption is used' in captured.err
  written = np.asarray(Image.open(out / 'photo.png'))
  np.testing.assert_array_equal(written, seed0.image)      # the API's result, seed 0, 50 steps
  before = (out / 'photo.png').read_bytes()
  (tmp_path / 'captions.json').write_text(json.dumps({'second.png': 'a photo'}))
  code = _run([str(src / 'photo.png'), str(src / 'second.png'), '-o', str(out), *common,
               '--captions', str(tmp_path / 'captions.json'), '--seed', '3', '--color-align', 'adain'])
  captured = capsys.readouterr()
  assert code == 1 and 'photo.png exists; pass --overwrite' in captured.err
  assert 'second.png: no caption' not in captured.err and (out / 'photo.png').read_bytes() == before
  assert np.asarray(Image.open(out / 'second.png')).shape == (72, 100, 3)
  # Outputs may not land on inputs.
  code = _run([str(src / 'photo.png'), '-o', str(src), *common])
  assert code == 1 and 'would overwrite an input' in capsys.readouterr().err


def test_cli_usage_errors(tmp_path, weights_dir, photo, capsys):
  Image.fromarray(photo).save(tmp_path / 'photo.png')
  root = _partial_dir(tmp_path, weights_dir, 'general_swinir_v1')
  assert _run([str(tmp_path / 'photo.png'), '-o', str(tmp_path / 'o'), '--weights-dir', str(root)]) == 2
  err = capsys.readouterr().err
  assert 'missing 1 component(s): swinir:' in err and 'general_swinir_v1.ckpt' in err
  assert _run([str(tmp_path / 'photo.png'), '-o', str(tmp_path / 'o')]) == 2
  assert '--weights-dir' in capsys.readouterr().err
  (tmp_path / 'bad.json').write_text('[1, 2]')
  assert _run([str(tmp_path / 'photo.png'), '-o', str(tmp_path / 'o'), '--weights-dir', str(weights_dir),
               '--captions', str(tmp_path / 'bad.json')]) == 2
  assert 'expected one JSON object' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    jaxrestore_cli.build_parser().parse_args(['restore', 'x.png', '-o', 'o', '--model', 'dreamclear', '--steps', '0'])
  assert _run([str(tmp_path / 'photo.png'), '-o', str(tmp_path / 'o'), '--weights-dir', str(weights_dir),
               '--tile', '128']) == 2
  assert '--tile does not apply to --model dreamclear' in capsys.readouterr().err
  assert not (tmp_path / 'o').exists()


# ----- memory estimate ------------------------------------------------------------------------------------

TINY_SIZES = dict(dit=dict(DIT, num_heads=1), vae=VAE,
                  t5=dict(vocab_size=256, d_model=CAPTION_WIDTH, d_kv=8, d_ff=48, num_heads=4, num_layers=2),
                  swinir=SWINIR)


def test_stage_memory_from_abstract_shapes():
  from jaxrestore.pipelines import memory
  one = memory.dreamclear_stage_memory((1, 1), image_size=128, **TINY_SIZES)
  tp = memory.dreamclear_stage_memory((1, 2), image_size=128, **TINY_SIZES)
  dp = memory.dreamclear_stage_memory((2, 1), images=2, image_size=128, **TINY_SIZES)
  stages = [r.stage for r in one]
  assert stages[0].startswith('t5') and 'sampling (per step)' in stages
  sampling = {name: rows[stages.index('sampling (per step)')] for name, rows in
              (('one', one), ('tp', tp), ('dp', dp))}
  assert sampling['tp'].params < sampling['one'].params and sampling['tp'].activations < sampling['one'].activations
  assert sampling['dp'].activations == sampling['one'].activations        # one image per device
  assert sampling['dp'].params < sampling['one'].params and sampling['dp'].gathered > 0
  table = memory.memory_table({'1 device': one, '2 devices': tp}, measured={'CPU RSS': {'swinir': 1.5}})
  assert '| swinir | SwinIR |' in table and '1.50' in table
