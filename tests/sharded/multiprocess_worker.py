"""One process of a two-process JAX run on this machine (tests/sharded/test_multiprocess.py starts two).

Usage: python tests/sharded/multiprocess_worker.py PORT PROCESS_ID TASK OUT, with TASK ``dropout`` or
``train``. Each process has 2 CPU devices; the run sees 4. Process 0 writes the result to OUT (``.npz``).
"""

import os
import sys


def main(port: str, process_id: int, task: str, out: str) -> None:
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"  # before JAX starts its backend
  import jax
  import numpy as np
  from jax.experimental import multihost_utils
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

  import jaxdrop
  from tests.sharded.test_multiprocess import DROPOUT_SHAPE, train_e2

  assert jax.device_count() == 4 and jax.local_device_count() == 2
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  if task == "dropout":
    x = np.arange(np.prod(DROPOUT_SHAPE), dtype=np.float32).reshape(DROPOUT_SHAPE)
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    y = jax.jit(lambda key, a: jaxdrop.dropout(key, a, 0.5))(jax.random.key(0), sharded)
    result = {"y": multihost_utils.process_allgather(y, tiled=True)}
  else:
    params = train_e2(mesh)
    result = {"/".join(jaxdrop.param_names(p)): np.asarray(leaf)
              for p, leaf in jax.tree_util.tree_leaves_with_path(params)}
  if process_id == 0:
    np.savez(out, **result)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
