"""The benchmarks (python -m benchmarks.bench): the measurements run and the report shows the right ratios (no timing asserted)."""

import json

import jax
import pytest

from benchmarks import bench
from experiments.models import MLP


def test_every_dropout_variant_runs_and_agrees_with_the_others_where_it_must():
  x = jax.numpy.ones((4, 1024))
  outputs = {name: fn(jax.random.key(0), x) for name, fn in bench.dropout_variants().items()}
  for name, y in outputs.items():
    assert y.shape == x.shape, name
    if name != "copy (yardstick)":  # every dropout at rate 0.5: each element 0 or 2 (1 * 2.0: exact anywhere)
      assert set(jax.numpy.unique(y).tolist()) <= {0.0, 2.0}, name


def test_bench_dropout_rows_cover_every_variant_and_pass():
  rows = bench.bench_dropout(sizes=(1 << 12,), reps=1)
  jax_variants = set(bench.dropout_variants())
  got = {(r["variant"], r["pass"]) for r in rows}
  assert {(v, p) for v in jax_variants for p in ("forward", "forward+backward")} <= got
  assert all(r["ms"] > 0 and r["gb_s"] > 0 for r in rows)


def test_memory_section_shows_key_only_dropout_adds_nothing_to_the_mlp_step():
  # A property of the compiled program (not a timing): jaxdrop's dropout needs no
  # mask buffers in E2's train step, flax's needs one per dropout layer.
  sizes = {name: bench.train_step_memory(MLP((256, 256), (0.2, 0.5), dropout_layer=layer), (256, 784))["temp_bytes"]
           for name, layer in bench.DROPOUT_LAYERS.items()}
  assert sizes["jaxdrop (seed or packed mask)"] <= 1.05 * sizes["no dropout"]
  assert sizes["flax.linen.Dropout"] > sizes["jaxdrop (seed or packed mask)"]


def fake_results():
  rows = []
  for size in (1 << 20, 1 << 22):
    for variant, ms in (("jaxdrop 16-bit (default)", 1.0), ("flax.linen.Dropout", 4.0), ("copy (yardstick)", 0.5)):
      for kind in ("forward", "forward+backward"):
        rows.append({"size": size, "variant": variant, "pass": kind, "ms": ms, "gb_s": 1.0})
  return {
      "date": "2026-11-24 00:00 UTC", "cpu_count": 2, "torch": None,
      "environment": {"backend": "cpu", "device_kind": "cpu", "machine": "x86_64", "jax": "0", "flax": "0"},
      "dropout": rows,
      "epoch": [{"variant": "jaxdrop engine", "s_per_epoch": 0.6}, {"variant": "PyTorch eager (torch)", "s_per_epoch": 1.2}],
      "seeds": [{"case": "E3", "k": 1, "total_s": 2.0, "per_seed_s": 2.0},
                {"case": "E3", "k": 4, "total_s": 3.0, "per_seed_s": 0.75}],
      "conv": [{"model": "E4 CNN", "variant": "jaxdrop engine (loop, chosen)", "ms_per_step": 27.0},
               {"model": "E4 CNN", "variant": "PyTorch eager (torch)", "ms_per_step": 30.0}],
      "memory": [{"model": "E2", "variant": "no dropout", "temp_bytes": 2 << 20},
                 {"model": "E2", "variant": "flax.linen.Dropout", "temp_bytes": 4 << 20}],
      "attention": [{"length": 256, "broadcast_dropout": False, "variant": v, "ms": ms, "temp_bytes": mib << 20}
                    for v, ms, mib in (("jaxdrop.attention (key-only mask)", 50.0, 84),
                                       ("flax attention dropout", 100.0, 108), ("no dropout", 40.0, 80))],
  }


def test_render_states_the_ratios_the_targets_are_written_in():
  md = bench.render(fake_results())
  assert "| jaxdrop 16-bit (default) | 1.00 | 4.0 | 50% | 1.00 | 4.0 | 50% |" in md  # 4x flax, half the copy
  assert "| jaxdrop engine | 0.600 | 0.50 |" in md
  assert "| E3 | 4 | 3.00 | 0.750 | 1.50 |" in md
  assert "| E2 | flax.linen.Dropout | 4.00 | +2.00 | +100.0% |" in md
  assert "| E4 CNN | jaxdrop engine (loop, chosen) | 27.0 | 0.90 |" in md
  assert "| 256 | per example and head | jaxdrop.attention (key-only mask) | 50.0 | 2.00 | 84.0 | +5.0% |" in md


def test_attention_section_measures_each_variant_and_key_only_memory_is_lowest_with_dropout():
  rows = bench.bench_attention(lengths=(64,), reps=1, batch=2, heads=2, depth=16)
  assert {(r["broadcast_dropout"], r["variant"]) for r in rows} == {
      (b, v) for b in (False, True) for v in bench.ATTENTION_VARIANTS}
  for broadcast in (False, True):
    memory = {r["variant"]: r["temp_bytes"] for r in rows if r["broadcast_dropout"] == broadcast}
    assert memory["jaxdrop.attention (key-only mask)"] < memory["flax attention dropout"]
    assert all(r["ms"] > 0 for r in rows)


def test_bench_command_writes_json_and_markdown(tmp_path, capsys, monkeypatch):
  # The wiring only: E2's step stands in for the whole memory section (its models are tested above).
  small = lambda: [{"model": "E2 MLP, batch 256", "variant": v, **bench.train_step_memory(MLP((256, 256), (0.2, 0.5), dropout_layer=layer), (256, 784))}
                   for v, layer in bench.DROPOUT_LAYERS.items()]
  monkeypatch.setattr(bench, "bench_memory", small)
  out = tmp_path / "bench"
  assert bench.main(["--sections", "memory", "--out", str(out), "--quiet"]) == 0
  results = json.loads((out / "bench.json").read_text())
  assert {r["variant"] for r in results["memory"]} == set(bench.DROPOUT_LAYERS)
  assert "Compiled temporary memory" in (out / "bench.md").read_text()


@pytest.mark.parametrize("reps", ["0", "-3"])
def test_bench_command_rejects_non_positive_reps(reps, tmp_path, capsys):
  assert bench.main(["--reps", reps, "--out", str(tmp_path / "b")]) == 2
  assert "--reps must be a positive integer" in capsys.readouterr().err
  assert not (tmp_path / "b").exists()


def test_the_training_sections_run_on_small_sizes():
  """The epoch, seeds and conv sections, shrunk: every variant runs and is timed (no ratio asserted)."""
  epoch = bench.bench_epoch(reps=1, n=512, batch=256)
  assert {r["variant"] for r in epoch} >= {"jaxdrop engine (epoch in one scan)", "flax.linen.Dropout, jitted step loop"}
  seeds = bench.bench_seeds(ks=(1, 2), epochs=1)
  assert [(r["k"], r["total_s"] > 0) for r in seeds] == [(1, True), (2, True)] * 2
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam (E6's convnet) mixes float and int32
    conv = bench.bench_conv(reps=1, steps=1, batch=2, models=("E4 CNN",))  # E6's compiles cost a minute
  assert {r["model"] for r in conv} == {"E4 CNN"}
  assert {r["variant"] for r in conv} >= {"jaxdrop engine (scan)", "plain flax, jitted step loop"}
  assert all(r["ms_per_step"] > 0 for r in conv)
