"""Runs tests/sharded/ in a process with 8 simulated CPU devices (a device count is fixed when JAX starts)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARDED_SUITE = "JAXDROP_SHARDED_SUITE"


def test_sharded_suite_passes_on_8_cpu_devices():
  flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count", "--ignored")
  env = {**os.environ, SHARDED_SUITE: "1", "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=8"}
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                         "tests/sharded"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
  assert " passed" in proc.stdout.strip().splitlines()[-1]
