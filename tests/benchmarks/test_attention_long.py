"""The attention_long bench section (benchmarks/attention_long.py) at tiny sizes: every variant runs, the
blockwise step's compiled memory grows linearly, and the report states the targets (no timing asserted)."""

from benchmarks import attention_long, bench


def test_the_section_runs_every_variant_and_the_blockwise_memory_is_linear():
  rows = attention_long.bench_attention_long((64,), 1, blockwise_only=(256,), time_up_to=64, batch=1, heads=2,
                                             depth=8, block_q=32, block_k=32)
  got = {(r["length"], r["causal"], r["variant"]) for r in rows}
  assert got == ({(64, c, v) for c in (False, True) for v in attention_long.VARIANTS}
                 | {(256, c, v) for c in (False, True) for v in attention_long.BLOCKWISE})
  assert all(r["temp_bytes"] > 0 for r in rows)
  assert all((r["ms"] is None) == (r["length"] > 64) for r in rows)
  temp = {(r["length"], r["causal"], r["variant"]): r["temp_bytes"] for r in rows}
  # 4x the length with fixed tiles: the blockwise step's buffers (q, k, v, dq, per-row statistics) grow 4x, not
  # 16x as the weights would
  assert temp[(256, False, "blockwise")] <= 6 * temp[(64, False, "blockwise")]
  markdown = bench.render({"date": "d", "cpu_count": 2, "environment": {
      "backend": "cpu", "device_kind": "cpu", "machine": "x86_64", "jax": "0", "flax": "0"},
      "attention_long": rows})
  assert "| 64 | full | " in markdown and "| 256 | causal | - | - |" in markdown
  assert "attention_long" in bench.SECTIONS


def test_targets_are_judged_from_the_rows():
  row = lambda n, c, v, ms, mib: {"length": n, "causal": c, "variant": v, "ms": ms, "temp_bytes": mib << 20}
  rows = [row(4096, False, "flax dropout", 100.0, 4000), row(4096, False, "blockwise", 90.0, 400),
          row(4096, False, "blockwise, no dropout", 80.0, 390), row(4096, True, "blockwise", 50.0, 400),
          row(16384, False, "blockwise", None, 3000)]
  found = {name: (value, met) for name, value, met in attention_long.targets(rows)}
  assert found["L=4096 full: blockwise temp / flax dropout temp <= 1/8"] == ("0.1", True)
  assert found["L=4096 full: blockwise time / blockwise no-dropout time <= 1.3"] == ("1.12", True)
  assert found["L=4096 blockwise: causal time / full time <= 0.6"] == ("0.556", True)
  assert found["L=16384 full: blockwise temp < 2 GiB"] == ("3,000.0 MiB", False)
