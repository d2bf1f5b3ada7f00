"""`jaxrestore restore --model dreamclear`: the pipeline's options and its run over image files.

`jaxrestore.cli` adds `add_arguments(parser)` to its `restore` parser and, for a `--model` found in
`jaxrestore.pipelines.PIPELINES`, hands the expanded input paths and the checked output folder to
`run(args, inputs, out_dir)`. Nothing heavy is imported at module level (building the parser must
stay fast).

The run checks everything it can before the heavy work: options, the captions file, every component
of the weights folder (each missing one named), the output paths (inputs and existing outputs are
never overwritten without --overwrite). It then embeds every caption in one T5 session, drops T5,
and restores the images one by one with a progress bar over the sampling steps.

Exit codes as `jaxrestore.cli`: 0 done, 1 some image failed, 2 unusable options or weights, 130
interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = 'jaxrestore restore'
DTYPES = ('fp32', 'float32', 'bf16', 'bfloat16')
FORMATS = ('png', 'tif', 'tiff', 'bmp', 'webp', 'jpg', 'jpeg')


def _positive(kind):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'expected {"an integer" if kind is int else "a number"}, got {text!r}')
    if not value > 0:
      raise argparse.ArgumentTypeError(f'must be positive, got {text}')
    return value
  parse.__name__ = kind.__name__
  return parse


def _non_negative_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}')
  if value < 0:
    raise argparse.ArgumentTypeError(f'must be at least 0, got {text}')
  return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """DreamClear's options; the generic ones (--dtype, --overwrite, --skip-existing, --format,
  --suffix, --quiet, --max-pixels) only where the parser lacks them."""
  have = set(parser._option_string_actions)   # noqa: SLF001 -- argparse has no public query
  g = parser.add_argument_group('DreamClear (--model dreamclear)')
  g.add_argument('--weights-dir', metavar='DIR',
                 help='folder with DreamClear-1024.pth (or its converted folder), sd-vae-ft-ema/, t5-v1_1-xxl/ '
                      'and general_swinir_v1.ckpt')
  g.add_argument('--prompt', metavar='TEXT', help='caption for every image without an entry in --captions')
  g.add_argument('--captions', metavar='JSON', help='captions.json: {"file name": "caption", ...}')
  g.add_argument('--steps', type=_positive(int), default=50, help='IDDPM sampling steps (default 50)')
  g.add_argument('--cfg', type=float, default=4.5, help='classifier-free guidance scale (default 4.5)')
  g.add_argument('--seed', type=int, default=0, help='PRNG seed; each image uses it (default 0)')
  g.add_argument('--upscale', type=_positive(float), default=4.0,
                 help='output size = input size x upscale (default 4, as test.py)')
  g.add_argument('--color-align', choices=['wavelet', 'adain', 'none'], default='wavelet',
                 help='colour fix against the SwinIR output (default wavelet)')
  g.add_argument('--min-size', type=_positive(int), default=1024,
                 help='short side the image is enlarged to before restoring (default 1024)')
  g.add_argument('--latent-tile', type=_non_negative_int, default=128,
                 help='latents with a side beyond this are denoised in tiles (default 128; 0 = never tile)')
  g.add_argument('--latent-overlap', type=_non_negative_int, default=32, help='overlap of latent tiles (default 32)')
  g.add_argument('--vae-tile', type=_non_negative_int, default=0,
                 help='VAE encode/decode in tiles of this many pixels (equal up to rounding; default 0 = whole)')
  if '--dtype' not in have:
    g.add_argument('--dtype', default=None, choices=DTYPES, help='DiT and T5 precision (default bf16)')
  if '--format' not in have:
    g.add_argument('--format', default='png', choices=FORMATS, help='output format (default png)')
  if '--suffix' not in have:
    g.add_argument('--suffix', default='', help='appended to output file stems')
  if '--max-pixels' not in have:
    g.add_argument('--max-pixels', type=_non_negative_int, default=8192 * 8192,
                   help='refuse larger inputs unread (0 = no limit)')
  if '--overwrite' not in have and '--skip-existing' not in have:
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument('--overwrite', action='store_true', help='replace existing outputs')
    existing.add_argument('--skip-existing', action='store_true', help='leave inputs whose output exists alone')
  if '--quiet' not in have:
    g.add_argument('--quiet', action='store_true', help='errors only: no per-image lines, no progress')


def _say(kind: str, message: str) -> None:
  print(f'{PROG}: {kind}: {" ".join(str(message).split())}', file=sys.stderr)


def read_captions(path) -> dict[str, str]:
  """captions.json: one object of file name -> caption (strings)."""
  p = Path(path)
  try:
    data = json.loads(p.read_text(encoding='utf-8'))
  except FileNotFoundError:
    raise ValueError(f'--captions {path}: no such file') from None
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise ValueError(f'--captions {path}: not a readable JSON file ({e})') from None
  if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
    raise ValueError(f'--captions {path}: expected one JSON object mapping file names to caption strings')
  return data


def caption_for(path: Path, captions: dict[str, str], prompt: str | None) -> str | None:
  """The file's entry (by name, path or stem), else --prompt, else None (the empty caption)."""
  for k in (path.name, str(path), path.stem):
    if k in captions:
      return captions[k]
  return prompt


def run(args, inputs, out_dir) -> int:
  """Restores `inputs` (paths) into `out_dir` (a checked output folder, created on first write)."""
  quiet = bool(getattr(args, 'quiet', False))
  fmt = getattr(args, 'format', 'png')
  suffix = getattr(args, 'suffix', '') or ''
  overwrite = bool(getattr(args, 'overwrite', False))
  skip_existing = bool(getattr(args, 'skip_existing', False))
  dtype_name = getattr(args, 'dtype', None)
  out_dir = Path(out_dir)

  # -- options and the weights, before any work --
  if args.weights_dir is None:
    _say('error', '--model dreamclear needs --weights-dir DIR holding DreamClear-1024.pth, sd-vae-ft-ema/, '
                  't5-v1_1-xxl/ and general_swinir_v1.ckpt')
    return EXIT_USAGE
  if overwrite and skip_existing:
    _say('error', '--overwrite and --skip-existing contradict each other; pass one')
    return EXIT_USAGE
  if args.latent_tile and args.latent_overlap >= args.latent_tile:
    _say('error', f'--latent-overlap {args.latent_overlap} must be smaller than --latent-tile {args.latent_tile}')
    return EXIT_USAGE
  if '/' in suffix or '\\' in suffix:
    _say('error', f'--suffix {suffix!r}: may not contain a path separator')
    return EXIT_USAGE
  try:
    captions = read_captions(args.captions) if args.captions else {}
  except ValueError as e:
    _say('error', e)
    return EXIT_USAGE

  import jax.numpy as jnp
  from tqdm import tqdm
  from jaxrestore.imageio import read_image, write_image
  from jaxrestore.pipelines import dreamclear as dcp

  dtype = jnp.bfloat16 if dtype_name in (None, 'bf16', 'bfloat16') else None
  try:
    pipe = dcp.DreamClear.load(args.weights_dir, dtype=dtype, eager=False, min_size=args.min_size, release_t5=True)
  except KeyboardInterrupt:
    raise
  except Exception as e:  # noqa: BLE001 -- missing components, mismatched checkpoints: a usage error
    _say('error', e)
    return EXIT_USAGE

  # -- per-file plans: outputs never overwrite inputs or (without --overwrite) existing files --
  inputs = [Path(p) for p in inputs]
  input_set = {p.resolve() for p in inputs if p.exists()}
  failures: list[str] = []
  plans: list[tuple[Path, Path]] = []
  claimed: dict[Path, Path] = {}
  skipped = 0
  for path in inputs:
    target = out_dir / f'{path.stem}{suffix}.{fmt}'
    resolved = target.resolve()
    if resolved in input_set:
      message = f'{path}: output {target} would overwrite an input; choose another -o or --suffix'
    elif resolved in claimed:
      message = f'{path}: output {target} is already the output of {claimed[resolved]}'
    elif target.exists() and skip_existing:
      skipped += 1
      continue
    elif target.exists() and not overwrite:
      message = f'{target} exists; pass --overwrite to replace it (or --skip-existing)'
    else:
      claimed[resolved] = path
      plans.append((path, target))
      continue
    failures.append(str(path))
    _say('error', message)
  used = {k for path, _ in plans for k in (path.name, str(path), path.stem) if k in captions}
  if captions and set(captions) - used:
    _say('warning', f'--captions: {len(set(captions) - used)} entr(y/ies) match no input: '
                    + ', '.join(sorted(set(captions) - used)[:5]))

  # -- read the images and embed every caption in one T5 session, then drop T5 --
  jobs = []
  for path, target in plans:
    try:
      image = dcp.as_rgb_uint8(read_image(path, max_pixels=getattr(args, 'max_pixels', None) or None))
      dcp.processing_size(image.shape[0], image.shape[1], args.upscale, args.min_size)
    except Exception as e:  # noqa: BLE001 -- one failing file is that file's one-line error
      failures.append(str(path))
      message = str(e)
      _say('error', message if str(path) in message or path.name in message else f'{path}: {message}')
      continue
    prompt = caption_for(path, captions, args.prompt)
    if prompt is None or not prompt.strip():
      _say('note', f'{path.name}: {dcp.EMPTY_CAPTION_NOTE}')
    jobs.append((path, target, image, prompt))

  written = 0
  current = None
  try:
    if jobs:
      try:
        pipe.embed_captions([prompt for *_, prompt in jobs])
      finally:
        pipe.release_t5()
    if not quiet and jobs:
      tqdm.write(f'{"image":32s} {"input":>11s} {"output":>11s} {"seconds":>8s}  written to', file=sys.stdout)
    for path, target, image, prompt in jobs:
      current = path
      start = time.perf_counter()
      bar = tqdm(total=args.steps, desc=f'{path.name[-24:]} steps', unit='step', file=sys.stderr, leave=False,
                 disable=quiet or None)

      def progress(done, total, bar=bar):
        bar.total = total
        bar.n = done
        bar.refresh()

      try:
        result = pipe(image, prompt, key=args.seed, steps=args.steps, cfg=args.cfg, upscale=args.upscale,
                      color_align=None if args.color_align == 'none' else args.color_align, progress=progress,
                      latent_tile=args.latent_tile or None, latent_overlap=args.latent_overlap,
                      vae_tile=args.vae_tile or None)
        out_dir.mkdir(parents=True, exist_ok=True)   # only once something is written
        write_image(target, result.image.astype('float32') / 255.0)
        written += 1
        if not quiet:
          h, w = result.image.shape[:2]
          tqdm.write(f'{path.name[-32:]:32s} {image.shape[1]:>5d}x{image.shape[0]:<5d} {w:>5d}x{h:<5d} '
                     f'{time.perf_counter() - start:8.2f}  {target}', file=sys.stdout)
      except KeyboardInterrupt:
        raise
      except Exception as e:  # noqa: BLE001
        failures.append(str(path))
        message = ' '.join(str(e).split()) or type(e).__name__
        _say('error', message if str(path) in message else f'{path}: {message}')
      finally:
        bar.close()
  except KeyboardInterrupt:
    _say('interrupted', f'wrote {written} of {len(inputs)} image(s) into {out_dir}; not written from '
                        f'{current.name if current else "the first"} on; resume with the same command plus '
                        f'--skip-existing')
    return EXIT_INTERRUPTED
  if not quiet:
    where = out_dir if written else f'{out_dir} (nothing written)'
    print(f'restored {written} of {len(inputs)} image(s) into {where}' +
          (f'; skipped {skipped} existing' if skipped else '') + (f'; {len(failures)} failed' if failures else ''))
  return EXIT_FAILED if failures else EXIT_OK
