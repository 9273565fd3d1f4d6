"""Bit-exact reruns, batch-invariant masks, data-parallel runs on 1-8 devices, many seeds at once."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from experiments import cli
from jaxdrop import linen as jdl
from jaxdrop import training
from tests.jaxdrop.training.test_fit import noise, noise_task

DIGITS_E2 = ["run", "e2", "--dataset", "digits", "--quiet"]


def run_cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", "experiments", *args], check=True, capture_output=True, text=True,
                        env={**os.environ, **(env or {})})


def record(out):
  return json.loads((out / "record.json").read_text())


def test_same_seed_gives_bitwise_identical_parameters_in_separate_processes(tmp_path):
  runs = []
  for i in range(2):  # each process compiles its own programs (not from the tests' compilation cache)
    run_cli(*DIGITS_E2, "--epochs", "2", "--out", str(tmp_path / f"run{i}"),
            env={"JAX_ENABLE_COMPILATION_CACHE": "false"})
    runs.append(record(tmp_path / f"run{i}")["runs"])
  # Bitwise: the same program, compiled again by another process on the same machine.
  hashes = [[r["param_sha256"] for r in rs] for rs in runs]
  assert hashes[0] == hashes[1] and len(set(hashes[0])) == 2  # scratch and concise, both with dropout
  assert [r["history"] for r in runs[0]] == [r["history"] for r in runs[1]]


# --- batch-invariant masks ------------------------------------------------------------------------

MASK_TASK = training.Task(lambda p, x, train, key: jaxdrop.dropout(key, jnp.ones_like(x), 0.5), loss=None)


def masks(dropout_key, epoch, indices, x):
  keys = training.example_keys(dropout_key, epoch, jnp.asarray(indices))
  return np.asarray(training.apply_per_example(MASK_TASK, None, x[jnp.asarray(indices)], keys))


def test_an_examples_mask_is_the_same_with_batch_32_and_256_and_any_batch_mates():
  x = jnp.zeros((512, 40))
  key = training.run_keys(0)["dropout"]
  whole = masks(key, 3, np.arange(256), x)
  in_32s = np.concatenate([masks(key, 3, np.arange(s, s + 32), x) for s in range(0, 256, 32)])
  np.testing.assert_array_equal(whole, in_32s)  # exact by construction: masks of ones are 0 or 1 * 2.0
  order = np.random.default_rng(0).permutation(512)  # other batch mates, other positions in the batch
  shuffled = np.concatenate([masks(key, 3, order[s:s + 32], x) for s in range(0, 512, 32)])
  np.testing.assert_array_equal(shuffled[np.argsort(order)][:256], whole)
  assert len({row.tobytes() for row in whole}) == 256  # every example its own mask
  assert not np.array_equal(whole, masks(key, 4, np.arange(256), x))  # and new masks each epoch
  assert abs(whole.mean() - 1.0) < 5 * np.sqrt(1.0 / whole.size)  # keep 0.5, survivors x2: mean 1


class TwoLayers(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    return jnp.concatenate([jdl.Dropout(0.5)(x, deterministic=not train), jdl.Dropout(0.5)(x, deterministic=not train)], -1)


def test_each_layer_draws_its_own_mask_from_the_example_key():
  model = TwoLayers()
  task = training.Task(lambda p, x, train, key: model.apply({}, x, train=train, rngs={"dropout": key}), loss=None)
  keys = training.example_keys(jax.random.key(1), 0, jnp.arange(8))
  out = np.asarray(training.apply_per_example(task, None, jnp.ones((8, 64)), keys))
  assert not np.array_equal(out[:, :64], out[:, 64:])


def test_train_step_uses_the_example_keys():
  # Output = noise from each example's key: with lr 0 the step losses are a function of the keys alone.
  task, params, data = noise_task()
  result = training.fit(task, params, jaxdrop.sgd(0.0), data, epochs=2, batch_size=16, seed=5, quiet=True,
                      shuffle=False, batch_invariant=True)
  dropout_key = training.run_keys(5)["dropout"]
  for epoch in range(2):
    for b in range(2):
      idx = jnp.arange(16 * b, 16 * b + 16)
      keys = training.example_keys(dropout_key, epoch, idx)
      logits = jax.vmap(lambda k: noise(k)[0])(keys)
      expected = float(jnp.mean(training.cross_entropy(logits, data.y_train[idx])))
      assert float(result.step_losses[epoch][b]) == pytest.approx(expected, rel=1e-6)


# --- data-parallel runs on N devices ------------------------------------------------------------------


def final_params(out, like=None):
  """The final parameters from a run's last orbax checkpoint, on this process's single device."""
  import orbax.checkpoint as ocp

  folder = out / "checkpoints" / "concise"
  step = max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
  with ocp.StandardCheckpointer() as checkpointer:
    if like is None:
      return checkpointer.restore(folder / str(step) / "state")
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), like)
    return checkpointer.restore(folder / str(step) / "state", target)


def test_data_parallel_runs_on_1_2_4_8_devices_agree(tmp_path):
  options = [*DIGITS_E2, "--versions", "concise", "--epochs", "3", "--batch-invariant", "--devices", "0",
             "--checkpoint-every", "1000"]
  states, records = {}, {}
  for n in (1, 2, 4, 8):
    out = tmp_path / f"devices{n}"
    run_cli(*options, "--out", str(out), env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"})
    records[n] = record(out)["runs"][0]
    states[n] = final_params(out, None if n == 1 else states[1])
  for n in (2, 4, 8):
    assert records[n]["execution"]["devices"] == n
    # Same masks, same batches; only the order of the gradient's cross-device sum differs: float32
    # rounding, a few ulps of the largest weight after 18 steps.
    for a, b in zip(jax.tree.leaves(states[1]["params"]), jax.tree.leaves(states[n]["params"]), strict=True):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5 * float(np.max(np.abs(a))))
    assert records[n]["history"]["test_acc"] == pytest.approx(records[1]["history"]["test_acc"], abs=1 / 450)


# --- several seeds at once -----------------------------------------------------------------------------


def test_seeds_option_reports_mean_sd_ci_and_each_seed_equals_its_run_alone(tmp_path, capsys):
  options = [*DIGITS_E2, "--versions", "concise", "--epochs", "2"]
  assert cli.main([*options, "--seed", "3", "--seeds", "3", "--out", str(tmp_path / "k3")]) == 0
  assert "(3 seeds): train loss" in capsys.readouterr().out
  entry = record(tmp_path / "k3")["runs"][0]
  assert entry["seeds"] == [3, 4, 5] and len(entry["per_seed"]) == 3
  accs = [s["final"]["test_acc"] for s in entry["per_seed"]]
  summary = entry["summary"]["test_acc"]
  assert summary["mean"] == pytest.approx(np.mean(accs)) and summary["sd"] == pytest.approx(np.std(accs, ddof=1))
  half = 4.302652729911275 * summary["sd"] / np.sqrt(3)  # Student t, 2 degrees of freedom, 97.5 %
  assert summary["ci95"] == pytest.approx([summary["mean"] - half, summary["mean"] + half])
  assert cli.main([*options, "--seed", "4", "--out", str(tmp_path / "alone")]) == 0
  alone = record(tmp_path / "alone")["runs"][0]
  # The vmapped matmuls sum in another order than single ones: equal to float32 rounding (the engine's
  # test shows bitwise equality where the kernels coincide).
  for metric, values in alone["history"].items():
    assert entry["per_seed"][1]["history"][metric] == pytest.approx(values, rel=1e-5)
  assert entry["per_seed"][1]["steps"] == alone["steps"]


# --- the opt-in 7-round generator ----------------------------------------------------------------------


def test_mask_generator_option_trains_other_masks_records_them_and_replays_bitwise(tmp_path):
  options = [*DIGITS_E2, "--versions", "concise", "--epochs", "1"]
  assert cli.main([*options, "--mask-generator", "philox4x32-7", "--out", str(tmp_path / "seven")]) == 0
  assert cli.main([*options, "--out", str(tmp_path / "ten")]) == 0
  seven, ten = record(tmp_path / "seven"), record(tmp_path / "ten")
  assert seven["config"]["mask_generator"] == "philox4x32-7" and ten["config"]["mask_generator"] == "philox4x32-10"
  assert seven["runs"][0]["execution"]["mask_generator"] == jaxdrop.MASK_GENERATOR_7
  assert "mask_generator" not in ten["runs"][0]["execution"]
  assert seven["environment"]["mask_generator_7"] == jaxdrop.MASK_GENERATOR_7
  assert seven["runs"][0]["param_sha256"] != ten["runs"][0]["param_sha256"]
  assert cli.main(["replay", str(tmp_path / "seven"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
  with pytest.raises(SystemExit):
    cli.build_parser().parse_args([*options, "--mask-generator", "philox7"])
