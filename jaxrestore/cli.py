"""The `jaxrestore` command line."""
from __future__ import annotations

import argparse
import sys


def _cmd_presets(args) -> int:
  from jaxrestore.api import presets
  rows = []
  for name, p in presets().items():
    if args.architecture and p.architecture != args.architecture:
      continue
    level = (f'sigma {p.noise_level}' if p.noise_level else f'q {p.jpeg_quality}' if p.jpeg_quality
             else f'x{p.scale}' if p.scale > 1 else '')
    rows.append((name, p.architecture, p.task, level, 'gray' if p.channels == 1 else 'rgb',
                 'bundled' if p.bundled_weights else p.checkpoint_file or ''))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
  for r in rows:
    print('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
  return 0


def _cmd_convert(args) -> int:
  from jaxrestore.convert import from_torch
  hp = dict(_parse_assignment(s) for s in args.set)
  dst = from_torch(args.src, args.dst, name=args.model, key=args.key, overwrite=args.overwrite, **hp)
  print(f'wrote {dst}')
  return 0


def _cmd_demo(args) -> int:
  from jaxrestore.demo import DEMO_PRESET, DEMO_SIGMA, run_demo
  r = run_demo(args.out, overwrite=args.overwrite)
  print(f'{DEMO_PRESET} (bundled KAIR weights) on the bundled Kodak image, gray, Gaussian noise '
        f'sigma={DEMO_SIGMA}:')
  print(f'  noisy    PSNR {r["psnr_noisy"]:6.2f} dB  SSIM {r["ssim_noisy"]:.4f}')
  print(f'  restored PSNR {r["psnr_restored"]:6.2f} dB  SSIM {r["ssim_restored"]:.4f}')
  print(f'  side by side (noisy | restored | clean): {r["output"]}')
  return 0


def _parse_assignment(text: str):
  import ast
  if '=' not in text:
    raise SystemExit(f'--set expects key=value, got {text!r}')
  key, value = text.split('=', 1)
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='jaxrestore', description=__doc__)
  sub = parser.add_subparsers(dest='command', required=True)

  p = sub.add_parser('presets', help='list model presets')
  p.add_argument('--architecture', help='only this architecture (e.g. swinir, dncnn)')
  p.set_defaults(func=_cmd_presets)

  p = sub.add_parser('convert', help='convert a PyTorch checkpoint into a jaxrestore checkpoint')
  p.add_argument('src', help='official checkpoint (.pth, .safetensors, .npz); never unpickled unsafely')
  p.add_argument('dst', help='output directory (orbax checkpoint + jaxrestore.json)')
  p.add_argument('--model', help='preset name; default: detect the architecture from the checkpoint')
  p.add_argument('--key', help="state-dict container key, e.g. params or params_ema")
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='override a hyperparameter, e.g. --set img_range=255.0')
  p.add_argument('--overwrite', action='store_true', help='replace an existing converted checkpoint')
  p.set_defaults(func=_cmd_convert)

  p = sub.add_parser('demo', help='denoise the bundled image with the bundled DnCNN weights')
  p.add_argument('--out', default='demo_out', help='output folder (default: demo_out)')
  p.add_argument('--overwrite', action='store_true')
  p.set_defaults(func=_cmd_demo)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.func(args)
  except (ValueError, FileNotFoundError, FileExistsError, TypeError) as e:
    print(f'jaxrestore {args.command}: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
