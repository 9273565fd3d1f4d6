"""Runs are never lost or misreported: resume with other options, a second writer, another experiment's
folder, a shrinking --epochs, SIGTERM and Ctrl-C, a full disk, a missing platform."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import cli
from experiments.run_folder import LOCK_FILE, MARKER_FILE, open_run_folder
from jaxdrop.training import Checkpoints

E2 = ["run", "e2", "--dataset", "digits", "--versions", "concise", "--hidden", "32", "--checkpoint-every", "4",
      "--quiet"]


def record(out):
  return json.loads((out / "record.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished 2-epoch E2 run with checkpoints (the folder is copied by tests that change it)."""
  out = tmp_path_factory.mktemp("finished") / "run"
  assert cli.main([*E2, "--epochs", "2", "--out", str(out)]) == 0
  return out


def copy_of(finished, tmp_path):
  shutil.copytree(finished, tmp_path / "run")
  return tmp_path / "run"


def test_resume_with_options_that_change_shapes_is_a_mismatch_that_keeps_every_checkpoint(finished, tmp_path, capsys):
  out = copy_of(finished, tmp_path)
  steps = Checkpoints(out / "checkpoints" / "concise").steps()
  for option, value, named in (("--hidden", "64", "--hidden: the run has 32, now 64"),
                               ("--seeds", "2", "--seeds: the run has 1, now 2")):
    assert cli.main([*E2, "--epochs", "2", "--out", str(out), "--resume", option, value]) == 2
    err = capsys.readouterr().err
    assert named in err and "corrupt" not in err and len(err.strip().splitlines()) == 1
  assert Checkpoints(out / "checkpoints" / "concise").steps() == steps
  assert not (out / "checkpoints" / "concise.corrupt").exists()
  assert cli.main([*E2, "--epochs", "2", "--out", str(out), "--resume"]) == 0  # the run's options: resumes
  assert record(out)["runs"][0]["execution"]["resumed_from_step"] == steps[-1]


def test_resume_into_another_experiments_folder_is_refused(finished, tmp_path, capsys):
  before = (finished / "record.json").read_text()
  assert cli.main(["run", "e3", "--quiet", "--resume", "--out", str(finished)]) == 2
  assert "holds a run of e2, not e3" in capsys.readouterr().err
  assert (finished / "record.json").read_text() == before


def test_a_finished_run_does_not_shrink_and_grows_to_the_truth(finished, tmp_path, capsys):
  out = copy_of(finished, tmp_path)
  before = (out / "record.json").read_text()
  assert cli.main([*E2, "--epochs", "1", "--out", str(out), "--resume"]) == 1
  err = capsys.readouterr().err
  assert "has trained 2 epochs, more than epochs=1: resume with epochs=2 or more" in err  # the library's terms
  assert "On the command line: rerun with --epochs 2 or more." in err and len(err.strip().splitlines()) == 1
  assert (out / "record.json").read_text() == before
  assert cli.main([*E2, "--epochs", "3", "--out", str(out), "--resume"]) == 0
  grown = record(out)
  assert grown["config"]["epochs"] == 3 and grown["runs"][0]["history"]["epoch"] == [1, 2, 3]
  assert cli.main([*E2, "--epochs", "3", "--out", str(tmp_path / "whole")]) == 0
  assert grown["runs"][0]["param_sha256"] == record(tmp_path / "whole")["runs"][0]["param_sha256"]


def test_a_second_writer_is_refused_in_one_line(finished, capsys):
  before = (finished / "record.json").read_text()
  with open_run_folder(finished, kind="e2", resume=True):  # as if a run were writing it
    assert cli.main([*E2, "--epochs", "2", "--out", str(finished), "--overwrite"]) == 1
  err = capsys.readouterr().err
  assert "is in use by another jaxdrop process (pid" in err and len(err.strip().splitlines()) == 1
  assert (finished / "record.json").read_text() == before


def test_a_folder_whose_checkpoints_were_all_corrupt_never_restarts_from_step_0(finished, tmp_path, capsys):
  out = copy_of(finished, tmp_path)
  ckpt = out / "checkpoints" / "concise"
  for step in Checkpoints(ckpt).steps():
    for meta in (ckpt / str(step) / "meta").iterdir():
      meta.write_text("{garbage")
  for _ in range(2):  # the second resume finds only the quarantined steps: still an error
    assert cli.main([*E2, "--epochs", "2", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "no readable checkpoint left" in err and "rerun without --resume, in another --out." in err
  assert not Checkpoints(ckpt).steps() and any((out / "checkpoints" / "concise.corrupt").iterdir())


def test_disk_full_is_one_line_and_keeps_the_last_checkpoint(finished, tmp_path, capsys, monkeypatch):
  def full(self, state, progress):
    try:
      raise OSError(28, "No space left on device")
    except OSError as e:
      raise ValueError("orbax: could not write the checkpoint") from e  # orbax wraps the OSError

  monkeypatch.setattr(Checkpoints, "save", full)
  out = tmp_path / "run"
  assert cli.main([*E2, "--epochs", "1", "--out", str(out)]) == 1
  err = capsys.readouterr().err
  assert "no space left on the device holding" in err and "--resume" in err and len(err.strip().splitlines()) == 1
  assert record(out)["status"] == "failed"


def test_a_platform_that_is_not_there_is_one_line_and_leaves_no_folder(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "gpu"}
  done = subprocess.run([sys.executable, "-m", "experiments", *E2, "--out", str(tmp_path / "run")], env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr
  assert "JAX cannot start its backend" in done.stderr and "unset JAX_PLATFORMS" in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.usefixtures("ctrl_c_as_in_a_terminal")
def test_a_signal_stops_the_run_at_a_step_with_its_checkpoint_and_the_run_resumes(tmp_path, signum):
  out = tmp_path / "run"
  argv = [sys.executable, "-m", "experiments", *E2, "--epochs", "100", "--out", str(out)]
  proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  ckpt = out / "checkpoints" / "concise"
  deadline = time.monotonic() + 120
  while not (ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())):
    assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
    time.sleep(0.02)
  proc.send_signal(signum)  # wherever the run is (compiling, saving): it stops at its next step boundary
  _, err = proc.communicate(timeout=60)
  what = "terminated" if signum == signal.SIGTERM else "interrupted"
  assert proc.returncode == 128 + signum and f"jaxdrop: {what} after step " in err and "Traceback" not in err, err
  step = int(re.search(r" after step (\d+): its checkpoint is saved", err)[1])
  assert Checkpoints(ckpt).steps()[-1] == step
  failed = record(out)
  assert failed["status"] == "failed" and "TrainingStopped" in failed["error"]
  assert signal.Signals(signum).name in failed["error"]
  resumed = subprocess.run([*argv[:-4], "--epochs", "3", "--out", str(out), "--resume"], capture_output=True,
                           text=True)
  assert resumed.returncode == 0, resumed.stderr
  assert f"resuming from the checkpoint at step {step}" in resumed.stdout


def tree(folder):
  """Every path below ``folder`` with its bytes (a link: what it points to), never following a link."""
  found = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      found[os.path.relpath(path, folder)] = (f"-> {os.readlink(path)}" if os.path.islink(path) else
                                              None if os.path.isdir(path) else Path(path).read_bytes())
  return found


def one_line(err):
  return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_linked_lock_is_never_written_through_by_run_resume_overwrite_or_replay(finished, tmp_path, capsys):
  out = copy_of(finished, tmp_path)
  precious = tmp_path / "precious.txt"
  precious.write_bytes(b"the thesis\n")
  (out / LOCK_FILE).unlink()
  (out / LOCK_FILE).symlink_to(precious)
  before = tree(out)
  for flags in ([], ["--resume"], ["--overwrite"]):
    assert cli.main([*E2, "--epochs", "2", "--out", str(out), *flags]) == 1
    err = capsys.readouterr().err
    assert "is a symbolic link to" in err and "remove it" in err and one_line(err)
  (tmp_path / "replayed").mkdir()
  (tmp_path / "replayed" / LOCK_FILE).symlink_to(precious)
  assert cli.main(["replay", str(finished), "--out", str(tmp_path / "replayed"), "--quiet"]) == 1
  err = capsys.readouterr().err
  assert "is a symbolic link to" in err and one_line(err)
  assert precious.read_bytes() == b"the thesis\n" and tree(out) == before
  assert sorted(os.listdir(tmp_path / "replayed")) == [LOCK_FILE]


def test_a_nested_run_is_refused_and_one_made_before_survives_overwrite(finished, tmp_path, capsys, caplog):
  out = copy_of(finished, tmp_path)
  assert cli.main([*E2, "--epochs", "2", "--out", str(out / "checkpoints" / "inner")]) == 1
  err = capsys.readouterr().err
  assert f"is inside the run folder {out}" in err and one_line(err)
  assert not (out / "checkpoints" / "inner").exists()
  shutil.copytree(finished, out / "checkpoints" / "inner")  # as a run nested before the check could be
  inner = tree(out / "checkpoints" / "inner")
  old_record = (out / "record.json").read_bytes()
  with caplog.at_level(logging.WARNING, logger="jaxdrop"):
    assert cli.main([*E2, "--epochs", "2", "--out", str(out), "--overwrite"]) == 0
  assert tree(out / "checkpoints" / "inner") == inner  # marker, lock, record, checkpoints: byte for byte
  assert "checkpoints/inner (another run's folder)" in caplog.text
  assert (out / "record.json").read_bytes() != old_record and record(out)["status"] == "ok"


@pytest.mark.parametrize("marker", ["[]", '{"kind": "e2", "options": "abc"}',
                                    '{"kind": "e2", "environment": 3}', "[" * 100_000 + "]" * 100_000])
def test_a_damaged_marker_is_one_line_naming_it(finished, tmp_path, capsys, marker):
  out = copy_of(finished, tmp_path)
  (out / MARKER_FILE).write_text(marker)
  before = tree(out)
  for flags in ([], ["--resume"], ["--overwrite"]):
    assert cli.main([*E2, "--epochs", "2", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert f"the marker {out / MARKER_FILE}" in err and "choose another --out" in err and one_line(err)
  assert tree(out) == before


def test_an_out_name_too_long_is_one_line_naming_out(tmp_path, capsys):
  assert cli.main([*E2, "--epochs", "1", "--out", str(tmp_path / ("x" * 300) / "run")]) == 2
  err = capsys.readouterr().err
  assert "--out" in err and "longer than the file system allows" in err and one_line(err)
  assert list(tmp_path.iterdir()) == []


def test_a_file_where_a_checkpoint_folder_belongs_is_one_line_and_stays(finished, tmp_path, capsys):
  out = copy_of(finished, tmp_path)
  shutil.rmtree(out / "checkpoints" / "concise")
  (out / "checkpoints" / "concise").write_text("someone's file")
  assert cli.main([*E2, "--epochs", "2", "--out", str(out), "--resume"]) == 1
  err = capsys.readouterr().err
  assert "concise is a file, not a folder" in err and "rerun in another --out." in err and one_line(err)
  assert (out / "checkpoints" / "concise").read_text() == "someone's file"


def test_a_corrupt_step_is_moved_aside_past_a_file_in_the_way_and_the_run_resumes(finished, tmp_path, capsys):
  from tests.jaxdrop.training.test_checkpoints import corrupt_arrays

  out = copy_of(finished, tmp_path)
  ckpt = out / "checkpoints" / "concise"
  last = Checkpoints(ckpt).steps()[-1]
  corrupt_arrays(ckpt / str(last))
  (out / "checkpoints" / "concise.corrupt").write_text("someone's file")
  assert cli.main([*E2, "--epochs", "2", "--out", str(out), "--resume"]) == 0
  err = capsys.readouterr().err
  assert "Traceback" not in err and "Event loop is closed" not in err
  assert (out / "checkpoints" / "concise.corrupt").read_text() == "someone's file"
  assert (out / "checkpoints" / "concise.corrupt-1" / str(last) / "state").is_dir()
  assert record(out)["runs"][0]["param_sha256"] == record(finished)["runs"][0]["param_sha256"]
