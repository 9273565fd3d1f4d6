"""benchmarks/compare_revisions.py: its attention and train-step tables (with this checkout on both sides)."""

import jaxdrop
from benchmarks import compare_revisions, step_overhead


def test_attention_table_has_both_masks_and_the_causal_ratio(capsys):
  compare_revisions.compare_attention(jaxdrop, [32], reps=1)
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 32 |")]
  assert [row.split(" | ")[1] for row in rows] == ["causal", "full", "causal ÷ full"]
  assert all(row.endswith("| True |") for row in rows[:2])  # the same revision gives bitwise the same values


def test_step_table_has_both_batches(capsys):
  compare_revisions.compare_steps(jaxdrop, reps=1)
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 256 |", "| 1024 |"))]
  assert len(rows) == 2 and all(row.endswith("| True |") for row in rows)


def test_fewer_rounds_draw_other_masks(capsys):
  assert compare_revisions.main(["HEAD", "--rounds", "7", "--sizes", "1M", "--reps", "1"]) == 0
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1M |")]
  assert len(rows) == 6 and all(row.endswith("| False |") for row in rows)


def test_philox7_keys_on_this_side_draw_other_masks(capsys):
  assert compare_revisions.main(["HEAD", "--philox7", "--sizes", "1M", "--reps", "1"]) == 0
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1M |")]
  assert len(rows) == 6 and all(row.endswith("| False |") for row in rows)
  compare_revisions.compare_steps(jaxdrop, reps=1, this_key=step_overhead.as_philox7)
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 256 |", "| 1024 |"))]
  assert len(rows) == 2 and all(row.endswith("| False |") for row in rows)
