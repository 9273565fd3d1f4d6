"""Runs that prove themselves: records pin what decides the bits; replay re-runs a record and compares; --resume
and replay refuse another environment, naming it."""

import json

import pytest

from experiments import cli
from experiments.records import PINNED, environment
from experiments.run_folder import MARKER_FILE

E3 = ["run", "e3", "--quiet", "--seeds", "1", "--epochs", "5", "--versions", "scratch"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
  out = tmp_path_factory.mktemp("replay") / "run"
  assert cli.main([*E3, "--out", str(out)]) == 0
  return out


def edited_copy(recorded, tmp_path, edit):
  copy = tmp_path / "copy"
  copy.mkdir()
  record = json.loads((recorded / "record.json").read_text())
  edit(record)
  (copy / "record.json").write_text(json.dumps(record))
  return copy


def test_records_pin_every_fact_that_decides_the_bits(recorded):
  env = json.loads((recorded / "record.json").read_text())["environment"]
  assert set(PINNED) <= set(env)
  assert env["prng_impl"] and isinstance(env["threefry_partitionable"], bool) and "philox" in env["mask_generator"]
  assert json.loads((recorded / MARKER_FILE).read_text())["environment"] == environment()


def test_a_replay_of_a_recorded_run_is_bitwise_identical(recorded, tmp_path, capsys):
  assert cli.main(["replay", str(recorded), "--out", str(tmp_path / "again"), "--quiet"]) == 0
  out = capsys.readouterr().out
  assert "replay of e3" in out and out.count("bitwise identical") == 3
  result = json.loads((tmp_path / "again" / "replay.json").read_text())
  assert result["identical"] and result["environment_differences"] == []
  assert [r["recorded_sha256"] == r["replayed_sha256"] for r in result["runs"]] == [True, True]


def test_a_replay_under_another_environment_is_refused_unless_allowed(recorded, tmp_path, capsys):
  def older_jax(record):
    record["environment"]["jax"] = "0.9.0"
    record["environment"]["threefry_partitionable"] = not record["environment"]["threefry_partitionable"]

  copy = edited_copy(recorded, tmp_path, older_jax)
  assert cli.main(["replay", str(copy), "--out", str(tmp_path / "no"), "--quiet"]) == 2
  err = capsys.readouterr().err
  assert "recorded under another environment (jax: the run has '0.9.0'" in err and "threefry_partitionable" in err
  assert "--allow-env-change" in err and not (tmp_path / "no").exists()
  assert cli.main(["replay", str(copy), "--out", str(tmp_path / "yes"), "--quiet", "--allow-env-change"]) == 0
  out = capsys.readouterr().out
  assert "environment changed, replaying anyway: jax: the run has '0.9.0'" in out  # said even when quiet
  result = json.loads((tmp_path / "yes" / "replay.json").read_text())
  assert result["identical"] and len(result["environment_differences"]) == 2


def test_a_replay_that_differs_names_the_first_epoch_that_differs(recorded, tmp_path, capsys):
  def tampered(record):
    run = record["runs"][1]
    run["param_sha256"] = "0" * 64
    run["history"]["test_loss"][0] += 1e-3

  copy = edited_copy(recorded, tmp_path, tampered)
  assert cli.main(["replay", str(copy), "--out", str(tmp_path / "again"), "--quiet"]) == 1
  out = capsys.readouterr().out
  assert "scratch, lambda=3: NOT bitwise identical; first differs at epoch 5 (test_loss" in out
  assert "scratch, lambda=0: bitwise identical" in out


@pytest.mark.parametrize(("edit", "message"), [
    (None, "does not exist"),
    (lambda record: record.update(status="failed"), "did not finish (status 'failed')"),
    (lambda record: record.pop("config"), "is not a jaxdrop run record"),
], ids=["no record", "failed run", "not a record"])
def test_a_replay_without_a_finished_record_is_a_one_line_error(recorded, tmp_path, capsys, edit, message):
  run_dir = tmp_path / "empty" if edit is None else edited_copy(recorded, tmp_path, edit)
  assert cli.main(["replay", str(run_dir), "--out", str(tmp_path / "out")]) == 2
  assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_replay_never_writes_into_the_recorded_run(recorded, capsys):
  before = {p.name: p.stat().st_mtime_ns for p in recorded.iterdir()}
  assert cli.main(["replay", str(recorded), "--out", str(recorded), "--overwrite", "--quiet"]) == 2
  assert "is the recorded run's own folder" in capsys.readouterr().err
  assert {p.name: p.stat().st_mtime_ns for p in recorded.iterdir()} == before


def test_resume_under_another_environment_is_refused_naming_it(tmp_path, capsys):
  out = tmp_path / "run"
  argv = [*E3, "--checkpoint-every", "2", "--out", str(out)]
  assert cli.main(argv) == 0
  marker = json.loads((out / MARKER_FILE).read_text())
  marker["environment"]["device_count"] = 64
  (out / MARKER_FILE).write_text(json.dumps(marker))
  record = (out / "record.json").read_text()
  assert cli.main([*argv, "--epochs", "7", "--resume"]) == 2
  err = capsys.readouterr().err
  assert "started under another environment (device_count: the run has 64, now 1)" in err
  assert (out / "record.json").read_text() == record  # nothing was touched
