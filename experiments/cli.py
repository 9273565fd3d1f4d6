"""The experiments' command line, ``python -m experiments``: ``list``, ``run NAME``, ``reproduce`` and
``replay``.

A thin layer over :mod:`experiments.registry` and :mod:`experiments.reproduce`:
options come from each experiment's config dataclass, errors a user can fix
are printed as one line (exit status 2 for bad usage, 1 for a failed run).
Each ``experiments/eN_*.py`` script is ``run eN`` of this command.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import errno
import logging
import os
import signal
import sys
import tempfile
import threading
import types
import typing
from pathlib import Path

from jaxdrop.errors import ConfigError, JaxdropError

__all__ = ["PROG", "OneLineParser", "add_output_options", "check_backend", "default_out", "main", "one_line_errors"]

PROG = "python -m experiments"


class OneLineParser(argparse.ArgumentParser):
  """Reports a usage error in one line, with where to look for help."""

  def error(self, message: str) -> typing.NoReturn:
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _field_type(annotation) -> tuple[type, bool]:
  """``(element type, is_tuple)`` of a config field's (resolved) annotation."""
  origin = typing.get_origin(annotation)
  if origin in (typing.Union, types.UnionType):
    annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    origin = typing.get_origin(annotation)
  if origin is tuple:
    return typing.get_args(annotation)[0], True
  return annotation, False


def _add_config_options(parser: argparse.ArgumentParser, config_cls) -> None:
  defaults = config_cls()
  hints = typing.get_type_hints(config_cls)
  for f in dataclasses.fields(config_cls):
    element, is_tuple = _field_type(hints[f.name])
    default = getattr(defaults, f.name)
    shown = " ".join(map(str, default)) if is_tuple else default
    help_text = f.metadata.get("help", "") + ("" if default is None else f" (default: {shown})")
    kwargs = {"default": default, "help": help_text}
    if element is bool:
      kwargs["action"] = argparse.BooleanOptionalAction
    else:
      kwargs["type"] = element
      kwargs["metavar"] = f.name.upper()
      if is_tuple:
        kwargs["nargs"] = "+"
      if "choices" in f.metadata:
        kwargs["choices"] = f.metadata["choices"]
        kwargs.pop("metavar")
    parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)


def add_output_options(parser: argparse.ArgumentParser, default_hint: str) -> None:
  parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: {default_hint})")
  parser.add_argument("--overwrite", action="store_true", help="replace the contents of an existing output folder")
  parser.add_argument("--quiet", action="store_true", help="no progress bars and fewer messages")


def _add_process_options(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      "several processes (hosts)", "Run the same command on every host, each with its --process-id; --devices 0"
      " then trains data-parallel over all of their devices. Only process 0 writes --out."
  )
  group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, for jax.distributed")
  group.add_argument("--num-processes", type=int, metavar="N", help="number of processes (with --coordinator)")
  group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1 (with --coordinator)")


def _start_distributed(args: argparse.Namespace) -> None:
  """``jax.distributed.initialize`` from ``--coordinator``, before anything touches a device."""
  given = [args.num_processes is not None, args.process_id is not None]
  if args.coordinator is None:
    if any(given):
      raise ConfigError("--num-processes and --process-id need --coordinator HOST:PORT.")
    return
  if not all(given):
    raise ConfigError("--coordinator needs --num-processes N and --process-id I as well.")
  if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
    raise ConfigError(f"--process-id must be in 0..{args.num_processes - 1} and --num-processes >= 1, got"
                      f" --process-id {args.process_id} --num-processes {args.num_processes}.")
  if args.checkpoint_every or args.resume:
    raise ConfigError("--checkpoint-every and --resume are not supported across several processes yet.")
  import jax

  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
  jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)


def build_parser() -> argparse.ArgumentParser:
  from experiments.registry import EXPERIMENTS

  parser = OneLineParser(
      prog=PROG,
      description="jaxdrop's experiments: the over-fitting tutorials (dropout, L1/L2 penalties, weight decay),"
      " reproduced in JAX.",
  )
  commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")
  commands.add_parser("list", help="list the experiments", description="List the experiments, one line each.")

  run = commands.add_parser("run", help="run one experiment", description=f"Run one experiment (see: {PROG} list).")
  names = run.add_subparsers(dest="name", required=True, parser_class=OneLineParser, metavar="NAME")
  for name, experiment in EXPERIMENTS.items():
    sub = names.add_parser(name, help=experiment.title, description=f"{experiment.title}. Source: {experiment.source}.")
    _add_config_options(sub, experiment.config)
    add_output_options(sub, f"runs/{name}-<UTC time>")
    _add_process_options(sub)

  reproduce = commands.add_parser(
      "reproduce", help="run the offline suite and write report.md",
      description="Run the offline reproduction suite (E3, dropout vs none on the digits over several seeds, E7,"
      " tutorial 002's small nets) and write report.md with every figure beside the source tutorial's.",
  )
  reproduce.add_argument("--seeds", type=int, default=5, help="seeds for the dropout comparison (default: 5)")
  add_output_options(reproduce, "runs/reproduce-<UTC time>")

  replay = commands.add_parser(
      "replay", help="run a recorded run again and compare its bits",
      description="Run the run recorded in RUN_DIR/record.json again (same experiment, options and seeds) and report"
      " whether every final parameter hash is bitwise the recorded one, and if not, the first epoch whose metrics"
      " differ, seed by seed. Refused under another environment (versions, PRNG settings, XLA flags, devices,"
      " the code's hash) unless --allow-env-change. Exit status 0: identical; 1: not.",
  )
  replay.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                      help="the folder of a finished run, or of reproduce (each of its parts is replayed)")
  replay.add_argument("--allow-env-change", action="store_true",
                      help="replay under another environment anyway, reporting the differences")
  add_output_options(replay, "runs/replay-<experiment>-<UTC time>")

  return parser


def default_out(name: str) -> Path:
  """``runs/<name>-<UTC time to the microsecond>-<process id>``: readable, sorted by time, and not taken.

  Two commands started in the same second (or microsecond) get different
  folders; a name already on disk (this process, twice in a microsecond) gets
  a ``-2``, ``-3`` ... suffix.
  """
  now = datetime.datetime.now(datetime.UTC)
  base = Path("runs") / f"{name}-{now:%Y%m%d-%H%M%S}.{now:%f}-{os.getpid()}"
  path, n = base, 1
  while path.exists() or path.is_symlink():
    n += 1
    path = base.with_name(f"{base.name}-{n}")
  return path


def _list() -> int:
  from experiments.registry import EXPERIMENTS

  for name, experiment in EXPERIMENTS.items():
    print(f"{name}  {experiment.title}  [{experiment.source}]")
  return 0


def check_backend() -> None:
  """Starts JAX's backend before any folder is made: a platform that is not there is a one-line error."""
  import jax

  try:
    jax.devices()
  except RuntimeError as e:
    platforms = os.environ.get("JAX_PLATFORMS")
    hint = f"JAX_PLATFORMS={platforms!r} asks for it; unset JAX_PLATFORMS" if platforms else "install its jaxlib plugin"
    raise ConfigError(f"JAX cannot start its backend ({str(e).splitlines()[0][:160]}); {hint}, or run on"
                      " a machine that has that device.") from None


def _run(args: argparse.Namespace) -> int:
  from experiments.config import config_values, result_options
  from experiments.records import environment
  from experiments.registry import get, run_experiment
  from experiments.run_folder import open_run_folder

  experiment = get(args.name)
  options = config_values({f.name: getattr(args, f.name) for f in dataclasses.fields(experiment.config)})
  config = experiment.config(**options)
  if config.resume and args.out is None:
    raise ConfigError("--resume needs --out DIR: the folder of the run to continue.")
  _start_distributed(args)  # before anything starts JAX's backend
  check_backend()
  config.validate()  # before creating the output folder
  import jax

  if jax.process_index() != 0:  # the other processes train their share and write nothing
    with tempfile.TemporaryDirectory(prefix=f"jaxdrop-process{jax.process_index()}-") as scratch:
      run_experiment(args.name, scratch, emit=lambda line: None, quiet=True, **options)
    return 0
  folder = open_run_folder(args.out or default_out(args.name), kind=args.name, options=result_options(config),
                           overwrite=args.overwrite, resume=config.resume, environment=environment())
  try:
    record = run_experiment(args.name, folder.path, emit=print, quiet=args.quiet, **options)
  except ConfigError:  # found before anything was computed: leave the folder as it was
    folder.abandon()
    raise
  finally:
    folder.release()
  print(f"wrote {folder.path / 'record.json'} and {', '.join(record['figures'])} ({record['wall_time_s']:.1f} s)")
  return 0


def _reproduce(args: argparse.Namespace) -> int:
  from experiments.reproduce import reproduce
  from experiments.run_folder import open_run_folder

  if args.seeds < 1:
    raise ConfigError(f"--seeds must be a positive integer, got {args.seeds}.")
  check_backend()
  with open_run_folder(args.out or default_out("reproduce"), kind="reproduce", options={"seeds": args.seeds},
                       overwrite=args.overwrite) as folder:
    report = reproduce(folder.path, seeds=args.seeds, emit=print, quiet=args.quiet)
  print(f"wrote {report}")
  return 0


def _replay(args: argparse.Namespace) -> int:
  from experiments.replay import check_parts, describe_replay, load_parts, replay
  from experiments.run_folder import open_run_folder

  # Everything checked before any folder is made: each record (its experiment among jaxdrop's), its
  # environment and its options.
  parts = load_parts(args.run_dir)
  check_backend()
  check_parts(parts, args.run_dir, allow_env_change=args.allow_env_change)
  out = args.out or default_out(f"replay-{parts[''].get('experiment') if '' in parts else 'reproduce'}")
  if Path(out).resolve() in {(args.run_dir / part).resolve() for part in parts}:  # the run, or one of its parts
    raise ConfigError(f"replay: --out {out} is the recorded run's own folder; the replay goes into another one (the"
                      " record it is compared with stays as it is).")
  folder = open_run_folder(out, kind="replay", options={"run_dir": str(args.run_dir.absolute())},
                           overwrite=args.overwrite)
  try:
    result = replay(args.run_dir, folder.path, allow_env_change=args.allow_env_change, quiet=args.quiet)
  except ConfigError:  # refused before anything ran: the folder is left as it was
    folder.abandon()
    raise
  finally:
    folder.release()
  for line in describe_replay(result):
    print(line)
  print(f"wrote {folder.path / 'replay.json'}")
  return 0 if result["identical"] else 1


class Terminated(KeyboardInterrupt):
  """SIGTERM, handled as Ctrl-C: the run stops, its record says so, its checkpoints stay."""

  def __init__(self, signum: int):
    super().__init__(f"stopped by signal {signal.Signals(signum).name}")
    self.signum = signum


def _raise_terminated(signum, frame):
  raise Terminated(signum)


def _disk_full(error: BaseException) -> bool:
  """Whether ``error`` (or an error it wraps, as orbax does) is ENOSPC."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def main(argv: list[str] | None = None) -> int:
  """Entry point of ``python -m experiments``; returns the exit status."""
  args = build_parser().parse_args(argv)
  commands = {"list": lambda args: _list(), "run": _run, "reproduce": _reproduce, "replay": _replay}
  return one_line_errors(commands[args.command], args)


def one_line_errors(command, args: argparse.Namespace) -> int:
  """Runs ``command(args)``; errors a user can fix become one line on stderr and an exit status.

  2: bad usage (:class:`~jaxdrop.errors.ConfigError`); 1: a failed run (other jaxdrop errors, permissions,
  a full disk); 128 + the signal for Ctrl-C and SIGTERM (handled as Ctrl-C, so the run's record says so).
  """
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("jaxdrop").setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
  in_main_thread = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
  try:
    return command(args)
  except ConfigError as e:
    print(f"jaxdrop: error: {e}", file=sys.stderr)
    return 2
  except (JaxdropError, PermissionError) as e:
    print(f"jaxdrop: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:
    signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
    print(f"jaxdrop: {'interrupted' if signum == signal.SIGINT else 'terminated'} (the run's record.json says so;"
          " continue it with --resume if it saved checkpoints)", file=sys.stderr)
    return 128 + signum
  except Exception as e:
    if not _disk_full(e):
      raise
    out = getattr(args, "out", None) or "the output folder"
    print(f"jaxdrop: error: no space left on the device holding {out}; free some space and continue the run with"
          " --resume (its last complete checkpoint is kept).", file=sys.stderr)
    return 1
  finally:
    if in_main_thread:
      signal.signal(signal.SIGTERM, previous)
