"""One process of a two-process JAX run on this machine (tests/test_multiprocess.py starts two).

Usage: python tests/multiprocess_worker.py PORT PROCESS_ID TASK OUT, with TASK ``dropout`` or ``train``.
Each process has 2 CPU devices; the run sees 4. Process 0 writes the result to OUT (``.npz``).
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, process_id, task, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import jaxdrop  # noqa: E402
from tests.test_multiprocess import DROPOUT_SHAPE, train_e2  # noqa: E402

assert jax.device_count() == 4 and jax.local_device_count() == 2
mesh = Mesh(np.asarray(jax.devices()), ("data",))
if task == "dropout":
  x = np.arange(np.prod(DROPOUT_SHAPE), dtype=np.float32).reshape(DROPOUT_SHAPE)
  sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
  y = jax.jit(lambda key, a: jaxdrop.dropout(key, a, 0.5))(jax.random.key(0), sharded)
  result = {"y": multihost_utils.process_allgather(y, tiled=True)}
else:
  result = {"/".join(jaxdrop.param_names(p)): np.asarray(leaf)
            for p, leaf in jax.tree_util.tree_leaves_with_path(train_e2(mesh, batch_invariant=task == "train-bi"))}
if process_id == 0:
  np.savez(out, **result)
