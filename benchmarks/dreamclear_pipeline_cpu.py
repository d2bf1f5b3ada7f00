"""CPU run of the whole DreamClear pipeline at the official model sizes with random weights: time
and peak RSS per stage. Not a test.

The models are the official configurations (DiT 2.2 B and T5-XXL 4.76 B parameters in bfloat16,
SD VAE 84 M and DiffBIR's SwinIR 16 M in float32), filled with random values cheaply: a fixed block
of 1 M normals repeated into each tensor and scaled by 1/sqrt(fan-in) (norm scales near 1, biases
small). Values do not matter for the timing of the model math; building them takes seconds instead
of the minutes a random initialiser needs for 7 B parameters. The outputs of DreamClear's control
path and the final layer are scaled to near zero (see `zeroed`), else the latents overflow.

The order is the CLI's (`jaxrestore.pipelines.cli.run`): T5 is built, embeds the caption and is
dropped; SwinIR, the VAE and the DiT are built afterwards, so T5 (9.5 GB) and the DiT (4.4 GB) are
never resident together. The image run goes through `DreamClear.restore_batch` (`--repeats 2`: the
first run includes compilation, the second does not).

Defaults: a 256x256 input with --upscale 1 --min-size 256, i.e. the networks run at 256^2 (latent
32^2), 2 sampling steps. `--upscale 4 --min-size 1024` runs test.py's 1024^2 instead (latent 128^2:
expect ~16x the sampling time per step). The machine's load average is printed with the numbers.

  python benchmarks/dreamclear_pipeline_cpu.py [--size 256] [--steps 2] [--upscale 1] [--min-size 256] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time


def load_average() -> str:
  return ' '.join(f'{v:.2f}' for v in os.getloadavg())


class RssMonitor:
  """Samples the process RSS every few ms and keeps the peak per labelled stage."""

  def __init__(self, interval: float = 0.005, limit_gb: float | None = None):
    import psutil
    self.limit_gb = limit_gb
    self.proc = psutil.Process()
    self.interval = interval
    self.stage = 'start'
    self.peaks: dict[str, float] = {}
    self.order: list[str] = []
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    while not self._stop.is_set():
      self.sample()
      time.sleep(self.interval)

  def sample(self):
    rss = self.proc.memory_info().rss / 1e9
    stage = self.stage
    if self.limit_gb and rss > self.limit_gb:   # leave the shared machine's OOM killer out of it
      print(f'ABORT: RSS {rss:.2f} GB in stage {stage!r} exceeds --max-rss-gb {self.limit_gb}; peaks so far: '
            f'{json.dumps({k: round(v, 2) for k, v in self.peaks.items()})}', flush=True)
      os._exit(3)
    if rss > self.peaks.get(stage, 0.0):
      self.peaks[stage] = rss

  def enter(self, stage: str):
    self.sample()
    if stage not in self.order:
      self.order.append(stage)
    self.stage = stage
    self.sample()

  def stop(self):
    self._stop.set()
    self._thread.join()


def zeroed(path) -> bool:
  """DreamClear zero-initialises the outputs of its control path (`Zero_` modules, the modulators) and
  PixArt its final layer; random full-size values there drive 84 modulated blocks into overflow
  (NaN latents). Near-zero values keep the numbers finite, as trained weights are."""
  parts = [str(p) for p in path]
  return (parts[0] in ('am_lq', 'am_pre') and parts[-2] in ('proj_add', 'proj_mul')) or \
      (parts[0] == 'cross_de' and parts[-2] in ('proj', 'de_proj')) or parts[:2] == ['base_model', 'final_layer']


def random_model(factory, seed: int):
  """The module `factory()` builds, its parameters filled cheaply (see the module doc); never
  materialises more than one tensor besides the model."""
  import jax.numpy as jnp
  import ml_dtypes
  import numpy as np
  from flax import nnx
  from jaxrestore.convert import build

  abstract = nnx.eval_shape(factory)
  block = np.random.default_rng(seed).standard_normal(1 << 20).astype(np.float32)

  class Lazy(dict):
    """`fill_model` pops one path at a time: make each tensor only then."""

    def __init__(self, expected):
      super().__init__()
      self.expected = expected

    def __contains__(self, path):
      return path in self.expected

    def pop(self, path, *default):
      shape, dtype = self.expected.pop(path)
      n = math.prod(shape)
      name = str(path[-1])
      offset = (hash(path) & 0xFFFFF)
      values = np.resize(np.roll(block, offset), n).reshape(shape)
      if name == 'scale':
        values = 1.0 + 0.1 * values
      elif name == 'bias':
        values = 0.02 * values
      elif name in ('kernel',) and len(shape) >= 2:
        values = values / np.float32(math.sqrt(math.prod(shape[:-1])))
        if zeroed(path):
          values = values * np.float32(0.02)
      elif name == 'embedding':
        pass
      else:
        values = values / np.float32(math.sqrt(shape[-1]))
      dt = np.dtype(ml_dtypes.bfloat16) if jnp.dtype(dtype) == jnp.bfloat16 else np.dtype(dtype)
      return values.astype(dt)

  return build.fill_model(abstract, Lazy(build.expected_params(abstract)))


def simple_tokenizer():
  """Word ids by hashing: token ids do not change the cost of the encoder."""
  from jaxrestore.models.t5_tokenizer import T5Tokenizer
  from jaxrestore.pipelines.captions import preprocess_caption
  return T5Tokenizer(lambda text: [3 + (hash(w) % 32000) for w in text.split()], eos_id=1, pad_id=0,
                     source='benchmark', preprocess=preprocess_caption)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--size', type=int, default=256, help='square input side')
  ap.add_argument('--steps', type=int, default=2)
  ap.add_argument('--upscale', type=float, default=1.0)
  ap.add_argument('--min-size', type=int, default=256)
  ap.add_argument('--repeats', type=int, default=2, help='image runs (the first includes compilation)')
  ap.add_argument('--prompt', default='a photo of a cat sitting on a red sofa in front of a window, detailed texture')
  ap.add_argument('--json', help='also write the numbers to this file')
  ap.add_argument('--max-rss-gb', type=float, default=21.0, help='abort (exit 3) above this RSS (default 21)')
  args = ap.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxrestore.models import autoencoder_kl, dreamclear as dc, t5 as t5_model
  from jaxrestore.models.swinir import SwinIR, SwinIRConfig
  from jaxrestore.pipelines import dreamclear as dcp
  from jaxrestore.pipelines.memory import SD_VAE
  from jaxrestore.registry import get_preset
  from flax import nnx

  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; load average before: '
        f'{load_average()}', flush=True)
  bf16 = jnp.bfloat16
  dcfg = dc.DreamClearConfig(**dc.OFFICIAL, dtype=bf16, param_dtype=bf16)
  tcfg = t5_model.T5Config(dtype=bf16, param_dtype=bf16)
  vcfg = autoencoder_kl.AutoencoderKLConfig(**SD_VAE)
  scfg = SwinIRConfig(**get_preset('swinir-diffbir-general').hyperparameters)
  mon = RssMonitor(limit_gb=args.max_rss_gb)
  seconds: dict[str, float] = {}

  def built(name, factory, config, seed):
    def make():
      mon.enter(f'build {name}')
      start = time.perf_counter()
      model = random_model(factory, seed)
      seconds[f'build {name}'] = time.perf_counter() - start
      n = sum(x.size for x in jax.tree.leaves(nnx.state(model)))
      print(f'  built {name}: {n / 1e9:.3f} G parameters in {seconds[f"build {name}"]:.1f} s, '
            f'RSS {mon.proc.memory_info().rss / 1e9:.2f} GB', flush=True)
      return model
    make.config = config   # from_models reads the config here instead of tracing the builder
    return make

  pipe = dcp.DreamClear.from_models(
      built('dit', lambda: dc.DreamClear(dcfg, rngs=nnx.Rngs(0)), dcfg, 0),
      built('vae', lambda: autoencoder_kl.AutoencoderKL(vcfg, rngs=nnx.Rngs(0)), vcfg, 1),
      built('swinir', lambda: SwinIR(scfg, rngs=nnx.Rngs(0)), scfg, 2),
      built('t5', lambda: t5_model.T5Encoder(tcfg, rngs=nnx.Rngs(0)), tcfg, 3),
      simple_tokenizer(), min_size=args.min_size)

  # Captions first, as the CLI: T5 runs once and is dropped before anything else loads.
  pipe.t5   # noqa: B018
  mon.enter('t5 encode')
  start = time.perf_counter()
  jax.block_until_ready(pipe.embed_captions([args.prompt]))
  seconds['t5 encode (incl. compile)'] = time.perf_counter() - start
  mon.enter('t5 release')
  pipe.release_t5()
  print(f'  T5 encode {seconds["t5 encode (incl. compile)"]:.1f} s; RSS after dropping T5 '
        f'{mon.proc.memory_info().rss / 1e9:.2f} GB', flush=True)
  pipe.swinir, pipe.vae, pipe.denoiser   # noqa: B018 -- build now, outside the timed stages

  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:args.size, 0:args.size]
  image = np.clip(np.stack([xx, yy, (xx + yy) / 2], -1) * (200 / args.size) + 20 + rng.normal(0, 12, (args.size,
                  args.size, 3)), 0, 255).astype(np.uint8)
  runs = []
  for r in range(args.repeats):
    pipe.on_stage = lambda stage, event, r=r: mon.enter(f'run {r + 1}: {stage}') if event == 'start' else None
    start = time.perf_counter()
    result = pipe(image, args.prompt, key=0, steps=args.steps, upscale=args.upscale)
    total = time.perf_counter() - start
    runs.append(dict(total=total, stages=result.timings, finite=float(np.isfinite(result.latent).mean())))
    print(f'  run {r + 1}: {total:.1f} s, output {result.image.shape}, processing {result.processing_size}, '
          f'latent {result.latent_size}, {result.steps} steps, finite latent fraction '
          f'{runs[-1]["finite"]:.3f} (random weights); ' +
          ', '.join(f'{k} {v:.2f} s' for k, v in result.timings.items()), flush=True)
  mon.enter('end')
  mon.stop()
  import resource
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9   # KiB on Linux
  print(f'load average after: {load_average()}')
  print('\nstage | seconds | peak RSS (GB)')
  for stage in mon.order:
    if stage in ('end',):
      continue
    key = stage.split(': ', 1)
    secs = seconds.get(stage)
    if secs is None and len(key) == 2:
      secs = runs[int(key[0].split()[1]) - 1]['stages'].get(key[1])
    if secs is None and stage == 't5 encode':
      secs = seconds['t5 encode (incl. compile)']
    print(f'{stage} | {"" if secs is None else f"{secs:.2f}"} | {mon.peaks.get(stage, 0):.2f}')
  print(f'peak RSS of the process (ru_maxrss): {maxrss:.2f} GB')
  from jaxrestore.pipelines import memory
  side = result.processing_size[0]
  if result.processing_size[0] == result.processing_size[1]:
    rows = memory.dreamclear_stage_memory((1, 1), image_size=side)
    print(f'\ncomputed device-memory estimate at {side}^2 (jaxrestore.pipelines.memory; no XLA:CPU float32 '
          f'upcasts, no host copies):')
    for r in rows:
      print(f'  {r.stage}: {r.peak / 1e9:.2f} GB (params {r.params / 1e9:.2f}, activations {r.activations / 1e9:.2f})')
  if args.json:
    with open(args.json, 'x') as f:
      json.dump(dict(args=vars(args), seconds=seconds, runs=runs, peaks=mon.peaks, order=mon.order, maxrss_gb=maxrss,
                     load_after=load_average()), f, indent=1)


if __name__ == '__main__':
  main()
