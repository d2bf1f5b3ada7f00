"""`jaxrestore train CONFIG [--set key=value ...] [--workdir DIR]`.

CONFIG is a recipe in `jaxrestore.configs.train` (`dncnn_gray`, `swinir_gray_dn:sigma=25,cpu`) or
a .py file with `get_config(arg)`. Running the same command again resumes from the latest good
checkpoint in the workdir. Multi-host: start one process per host with `--coordinator HOST:PORT
--num-processes N --process-id I` (or set JAXRESTORE_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID).

`python -m jaxrestore.train.cli ...` runs it without the top-level `jaxrestore` command.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def add_train_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser('train', help='train a model from a recipe (resumes automatically)',
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(p)
  p.set_defaults(func=run)
  return p


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument('config', metavar='CONFIG', help='recipe name[:arg] (see jaxrestore.configs.train) or a .py file')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', dest='overrides',
                 help='override a config field, e.g. --set optimizer.lr=1e-4 --set total_steps=1000')
  p.add_argument('--workdir', help='checkpoints, metrics.jsonl, config.json and export/ (default: runs/<recipe>)')
  p.add_argument('--resume', action=argparse.BooleanOptionalAction, default=True,
                 help='continue from the latest good checkpoint in the workdir (default: on)')
  p.add_argument('--export-only', action='store_true',
                 help='write the latest checkpoint of the workdir as a converted directory and exit')
  p.add_argument('--export-dir', help='where --export-only writes (default: WORKDIR/export)')
  p.add_argument('--export-weights', choices=['ema', 'params'],
                 help="which weights --export-only writes (default: the config's export.which)")
  p.add_argument('--coordinator', help='HOST:PORT of process 0 for multi-host training')
  p.add_argument('--num-processes', type=int)
  p.add_argument('--process-id', type=int)
  p.add_argument('--no-progress', action='store_true', help='no progress bar (metrics still go to JSONL)')
  p.add_argument('--print-config', action='store_true', help='print the resolved config and exit')


def resolve_config(args):
  from jaxrestore.configs.train import apply_overrides, get_config
  config = apply_overrides(get_config(args.config), args.overrides)
  if args.coordinator:
    config.distributed = dict(coordinator=args.coordinator, num_processes=args.num_processes,
                              process_id=args.process_id)
  return config


def default_workdir(spec: str) -> Path:
  return Path('runs') / (re.sub(r'[^A-Za-z0-9_.=-]+', '_', Path(spec).stem if spec.endswith('.py') else spec))


def run(args) -> int:
  config = resolve_config(args)
  if args.print_config:
    import json
    print(json.dumps(config.to_dict(), indent=2, default=str))
    return 0
  workdir = Path(args.workdir) if args.workdir else default_workdir(args.config)
  from jaxrestore.train import trainer
  if args.export_only:
    which = args.export_weights or (config.get('export') or {}).get('which') or 'ema'
    dst = trainer.export_checkpoint(config, workdir, args.export_dir, which=which)
    print(f'exported {dst}')
    return 0
  result = trainer.train(config, workdir, resume=args.resume, progress=not args.no_progress)
  summary = {k: round(v, 5) for k, v in result['metrics'].items() if k in ('loss', 'loss_mean', 'lr')}
  print(f'done: step {result["step"]}, {result["train_seconds"]:.0f} s of training, {summary}'
        + (f', exported {result["export"]}' if result['export'] else ''))
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='jaxrestore train', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser)
  args = parser.parse_args(argv)
  try:
    return run(args)
  except (ValueError, FileNotFoundError, FileExistsError, TypeError) as e:
    print(f'jaxrestore train: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
