"""JAX's multi-process runtime on one machine: two processes of 2 CPU devices each, 4 global devices."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

import jaxdrop
from experiments.data import resolve_dataset
from experiments.registry import e2_d2l_mlp
from jaxdrop import training

DROPOUT_SHAPE = (8, 6, 5)
ROOT = Path(__file__).resolve().parents[2]


def train_e2(mesh):
  """E2's concise MLP on the digits, 3 epochs, data-parallel over ``mesh``, batch-invariant masks."""
  config = e2_d2l_mlp.E2Config(dataset="digits", batch_size=64)
  data = resolve_dataset("digits", "fashion_mnist", None)
  task, init = e2_d2l_mlp.build("concise", config, data)
  result = training.fit(task, init(training.run_keys(0)["init"]), jaxdrop.sgd(config.lr), data, epochs=3,
                      batch_size=config.batch_size, seed=0, quiet=True, mesh=mesh, batch_invariant=True)
  return result.state.params


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_two_processes(task: str, out: Path) -> dict[str, np.ndarray]:
  port = free_port()
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "sharded" / "multiprocess_worker.py"), str(port), str(i),
                             task, str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
  return dict(np.load(out))


def test_dropout_on_an_array_sharded_over_two_processes_equals_one_process(tmp_path):
  result = run_two_processes("dropout", tmp_path / "dropout.npz")
  x = np.arange(np.prod(DROPOUT_SHAPE), dtype=np.float32).reshape(DROPOUT_SHAPE)
  # Bitwise by construction: an integer mask from each element's global index, and survivors x * 2.0 (exact).
  np.testing.assert_array_equal(result["y"], jaxdrop.dropout(jax.random.key(0), x, 0.5))


def test_data_parallel_training_over_two_processes_ends_where_one_process_does(tmp_path):
  # With batch-invariant masks (each example's from its own key); the CLI test below trains without.
  result = run_two_processes("train", tmp_path / "train.npz")
  mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))  # the same 4 devices' worth of data parallelism
  expected = {"/".join(jaxdrop.param_names(p)): np.asarray(leaf)
              for p, leaf in jax.tree_util.tree_leaves_with_path(train_e2(mesh))}
  assert result.keys() == expected.keys()
  for name, leaf in expected.items():
    # Same batches and masks; the gradient's all-reduce over gloo sums in another order than in one process.
    np.testing.assert_allclose(result[name], leaf, rtol=0, atol=1e-5 * float(np.abs(leaf).max()), err_msg=name)


def test_the_documented_command_runs_on_two_processes_and_only_process_0_writes(tmp_path):
  port = free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  out = tmp_path / "run"
  command = [sys.executable, "-m", "experiments", "run", "e2", "--dataset", "digits", "--versions", "concise",
             "--epochs", "1", "--quiet", "--devices", "0", "--out", str(out), "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", "2", "--process-id"]
  procs = [subprocess.Popen([*command, str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
  record = json.loads((out / "record.json").read_text())
  assert record["runs"][0]["execution"]["devices"] == 4 and record["status"] == "ok"
  assert "wrote" in logs[0] and "wrote" not in logs[1]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and sorted(p.name for p in out.iterdir()) == [
      ".jaxdrop-run.json", ".jaxdrop.lock", "curves.png", "record.json"]  # the marker, the (released) lock
