"""What every command line of the lab shares, and one experiment's own: ``python -m experiments run NAME``
and ``python experiments/eN_*.py`` (the same options, the same run).

* :class:`OneLineParser`, :func:`add_output_options`, :func:`check_backend`,
  :func:`default_out`, :func:`one_line_errors`: for every command (``python -m
  experiments``, ``python -m benchmarks.bench``).
* :func:`add_run_options` and :func:`run_one`: an experiment's options, read
  from its config dataclass (a field ``batch_size`` is ``--batch-size``, a
  boolean ``--x/--no-x``, a tuple takes several values), its output folder and
  its run; :func:`main` is a script's ``__main__``.

Errors a user can fix are one line: exit status 2 for bad usage
(:class:`~experiments.errors.ConfigError`), 1 for a failed run. The library's
errors name what to change by argument (:attr:`jaxdrop.errors.CheckpointError.fix`):
this layer adds the flags that change it (:func:`with_flag_hints`).
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
import types
import typing
from pathlib import Path

from experiments import signals
from experiments.config import RENAMED, config_values, flag, result_options, shown
from experiments.errors import ConfigError
from experiments.records import environment
from experiments.run_folder import open_run_folder
from experiments.runner import Experiment, run_recorded
from jaxdrop.errors import JaxdropError, TrainingStopped

__all__ = ["PROG", "OneLineParser", "add_output_options", "add_run_options", "check_backend", "default_out",
           "describe", "main", "one_line_errors", "run_one", "with_flag_hints"]

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


def _none_or(element: type):
  """argparse's ``type`` of a field whose choices hold ``None``: the word ``none`` is ``None``."""
  return lambda text: None if text == "none" else element(text)


def _add_config_options(parser: argparse.ArgumentParser, config_cls) -> None:
  defaults = config_cls()
  hints = typing.get_type_hints(config_cls)
  for f in dataclasses.fields(config_cls):
    element, is_tuple = _field_type(hints[f.name])
    default = getattr(defaults, f.name)
    help_text = f.metadata.get("help", "") + ("" if default is None else f" (default: {shown(default)})")
    kwargs = {"default": default, "help": help_text}
    if element is bool:
      kwargs["action"] = argparse.BooleanOptionalAction
    else:
      kwargs["type"] = element
      kwargs["metavar"] = f.name.upper()
      if is_tuple:
        kwargs["nargs"] = "+"
      choices = f.metadata.get("choices")
      if choices is not None and None in choices:  # spelled "none"; checked by Config.validate
        kwargs["type"], kwargs["metavar"] = _none_or(element), "{" + ",".join(map(shown, choices)) + "}"
      elif choices is not None:
        kwargs["choices"] = choices
        kwargs.pop("metavar")
    parser.add_argument(flag(f.name), dest=f.name, **kwargs)
  for old, (new, convert) in RENAMED.items():  # every renamed option so far was a boolean: --old / --no-old
    if new in hints:
      for spelling, value in ((flag(old), True), ("--no-" + flag(old)[2:], False)):
        parser.add_argument(spelling, dest=new, action="store_const", const=convert(value),
                            help=argparse.SUPPRESS)


def add_output_options(parser: argparse.ArgumentParser, default_hint: str) -> None:
  """``--out DIR``, ``--overwrite`` and ``--quiet``."""
  parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: {default_hint})")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace the contents of an existing output folder")
  parser.add_argument("--quiet", action="store_true", help="no progress bars and fewer messages")


def _add_process_options(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      "several processes (hosts)", "Run the same command on every host, each with its --process-id;"
      " --devices 0 then trains data-parallel over all of their devices. Only process 0 writes --out."
  )
  group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, for jax.distributed")
  group.add_argument("--num-processes", type=int, metavar="N",
                     help="number of processes (with --coordinator)")
  group.add_argument("--process-id", type=int, metavar="I",
                     help="this process's index, 0..N-1 (with --coordinator)")


def add_run_options(parser: argparse.ArgumentParser, experiment: Experiment) -> None:
  """An experiment's options (from its config), its output folder's and those of several processes."""
  _add_config_options(parser, experiment.config)
  add_output_options(parser, f"runs/{experiment.name}-<UTC time>")
  _add_process_options(parser)


def describe(experiment: Experiment) -> str:
  """The ``--help`` description of an experiment."""
  return f"{experiment.title}. Source: {experiment.source}."


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


def check_backend() -> None:
  """Starts JAX's backend before any folder is made: a platform that is not there is a one-line error."""
  import jax

  try:
    jax.devices()
  except RuntimeError as e:
    platforms = os.environ.get("JAX_PLATFORMS")
    hint = (f"JAX_PLATFORMS={platforms!r} asks for it; unset JAX_PLATFORMS" if platforms
            else "install its jaxlib plugin")
    raise ConfigError(f"JAX cannot start its backend ({str(e).splitlines()[0][:160]}); {hint}, or run on"
                      " a machine that has that device.") from None


def run_one(experiment: Experiment, args: argparse.Namespace) -> int:
  """Runs ``experiment`` with the options parsed by :func:`add_run_options` into its folder; returns the exit
  status."""
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
      run_recorded(experiment, scratch, emit=lambda line: None, quiet=True, **options)
    return 0
  folder = open_run_folder(args.out or default_out(experiment.name), kind=experiment.name,
                           options=result_options(config), overwrite=args.overwrite, resume=config.resume,
                           environment=environment())
  try:
    record = run_recorded(experiment, folder.path, emit=print, quiet=args.quiet, **options)
  except ConfigError:  # found before anything was computed: leave the folder as it was
    folder.abandon()
    raise
  finally:
    folder.release()
  figures = ", ".join(record["figures"])
  print(f"wrote {folder.path / 'record.json'} and {figures} ({record['wall_time_s']:.1f} s)")
  return 0


def main(experiment: Experiment, argv: list[str] | None = None) -> int:
  """A script's ``__main__``: ``python experiments/eN_*.py [options]`` is ``python -m experiments run eN
  [options]``. Returns the exit status."""
  parser = OneLineParser(prog=f"{PROG} run {experiment.name}", description=describe(experiment))
  add_run_options(parser, experiment)
  return one_line_errors(lambda args: run_one(experiment, args), parser.parse_args(argv))


def _disk_full(error: BaseException) -> bool:
  """Whether ``error`` (or an error it wraps, as orbax does) is ENOSPC."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    no_space = isinstance(error, OSError) and error.errno == errno.ENOSPC
    if no_space or "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


# What the library's errors name in their ``fix`` (jaxdrop.errors.CheckpointError), in this layer's flags.
_FIX_IN_FLAGS = {"resume": "without --resume", "directory": "in another --out"}


def with_flag_hints(error: BaseException) -> str:
  """The message of ``error``, and for a library error that names its fix by argument, the flags that make it.

  Example:
    >>> from jaxdrop.errors import CheckpointMismatchError
    >>> with_flag_hints(CheckpointMismatchError("trained 3 epochs.", fix=("epochs",), at_least=3))
    'trained 3 epochs. On the command line: rerun with --epochs 3 or more.'
  """
  fix = getattr(error, "fix", ())
  if not fix:
    return str(error)
  at_least = getattr(error, "at_least", None)
  words = [_FIX_IN_FLAGS.get(name) or (f"with {flag(name)} {at_least} or more" if at_least is not None
                                       else f"with another {flag(name)}") for name in fix]
  return f"{error} On the command line: rerun {', '.join(words)}."


def one_line_errors(command, args: argparse.Namespace) -> int:
  """Runs ``command(args)``; errors a user can fix become one line on stderr and an exit status.

  2: bad usage (:class:`~experiments.errors.ConfigError`); 1: a failed run (other jaxdrop errors, permissions,
  a full disk); 128 + the signal for Ctrl-C and SIGTERM: the first stops the run at the end of its current
  epoch or checkpoint interval, with that step's checkpoint if it keeps them, a second at once
  (:mod:`experiments.signals`); its record says so.
  """
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("jaxdrop").setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
  with signals.stopping_gracefully():
    try:
      status = command(args)
    except ConfigError as e:
      print(f"jaxdrop: error: {e}", file=sys.stderr)
      return 2
    except (JaxdropError, PermissionError) as e:
      print(f"jaxdrop: error: {with_flag_hints(e)}", file=sys.stderr)
      return 1
    except KeyboardInterrupt as e:
      signum = e.signum if isinstance(e, signals.Terminated) else signals.pending() or signal.SIGINT
      what = "interrupted" if signum == signal.SIGINT else "terminated"
      if isinstance(e, TrainingStopped):
        then = ("its checkpoint is saved, continue the run with --resume" if e.checkpointed
                else "it kept no checkpoints (--checkpoint-every N keeps them)")
        print(f"jaxdrop: {what} after step {e.step}: {then}; its record.json says so", file=sys.stderr)
      else:
        print(f"jaxdrop: {what} (the run's record.json says so; continue it with --resume if it saved"
              " checkpoints)", file=sys.stderr)
      return 128 + signum
    except Exception as e:
      if not _disk_full(e):
        raise
      out = getattr(args, "out", None) or "the output folder"
      print(f"jaxdrop: error: no space left on the device holding {out}; free some space and continue the run"
            " with --resume (its last complete checkpoint is kept).", file=sys.stderr)
      return 1
    if signals.requested():
      print(f"jaxdrop: {signals.pending().name} came after the last training step; the command finished",
            file=sys.stderr)
    return status
