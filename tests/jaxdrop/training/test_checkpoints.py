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
from tests.jaxdrop.training.test_fit import MODEL, TASK, init_params, toy_data

KW = dict(epochs=3, batch_size=16, seed=0, quiet=True)  # 7 steps an epoch, 21 in all


def tx():
  return jaxdrop.sgd(0.1, momentum=0.9)


@pytest.fixture(scope="module")
def reference():
  data = toy_data()
  params = init_params(MODEL, 0, data.x_train)
  return data, params, training.fit(TASK, params, tx(), data, **KW)


def checkpointed(directory, every=5, fingerprint=None):
  return Checkpoints(directory, every_steps=every, fingerprint=fingerprint or {"lr": 0.1})


def test_checkpoints_every_n_steps_and_at_the_end_change_nothing(reference, tmp_path):
  data, params, ref = reference
  ckpt = checkpointed(tmp_path / "c")
  result = training.fit(TASK, params, tx(), data, checkpoints=ckpt, **KW)
  assert ckpt.steps() == [15, 20, 21]  # every 5 steps and the last; the 3 newest are kept
  assert param_sha256(result.state.params) == param_sha256(ref.state.params)
  assert result.history == ref.history


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
  with pytest.raises(CheckpointError, match="no readable checkpoint left"):  # and again: never from step 0
    training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c"), resume=True, **KW)


def test_checkpoint_of_another_config_is_refused(reference, tmp_path):
  data, params, _ = reference
  training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c", fingerprint={"lr": 0.1}), **KW)
  with pytest.raises(CheckpointMismatchError, match="lr: checkpoint 0.1, now 0.2"):
    training.fit(TASK, params, tx(), data, checkpoints=checkpointed(tmp_path / "c", fingerprint={"lr": 0.2}),
               resume=True, **KW)
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
