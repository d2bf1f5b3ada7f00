"""`jaxrestore bench`: forward throughput (megapixels/s) and peak memory, JAX vs PyTorch.

Every (framework, preset, size, batch) runs in a fresh subprocess so peak RSS is its own; with
`rounds` > 1 the JAX and PyTorch processes alternate round by round and the median over rounds is
reported, so a load change during the run hits both sides alike. The PyTorch side is the
architecture's declared reference implementation (`Architecture.torch_reference`, e.g. spandrel's
SwinIR and DnCNN, spandrel-extra-arches' Restormer; from the test extra), or, for official code with
no pip package (PromptIR, HAIR), that code imported from a checkout the user passes with `--official
NAME=DIR` (never vendored; the row records the checkout's commit); an architecture without one gets
JAX rows only and says so. Random weights with the preset's hyperparameters: speed does not depend on
the values. The machine's load average is printed with the results: numbers taken under
load are not comparable.
"""
from __future__ import annotations

import importlib
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
import types

DEFAULT_PRESETS = ('swinir-color-dn15', 'swinir-lightweight-x2')


def _rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _unavailable_torchvision_name(name: str):
  if name.startswith('__'):
    raise AttributeError(name)

  def unavailable(*args, **kwargs):
    raise RuntimeError(f'torchvision.transforms.functional.{name} is not installed (jaxrestore bench stand-in)')
  return unavailable


def resolve_officials(pairs) -> dict[str, str]:
  """`NAME=DIR` pairs -> {architecture: absolute DIR}, checked before any timing: NAME must be an
  architecture whose PyTorch reference is official code from a checkout, and DIR must hold its module."""
  from pathlib import Path
  from jaxrestore import registry
  officials = {}
  for pair in pairs or ():
    name, sep, folder = pair.partition('=')
    if not sep or not name or not folder:
      raise ValueError(f'--official {pair!r}: expected NAME=DIR, e.g. hair=/path/to/HAIR')
    try:
      reference = registry.get_architecture(name).torch_reference
    except ValueError as e:
      raise ValueError(f'--official {pair!r}: {e}') from None
    if reference is None or reference.checkout is None:
      raise ValueError(f'--official {pair!r}: {name} needs no checkout (its PyTorch reference is '
                       + (f'the pip package {reference.package})' if reference else 'absent)'))
    module_file = Path(folder) / (reference.module.replace('.', '/') + '.py')
    if not module_file.is_file():
      raise ValueError(f'--official {pair!r}: {module_file} not found (expected a checkout of {reference.checkout})')
    officials[name] = str(Path(folder).resolve())
  return officials


def import_torch_reference(reference, checkout_dir: str | None = None):
  """The reference's PyTorch class. spandrel imports torchvision at import time for two architectures
  (LaMa, RestoreFormer) that are never built here; PyPI's torchvision does not import beside the
  pinned CPU torch, so when it is missing an empty stand-in module takes its place (only in this
  benchmark subprocess). Official code comes from `checkout_dir` (this subprocess imports nothing
  else from there)."""
  if reference.checkout is not None:
    if checkout_dir is None:
      raise RuntimeError(f'{reference.cls}: the PyTorch reference is the official code at {reference.checkout} '
                         '(no pip package): pass a checkout with --official')
    sys.path.insert(0, checkout_dir)
  try:
    importlib.import_module('torchvision.transforms.functional')
  except ImportError:
    for name in ('torchvision', 'torchvision.transforms', 'torchvision.transforms.functional'):
      sys.modules[name] = types.ModuleType(name)
    sys.modules['torchvision'].transforms = sys.modules['torchvision.transforms']
    functional = sys.modules['torchvision.transforms'].functional = sys.modules['torchvision.transforms.functional']
    functional.__getattr__ = _unavailable_torchvision_name
  try:
    module = importlib.import_module(reference.module)
  except ImportError as e:
    if reference.checkout is not None:
      raise ImportError(f'importing {reference.module} from {checkout_dir} (a checkout of {reference.checkout}): {e}') from e
    raise ImportError(f'the PyTorch reference needs {reference.package} (pip install {reference.package}): {e}') from e
  return getattr(module, reference.cls)


def _run_one(framework: str, preset_name: str, size: int, batch: int, repeats: int, dtype: str,
             checkout_dir: str | None = None, micro_batch: int | None = None) -> dict:
  import numpy as np
  import jaxrestore
  from jaxrestore import registry
  preset = jaxrestore.get_preset(preset_name)
  arch = registry.get_architecture(preset.architecture)
  x = np.random.default_rng(0).random((batch, size, size, preset.channels), dtype=np.float32)
  if framework == 'jax':
    import jax
    import jax.numpy as jnp
    from jaxrestore.inference import get_restorer
    model = jaxrestore.load(preset_name, pretrained=False)
    restorer = get_restorer(model, dtype=jnp.bfloat16 if dtype == 'bf16' else None, micro_batch=micro_batch)
    run = lambda: restorer(x)
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    device = f'jax {jax.__version__} {jax.devices()[0].device_kind}'
  else:
    if arch.torch_reference is None:
      raise RuntimeError(f'{arch.name} declares no installable PyTorch reference')
    import torch
    torch_cls = import_torch_reference(arch.torch_reference, checkout_dir)
    torch.set_num_threads(os.cpu_count())
    config = arch.make_config(preset.hyperparameters)
    tmodel = torch_cls(**arch.torch_reference.kwargs(config)).eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    if dtype == 'bf16':
      tmodel, xt = tmodel.bfloat16(), xt.bfloat16()
    if framework == 'torch-compile':  # inductor; the first call compiles (its time is first_call_s)
      tmodel = torch.compile(tmodel)

    # bf16: weights and input in bfloat16, and autocast for tensors the network makes itself in
    # float32 (spandrel's SwinIR builds its shift mask in float32 at sizes other than img_size).
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bf16')

    def run():
      with torch.no_grad(), autocast:
        tmodel(xt)

    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    device = (f'torch {torch.__version__} ({torch.get_num_threads()} threads'
              + (', torch.compile inductor)' if framework == 'torch-compile' else ')'))
    reference = arch.torch_reference.package or f'{arch.torch_reference.checkout} at {_checkout_commit(checkout_dir)}'
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  median = float(np.median(times))
  row = dict(framework=framework, preset=preset_name, size=size, batch=batch, dtype=dtype,
              seconds=median, times=times, first_call_s=first, mpix_per_s=batch * size * size / median / 1e6,
              peak_rss_mib=_rss_mib(), device=device)
  if framework == 'jax':
    row['micro_batch'] = restorer.micro_batch
  else:
    row['reference'] = reference
  return row


def _checkout_commit(folder: str) -> str:
  """The commit a checkout of official code is at ('unknown commit' if the folder is not a clone)."""
  if not os.path.exists(os.path.join(folder, '.git')):
    return 'unknown commit'
  proc = subprocess.run(['git', '-C', folder, 'rev-parse', 'HEAD'], capture_output=True, text=True)
  return proc.stdout.strip() if proc.returncode == 0 else 'unknown commit'


def run_bench(presets=DEFAULT_PRESETS, sizes=(128, 256), batches=(1, 8), repeats=3, dtype='fp32',
              frameworks=('jax', 'torch'), rounds=1, timeout=3600, out=sys.stdout, officials=None,
              micro_batch: int | None = None) -> list[dict]:
  """One row per (preset, size, batch, framework): the median over rounds of each round's median.
  `officials`: {architecture: checkout dir} for references that are official code (`resolve_officials`);
  `micro_batch`: JAX images per compiled step (`inference.Restorer`; None = the platform default)."""
  import numpy as np
  from jaxrestore import registry
  officials = officials or {}
  arch_of = lambda preset: registry.get_architecture(registry.get_preset(preset).architecture)

  def comparable(arch) -> bool:
    reference = arch.torch_reference
    return reference is not None and (reference.checkout is None or arch.name in officials)

  runs: dict[tuple, list[dict]] = {}
  for _ in range(rounds):
    for preset, size, batch, fw in itertools.product(presets, sizes, batches, frameworks):
      if fw.startswith('torch') and not comparable(arch_of(preset)):
        continue
      cmd = [sys.executable, '-m', 'jaxrestore.bench', '--one', fw, preset, str(size), str(batch), str(repeats), dtype,
             officials.get(arch_of(preset).name, ''), '' if micro_batch is None else str(micro_batch)]
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
      if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ['failed'])[-1]
        print(f'  {fw:5s} {preset} {size}² batch {batch}: failed ({last})', file=out)
        continue
      row = json.loads(proc.stdout.strip().splitlines()[-1])
      runs.setdefault((preset, size, batch, fw), []).append(row)
  for preset in presets:
    arch = arch_of(preset)
    if any(fw.startswith('torch') for fw in frameworks) and not comparable(arch):
      if arch.torch_reference is None:
        print(f'  {preset}: no PyTorch row -- {arch.name} has no PyTorch reference to run '
              f'({arch.description or "see benchmarks/"})', file=out)
      else:
        print(f'  {preset}: no PyTorch row -- {arch.name}\'s reference is the official code at '
              f'{arch.torch_reference.checkout} (no pip package): pass --official {arch.name}=DIR', file=out)
  rows = []
  for key, rs in runs.items():
    row = dict(rs[0])
    row['seconds'] = float(np.median([r['seconds'] for r in rs]))
    row['mpix_per_s'] = row['batch'] * row['size'] ** 2 / row['seconds'] / 1e6
    row['peak_rss_mib'] = max(r['peak_rss_mib'] for r in rs)
    row['rounds'] = len(rs)
    rows.append(row)
  return rows


def format_table(rows: list[dict]) -> str:
  """JAX against PyTorch eager (and torch.compile when measured): throughput, ratio, first-call
  (compile) time and peak RSS."""
  compiled = any(r['framework'] == 'torch-compile' for r in rows)
  head = ['preset', 'size', 'batch', 'dtype', 'JAX MP/s', 'PyTorch MP/s', 'JAX/PyTorch']
  if compiled:
    head += ['torch.compile MP/s', 'JAX/compile']
  head += ['JAX first call', 'JAX peak RSS', 'PyTorch peak RSS']
  if compiled:
    head += ['compile first call']
  lines = ['| ' + ' | '.join(head) + ' |', '|---' * len(head) + '|']
  keyed = {(r['preset'], r['size'], r['batch'], r['dtype'], r['framework']): r for r in rows}
  cell = lambda r, k, f: f.format(r[k]) if r else '—'
  ratio = lambda a, b: f'{a["mpix_per_s"] / b["mpix_per_s"]:.2f}×' if a and b else '—'
  for (preset, size, batch, dtype) in dict.fromkeys((r['preset'], r['size'], r['batch'], r['dtype']) for r in rows):
    j, t, c = (keyed.get((preset, size, batch, dtype, fw)) for fw in ('jax', 'torch', 'torch-compile'))
    cells = [preset, f'{size}²', str(batch), dtype, cell(j, 'mpix_per_s', '{:.4f}'), cell(t, 'mpix_per_s', '{:.4f}'),
             ratio(j, t)]
    if compiled:
      cells += [cell(c, 'mpix_per_s', '{:.4f}'), ratio(j, c)]
    cells += [cell(j, 'first_call_s', '{:.1f} s'), cell(j, 'peak_rss_mib', '{:.0f} MiB'),
              cell(t, 'peak_rss_mib', '{:.0f} MiB')]
    if compiled:
      cells += [cell(c, 'first_call_s', '{:.1f} s')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def load_average() -> str:
  return ' / '.join(f'{v:.2f}' for v in os.getloadavg())


def machine_line() -> str:
  return (f'{platform.machine()} {platform.processor() or ""}, {os.cpu_count()} cores, '
          f'Python {platform.python_version()}, load average (1/5/15 min) {load_average()}')


if __name__ == '__main__' and len(sys.argv) > 1 and sys.argv[1] == '--one':
  fw, preset, size, batch, repeats, dtype, checkout, micro_batch = sys.argv[2:10]
  print(json.dumps(_run_one(fw, preset, int(size), int(batch), int(repeats), dtype, checkout or None,
                            int(micro_batch) if micro_batch else None)))
