"""Output folders: created, locked, marked; never taken over, overwritten or resumed by mistake."""

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.errors import ConfigError, OutputExistsError, OutputInUseError, OutputMismatchError
from experiments.reproduce import PARTS
from experiments.run_folder import LOCK_FILE, MARKER_FILE, open_run_folder


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
  assert left == sorted([LOCK_FILE, MARKER_FILE, "link", "notes.txt"])  # its record, figure, failed record went
  assert (tmp_path / "outside.png").exists()  # a name in the record never reaches outside the folder
  assert (tmp_path / "kept").is_dir()  # a link the run did not write stays, and is never followed
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


def a_run(folder, kind="e2", record=None):
  """A finished run's folder (marker, lock, record) as open_run_folder leaves it."""
  with open_run_folder(folder, kind=kind, options={}) as opened:
    (opened.path / "record.json").write_text(json.dumps(record or {"experiment": kind, "status": "running"}))
  return folder


def tree(folder):
  """Every path below ``folder`` with its bytes (a link: what it points to), never following a link."""
  found = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      found[os.path.relpath(path, folder)] = (f"-> {os.readlink(path)}" if os.path.islink(path) else
                                              None if os.path.isdir(path) else Path(path).read_bytes())
  return found


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}, {"resume": True}])
def test_a_linked_lock_is_never_written_through(tmp_path, flags):
  run = a_run(tmp_path / "run")
  precious = tmp_path / "precious.txt"
  precious.write_bytes(b"the thesis\n")
  (run / LOCK_FILE).unlink()
  (run / LOCK_FILE).symlink_to(precious)
  before = tree(run)
  linked = f"lock file .* is a symbolic link to {precious}, not jaxdrop's lock; remove it"
  with pytest.raises(OutputExistsError, match=linked):
    open_run_folder(run, kind="e2", options={}, **flags)
  assert precious.read_bytes() == b"the thesis\n" and tree(run) == before  # refused: nothing written anywhere
  (run / LOCK_FILE).unlink()  # what the message says
  open_run_folder(run, kind="e2", options={}, **flags, **({} if flags else {"overwrite": True})).release()
  assert precious.read_bytes() == b"the thesis\n"  # and the accepted run wrote its own lock
  assert not (run / LOCK_FILE).is_symlink() and "pid" in (run / LOCK_FILE).read_text()


def test_a_lock_that_is_a_hard_link_a_dangling_link_a_folder_or_a_fifo_is_refused(tmp_path):
  run = a_run(tmp_path / "run")
  precious = tmp_path / "precious.txt"
  precious.write_bytes(b"the thesis\n")
  (run / LOCK_FILE).unlink()
  os.link(precious, run / LOCK_FILE)
  with pytest.raises(OutputExistsError, match="has 1 other name"):
    open_run_folder(run, kind="e2", overwrite=True)
  assert precious.read_bytes() == b"the thesis\n"
  (run / LOCK_FILE).unlink()
  (run / LOCK_FILE).symlink_to(tmp_path / "made-by-the-lock")  # O_CREAT would have created the link's target
  with pytest.raises(OutputExistsError, match="symbolic link"):
    open_run_folder(run, kind="e2", overwrite=True)
  assert not (tmp_path / "made-by-the-lock").exists()
  (run / LOCK_FILE).unlink()
  (run / LOCK_FILE).mkdir()
  with pytest.raises(OutputExistsError, match="is a folder, not jaxdrop's lock"):
    open_run_folder(run, kind="e2", overwrite=True)
  (run / LOCK_FILE).rmdir()
  os.mkfifo(run / LOCK_FILE)  # never blocks, never read
  with pytest.raises(OutputExistsError, match="is a special file"):
    open_run_folder(run, kind="e2", overwrite=True)
  assert json.loads((run / "record.json").read_text())["status"] == "running"  # refused each time, unchanged


def test_the_marker_is_never_read_or_written_through_a_link_and_the_probe_takes_a_fresh_name(tmp_path):
  run = a_run(tmp_path / "run")
  elsewhere = a_run(tmp_path / "elsewhere", kind="e3")
  marker_bytes = (elsewhere / MARKER_FILE).read_bytes()
  (run / MARKER_FILE).unlink()
  (run / MARKER_FILE).symlink_to(elsewhere / MARKER_FILE)
  for flags in ({}, {"overwrite": True}, {"resume": True}):
    with pytest.raises(OutputMismatchError, match=f"marker {run / MARKER_FILE} is damaged \\(it is a symbolic"):
      open_run_folder(run, kind="e3", **flags)
  assert (elsewhere / MARKER_FILE).read_bytes() == marker_bytes
  (run / MARKER_FILE).unlink()
  precious = tmp_path / "precious.txt"
  precious.write_bytes(b"the thesis\n")
  (tmp_path / "new").mkdir()
  (tmp_path / "new" / ".write-test").symlink_to(precious)  # the probe's old name: no longer opened at all
  open_run_folder(tmp_path / "new", kind="e2").release()
  assert precious.read_bytes() == b"the thesis\n"
  assert not [p for p in (tmp_path / "new").iterdir() if p.name.startswith(".write-test-")]  # the probe went


def test_write_json_replaces_a_link_and_leaves_its_target(tmp_path):
  from experiments.records import write_json

  precious = tmp_path / "precious.txt"
  precious.write_bytes(b"the thesis\n")
  (tmp_path / "record.json").symlink_to(precious)
  write_json(tmp_path / "record.json", {"a": 1})  # the marker and the records are written this way
  assert precious.read_bytes() == b"the thesis\n"
  assert not (tmp_path / "record.json").is_symlink()
  assert json.loads((tmp_path / "record.json").read_text()) == {"a": 1}


def test_a_linked_record_is_not_a_run_and_is_removed_not_followed(tmp_path):
  other = a_run(tmp_path / "other", kind="e3", record={"experiment": "e3", "environment": {}, "status": "ok"})
  record_bytes = (other / "record.json").read_bytes()
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "record.json").symlink_to(other / "record.json")  # a record counts only as a file
  (tmp_path / "mine" / "curves.png").write_bytes(b"my own figure")
  with pytest.raises(OutputExistsError, match="did not write"):
    open_run_folder(tmp_path / "mine", kind="e3", overwrite=True)
  assert (tmp_path / "mine" / "curves.png").read_bytes() == b"my own figure"
  run = a_run(tmp_path / "run")
  (run / "record.json").unlink()
  (run / "record.json").symlink_to(other / "record.json")
  with pytest.raises(OutputExistsError, match="record.json is a symbolic link .*would write through it; remove"):
    open_run_folder(run, kind="e2", options={}, resume=True)
  open_run_folder(run, kind="e2", overwrite=True).release()
  assert not (run / "record.json").exists() and (other / "record.json").read_bytes() == record_bytes


def test_a_folder_where_the_run_writes_a_file_is_refused_before_anything_goes(tmp_path):
  run = a_run(tmp_path / "run")
  (run / "curves.png").mkdir()
  (run / "curves.png" / "mine.txt").write_text("x")
  for flags in ({"overwrite": True}, {"resume": True}):
    with pytest.raises(OutputExistsError, match="curves.png is a folder, where the run writes a file"):
      open_run_folder(run, kind="e2", options={}, **flags)
  assert (run / "record.json").exists() and (run / "curves.png" / "mine.txt").exists()


def test_a_linked_run_folder_is_the_folder_it_names(tmp_path):
  (tmp_path / "disk").mkdir()
  (tmp_path / "runs").symlink_to(tmp_path / "disk")  # runs/ on a bigger disk: the user's layout
  with open_run_folder(tmp_path / "runs" / "e2", kind="e2") as folder:
    assert (tmp_path / "disk" / "e2" / MARKER_FILE).is_file()
    with pytest.raises(OutputInUseError):  # the same folder under its other name: the same lock
      open_run_folder(tmp_path / "disk" / "e2", kind="e2", resume=True)
    (folder.path / "record.json").write_text("{}")
  (tmp_path / "link").symlink_to(tmp_path / "disk" / "e2")
  open_run_folder(tmp_path / "link", kind="e2", overwrite=True).release()
  assert (tmp_path / "link").is_symlink() and not (tmp_path / "disk" / "e2" / "record.json").exists()
  (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match="is a symbolic link to .*nowhere, which does not exist"):
    open_run_folder(tmp_path / "dangling", kind="e2")
  assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("inside", ["checkpoints/inner", "a/b/c", "via-link"])
def test_a_run_inside_another_runs_folder_is_refused_naming_it(tmp_path, inside):
  outer = a_run(tmp_path / "A")
  (outer / "checkpoints").mkdir()
  (tmp_path / "via-link").symlink_to(outer / "checkpoints")
  path = tmp_path / "via-link" / "inner" if inside == "via-link" else outer / inside
  before = tree(outer)
  with pytest.raises(OutputExistsError, match=f"is inside the run folder {outer} .*an --out outside it"):
    open_run_folder(path, kind="e2")
  assert tree(outer) == before  # nothing made
  open_run_folder(outer / "checkpoints" / "..", kind="e2", resume=True).release()  # the run's own folder


def test_overwrite_keeps_another_run_nested_inside_and_its_lock_stays_held(tmp_path, caplog):
  outer = tmp_path / "A"
  inner = outer / "checkpoints" / "inner"
  deeper = outer / "checkpoints" / "concise" / "12" / "inner"
  held = open_run_folder(inner, kind="e3")  # running: made before A was a run (as before this check existed)
  a_run(deeper, kind="e3")
  (inner / "record.json").write_text("{}")
  for step in ("8", "12"):
    (outer / "checkpoints" / "concise" / step / "state").mkdir(parents=True, exist_ok=True)
    (outer / "checkpoints" / "concise" / step / "state" / "data").write_bytes(b"arrays")
  (outer / MARKER_FILE).write_text(json.dumps({"kind": "e2", "options": {}}))
  (outer / "record.json").write_text(json.dumps({"experiment": "e2", "figures": ["checkpoints"]}))
  inner_before, deeper_before = tree(inner), tree(deeper)
  with caplog.at_level("WARNING", logger="jaxdrop"):
    folder = open_run_folder(outer, kind="e2", overwrite=True)
  folder.release()
  assert tree(inner) == inner_before and tree(deeper) == deeper_before  # marker, lock, record: all there
  assert not (outer / "checkpoints" / "concise" / "8").exists()  # the old run's own step went
  assert os.listdir(outer / "checkpoints" / "concise" / "12") == ["inner"]  # its files went, the run stayed
  assert folder.kept == ["checkpoints/concise/12/inner (another run's folder)",
                         "checkpoints/inner (another run's folder)"]
  assert "--overwrite kept" in caplog.text and "checkpoints/inner (another run's folder)" in caplog.text
  with open(inner / LOCK_FILE) as lock, pytest.raises(BlockingIOError):  # still held: the same lock file
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  held.release()


def test_overwrite_removes_only_the_runs_own_files_whatever_the_record_lists(tmp_path):
  run = a_run(tmp_path / "run")
  outside = tmp_path / "outside"
  outside.mkdir()
  (outside / "data.csv").write_text("precious")
  (run / "mydata").mkdir()
  (run / "mydata" / "keep.txt").write_text("mine")
  (run / "link").symlink_to(outside)
  (run / "losses.png").symlink_to(outside / "data.csv")  # a link at a figure's name: removed, never followed
  for name in ("curves.png", "replay.json", "record-failed-20260101-000000.json", ".record.json.abc_123.tmp",
               ".write-test-abcd1234", "notes.png"):
    (run / name).write_text("x")
  ckpt = run / "checkpoints"
  for step_file in ("concise/21/state/d/abc", "concise/20/meta/metadata",
                    "concise/22.orbax-checkpoint-tmp-17/x", "concise.corrupt/21/state/d/abc",
                    "concise.corrupt/21-1/x"):
    (ckpt / step_file).parent.mkdir(parents=True, exist_ok=True)
    (ckpt / step_file).write_text("x")
  (ckpt / "concise" / "notes.txt").write_text("mine")
  (ckpt / "concise" / "20" / "link").symlink_to(outside)
  (ckpt / "elsewhere").symlink_to(outside)
  (ckpt / "readme.txt").write_text("mine")
  figures = ["checkpoints", LOCK_FILE, MARKER_FILE, "..", ".", "mydata", "link", "notes.png", "../outside"]
  (run / "record.json").write_text(json.dumps({"experiment": "e2", "status": "ok", "figures": figures}))
  with open_run_folder(run, kind="e2", overwrite=True) as folder:
    left = [LOCK_FILE, MARKER_FILE, "checkpoints", "link", "mydata", "notes.png"]
    assert sorted(os.listdir(run)) == sorted(left)
    assert sorted(tree(ckpt)) == ["concise", "concise/notes.txt", "readme.txt"]
    assert tree(run / "mydata") == {"keep.txt": b"mine"} and tree(outside) == {"data.csv": b"precious"}
    assert sorted(folder.kept) == ["checkpoints/concise/notes.txt", "checkpoints/readme.txt"]
    with pytest.raises(OutputInUseError):  # its lock was never unlinked: a second writer stays out
      open_run_folder(run, kind="e2", overwrite=True)
  assert json.loads((run / MARKER_FILE).read_text())["kind"] == "e2"


@pytest.mark.parametrize("kind", ["reproduce", "replay"])  # a replay of a reproduce folder has the same parts
def test_overwrite_of_a_reproduce_folder_clears_its_parts_and_keeps_the_rest(tmp_path, kind):
  run = a_run(tmp_path / "suite", kind=kind)
  (run / "record.json").unlink()
  (run / ("report.md" if kind == "reproduce" else "replay.json")).write_text("# report")
  for part, figure in (("e3", "losses.png"), ("dropout", "curves.png"), ("e9", "reliability.png")):
    (run / part).mkdir()
    (run / part / "record.json").write_text("{}")
    (run / part / figure).write_text("png")
    (run / part / "replay.json").write_text("{}")
  (run / "e3" / "notes.txt").write_text("mine")
  (run / "mine").mkdir()
  (run / "mine" / "record.json").write_text("{}")  # not one of reproduce's parts: not the run's
  folder = open_run_folder(run, kind=kind, overwrite=True, parts=PARTS)  # the caller names the parts it writes
  folder.release()
  assert sorted(os.listdir(run)) == sorted([LOCK_FILE, MARKER_FILE, "e3", "mine"])
  assert os.listdir(run / "e3") == ["notes.txt"] and folder.kept == ["e3/notes.txt"]
  assert (run / "mine" / "record.json").exists()
  assert json.loads((run / MARKER_FILE).read_text())["parts"] == sorted(PARTS)


def test_the_marker_keeps_the_parts_so_any_later_overwrite_clears_them(tmp_path):
  with open_run_folder(tmp_path / "suite", kind="reproduce", parts=["e3"]) as folder:
    (folder.path / "e3").mkdir()
    (folder.path / "e3" / "record.json").write_text("{}")
    (folder.path / "report.md").write_text("# report")
  with open_run_folder(tmp_path / "suite", kind="e2", overwrite=True) as folder:  # names no parts of its own
    assert sorted(os.listdir(folder.path)) == sorted([LOCK_FILE, MARKER_FILE])


def test_every_file_a_run_writes_is_one_overwrite_removes():
  from experiments.run_folder import RUN_FILES

  root = Path(__file__).parents[2]
  sources = [*root.glob("experiments/*.py"), root / "benchmarks" / "bench.py"]
  written = {name for source in sources
             for name in re.findall(r"""["']([A-Za-z0-9_.-]+\.(?:png|md|json))["']""", source.read_text())}
  written -= {MARKER_FILE, "dataset_info.json"}  # the control file; a data set's file, not a run's
  assert written <= RUN_FILES | {"record-failed-.json"}, written - RUN_FILES


@pytest.mark.parametrize("marker", ["[]", '{"kind": "e2", "options": "abc"}',
                                    '{"kind": "e2", "environment": "abc"}', '{"kind": 3}', '{"options": {}}',
                                    '{"kind": "reproduce", "parts": "e3"}', '{"kind": "reproduce", "parts": [3]}',
                                    "[" * 100_000 + "]" * 100_000, "{garbage"])
def test_a_damaged_marker_is_one_line_naming_it_and_nothing_is_changed(tmp_path, marker):
  run = a_run(tmp_path / "run")
  (run / MARKER_FILE).write_text(marker)
  before = tree(run)
  for flags in ({}, {"overwrite": True}, {"resume": True}):
    with pytest.raises(OutputMismatchError, match=f"marker {run / MARKER_FILE} (is damaged|cannot be)") as e:
      open_run_folder(run, kind="e2", options={}, environment={"jax": "0"}, **flags)
    assert "\n" not in str(e.value) and "choose another --out" in str(e.value) and len(str(e.value)) < 400
  assert tree(run) == before


@pytest.mark.parametrize("where", ["last", "middle"])
def test_a_name_too_long_for_the_file_system_is_one_line_naming_out(tmp_path, where):
  path = tmp_path / ("x" * 300) if where == "last" else tmp_path / ("x" * 300) / "run"
  with pytest.raises(ConfigError, match="--out .* is longer than the file system allows .*a shorter --out"):
    open_run_folder(path, kind="e2")
  assert list(tmp_path.iterdir()) == []
