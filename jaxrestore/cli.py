"""The `jaxrestore` command line.

Exit codes: 0 done; 1 the command ran but some input failed (a file that could not be restored, a
test set with unreadable or altered files); 2 a usage error, reported before any work (bad or
inapplicable options, unusable output paths, a model or weights that cannot be loaded); 130
interrupted (Ctrl-C), with one line saying what was and was not written.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
  """A command line that cannot work as given (exit 2, nothing done)."""


class InputError(Exception):
  """Input data that cannot be used (exit 1)."""


def check_new_file(path, flag):
  from jaxrestore.imageio import check_new_file as check
  return check(path, flag)


def check_output_folder(path, flag):
  from jaxrestore.imageio import check_output_folder as check
  return check(path, flag)


def check_distinct(**paths):
  from jaxrestore.imageio import check_distinct as check
  return check(**paths)


# ----- argument types: range errors in the option's own terms, exit 2 from argparse ------------------

def _number(kind, low=None, high=None, what=''):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'expected {"an integer" if kind is int else "a number"}, got {text!r}')
    if (low is not None and value < low) or (high is not None and value > high):
      span = (f'between {low:g} and {high:g}' if low is not None and high is not None
              else f'at least {low:g}' if low is not None else f'at most {high:g}')
      raise argparse.ArgumentTypeError(f'must be {span}{what}, got {text}')
    return value
  parse.__name__ = kind.__name__
  return parse


def _int_list(text: str) -> tuple[int, ...]:
  try:
    values = tuple(int(v) for v in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected comma-separated integers, got {text!r}')
  if any(v < 1 for v in values):
    raise argparse.ArgumentTypeError(f'every value must be at least 1, got {text}')
  return values


def _assignment(text: str) -> tuple[str, object]:
  """KEY=VALUE with VALUE a Python literal (else a string)."""
  import ast
  key, sep, value = text.partition('=')
  if not sep or not key.strip():
    raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
  try:
    return key.strip(), ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key.strip(), value


# ----- messages in the command line's terms ---------------------------------------------------------

_API_TERMS = (
    (r'\(or pass weights=\.\.\.\)', '(or pass --weights PATH)'),
    (r'pass weights=\.\.\.', 'pass --weights PATH'),
    (r'pass key=\.\.\.', 'pass --key KEY'),
    (r"[Pp]ass ``key='params'``", "pass --key params"),
    (r'pass overwrite=True \(CLI: --overwrite\)', 'pass --overwrite'),
    (r'jaxrestore\.presets\(\) lists all', '`jaxrestore presets` lists all'),
)


def one_line(error: BaseException | str) -> str:
  """The whole message on one line (never cut), in the command line's terms."""
  text = str(error) if not isinstance(error, KeyError) else str(error.args[0] if error.args else error)
  text = '; '.join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__
  for pattern, replacement in _API_TERMS:
    text = re.sub(pattern, replacement, text)
  return text


def _error(command: str, message) -> None:
  print(f'jaxrestore {command}: error: {one_line(message)}', file=sys.stderr)


def _warn(command: str, message: str) -> None:
  print(f'jaxrestore {command}: warning: {message}', file=sys.stderr)


# ----- hyperparameter overrides (--set) ---------------------------------------------------------------

def _type_name(hint) -> str:
  import typing
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is typing.Any:
    return 'any value'
  if origin in (typing.Union, getattr(__import__('types'), 'UnionType', None)):
    return ' or '.join(_type_name(a) for a in args)
  if hint is type(None):
    return 'None'
  if origin in (tuple, list):
    return (f'a tuple of {_type_name(args[0])}s' if len(args) == 2 and args[1] is Ellipsis
            else f'a tuple ({", ".join(_type_name(a) for a in args)})' if args else 'a tuple')
  if origin is typing.Literal:
    return ' / '.join(repr(a) for a in args)
  return {int: 'an integer', float: 'a number', bool: 'True or False', str: 'a string'}.get(hint, str(hint))


def _matches(value, hint) -> bool:
  import types
  import typing
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is typing.Any or isinstance(hint, (str, typing.TypeVar)):
    return True
  if origin in (typing.Union, types.UnionType):
    return any(_matches(value, a) for a in args)
  if hint is type(None):
    return value is None
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is str:
    return isinstance(value, str)
  if origin in (tuple, list):
    if not isinstance(value, (tuple, list)):
      return False
    if not args:
      return True
    if len(args) == 2 and args[1] is Ellipsis:
      return all(_matches(v, args[0]) for v in value)
    return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
  if origin is typing.Literal:
    return value in args
  return True


def check_overrides(overrides: list[tuple[str, object]], architectures, *, runtime_ok: bool,
                    flag: str = '--set') -> dict:
  """{key: value} after checking every key names a config field of the architecture(s) and every
  value has that field's type; errors name the flag and the key."""
  import dataclasses
  import typing
  out = {}
  for key, value in overrides:
    owners = []
    for arch in architectures:
      fields = {f.name: f for f in dataclasses.fields(arch.config_cls)}
      if key in fields:
        owners.append((arch, fields[key]))
    if not owners:
      known = sorted({f.name for a in architectures for f in dataclasses.fields(a.config_cls)
                      if runtime_ok or not f.metadata.get('runtime')})
      names = '/'.join(a.name for a in architectures)
      raise UsageError(f'{flag} {key}=...: {names} has no setting {key!r} (known: {", ".join(known)})')
    if not runtime_ok and all(f.metadata.get('runtime') for _, f in owners):
      raise UsageError(f'{flag} {key}=...: {key} is a runtime choice, never stored in a converted checkpoint')
    problems = []
    for arch, field in owners:
      try:
        hint = typing.get_type_hints(arch.config_cls).get(key, typing.Any)
      except Exception:  # noqa: BLE001 -- an unresolvable annotation: leave the check to the config
        hint = typing.Any
      if _matches(value, hint):
        problems = []
        break
      problems.append(f'{key} takes {_type_name(hint)}')
    if problems:
      raise UsageError(f'{flag} {key}=...: {problems[0]}, got {value!r}')
    out[key] = tuple(value) if isinstance(value, list) else value
  return out


# ----- presets ---------------------------------------------------------------------------------------

def _cmd_presets(args) -> int:
  from jaxrestore import registry
  known = registry.architectures()
  if args.architecture and args.architecture not in known:
    raise UsageError(f'--architecture {args.architecture}: unknown architecture; known: {", ".join(sorted(known))}')
  rows = []
  for name, p in registry.presets().items():
    if args.architecture and p.architecture != args.architecture:
      continue
    level = (f'sigma {p.noise_level}' if p.noise_level else f'q {p.jpeg_quality}' if p.jpeg_quality
             else f'x{p.scale}' if p.scale > 1 else '')
    rows.append((name, p.architecture, p.task, level, {1: 'gray', 3: 'rgb'}.get(p.channels, f'{p.channels}ch'),
                 'bundled' if p.bundled_weights else p.checkpoint_file or ''))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
  for r in rows:
    print('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
  if not rows:
    print(f'architecture {args.architecture} has no presets')
  return EXIT_OK


# ----- convert ----------------------------------------------------------------------------------------

def _cmd_convert(args) -> int:
  from jaxrestore import registry
  src = Path(args.src)
  dst = check_output_folder(args.dst, 'DST')
  if dst.exists() and not args.overwrite:
    raise UsageError(f'DST {args.dst}: already exists; pass --overwrite to replace it')
  if dst.exists() and not (dst / 'jaxrestore.json').is_file():
    raise UsageError(f'DST {args.dst}: exists and is not a jaxrestore checkpoint; refusing to replace it')
  if not src.is_file():
    raise UsageError(f'SRC {args.src}: no such file')
  if dst.absolute() == src.absolute():
    raise UsageError('DST is SRC; the converted checkpoint is a new folder')
  if args.model:
    archs = [registry.get_architecture(registry.get_preset(args.model).architecture)]
  else:
    archs = list(registry.architectures().values())
  hp = check_overrides(args.set, archs, runtime_ok=False)
  from jaxrestore.convert import from_torch
  try:
    written = from_torch(src, dst, name=args.model, key=args.key, overwrite=args.overwrite, dtype=args.dtype, **hp)
  except KeyboardInterrupt:
    print(f'jaxrestore convert: interrupted; nothing was written to {dst} (it is written whole or not at all)',
          file=sys.stderr)
    return EXIT_INTERRUPTED
  except TypeError as e:  # a --set key the detected architecture does not have
    raise UsageError(f'--set: {one_line(e)}' if 'hyperparameter' in str(e) else one_line(e)) from None
  print(f'wrote {written}')
  return EXIT_OK


# ----- bench ------------------------------------------------------------------------------------------

def _cmd_bench(args) -> int:
  import jaxrestore
  json_path = check_new_file(args.json, '--json')
  presets = tuple(p for p in args.presets.split(',') if p)
  for name in presets:
    jaxrestore.get_preset(name)  # unknown names fail here, before any timing
  from jaxrestore import bench
  try:
    officials = bench.resolve_officials(args.official)
  except ValueError as e:
    print(f'jaxrestore bench: {e}', file=sys.stderr)
    return EXIT_USAGE
  sizes = (32,) if args.smoke else args.sizes
  batches = (1,) if args.smoke else args.batches
  repeats = 1 if args.smoke else args.repeats
  rounds = 1 if args.smoke else args.rounds
  print(f'jaxrestore bench on {bench.machine_line()} (median of {repeats} runs'
        + (f', median over {rounds} alternating JAX/PyTorch rounds' if rounds > 1 else '')
        + ', forward only, random weights)')
  try:
    frameworks = ('jax',) if args.jax_only else ('jax', 'torch') + (('torch-compile',) if args.compare_compile else ())
    rows = bench.run_bench(presets, sizes, batches, repeats, args.dtype, rounds=rounds, frameworks=frameworks,
                           officials=officials, micro_batch=args.micro_batch)
  except KeyboardInterrupt:
    print('jaxrestore bench: interrupted; no table printed' + (f', nothing written to {json_path}' if json_path else ''),
          file=sys.stderr)
    return EXIT_INTERRUPTED
  print(bench.format_table(rows))
  steps = sorted({r['micro_batch'] for r in rows if r['framework'] == 'jax' and 'micro_batch' in r})
  if steps:
    print('JAX runs a batch as steps of ' + ', '.join('the whole batch' if m == 0 else f'{m} image(s) per device'
                                                      for m in steps) + ' (--micro-batch)')
  print(f'load average after: {bench.load_average()}')
  if json_path is not None:
    from jaxrestore.eval.evaluator import write_json
    write_json(json_path, {'machine': bench.machine_line(), 'rows': rows})
  return EXIT_OK if rows else EXIT_FAILED


# ----- demo -------------------------------------------------------------------------------------------

def _cmd_demo(args) -> int:
  from jaxrestore.demo import DEMO_PRESET, DEMO_SIGMA, output_path, run_demo
  check_output_folder(args.out, '--out')
  target = output_path(args.out)
  if target.exists() and not args.overwrite:
    raise UsageError(f'--out {args.out}: {target} exists; pass --overwrite to replace it')
  r = run_demo(args.out, overwrite=args.overwrite)
  print(f'{DEMO_PRESET} (bundled KAIR weights) on the bundled Kodak image, gray, Gaussian noise '
        f'sigma={DEMO_SIGMA}:')
  print(f'  noisy    PSNR {r["psnr_noisy"]:6.2f} dB  SSIM {r["ssim_noisy"]:.4f}')
  print(f'  restored PSNR {r["psnr_restored"]:6.2f} dB  SSIM {r["ssim_restored"]:.4f}')
  print(f'  side by side (noisy | restored | clean): {r["output"]}')
  return EXIT_OK


# ----- restore ----------------------------------------------------------------------------------------

def _expand_inputs(items: list[str]) -> tuple[list, list[str]]:
  """Files, folders (their images) and globs -> (paths, errors for items that match nothing)."""
  import glob
  from jaxrestore.imageio import READ_SUFFIXES
  paths, errors = [], []
  for item in items:
    p = Path(item)
    if p.is_dir():  # image files, and links to them (a broken one is reported when it is read)
      found = sorted(f for f in p.iterdir() if f.suffix.lower() in READ_SUFFIXES and not f.is_dir())
      if not found:
        errors.append(f'{item}: folder holds no images')
      paths += found
    elif p.exists() or not glob.has_magic(item):
      paths.append(p)  # a missing file is reported when it is read
    else:
      found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
      if not found:
        errors.append(f'{item}: no file matches')
      paths += found
  return paths, errors


_DTYPES = {'fp32': None, 'float32': None, 'bf16': 'bfloat16', 'bfloat16': 'bfloat16'}


def _refuse_pipeline_component(command: str, arch) -> None:
  if arch is not None and arch.pipeline is not None:
    raise UsageError(f'{arch.name} is a component of the {arch.pipeline!r} pipeline (it works on latents, not '
                     f'images): restore images with `jaxrestore restore --model {arch.pipeline} --weights-dir DIR`'
                     + ('; `eval` does not run pipelines yet' if command == 'eval' else ''))


def _load_model(command: str, args, *, pretrained: bool = True, **hyperparameters):
  """The model of --model/--weights; any failure is a usage error in CLI terms."""
  import warnings
  import jaxrestore
  from jaxrestore import registry
  if args.model is not None:
    _refuse_pipeline_component(command, registry.get_architecture(jaxrestore.get_preset(args.model).architecture))
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # pretrained=False is asked for explicitly; no "random init" warning
      model = jaxrestore.load(args.model, args.weights, pretrained=pretrained, **hyperparameters)
    _refuse_pipeline_component(command, registry.architecture_of(model))
    return model
  except UsageError:
    raise
  except KeyboardInterrupt:
    raise
  except Exception as e:  # noqa: BLE001 -- weights that do not match, missing weights, bad files, ...
    message = one_line(e)
    if command == 'eval' and args.weights is None and 'no weights found' in message:
      message = message.replace('(or pass --weights PATH)', '(or pass --weights PATH, or --random-weights for a '
                                'smoke run of the architecture)')
    raise UsageError(message) from None


def _cmd_restore(args) -> int:
  import time
  import jax.numpy as jnp
  from tqdm import tqdm
  from jaxrestore import inference
  from jaxrestore.imageio import read_image, write_image

  from jaxrestore.pipelines import PIPELINES
  if args.overwrite and args.skip_existing:
    raise UsageError('--overwrite and --skip-existing contradict each other; pass one')
  if args.model in PIPELINES:  # a multi-component restorer (e.g. DreamClear): its own loop and options
    for flag, value, default in (('--tile', args.tile, 256), ('--overlap', args.overlap, None),
                                 ('--batch-size', args.batch_size, None), ('--weights', args.weights, None)):
      if value != default:
        raise UsageError(f'{flag} does not apply to --model {args.model} (a pipeline; see --weights-dir and its '
                         f'tiling options)')
    out_dir = check_output_folder(args.output, '-o/--output')
    inputs, failures = _expand_inputs(args.inputs)
    for f in failures:
      print(f'jaxrestore restore: error: {f}', file=sys.stderr)
    code = PIPELINES[args.model].run(args, inputs, out_dir)
    return EXIT_FAILED if failures and code == EXIT_OK else code
  if args.model is None and args.weights is None:
    raise UsageError('restore needs --model PRESET, or --weights PATH to a self-describing checkpoint '
                     '(a converted folder or an official PyTorch file)')
  if os.sep in args.suffix or (os.altsep and os.altsep in args.suffix):
    raise UsageError(f'--suffix {args.suffix!r}: may not contain a path separator')
  tile = args.tile or None
  overlap = args.overlap
  if tile is None and overlap is not None:
    raise UsageError(f'--overlap {overlap}: applies between tiles, and --tile 0 restores whole images')
  overlap = inference.DEFAULT_OVERLAP if overlap is None else overlap
  if tile is not None and overlap >= tile:
    raise UsageError(f'--overlap {overlap} must be smaller than --tile {tile}')
  out_dir = check_output_folder(args.output, '-o/--output')

  model = _load_model('restore', args)
  config = model.config
  multiple, minimum = inference.tile_multiple(config), inference.minimum_size(config)
  if tile is not None and (tile % multiple or tile < minimum):
    need = f'a multiple of {multiple} of at least {max(minimum, multiple)}' if multiple > 1 else f'at least {minimum}'
    raise UsageError(f'--tile {tile}: this model needs tiles of {need} pixels (or 0: whole images)')
  dtype = jnp.bfloat16 if _DTYPES.get(args.dtype) else None

  inputs, failures = _expand_inputs(args.inputs)
  for f in failures:
    print(f'jaxrestore restore: error: {f}', file=sys.stderr)
  input_set = {p.resolve() for p in inputs if p.exists()}
  claimed: dict = {}
  written, skipped, done = [], [], 0
  quiet = args.quiet
  bar = tqdm(inputs, desc='images', unit='img', file=sys.stderr, disable=quiet or None)
  if not quiet and inputs:
    tqdm.write(f'{"image":32s} {"input":>11s} {"output":>11s} {"seconds":>8s}  written to', file=sys.stdout)
  current = None
  try:
    for path in bar:
      current = path
      target = out_dir / f'{path.stem}{args.suffix}.{args.format}'
      try:
        if target.resolve() in input_set:
          raise ValueError(f'{path}: output {target} would overwrite an input; choose another -o or --suffix')
        if target.resolve() in claimed:
          raise ValueError(f'{path}: output {target} is already written for {claimed[target.resolve()]}')
        if target.exists() and args.skip_existing:
          skipped.append(path)
          done += 1
          continue
        if target.exists() and not args.overwrite:
          raise FileExistsError(f'{target} exists; pass --overwrite to replace it (or --skip-existing)')
        start = time.perf_counter()
        image = read_image(path, max_pixels=args.max_pixels)
        if min(image.shape[:2]) < minimum:
          raise ValueError(f'{path}: image of {image.shape[1]}x{image.shape[0]} pixels is smaller than '
                           f'the model minimum of {minimum}x{minimum}')
        tiles = tqdm(total=0, desc='tiles', unit='tile', file=sys.stderr, leave=False, disable=quiet or None)

        def progress(n, total):
          tiles.total = total
          tiles.n = n
          tiles.refresh()

        result = inference.restore(model, image, tile=tile, overlap=overlap, batch_size=args.batch_size,
                                   dtype=dtype, progress=progress)
        tiles.close()
        out_dir.mkdir(parents=True, exist_ok=True)  # only once something is written
        write_image(target, result, bit_depth=16 if image.dtype.itemsize == 2 else 8)
        claimed[target.resolve()] = path
        written.append(target)
        if not quiet:
          tqdm.write(f'{path.name[-32:]:32s} {image.shape[1]:>5d}x{image.shape[0]:<5d} '
                     f'{result.shape[1]:>5d}x{result.shape[0]:<5d} {time.perf_counter() - start:8.2f}  {target}',
                     file=sys.stdout)
      except Exception as e:  # noqa: BLE001 -- every failure of one file is that file's one-line error
        failures.append(str(path))
        message = one_line(e)
        if str(path) not in message and path.name not in message:
          message = f'{path}: {message}'
        bar.write(f'jaxrestore restore: error: {message}', file=sys.stderr)
      done += 1
  except KeyboardInterrupt:
    bar.close()
    remaining = len(inputs) - done
    print(f'jaxrestore restore: interrupted: wrote {len(written)} of {len(inputs)} image(s) into {out_dir}; '
          f'not written: {remaining} (from {current.name if current else "the first"} on); resume with the same '
          f'command plus --skip-existing', file=sys.stderr)
    return EXIT_INTERRUPTED
  bar.close()
  if not quiet:
    where = out_dir if written else f'{out_dir} (nothing written)'
    print(f'restored {len(written)} of {len(inputs)} image(s) into {where}' +
          (f'; skipped {len(skipped)} existing' if skipped else '') +
          (f'; {len(failures)} failed' if failures else ''))
  return EXIT_FAILED if failures else EXIT_OK


# ----- eval -------------------------------------------------------------------------------------------

def _eval_task(args, preset) -> tuple[str, str | None]:
  """(task, all-in-one degradation or None) from --task / --protocol / the preset."""
  from jaxrestore.eval import allinone, protocol as proto
  requested = args.task
  allinone_mode = args.protocol == 'allinone' or (args.protocol == 'auto' and (
      (preset is not None and preset.task == 'all_in_one' and requested != 'all_in_one')
      or (preset is None and requested in allinone.TASKS and requested not in proto.TASKS)))
  if allinone_mode:
    if requested not in allinone.TASKS:
      raise UsageError(f'the all-in-one protocol needs --task {" / ".join(allinone.TASKS)}'
                       + (f', got {requested!r}' if requested else ''))
    return 'all_in_one', requested
  task = requested or (preset.task if preset is not None else None)
  if task is None:
    raise UsageError('eval with --weights only needs --task (a preset supplies it with --model)')
  if task not in proto.TASKS:
    raise UsageError(f'--task {task}: no evaluation protocol for this task; known: '
                     f'{", ".join(proto.TASKS)} (all-in-one protocol: {", ".join(allinone.TASKS)})')
  if task == 'all_in_one':
    raise UsageError(f'an all-in-one model is scored per degradation: pass --task {" / ".join(allinone.TASKS)}')
  return task, None


def _check_task_options(args, task: str, degradation: str | None) -> None:
  from jaxrestore.eval import protocol as proto
  spec = proto.TASKS[task]
  used = set(spec.options)
  if degradation == 'denoise':
    used.discard('gt')
  elif degradation is not None:
    used.discard('noise')
  for option in ('noise', 'jpeg', 'lq', 'gt', 'lq_right', 'float_psnr'):
    value = getattr(args, option)
    if value not in (None, False) and option not in used:
      flag = proto.OPTION_FLAGS[option]
      takes = ', '.join(proto.OPTION_FLAGS[o] for o in sorted(used)) or 'none of the task options'
      what = f'{task} ({degradation})' if degradation else task
      raise UsageError(f'{flag} does not apply to task {what}, which takes {takes}')


def _eval_protocol(args, preset, task: str, degradation: str | None, config):
  """The task's protocol: the preset's (padded as the model's official script pads), with overrides."""
  from jaxrestore.eval import protocol as proto
  try:
    if preset is not None and task == preset.task and degradation is None:
      return proto.protocol_for(preset, config, noise_level=args.noise, jpeg_quality=args.jpeg,
                                float_psnr=args.float_psnr or None)
    scale = config.scale
    border = preset.border if preset is not None and preset.scale == scale else (scale if 'sr' in task else 0)
    return proto.Protocol(task=task, noise_level=args.noise, jpeg_quality=args.jpeg, scale=scale, border=border,
                          window=config.eval_pad_multiple if task != 'all_in_one' else None,
                          float_psnr=args.float_psnr, degradation=degradation)
  except ValueError as e:
    raise UsageError(one_line(e)) from None


def _resolve_folder(value: str | None, flag: str, root: str | None) -> Path | None:
  from jaxrestore import datasets
  if value is None:
    return None
  try:
    return datasets.resolve(value, root)
  except (FileNotFoundError, NotADirectoryError) as e:
    raise UsageError(f'{flag} {value}: {one_line(e)}') from None


def _cmd_eval(args) -> int:
  import dataclasses
  import jax.numpy as jnp
  from tqdm import tqdm
  import jaxrestore
  from jaxrestore import registry
  from jaxrestore.eval import protocol as proto
  from jaxrestore.eval.evaluator import Evaluator, format_header, format_row, report, write_csv, write_json
  from jaxrestore.eval.testset import TestSetError

  # Everything that can be wrong with the command line is found before any work.
  csv_path, json_path = check_new_file(args.csv, '--csv'), check_new_file(args.json, '--json')
  check_distinct(**{'--csv': csv_path, '--json': json_path})
  if args.model is None and args.weights is None:
    raise UsageError('eval needs --model PRESET and/or --weights PATH')
  if args.random_weights and args.weights is not None:
    raise UsageError('--random-weights and --weights contradict each other; pass one')
  if args.random_weights and args.model is None:
    raise UsageError('--random-weights needs --model (the preset gives the architecture and its hyperparameters)')
  preset = jaxrestore.get_preset(args.model) if args.model else None
  task, degradation = _eval_task(args, preset)
  _check_task_options(args, task, degradation)
  if args.noise is None and (proto.TASKS[task].needs_noise or degradation == 'denoise') and (
      preset is None or preset.noise_level is None or task != preset.task):
    raise UsageError(f'task {task}{f" ({degradation})" if degradation else ""} needs --noise (sigma on the 0..255 '
                     f'scale){"; the preset is blind" if preset is not None and proto.TASKS[task].needs_noise else ""}')
  if args.jpeg is None and 'jpeg' in task and (preset is None or preset.jpeg_quality is None or task != preset.task):
    raise UsageError(f'task {task} needs --jpeg (a JPEG quality)')
  if args.tile is None and args.overlap is not None:
    raise UsageError('--overlap applies between tiles; pass --tile too')
  if args.tile is not None and args.overlap is not None and args.overlap >= args.tile:
    raise UsageError(f'--overlap {args.overlap} must be smaller than --tile {args.tile}')
  if args.dataset is None and not (args.lq and args.gt):
    raise UsageError('eval needs --dataset (a folder or a test-set name)' +
                     (' or --lq DIR --gt DIR' if {'lq', 'gt'} <= set(proto.TASKS[task].options) else ''))
  dataset = _resolve_folder(args.dataset, '--dataset', args.data_root)
  lq = _resolve_folder(args.lq, '--lq', args.data_root)
  gt = _resolve_folder(args.gt, '--gt', args.data_root)
  lq_right = _resolve_folder(args.lq_right, '--lq-right', args.data_root)
  if args.set:
    arch = registry.get_architecture(preset.architecture) if preset else None
    overrides = check_overrides(args.set, [arch] if arch else list(registry.architectures().values()),
                                runtime_ok=True)
  else:
    overrides = {}
  model = _load_model('eval', args, pretrained=not args.random_weights, **overrides)
  config = model.config
  if args.tile is not None:
    from jaxrestore import inference
    multiple, minimum = inference.tile_multiple(config), inference.minimum_size(config)
    if args.tile % multiple or args.tile < minimum:
      raise UsageError(f'--tile {args.tile}: this model needs tiles that are a multiple of {multiple} and at '
                       f'least {max(minimum, multiple)} pixels')

  if args.random_weights:
    _warn('eval', f'--random-weights: scoring a randomly initialised {preset.architecture} with the hyperparameters '
                  f'of {preset.name}, not its trained weights (a smoke run: the numbers mean nothing)')
  protocol = _eval_protocol(args, preset, task, degradation, config)
  evaluator = Evaluator(model, dtype=jnp.bfloat16 if _DTYPES[args.dtype] else None, tile=args.tile,
                        overlap=args.overlap if args.overlap is not None else 32)

  quiet = args.quiet
  from jaxrestore import datasets
  label = datasets.display_name(args.dataset) if args.dataset else (lq.name if lq is not None else '?')
  files = tqdm(desc=f'checking {label}', unit='file', file=sys.stderr, disable=quiet or None)
  try:
    test_set = evaluator.prepare(protocol, dataset=dataset, lq=lq, gt=gt, lq_right=lq_right, name=label,
                                 limit=args.limit, skip_unreadable=args.skip_unreadable, max_pixels=args.max_pixels,
                                 on_file=lambda: files.update(1))
  except TestSetError as e:
    files.close()
    lines = str(e).splitlines()
    print(f'jaxrestore eval: error: {lines[0]}', file=sys.stderr)
    for line in lines[1:]:
      print(f'  {line.strip()}', file=sys.stderr)
    return EXIT_FAILED
  except (FileNotFoundError, ValueError) as e:
    files.close()
    raise UsageError(one_line(e)) from None
  files.close()
  for sample_name, why in test_set.skipped:
    _warn('eval', f'skipped {sample_name}: {one_line(why)}')

  total = len(test_set.samples)
  bar = tqdm(total=total, desc=f'eval {label}', unit='img', file=sys.stderr, disable=quiet or None)
  scored = [0]

  def show(image_name, row):
    bar.update(1)
    scored[0] += 1
    if not quiet:
      if scored[0] == 1:
        tqdm.write(format_header(row), file=sys.stdout)
      tqdm.write(format_row(image_name, row), file=sys.stdout)

  try:
    result = evaluator.evaluate(test_set, protocol, on_image=show)
  except KeyboardInterrupt:
    bar.close()
    print(f'jaxrestore eval: interrupted after scoring {scored[0]} of {total} image(s); no average and no report '
          f'written' + (f' ({", ".join(str(p) for p in (csv_path, json_path) if p)})' if csv_path or json_path else '')
          + '; rerun the same command', file=sys.stderr)
    return EXIT_INTERRUPTED
  except (ValueError, OSError) as e:  # e.g. an output shape that does not fit the ground truth
    bar.close()
    raise InputError(one_line(e)) from None
  bar.close()

  who = args.model or args.weights
  weights = 'random' if args.random_weights else str(args.weights) if args.weights else 'preset'
  print(f'test set {test_set.name}: {test_set.describe()}' +
        (f'; skipped {len(test_set.skipped)} unreadable: {", ".join(n for n, _ in test_set.skipped)}'
         if test_set.skipped else ''))
  print(f'{who}{" (random weights)" if args.random_weights else ""} on {test_set.name} ({protocol.label()}, '
        f'{len(result.names)} images) average: ' + '  '.join(f'{k} {v:.4f}' for k, v in result.mean().items()))
  data = report(result, test_set, model=args.model, weights=weights, task=task,
                model_config={k: repr(v) for k, v in dataclasses.asdict(config).items()})
  if json_path is not None:
    write_json(json_path, data)
  if csv_path is not None:
    write_csv(csv_path, result, test_set)
  return EXIT_OK


# ----- the parser -------------------------------------------------------------------------------------

def _version() -> str:
  import platform
  from importlib import metadata
  from jaxrestore import __version__

  def version(dist):
    try:
      return metadata.version(dist)
    except metadata.PackageNotFoundError:
      return '?'
  return (f'jaxrestore {__version__} (jax {version("jax")}, flax {version("flax")}, '
          f'Python {platform.python_version()})')


def build_parser() -> argparse.ArgumentParser:
  from jaxrestore.imageio import DEFAULT_MAX_PIXELS
  parser = argparse.ArgumentParser(prog='jaxrestore', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--version', action='version', version=_version())
  sub = parser.add_subparsers(dest='command', required=True)
  max_pixels = dict(type=_number(int, 0), default=DEFAULT_MAX_PIXELS, metavar='N',
                    help=f'refuse images of more than N pixels before decoding them (default {DEFAULT_MAX_PIXELS:,} '
                         f'= 8192x8192; 0 = no limit)')

  p = sub.add_parser('presets', help='list model presets')
  p.add_argument('--architecture', help='only this architecture (e.g. swinir, dncnn)')
  p.set_defaults(func=_cmd_presets)

  p = sub.add_parser('convert', help='convert a PyTorch checkpoint into a jaxrestore checkpoint')
  p.add_argument('src', metavar='SRC', help='official checkpoint (.pth, .safetensors, .npz); never unpickled unsafely')
  p.add_argument('dst', metavar='DST', help='output folder (orbax checkpoint + jaxrestore.json); created, '
                 'with missing parents, only when the conversion succeeds')
  p.add_argument('--model', help='preset name; default: detect the architecture from the checkpoint')
  p.add_argument('--key', help="state-dict container key, e.g. params or params_ema")
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', type=_assignment,
                 help='override a hyperparameter, e.g. --set img_range=255.0')
  p.add_argument('--dtype', choices=['float32', 'bfloat16', 'float16'],
                 help='store floating-point weights in this type (default: float32)')
  p.add_argument('--overwrite', action='store_true', help='replace an existing converted checkpoint')
  p.set_defaults(func=_cmd_convert)

  p = sub.add_parser('eval', help='score a model with the official test protocol of its task')
  p.add_argument('--model', help='preset name (supplies task, noise level / JPEG quality / scale)')
  p.add_argument('--weights', help="checkpoint (.pth or converted folder); default: the preset's")
  p.add_argument('--random-weights', action='store_true',
                 help="score the preset's architecture with random weights: a smoke run when its weights are absent")
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', type=_assignment,
                 help='override a model setting (e.g. --set attention=xla; with --random-weights any hyperparameter)')
  p.add_argument('--dataset', help='test-set folder, or a name resolved under --data-root / $JAXRESTORE_DATA '
                 '(synthetic tasks: clean images; SR: HR/ + LR_bicubic/X<s>/; paired tasks: input/ + target/; '
                 'dual-pixel: test_l/source/ + test_r/source/ + test_c/target/)')
  p.add_argument('--data-root', help='folder holding testsets/ (default: $JAXRESTORE_DATA)')
  p.add_argument('--lq', help='low-quality inputs (SR: <name>x<scale>.<ext>; paired tasks: same names as --gt; '
                 'dual-pixel: the left views)')
  p.add_argument('--gt', help='ground truths with the same file names (paired tasks, all-in-one derain/dehaze)')
  p.add_argument('--lq-right', help='dual-pixel right views (same names as --lq)')
  p.add_argument('--task', help='override the task (gray_dn, color_dn, jpeg_car, ...; all-in-one protocol: '
                 'denoise, derain, dehaze)')
  p.add_argument('--protocol', default='auto', choices=['auto', 'official', 'swinir', 'allinone'],
                 help="official = the task's own test code (swinir: the same); allinone = HAIR/PromptIR's "
                      "test code (auto: by the preset)")
  p.add_argument('--noise', type=_number(float, 0, 255, ' (sigma on the 0..255 scale)'),
                 help='noise sigma on the 0..255 scale (denoising tasks)')
  p.add_argument('--jpeg', type=_number(int, 1, 100), help='JPEG quality 1..100 (JPEG tasks)')
  p.add_argument('--float-psnr', action='store_true',
                 help='PSNR on clamped float outputs (SaoYan/DnCNN-PyTorch test.py) instead of uint8 (denoising)')
  p.add_argument('--limit', type=_number(int, 1), help='score only the first N images (the list hash covers them)')
  p.add_argument('--skip-unreadable', action='store_true',
                 help='score the other images when some files cannot be decoded (default: stop before scoring)')
  p.add_argument('--max-pixels', **max_pixels)
  p.add_argument('--dtype', default='fp32', choices=['fp32', 'float32', 'bf16', 'bfloat16'])
  p.add_argument('--tile', type=_number(int, 1), help='restore overlapping tiles of this size instead of whole '
                 'images (not the official protocol; for images too large for memory)')
  p.add_argument('--overlap', type=_number(int, 0), help='overlap between tiles (default 32; with --tile)')
  p.add_argument('--json', help='also write the report (per-image scores, image-list hash) to this new JSON file')
  p.add_argument('--csv', help='also write per-image scores to this new CSV file')
  p.add_argument('--quiet', action='store_true', help='no per-image table, no progress: the summary lines only')
  p.set_defaults(func=_cmd_eval)

  p = sub.add_parser('restore', help='restore image files (tiled, batched over all local devices)')
  p.add_argument('inputs', nargs='+', help='image files, folders or globs (PNG, JPEG, TIFF, BMP, WebP)')
  p.add_argument('-o', '--output', required=True,
                 help='output folder, created when the first image is written (inputs are never overwritten)')
  p.add_argument('--model', help='preset name (see `jaxrestore presets`); optional with --weights to a '
                 'self-describing checkpoint')
  p.add_argument('--weights', help="checkpoint (.pth or converted folder); default: the preset's")
  p.add_argument('--tile', type=_number(int, 0, what=' (0 = whole image)'), default=256,
                 help='tile size in input pixels (default 256; 0 = whole image)')
  p.add_argument('--overlap', type=_number(int, 0), default=None, help='overlap between tiles (default 32)')
  p.add_argument('--batch-size', type=_number(int, 1), default=None,
                 help='tiles per step, spread over all devices (default: 1 per CPU, 8 per accelerator)')
  p.add_argument('--dtype', default=None, choices=['fp32', 'float32', 'bf16', 'bfloat16'],
                 help='compute dtype (default: float32; bfloat16 for pipelines such as dreamclear)')
  p.add_argument('--format', default='png', choices=['png', 'tif', 'tiff', 'bmp', 'webp', 'jpg', 'jpeg'],
                 help='output format (default png)')
  p.add_argument('--suffix', default='', help='appended to output file stems')
  p.add_argument('--max-pixels', **max_pixels)
  existing = p.add_mutually_exclusive_group()
  existing.add_argument('--overwrite', action='store_true', help='replace existing outputs')
  existing.add_argument('--skip-existing', action='store_true',
                        help='leave inputs whose output exists alone (resumes an interrupted batch)')
  p.add_argument('--quiet', action='store_true', help='errors only: no per-image lines, no progress')
  from jaxrestore.pipelines import PIPELINES
  for pipeline in PIPELINES.values():  # e.g. --weights-dir --prompt --steps --cfg --seed for dreamclear
    pipeline.add_arguments(p)
  p.set_defaults(func=_cmd_restore)

  p = sub.add_parser('bench', help='throughput and peak memory, JAX vs PyTorch, in one run')
  p.add_argument('--presets', default='swinir-color-dn15,swinir-lightweight-x2')
  p.add_argument('--sizes', type=_int_list, default=(128, 256), help='square input sizes, comma-separated')
  p.add_argument('--batches', type=_int_list, default=(1, 8), help='batch sizes, comma-separated')
  p.add_argument('--repeats', type=_number(int, 1), default=3)
  p.add_argument('--rounds', type=_number(int, 1), default=1,
                 help='fresh JAX and PyTorch processes alternate this many times; the median is reported')
  p.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16'])
  p.add_argument('--jax-only', action='store_true', help='skip the PyTorch rows')
  p.add_argument('--micro-batch', type=_number(int, 0), default=None,
                 help='JAX images per device per compiled step (0 = the whole batch in one step; default: 1 on CPU, '
                      '0 on accelerators), as restore and eval run them')
  p.add_argument('--compare-compile', action='store_true',
                 help='add a torch.compile (inductor) column, compiled in its own process (first call reported)')
  p.add_argument('--smoke', action='store_true', help='tiny sizes, one repeat: checks the pipeline only')
  p.add_argument('--official', action='append', metavar='NAME=DIR',
                 help="a checkout of the official code that is architecture NAME's PyTorch reference when it has "
                      'no pip package (e.g. hair=DIR, DIR a checkout of github.com/toummHus/HAIR); repeatable')
  p.add_argument('--json', help='also write the rows to this new JSON file')
  p.set_defaults(func=_cmd_bench)

  from jaxrestore.train.cli import add_train_parser
  add_train_parser(sub)

  p = sub.add_parser('demo', help='denoise the bundled image with the bundled DnCNN weights')
  p.add_argument('--out', default='demo_out', help='output folder (default: demo_out)')
  p.add_argument('--overwrite', action='store_true')
  p.set_defaults(func=_cmd_demo)
  return parser


def main(argv=None) -> int:
  from jaxrestore.imageio import OutputPathError
  args = build_parser().parse_args(argv)
  command = args.command
  try:
    return args.func(args)
  except UsageError as e:
    _error(command, e)
    return EXIT_USAGE
  except InputError as e:
    _error(command, e)
    return EXIT_FAILED
  except OutputPathError as e:
    _error(command, e)
    return EXIT_USAGE
  except KeyboardInterrupt:
    print(f'jaxrestore {command}: interrupted', file=sys.stderr)
    return EXIT_INTERRUPTED
  except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, TypeError) as e:
    _error(command, e)
    return EXIT_USAGE


if __name__ == '__main__':
  sys.exit(main())
