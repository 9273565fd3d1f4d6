"""Crash safety: orbax checkpoints, resume after SIGKILL, corrupt checkpoints, NaN losses."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import training
from jaxdrop.training import CheckpointError, CheckpointMismatchError, Checkpoints, param_sha256
from jaxdrop.training._checkpoints import FILES, _write_file_list
from tests._asserts import assert_close_ulp
from tests.jaxdrop.training.test_fit import MODEL, TASK, init_params, toy_data

KW = dict(epochs=3, batch_size=16, seed=0, quiet=True)  # 7 steps an epoch, 21 in all


def tx():
  return jaxdrop.sgd(0.1, momentum=0.9)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The data, the initial parameters and the uninterrupted run *with the tests' checkpoint schedule*.

  A checkpointed fit runs each epoch in pieces that end at the checkpoints (compiled scans of 5, 2, ...
  steps). A resumed run replays the same pieces from a checkpoint (same programs, same inputs), so it is
  compared with this run bitwise; a fit without checkpoints runs other programs (one scan per epoch).
  """
  data = toy_data()
  params = init_params(MODEL, 0, data.x_train)
  ckpt = checkpointed(tmp_path_factory.mktemp("reference") / "c")
  return data, params, training.fit(TASK, params, tx(), data, checkpoints=ckpt, **KW)


def checkpointed(directory, every=5, fingerprint=None):
  return Checkpoints(directory, every_steps=every, fingerprint=fingerprint or {"lr": 0.1})


def test_checkpoints_every_n_steps_and_at_the_end_change_nothing(reference, tmp_path):
  data, params, ref = reference
  ckpt = checkpointed(tmp_path / "c")
  result = training.fit(TASK, params, tx(), data, checkpoints=ckpt, **KW)
  assert ckpt.steps() == [15, 20, 21]  # every 5 steps and the last; the 3 newest are kept
  assert param_sha256(result.state.params) == param_sha256(ref.state.params)  # the same program, run again
  assert result.history == ref.history
  # Without checkpoints the epochs run as whole scans: other programs, the same training to float rounding.
  plain = training.fit(TASK, params, tx(), data, **KW)
  assert_close_ulp(plain.state.params, ref.state.params, ulp=64, scale="max")
  assert plain.history.keys() == ref.history.keys()
  for name, values in ref.history.items():
    np.testing.assert_allclose(plain.history[name], values, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("keep_up_to", [0, 15, 21])  # none left, mid-epoch, the final one
def test_resume_from_any_checkpoint_ends_bitwise_equal(reference, tmp_path, keep_up_to):
  data, params, ref = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c", fingerprint={"k": 1}), **KW)
  for step in checkpointed(tmp_path / "c").steps():
    if step > keep_up_to:  # as if the run had been killed right after saving step keep_up_to
      os.system(f"rm -r {tmp_path / 'c' / str(step)}")
  ckpt = checkpointed(tmp_path / "c", fingerprint={"k": 1})
  result = training.fit(TASK, params, tx(), data, checkpoints=ckpt, resume=True, **KW)
  assert param_sha256(result.state.params) == param_sha256(ref.state.params)
  assert result.history == ref.history
  assert all(np.array_equal(a, b) for a, b in zip(result.step_losses, ref.step_losses, strict=True))
  expected = keep_up_to if keep_up_to in (15, 20, 21) else None
  assert result.execution["resumed_from_step"] == expected


def stop_at_ask(n):
  """A ``stop`` that says yes the ``n``-th time it is asked."""
  asked = []
  return lambda: asked.append(1) or len(asked) >= n


@pytest.mark.parametrize(("ask", "step"), [(1, 5), (2, 7), (3, 10)])  # mid-epoch, end of epoch 1, mid-epoch
def test_a_stop_saves_its_step_and_the_resumed_run_ends_bitwise_equal(reference, tmp_path, ask, step):
  data, params, ref = reference
  ckpt = checkpointed(tmp_path / "c")
  with pytest.raises(training.TrainingStopped) as stopped:
    training.fit(TASK, params, tx(), data, checkpoints=ckpt, stop=stop_at_ask(ask), **KW)
  assert (stopped.value.step, stopped.value.checkpointed) == (step, True) and ckpt.steps()[-1] == step
  assert f"after step {step}" in str(stopped.value)
  result = training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), resume=True, **KW)
  assert result.execution["resumed_from_step"] == step
  assert param_sha256(result.state.params) == param_sha256(ref.state.params) and result.history == ref.history


def test_a_stop_without_checkpoints_saves_nothing_and_a_stop_never_true_changes_nothing(reference, tmp_path):
  data, params, _ = reference
  with pytest.raises(training.TrainingStopped) as stopped:
    training.fit(TASK, params, tx(), data, stop=lambda: True, **KW)
  assert (stopped.value.step, stopped.value.checkpointed) == (7, False)  # one scan per epoch: asked after it
  assert not isinstance(stopped.value, Exception)  # ``except Exception`` does not swallow it, as Ctrl-C
  plain = training.fit(TASK, params, tx(), data, **KW)
  never = training.fit(TASK, params, tx(), data, stop=lambda: False, **KW)
  assert param_sha256(never.state.params) == param_sha256(plain.state.params)


def corrupt_arrays(step_dir):
  """Truncates every array data file of a checkpoint (what a disk fault or a bad copy leaves)."""
  damaged = 0
  for root, _, files in os.walk(step_dir / "state"):
    for name in files:
      if "/d" in root.replace(str(step_dir), ""):
        with open(os.path.join(root, name), "r+b") as f:
          f.truncate(3)
        damaged += 1
  assert damaged


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_and_keeps_the_files(reference, tmp_path, caplog):
  data, params, ref = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), **KW)
  corrupt_arrays(tmp_path / "c" / "21")
  (tmp_path / "c" / "22.orbax-checkpoint-tmp-1700000000").mkdir()  # a save killed half-way: never listed
  ckpt = checkpointed(tmp_path / "c")
  assert ckpt.steps() == [15, 20, 21]
  with caplog.at_level(logging.WARNING, logger="jaxdrop"):
    result = training.fit(TASK, params, tx(), data, checkpoints=ckpt, resume=True, **KW)
  assert "checkpoint at step 21" in caplog.text and "unreadable" in caplog.text
  assert result.execution["resumed_from_step"] == 20
  assert param_sha256(result.state.params) == param_sha256(ref.state.params)
  assert (tmp_path / "c.corrupt" / "21" / "state").is_dir()  # moved aside, not deleted
  assert ckpt.steps() == [15, 20, 21]  # step 21 written again, from good data


def test_tampered_parameters_are_caught_by_the_hash(reference, tmp_path):
  data, params, _ = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), **KW)
  meta = tmp_path / "c" / "21" / "meta" / "metadata"
  saved = json.loads(meta.read_text())
  saved["state_sha256"] = "0" * 64  # as if the arrays had silently changed
  meta.write_text(json.dumps(saved))
  state = training.TrainState.create(apply_fn=TASK.apply, params=params, tx=tx())
  restored, progress = checkpointed(tmp_path / "c").restore_latest(state)
  assert int(restored.step) == 20 and progress["epoch"] == 3


def test_a_changed_momentum_buffer_is_corruption_not_a_different_result(reference, tmp_path, caplog):
  import shutil

  import jax
  import orbax.checkpoint as ocp

  data, params, ref = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), **KW)
  state_dir = tmp_path / "c" / "21" / "state"
  target = training.TrainState.create(apply_fn=TASK.apply, params=params, tx=tx())
  with ocp.StandardCheckpointer() as checkpointer:
    saved = checkpointer.restore(state_dir, target)
    momentum, *others = jax.tree.leaves(saved.opt_state)  # sgd with momentum: its trace buffers only
    momentum = momentum.at[(0,) * momentum.ndim].add(1e-3)  # one value of the momentum buffer changed
    tampered = saved.replace(opt_state=jax.tree.unflatten(jax.tree.structure(saved.opt_state), [momentum, *others]))
    shutil.rmtree(state_dir)
    checkpointer.save(state_dir, tampered)
    checkpointer.wait_until_finished()
  _write_file_list(state_dir.parent)  # files that match their list: only the state's own hash can tell
  with caplog.at_level(logging.WARNING, logger="jaxdrop"):
    result = training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), resume=True, **KW)
  assert "train state does not match the hash" in caplog.text
  assert result.execution["resumed_from_step"] == 20
  assert param_sha256(result.state.params) == param_sha256(ref.state.params)


def test_a_checkpoint_of_other_shapes_is_a_mismatch_and_stays(reference, tmp_path):
  from experiments.models import MLP
  from experiments.runner import linen_task

  data, params, _ = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), **KW)
  wider = MLP((64,), (0.5,), num_classes=3)  # same fingerprint, other shapes: a mismatch, not corruption
  with pytest.raises(CheckpointMismatchError, match=r"holds arrays of other shapes .*\(6, 32\)|\[6, 32\]"):
    training.fit(linen_task(wider), init_params(wider, 0, data.x_train), tx(), data,
               checkpoints=checkpointed(tmp_path / "c"), resume=True, **KW)
  assert checkpointed(tmp_path / "c").steps() == [15, 20, 21] and not (tmp_path / "c.corrupt").exists()


def test_all_checkpoints_corrupt_is_an_error_not_a_fresh_start(reference, tmp_path):
  data, params, _ = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), **KW)
  for step in (15, 20, 21):
    corrupt_arrays(tmp_path / "c" / str(step))
  with pytest.raises(CheckpointError, match=r"no readable checkpoint left .* \[21, 20, 15\]"):
    training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), resume=True, **KW)
  assert sorted(p.name for p in (tmp_path / "c.corrupt").iterdir()) == ["15", "20", "21"]
  with pytest.raises(CheckpointError, match="no readable checkpoint left") as error:  # again: never from step 0
    training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), resume=True, **KW)
  # The fix as fields, for a command line to say in its flags; the message in the library's terms.
  assert error.value.fix == ("resume", "directory") and error.value.directory == tmp_path / "c"
  assert "resume=False" in str(error.value) and "--" not in str(error.value)


def test_a_resume_with_fewer_epochs_than_trained_names_the_option_and_its_least_value(reference, tmp_path):
  data, params, _ = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), **KW)
  with pytest.raises(CheckpointMismatchError, match="has trained 3 epochs, more than epochs=2: resume with"
                     r" epochs=3 or more \(a run does not shrink\)\.$") as error:
    training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), resume=True, **{**KW, "epochs": 2})
  assert error.value.fix == ("epochs",) and error.value.at_least == 3 and error.value.step == 21
  assert checkpointed(tmp_path / "c").steps() == [15, 20, 21]  # untouched


def test_checkpoint_of_another_config_is_refused(reference, tmp_path):
  data, params, _ = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c", fingerprint={"lr": 0.1}), **KW)
  with pytest.raises(CheckpointMismatchError, match="lr: checkpoint 0.1, now 0.2") as error:
    training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c", fingerprint={"lr": 0.2}),
               resume=True, **KW)
  assert error.value.step == 21 and error.value.fix == ("resume", "directory") and error.value.at_least is None
  assert checkpointed(tmp_path / "c").steps() == [15, 20, 21]  # untouched


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  data = toy_data()
  data.x_train = data.x_train.at[90].set(jnp.nan)  # in the 6th batch when unshuffled
  params = init_params(MODEL, 0, data.x_train)
  ckpt = checkpointed(tmp_path / "c", every=2)
  with pytest.raises(training.TrainingDivergedError, match="at step 6"):
    training.fit(TASK, params, tx(), data, checkpoints=ckpt, shuffle=False, **KW)
  assert ckpt.steps() == [2, 4]


def jaxdrop_cli(*args):
  return [sys.executable, "-m", "experiments", "run", "e2", "--dataset", "digits", "--versions", "concise",
          "--epochs", "100", "--checkpoint-every", "12", "--quiet", *args]


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_hash(tmp_path):
  whole = tmp_path / "whole"
  subprocess.run(jaxdrop_cli("--out", str(whole)), check=True, capture_output=True)
  expected = json.loads((whole / "record.json").read_text())["runs"][0]

  out = tmp_path / "killed"
  proc = subprocess.Popen(jaxdrop_cli("--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = out / "checkpoints" / "concise"
  deadline = time.monotonic() + 120
  while not (ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())):
    assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (out / "record.json").exists() or json.loads((out / "record.json").read_text())["status"] != "ok"
  saved = Checkpoints(ckpt_dir).steps()
  assert saved and max(saved) < expected["steps"]

  resumed = subprocess.run(jaxdrop_cli("--out", str(out), "--resume"), check=True, capture_output=True, text=True)
  assert "resuming from the checkpoint at step" in resumed.stdout
  entry = json.loads((out / "record.json").read_text())["runs"][0]
  assert entry["execution"]["resumed_from_step"] in saved
  assert entry["param_sha256"] == expected["param_sha256"]
  assert entry["history"] == expected["history"]


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoints(tmp_path):
  toy = toy_data()
  toy.x_train = toy.x_train.at[40].set(jnp.inf)
  ckpt = Checkpoints(tmp_path / "c", every_steps=1)
  with pytest.raises(training.TrainingDivergedError, match="at step 3; lower the learning rate"):
    training.fit(TASK, init_params(MODEL, 0, toy.x_train), jaxdrop.sgd(0.1), toy, epochs=1, batch_size=16, seed=0,
               quiet=True, shuffle=False, checkpoints=ckpt)
  assert ckpt.steps() == [1, 2]


@pytest.fixture(scope="module")
def saved(reference, tmp_path_factory):
  """Checkpoints at steps 15, 20 and 21 of the reference run (copied by each test that changes them)."""
  data, params, _ = reference
  directory = tmp_path_factory.mktemp("saved") / "c"
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(directory), **KW)
  return directory


def copy_of(saved, tmp_path):
  import shutil

  shutil.copytree(saved, tmp_path / "c", symlinks=True)
  return tmp_path / "c"


def target_state(reference):
  _, params, _ = reference
  return training.TrainState.create(apply_fn=TASK.apply, params=params, tx=tx())


def files_below(folder):
  """Every path below ``folder`` with its bytes (a link: what it points to), never following a link."""
  found = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      found[os.path.relpath(path, folder)] = (f"-> {os.readlink(path)}" if os.path.islink(path) else
                                              None if os.path.isdir(path) else open_bytes(path))
  return found


def open_bytes(path):
  with open(path, "rb") as f:
    return f.read()


@pytest.fixture
def orbax_reads(monkeypatch):
  """``(step, items)`` of every restore orbax is asked for."""
  import orbax.checkpoint as ocp

  calls = []
  original = ocp.CheckpointManager.restore

  def spy(self, step, *args, **kwargs):
    calls.append((step, tuple(sorted(kwargs["args"].keys()))))
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", spy)
  return calls


def edit_meta(step_dir, edit):
  path = step_dir / "meta" / "metadata"
  meta = json.loads(path.read_text())
  edit(meta)
  path.write_text(json.dumps(meta))


@pytest.mark.parametrize("flip", ["fingerprint", "shapes"])
def test_a_flipped_bit_in_the_fingerprint_or_shapes_is_corruption_not_another_configuration(
    saved, reference, tmp_path, caplog, flip):
  directory = copy_of(saved, tmp_path)

  def flipped(meta):  # one bit: "0.1" -> "0.0" (0x31 -> 0x30), or a dimension 32 -> 33
    if flip == "fingerprint":
      meta["fingerprint"]["lr"] = 0.0
    else:
      key = next(k for k, shape in meta["shapes"].items() if 32 in shape)
      meta["shapes"][key] = [33 if d == 32 else d for d in meta["shapes"][key]]

  edit_meta(directory / "21", flipped)
  with caplog.at_level(logging.WARNING, logger="jaxdrop"):
    state, _ = checkpointed(directory).restore_latest(target_state(reference))
  assert int(state.step) == 20 and "meta item does not match the hash saved with it" in caplog.text
  assert (tmp_path / "c.corrupt" / "21" / "meta").is_dir()  # moved aside, kept


def test_a_checkpoint_saved_before_the_meta_hash_and_file_list_reads_as_before(saved, reference, tmp_path):
  directory = copy_of(saved, tmp_path)
  expected, expected_progress = checkpointed(saved).restore_latest(target_state(reference))
  for step in (15, 20, 21):
    edit_meta(directory / str(step), lambda meta: meta.pop("meta_sha256"))
    (directory / str(step) / FILES).unlink()
  state, progress = checkpointed(directory).restore_latest(target_state(reference))
  assert int(state.step) == 21 and progress == expected_progress
  assert param_sha256(state) == param_sha256(expected)  # the same files read: bitwise the same state
  edit_meta(directory / "21", lambda meta: meta["fingerprint"].update(lr=0.2))  # no hash to tell: as before
  with pytest.raises(CheckpointMismatchError, match="lr: checkpoint 0.2, now 0.1"):
    checkpointed(directory).restore_latest(target_state(reference))


def test_a_damaged_state_file_is_found_before_orbax_reads_it(saved, reference, tmp_path, caplog, orbax_reads):
  directory = copy_of(saved, tmp_path)
  corrupt_arrays(directory / "21")
  with caplog.at_level(logging.WARNING, logger="jaxdrop"):
    state, _ = checkpointed(directory).restore_latest(target_state(reference))
  assert int(state.step) == 20 and "is not the one saved" in caplog.text
  # Orbax only ever read step 21's small meta item: no read of its arrays failed half-way, so none of
  # tensorstore's other reads could call back into a closed event loop (the "Event loop is closed" tracebacks).
  assert (21, ("state",)) not in orbax_reads and (20, ("state",)) in orbax_reads


@pytest.mark.parametrize("what", ["link to a step", "link to garbage", "file"])
def test_a_link_or_a_file_where_a_step_belongs_is_moved_aside_unopened(saved, reference, tmp_path, caplog,
                                                                      orbax_reads, what):
  import shutil

  directory = copy_of(saved, tmp_path)
  elsewhere = tmp_path / "elsewhere"
  shutil.move(directory / "21", elsewhere)
  if what == "link to garbage":
    shutil.rmtree(elsewhere / "state")
  if what == "file":
    (directory / "21").write_text("not a step")
  else:
    (directory / "21").symlink_to(elsewhere)
  before = files_below(elsewhere)
  data, params, ref = reference
  with caplog.at_level(logging.WARNING, logger="jaxdrop"):
    result = training.fit(TASK, params, tx(), data, checkpoints=checkpointed(directory), resume=True, **KW)
  assert result.execution["resumed_from_step"] == 20 and not [c for c in orbax_reads if c[0] == 21]
  assert "step 21" in caplog.text and ("symbolic link" in caplog.text or "a file, not a step" in caplog.text)
  moved = tmp_path / "c.corrupt" / "21"
  assert moved.is_symlink() if what != "file" else moved.read_text() == "not a step"
  assert files_below(elsewhere) == before  # never written, never deleted through the link
  assert (directory / "21").is_dir() and not (directory / "21").is_symlink()  # saved again, as a folder
  assert param_sha256(result.state.params) == param_sha256(ref.state.params)


def test_a_file_where_the_quarantine_folder_belongs_stays_and_another_name_is_taken(saved, reference,
                                                                                     tmp_path):
  directory = copy_of(saved, tmp_path)
  (tmp_path / "c.corrupt").write_text("someone's file")
  (tmp_path / "c.corrupt-1").symlink_to(tmp_path)  # a link is not a folder of its own either
  for step in (21, 20, 15):
    corrupt_arrays(directory / str(step))
  with pytest.raises(CheckpointError, match=r"no readable checkpoint left .* \[21, 20, 15\] .* to .*c\.corrupt-2"):
    checkpointed(directory).restore_latest(target_state(reference))
  assert (tmp_path / "c.corrupt").read_text() == "someone's file" and (tmp_path / "c.corrupt-1").is_symlink()
  assert sorted(p.name for p in (tmp_path / "c.corrupt-2").iterdir()) == ["15", "20", "21"]
  with pytest.raises(CheckpointError, match="no readable checkpoint left"):  # and again: never from step 0
    checkpointed(directory).restore_latest(target_state(reference))


@pytest.mark.parametrize("where", ["the folder", "a folder above it", "a link to nothing"])
def test_a_file_where_the_checkpoint_folder_belongs_is_one_line_and_stays(reference, tmp_path, where):
  blocker = tmp_path / "c"
  if where == "a link to nothing":
    blocker.symlink_to(tmp_path / "nowhere")
  else:
    blocker.write_text("someone's file")
  ckpt = checkpointed(blocker if where != "a folder above it" else blocker / "run")
  message = (r"c is a file, not a folder, so the checkpoints of Checkpoints\(directory=.*\) cannot be kept"
             r" there; move it away, or give Checkpoints another directory\.$")
  if where == "a link to nothing":
    message = r"c is a symbolic link to .*nowhere, which does not exist, not a folder"
  for call in (ckpt.steps, lambda: ckpt.restore_latest(target_state(reference)),
               lambda: ckpt.save(target_state(reference), {"epoch": 1})):
    with pytest.raises(CheckpointError, match=message) as error:
      call()
    assert error.value.fix == ("directory",)
  assert blocker.is_symlink() or blocker.read_text() == "someone's file"
  assert not (tmp_path / "nowhere").exists() and not (tmp_path / "c.corrupt").exists()
