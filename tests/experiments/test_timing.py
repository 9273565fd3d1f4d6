"""Timing side by side (E8's step costs, the benchmarks): every thunk runs as often, torch's rounds last."""

from experiments.timing import interleaved_medians


def test_interleaved_medians_runs_every_thunk_reps_times_and_torch_last():
  calls = []
  fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "torch b", "c")}
  medians = interleaved_medians(fns, reps=3, warmup=1)
  assert set(medians) == set(fns) and all(m >= 0 for m in medians.values())
  assert calls.count("a") == calls.count("c") == calls.count("torch b") == 4
  assert calls.index("torch b") > max(i for i, c in enumerate(calls) if c != "torch b")
