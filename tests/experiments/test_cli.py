"""The experiments' command line (python -m experiments) and the scripts."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import cli, command_line, reproduce

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((p.name for p in (ROOT / "experiments").glob("e[0-9]*_*.py")), key=lambda n: int(n[1:].split("_")[0]))


def test_list_shows_every_experiment(capsys):
  assert cli.main(["list"]) == 0
  lines = capsys.readouterr().out.splitlines()
  names = [line.split()[0] for line in lines]
  assert names == [script.split("_")[0] for script in SCRIPTS]  # every script on disk, in the order of N
  assert names[:9] == [f"e{i}" for i in range(1, 10)]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["run", "e2", "--help"], ["reproduce", "--help"]])
def test_help_everywhere(argv, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(argv)
  assert exit_.value.code == 0 and "usage: python -m experiments" in capsys.readouterr().out


def test_reproduce_help_names_every_part(capsys):
  with pytest.raises(SystemExit):
    cli.main(["reproduce", "--help"])
  out = " ".join(capsys.readouterr().out.split())
  for folder, experiment in reproduce.parts().items():
    assert f"{experiment.name} ({folder}/)" in out


def test_the_run_options_carry_fitoptions_names_and_the_old_flags_still_work(capsys):
  import dataclasses

  from experiments.e2_d2l_mlp import EXPERIMENT
  from jaxdrop.training import FitOptions

  parser = command_line.OneLineParser(prog="p")
  command_line.add_run_options(parser, EXPERIMENT)
  fit = {f.name for f in dataclasses.fields(FitOptions)}
  assert {"batch_invariant", "compiler_options", "path", "batch_size", "epochs"} <= fit & set(vars(parser.parse_args([])))
  new = vars(parser.parse_args(["--batch-invariant", "--compiler-options", "none"]))
  assert new["batch_invariant"] is True and new["compiler_options"] is None
  assert vars(parser.parse_args(["--batch-invariant-masks", "--no-tuned-xla"])) == new  # the old spellings, hidden
  assert parser.parse_args(["--tuned-xla"]).compiler_options == "auto"
  parser.print_help()
  shown = capsys.readouterr().out
  assert "--batch-invariant" in shown and "--compiler-options {auto,none}" in shown
  assert "tuned-xla" not in shown and "batch-invariant-masks" not in shown


def test_run_writes_its_folder_and_refuses_to_overwrite(tmp_path, capsys):
  out = tmp_path / "e3"
  argv = ["run", "e3", "--quiet", "--seeds", "1", "--epochs", "5", "--versions", "scratch", "--out", str(out)]
  assert cli.main(argv) == 0
  assert "wrote" in capsys.readouterr().out
  first = (out / "record.json").read_text()
  assert cli.main(argv) == 1
  assert "already holds a run" in capsys.readouterr().err
  assert (out / "record.json").read_text() == first  # untouched
  assert cli.main([*argv, "--overwrite"]) == 0


def test_offline_dataset_error_is_one_line(tmp_path, capsys, monkeypatch):
  from experiments import data

  monkeypatch.setattr(data, "network_reachable", lambda timeout=3.0: False)
  argv = ["run", "e1", "--dataset", "mnist", "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "o")]
  assert cli.main(argv) == 1
  err = capsys.readouterr().err
  assert "network is unreachable" in err and "--dataset digits" in err and len(err.strip().splitlines()) == 1
  assert json.loads((tmp_path / "o" / "record.json").read_text())["status"] == "failed"


def test_report_renders_every_part(small_records):
  _, records = small_records
  text = reproduce.render_report(records, 12.0, seeds=2)
  assert list(records) == list(reproduce.PARTS) and reproduce.PARTS[:6] == ("dropout", "e3", "e6", "e7", "e8", "e9")
  for folder, record in records.items():  # every part's section, and every figure it drew linked from it
    experiment = reproduce.parts()[folder]
    assert "\n".join(experiment.part.section(record, 2)) in text
    for figure in record["figures"]:
      assert f"]({folder}/{figure})" in text, (folder, figure)
  for needle in ("## E3", "13.1113", "| scratch | 0 |", "## Dropout against no dropout", "narrow", "## E7",
                 "| l1 |", "| l1_small |", "## E6", "| matconvnet |", "## E8", "| jaxdrop |", "| flax |", "## E9",
                 "| MC dropout |", "](e9/curves.png)", "half squared error", "collapses to chance",
                 "running mean over the epoch", "clipped to the metric's range"):
    assert needle in text, needle


def _results(record):
  """A record without what differs from run to run (times, dates, folders): every hash and metric."""
  if isinstance(record, dict):
    return {k: _results(v) for k, v in record.items() if k not in ("wall_time_s", "started_at", "out_dir")}
  if isinstance(record, list):
    return [_results(v) for v in record]
  return "nan" if isinstance(record, float) and record != record else record


def test_parts_in_worker_processes_give_the_in_process_records(small_records, tmp_path, capfd):
  # --jobs 2 (the CLI's default) runs parts in spawned processes: bitwise the same parameters and metrics as
  # the parts run in this process (the small_records fixture), and the report holds the parts run.
  _, records = small_records
  folders = ("e3", "e9")
  quick = {f: reproduce.parts()[f].part.quick for f in folders}
  report = reproduce.reproduce(tmp_path, seeds=2, jobs=2, folders=folders, options=quick)
  out = capfd.readouterr().out  # the workers print to the file descriptor they inherit
  assert "[e3] " in out and "[e9] " in out  # the workers' progress lines, each prefixed with its part
  for folder in folders:
    got = json.loads((tmp_path / folder / "record.json").read_text())
    assert _results(got) == _results(records[folder])
    assert '"param_sha256": "' in json.dumps(got)  # the comparison covers the parameters' hashes
  text = report.read_text()
  assert "## E3" in text and "## E9" in text and "## E8" not in text


STOPPED_SUITE = """
import sys
from experiments import reproduce, signals
with signals.stopping_gracefully():
  try:
    reproduce.reproduce(sys.argv[1], seeds=1, jobs=2, folders=("e6", "e7", "e9"))
  except KeyboardInterrupt as e:
    sys.exit(f"stopped: {type(e).__name__}: {e}")
"""


def test_a_sigterm_to_reproduce_alone_stops_its_workers_and_the_queued_part_never_starts(tmp_path):
  proc = subprocess.Popen([sys.executable, "-c", STOPPED_SUITE, str(tmp_path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  started = set()
  for line in proc.stdout:  # the workers' progress lines: both parts have started
    started |= {part for part in ("e6", "e7") if line.startswith(f"[{part}] ")}
    if started == {"e6", "e7"}:
      break
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 1 and "stopped: TrainingStopped: training stopped after step" in err, err
  for part in ("e6", "e7"):
    error = json.loads((tmp_path / part / "record.json").read_text())["error"]
    assert error.startswith("TrainingStopped on SIGTERM: training stopped after step"), error
  assert not (tmp_path / "e9").exists() and not (tmp_path / "report.md").exists()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"jobs": 0}, "jobs must be a positive integer, got 0"), ({"jobs": True}, "jobs must be a positive integer"),
    ({"folders": ("e3", "e99")}, r"folders: \['e99'\] are not parts of the suite; choose from"),
    ({"folders": ()}, "folders: choose at least one part"),
    ({"options": {"e3x": {}}}, r"options: \['e3x'\] are not parts of the suite"),
])
def test_reproduce_refuses_bad_jobs_and_folders(kwargs, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    reproduce.reproduce(tmp_path, **kwargs)
  assert list(tmp_path.iterdir()) == []


def test_reproduce_jobs_flag_is_checked_before_any_folder_is_made(tmp_path, capsys):
  assert cli.main(["reproduce", "--jobs", "0", "--out", str(tmp_path / "o")]) == 2
  assert "--jobs must be a positive integer, got 0" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_experiment_script_runs_on_its_own(script, tmp_path):
  """``python experiments/eN_*.py --help`` works from any folder: the script is ``run eN`` of the command."""
  name = script.split("_")[0]
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, str(ROOT / "experiments" / script), "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, check=True).stdout
  assert out.startswith(f"usage: python -m experiments run {name} ") and "--seed SEED" in out


def test_default_out_names_do_not_collide_and_sort_by_time(tmp_path, monkeypatch):
  import datetime
  import types

  monkeypatch.chdir(tmp_path)
  first = command_line.default_out("e3")
  assert first.parent == Path("runs") and first.name.startswith("e3-20") and first.name.endswith(f"-{os.getpid()}")

  class Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
      return datetime.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=tz)

  monkeypatch.setattr(command_line, "datetime", types.SimpleNamespace(datetime=Frozen, UTC=datetime.UTC))
  same = command_line.default_out("e3")
  assert same.name == f"e3-20300102-030405.678901-{os.getpid()}"
  monkeypatch.setattr(command_line.os, "getpid", lambda: 4242)  # another process started in the same microsecond
  assert command_line.default_out("e3").name == "e3-20300102-030405.678901-4242"
  (tmp_path / "runs" / "e3-20300102-030405.678901-4242").mkdir(parents=True)  # taken: the next name
  assert command_line.default_out("e3").name == "e3-20300102-030405.678901-4242-2"
  assert sorted([str(first), str(same)]) == [str(first), str(same)]  # later names sort later
