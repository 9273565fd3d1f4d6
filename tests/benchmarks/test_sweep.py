"""The sweep bench section (benchmarks/sweep.py) at a tiny size: both ways train the same runs, the table
renders (no timing asserted)."""

from benchmarks import bench, sweep


def test_the_section_trains_the_grid_both_ways_and_renders():
  row = sweep.bench_sweep(**sweep.QUICK)
  assert row["runs"] == 2 and row["train_size"] == 512 and row["sweep_s"] > 0 and row["fit_s"] > 0
  assert row["max_test_acc_gap_examples"] <= 2  # one epoch: the two programs agree to rounding
  markdown = bench.render({"date": "d", "cpu_count": 2, "environment": {
      "backend": "cpu", "device_kind": "cpu", "machine": "x86_64", "jax": "0", "flax": "0"}, "sweep": row})
  assert "**A grid in one program**" in markdown and "| 2 | 1 | 512 |" in markdown
  assert "sweep" in bench.SECTIONS
