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


def _assignment(text: str) -> str:
  key, sep, _ = text.partition('=')
  if not sep or not key.strip():
    raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
  return text


def _count(low: int):
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}')
    if value < low:
      raise argparse.ArgumentTypeError(f'must be at least {low}, got {text}')
    return value
  return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument('config', metavar='CONFIG', help='recipe name[:arg] (see jaxrestore.configs.train) or a .py file')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', dest='overrides', type=_assignment,
                 help='override a config field, e.g. --set optimizer.lr=1e-4 --set total_steps=1000')
  p.add_argument('--workdir', help='checkpoints, metrics.jsonl, config.json and export/ (default: runs/<recipe>); '
                 'created when training starts')
  p.add_argument('--resume', action=argparse.BooleanOptionalAction, default=True,
                 help='continue from the latest good checkpoint in the workdir (default: on)')
  p.add_argument('--export-only', action='store_true',
                 help='write the latest checkpoint of the workdir as a converted directory and exit')
  p.add_argument('--export-dir', help='where --export-only writes (default: WORKDIR/export)')
  p.add_argument('--export-weights', choices=['ema', 'params'],
                 help="which weights --export-only writes (default: the config's export.which)")
  p.add_argument('--coordinator', help='HOST:PORT of process 0 for multi-host training')
  p.add_argument('--num-processes', type=_count(1))
  p.add_argument('--process-id', type=_count(0))
  p.add_argument('--no-progress', action='store_true', help='no progress bar (metrics still go to JSONL)')
  p.add_argument('--print-config', action='store_true', help='print the resolved config and exit')


def resolve_config(args):
  from jaxrestore.configs.train import apply_overrides, get_config
  config = apply_overrides(get_config(args.config), args.overrides)
  if args.coordinator:
    config.distributed = dict(coordinator=args.coordinator, num_processes=args.num_processes,
                              process_id=args.process_id)
  return config


def check_config(config) -> list[str]:
  """Warnings about a config that runs but probably not as meant."""
  warnings = []
  total = int(config.get('total_steps') or 0)
  schedule = config.get('schedule') or {}
  warmup = int(schedule.get('warmup_steps', 0) or 0)
  if warmup and warmup >= total:
    warnings.append(f'schedule.warmup_steps={warmup} is not shorter than total_steps={total}: the learning rate '
                    f'never reaches optimizer.lr (set schedule.warmup_steps below total_steps)')
  return warnings


def check_paths(args) -> None:
  """--workdir and --export-dir: folders that exist or can be created (before any work)."""
  from jaxrestore.imageio import OutputPathError, check_distinct, check_output_folder
  if args.process_id is not None and args.num_processes is not None and args.process_id >= args.num_processes:
    raise ValueError(f'--process-id {args.process_id} must be smaller than --num-processes {args.num_processes}')
  check_output_folder(args.workdir, '--workdir')
  check_output_folder(args.export_dir, '--export-dir')
  if args.export_dir and not args.export_only:
    raise OutputPathError('--export-dir applies to --export-only (a training run exports to export.dir in the config)')
  check_distinct(**{'--workdir': args.workdir, '--export-dir': args.export_dir})


def _latest_checkpoint(workdir: Path) -> int | None:
  steps = [int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit()]
  return max(steps) if steps else None


def default_workdir(spec: str) -> Path:
  return Path('runs') / (re.sub(r'[^A-Za-z0-9_.=-]+', '_', Path(spec).stem if spec.endswith('.py') else spec))


def run(args) -> int:
  config = resolve_config(args)
  for warning in check_config(config):
    print(f'jaxrestore train: warning: {warning}', file=sys.stderr)
  if args.print_config:
    import json
    print(json.dumps(config.to_dict(), indent=2, default=str))
    return 0
  check_paths(args)
  workdir = Path(args.workdir) if args.workdir else default_workdir(args.config)
  from jaxrestore.train import trainer
  if args.export_only:
    which = args.export_weights or (config.get('export') or {}).get('which') or 'ema'
    dst = trainer.export_checkpoint(config, workdir, args.export_dir, which=which)
    print(f'exported {dst}')
    return 0
  try:
    result = trainer.train(config, workdir, resume=args.resume, progress=not args.no_progress)
  except KeyboardInterrupt:
    latest = _latest_checkpoint(workdir)
    saved = (f'the latest checkpoint is step {latest} in {workdir / "checkpoints"}' if latest is not None
             else 'no checkpoint was saved yet')
    print(f'jaxrestore train: interrupted; {saved}; run the same command to resume', file=sys.stderr)
    return 130
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
  except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, TypeError) as e:
    message = '; '.join(line.strip() for line in str(e).splitlines() if line.strip())
    print(f'jaxrestore train: error: {message}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
