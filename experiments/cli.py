"""The experiments' command line, ``python -m experiments``: ``list``, ``run NAME``, ``reproduce`` and
``replay``.

The top of the house: a dispatcher over :mod:`experiments.registry`,
:mod:`experiments.reproduce` and :mod:`experiments.replay`. ``run NAME`` is
:mod:`experiments.command_line`'s (the same options and run as
``python experiments/eN_*.py``); errors a user can fix are printed as one line
(exit status 2 for bad usage, 1 for a failed run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.command_line import (
    PROG,
    OneLineParser,
    add_output_options,
    add_run_options,
    check_backend,
    default_out,
    describe,
    one_line_errors,
    run_one,
)
from experiments.errors import ConfigError
from experiments.registry import EXPERIMENTS, get
from experiments.replay import check_parts, describe_replay, load_parts, replay
from experiments.reproduce import PARTS, parts, reproduce
from experiments.run_folder import open_run_folder

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
  parser = OneLineParser(
      prog=PROG,
      description="jaxdrop's experiments: the over-fitting tutorials (dropout, L1/L2 penalties, weight"
      " decay), reproduced in JAX.",
  )
  commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser,
                                   metavar="COMMAND")
  commands.add_parser("list", help="list the experiments", description="List the experiments, one line each.")

  run = commands.add_parser("run", help="run one experiment",
                            description=f"Run one experiment (see: {PROG} list).")
  names = run.add_subparsers(dest="name", required=True, parser_class=OneLineParser, metavar="NAME")
  for name, experiment in EXPERIMENTS.items():
    sub = names.add_parser(name, help=experiment.title, description=describe(experiment))
    add_run_options(sub, experiment)

  suite = ", ".join(f"{e.name} ({folder}/)" for folder, e in parts().items())
  reproduce_ = commands.add_parser(
      "reproduce", help="run the offline suite and write report.md",
      description=f"Run the offline reproduction suite ({suite}) and write report.md: each experiment's"
      " numbers beside the source tutorial's where it gives any, what they show, and every figure.",
  )
  reproduce_.add_argument("--seeds", type=int, default=5,
                          help="seeds of the dropout comparison, of E3 and of E9 (default: 5)")
  reproduce_.add_argument("--jobs", type=int, default=2, metavar="N",
                          help="parts run at once, each in its own process (default: 2; 1: one after another"
                          " in this process); the results are the same")
  add_output_options(reproduce_, "runs/reproduce-<UTC time>")

  replay_ = commands.add_parser(
      "replay", help="run a recorded run again and compare its bits",
      description="Run the run recorded in RUN_DIR/record.json again (same experiment, options and seeds) and"
      " report whether every final parameter hash is bitwise the recorded one, and if not, the first epoch"
      " whose metrics differ, seed by seed. Refused under another environment (versions, PRNG settings, XLA"
      " flags, devices, the code's hash) unless --allow-env-change. Exit status 0: identical; 1: not.",
  )
  replay_.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                       help="the folder of a finished run, or of reproduce (each of its parts is replayed)")
  replay_.add_argument("--allow-env-change", action="store_true",
                       help="replay under another environment anyway, reporting the differences")
  add_output_options(replay_, "runs/replay-<experiment>-<UTC time>")

  return parser


def _list(args: argparse.Namespace) -> int:
  for name, experiment in EXPERIMENTS.items():
    print(f"{name}  {experiment.title}  [{experiment.source}]")
  return 0


def _run(args: argparse.Namespace) -> int:
  return run_one(get(args.name), args)


def _reproduce(args: argparse.Namespace) -> int:
  if args.seeds < 1:
    raise ConfigError(f"--seeds must be a positive integer, got {args.seeds}.")
  if args.jobs < 1:
    raise ConfigError(f"--jobs must be a positive integer, got {args.jobs}.")
  check_backend()
  with open_run_folder(args.out or default_out("reproduce"), kind="reproduce", options={"seeds": args.seeds},
                       overwrite=args.overwrite, parts=PARTS) as folder:
    report = reproduce(folder.path, seeds=args.seeds, emit=print, quiet=args.quiet, jobs=args.jobs)
  print(f"wrote {report}")
  return 0


def _replay(args: argparse.Namespace) -> int:
  # Everything checked before any folder is made: each record (its experiment among jaxdrop's), its
  # environment and its options.
  parts_ = load_parts(args.run_dir)
  check_backend()
  check_parts(parts_, args.run_dir, allow_env_change=args.allow_env_change)
  out = args.out or default_out(f"replay-{parts_[''].get('experiment') if '' in parts_ else 'reproduce'}")
  if Path(out).resolve() in {(args.run_dir / part).resolve() for part in parts_}:  # the run, or a part of it
    raise ConfigError(f"replay: --out {out} is the recorded run's own folder; the replay goes into another"
                      " one (the record it is compared with stays as it is).")
  # A replay of a reproduce folder writes its parts' folders (and --overwrite of an earlier one clears them).
  folder = open_run_folder(out, kind="replay", options={"run_dir": str(args.run_dir.absolute())},
                           overwrite=args.overwrite, parts=PARTS)
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


def main(argv: list[str] | None = None) -> int:
  """Entry point of ``python -m experiments``; returns the exit status."""
  args = build_parser().parse_args(argv)
  commands = {"list": _list, "run": _run, "reproduce": _reproduce, "replay": _replay}
  return one_line_errors(commands[args.command], args)
