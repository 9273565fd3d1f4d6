"""Output folders: created, locked, marked; never taken over, overwritten or resumed by mistake."""

import json
import os
import subprocess
import sys

import pytest

from experiments.run_folder import LOCK_FILE, MARKER_FILE, open_run_folder
from jaxdrop.errors import ConfigError, OutputExistsError, OutputInUseError, OutputMismatchError


def test_a_new_folder_is_marked_and_a_used_one_is_never_reused_silently(tmp_path):
  with open_run_folder(tmp_path / "run", kind="e2", options={"lr": 0.1}) as folder:
    (folder.path / "record.json").write_text("{}")
  marker = json.loads((tmp_path / "run" / MARKER_FILE).read_text())
  assert marker["kind"] == "e2" and marker["options"] == {"lr": 0.1}
  with pytest.raises(OutputExistsError, match="--overwrite"):
    open_run_folder(tmp_path / "run", kind="e2")
  figures = ["curves.png", "../outside.png", "..", ".", "", "/etc/passwd", "link"]
  (tmp_path / "run" / "record.json").write_text(json.dumps({"figures": figures}))
  (tmp_path / "kept").mkdir()
  (tmp_path / "run" / "link").symlink_to(tmp_path / "kept")
  for name in ("curves.png", "notes.txt", "record-failed-20260101-000000.json"):
    (tmp_path / "run" / name).write_text("x")
  (tmp_path / "outside.png").write_text("x")
  open_run_folder(tmp_path / "run", kind="e2", overwrite=True).release()
  left = sorted(p.name for p in (tmp_path / "run").iterdir())
  assert left == sorted([LOCK_FILE, MARKER_FILE, "notes.txt"])  # the run's record, figure and failed record went
  assert (tmp_path / "outside.png").exists()  # a name in the record never reaches outside the folder
  assert (tmp_path / "kept").is_dir()  # a link is removed, never followed
  with pytest.raises(ConfigError, match="only one of them"):
    open_run_folder(tmp_path / "x", kind="e2", overwrite=True, resume=True)


def test_overwrite_refuses_a_folder_jaxdrop_did_not_write_and_deletes_nothing(tmp_path):
  mine = tmp_path / "thesis"
  (mine / "checkpoints").mkdir(parents=True)
  (mine / "checkpoints" / "model.pt").write_text("precious")
  for flags in (dict(overwrite=True), dict(resume=True), {}):
    with pytest.raises(OutputExistsError, match="did not write"):
      open_run_folder(mine, kind="e2", **flags)
  assert (mine / "checkpoints" / "model.pt").read_text() == "precious"
  assert sorted(p.name for p in mine.iterdir()) == ["checkpoints"]  # not even a lock file added


def test_resume_into_another_experiments_run_is_refused_naming_both(tmp_path):
  with open_run_folder(tmp_path / "run", kind="e2", options={"lr": 0.1}) as folder:
    (folder.path / "record.json").write_text("{}")
  with pytest.raises(OutputMismatchError, match="holds a run of e2, not e3"):
    open_run_folder(tmp_path / "run", kind="e3", options={"lr": 0.1}, resume=True)


def test_resume_with_other_options_names_them_before_anything_is_read(tmp_path):
  with open_run_folder(tmp_path / "run", kind="e2", options={"hidden": 256, "seeds": 2}) as folder:
    (folder.path / "record.json").write_text("{}")
  with pytest.raises(OutputMismatchError, match="--hidden: the run has 256, now 128; --seeds: the run has 2, now 3"):
    open_run_folder(tmp_path / "run", kind="e2", options={"hidden": 128, "seeds": 3}, resume=True)
  open_run_folder(tmp_path / "run", kind="e2", options={"hidden": 256, "seeds": 2}, resume=True).release()


def test_a_record_written_before_markers_counts_as_jaxdrops(tmp_path):
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "record.json").write_text(json.dumps({"experiment": "e3", "environment": {}}))
  with pytest.raises(OutputMismatchError, match="run of e3, not e2"):
    open_run_folder(tmp_path / "old", kind="e2", resume=True)
  open_run_folder(tmp_path / "old", kind="e3", resume=True).release()


def test_a_second_writer_is_refused_and_a_crashed_holder_does_not_block(tmp_path):
  first = open_run_folder(tmp_path / "run", kind="e2")
  assert f"pid {os.getpid()}" in (tmp_path / "run" / LOCK_FILE).read_text()
  code = ("import sys; from experiments.run_folder import open_run_folder\n"
          "try:\n  open_run_folder(sys.argv[1], kind='e2', resume=True)\n"
          "except Exception as e:\n  print(type(e).__name__, e)\n")
  other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
  assert "OutputInUseError" in other.stdout and f"pid {os.getpid()}" in other.stdout
  with pytest.raises(OutputInUseError, match="in use by another jaxdrop process"):
    open_run_folder(tmp_path / "run", kind="e2", resume=True)  # a second open file description: refused too
  first.release()
  # A holder killed with SIGKILL: the kernel drops its lock; the lock file left behind does not block.
  holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from experiments.run_folder import open_run_folder;"
                             " open_run_folder(sys.argv[1], kind='e2', resume=True); print('held', flush=True);"
                             " time.sleep(60)", str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(OutputInUseError):
    open_run_folder(tmp_path / "run", kind="e2", resume=True)
  holder.kill()
  holder.wait()
  holder.stdout.close()
  open_run_folder(tmp_path / "run", kind="e2", resume=True).release()


def test_abandon_leaves_the_folder_as_it_was(tmp_path):
  open_run_folder(tmp_path / "new", kind="e2").abandon()
  assert not (tmp_path / "new").exists()
  (tmp_path / "empty").mkdir()
  open_run_folder(tmp_path / "empty", kind="e2").abandon()
  assert list((tmp_path / "empty").iterdir()) == []


def test_a_run_that_failed_before_training_does_not_block_the_next_attempt(tmp_path):
  with open_run_folder(tmp_path / "run", kind="e1") as folder:
    (folder.path / "record.json").write_text(json.dumps({"experiment": "e1", "environment": {}, "status": "failed",
                                                         "runs": []}))
  open_run_folder(tmp_path / "run", kind="e1").release()


@pytest.mark.parametrize("target", ["file", "/dev/null"])
def test_a_file_is_not_a_folder(tmp_path, target):
  path = tmp_path / "file" if target == "file" else target
  if target == "file":
    path.write_text("x")
  with pytest.raises(ConfigError, match="is a file, not a folder"):
    open_run_folder(path, kind="e2")


def test_unwritable_output_folder_is_reported(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  with pytest.raises(PermissionError, match=f"cannot write to output folder {blocker / 'run'}"):
    open_run_folder(blocker / "run", kind="e2")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_folder(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  with pytest.raises(PermissionError, match="cannot write"):
    open_run_folder(ro / "run", kind="e2")


def test_resume_of_a_finished_run_without_checkpoints_is_refused_not_restarted(tmp_path):
  with open_run_folder(tmp_path / "run", kind="e2", options={}) as folder:
    (folder.path / "record.json").write_text(json.dumps({"experiment": "e2", "environment": {}, "status": "ok"}))
  with pytest.raises(OutputMismatchError, match="finished and kept no checkpoints"):
    open_run_folder(tmp_path / "run", kind="e2", options={}, resume=True)
  (tmp_path / "run" / "checkpoints").mkdir()  # with checkpoints, resume goes on (to the checkpoints' checks)
  open_run_folder(tmp_path / "run", kind="e2", options={}, resume=True).release()
