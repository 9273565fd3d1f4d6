"""Runs that prove themselves: records pin what decides the bits (the code included); replay re-runs a record and
compares, run by run and seed by seed; --resume and replay refuse another environment, naming it; a damaged
record is a one-line error before anything is trained."""

import json
import shutil

import jax
import pytest

from experiments import cli, records
from experiments import replay as replay_module
from experiments.records import PINNED, environment
from experiments.reproduce import PARTS
from experiments.run_folder import MARKER_FILE

E3 = ["run", "e3", "--quiet", "--seeds", "1", "--epochs", "5", "--versions", "scratch"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
  out = tmp_path_factory.mktemp("replay") / "run"
  assert cli.main([*E3, "--out", str(out)]) == 0
  return out


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
  """E3 with two seeds: one entry per (version, lambda, seed), two of each name."""
  out = tmp_path_factory.mktemp("replay") / "run"
  assert cli.main([*E3[:3], "--seeds", "2", *E3[5:], "--out", str(out)]) == 0
  return out


def edited_copy(recorded, tmp_path, edit, name="copy"):
  copy = tmp_path / name
  copy.mkdir()
  record = json.loads((recorded / "record.json").read_text())
  edit(record)
  (copy / "record.json").write_text(json.dumps(record))
  return copy


def replayed(run_dir, out, capsys, *flags):
  """``replay RUN_DIR --out OUT``: exit status, the lines printed and replay.json."""
  status = cli.main(["replay", str(run_dir), "--out", str(out), "--quiet", *flags])
  lines = capsys.readouterr().out.splitlines()
  return status, lines, json.loads((out / "replay.json").read_text())


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


def test_a_record_written_before_the_options_took_fitoptions_names_still_replays(recorded, tmp_path, capsys):
  def old_names(record):  # as records were written when the options were batch_invariant_masks and tuned_xla
    config = record["config"]
    config["batch_invariant_masks"] = config.pop("batch_invariant")
    config["tuned_xla"] = config.pop("compiler_options") == "auto"

  copy = edited_copy(recorded, tmp_path, old_names)
  status, _, result = replayed(copy, tmp_path / "again", capsys)
  assert status == 0 and result["identical"]
  replayed_config = json.loads((tmp_path / "again" / "record.json").read_text())["config"]
  assert replayed_config["compiler_options"] == "auto" and replayed_config["batch_invariant"] is False
  damaged = edited_copy(recorded, tmp_path, lambda r: (old_names(r), r["config"].update(tuned_xla="yes")), "bad")
  assert cli.main(["replay", str(damaged), "--out", str(tmp_path / "no"), "--quiet"]) == 2
  assert "config.tuned_xla is str 'yes', not true or false" in capsys.readouterr().err


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


# --- every experiment, every seed count --------------------------------------------------------------------


def test_a_multi_seed_e3_replay_compares_each_seed_with_its_own_twin(two_seeds, tmp_path, capsys):
  status, lines, result = replayed(two_seeds, tmp_path / "again", capsys)
  assert status == 0 and result["identical"]
  # Two entries of each name, one per seed: each compared with the replay's entry at its position.
  assert [(r["name"], r["seed"]) for r in result["runs"]] == [
      ("scratch, lambda=0", 0), ("scratch, lambda=0", 1), ("scratch, lambda=3", 0), ("scratch, lambda=3", 1)]
  recorded = [r["param_sha256"] for r in json.loads((two_seeds / "record.json").read_text())["runs"]]
  assert [r["recorded_sha256"] for r in result["runs"]] == recorded and len(set(recorded)) == 4
  assert all(isinstance(r["replayed_sha256"], str) for r in result["runs"])
  assert lines[:4] == [f"scratch, lambda={lam}, seed {seed}: bitwise identical (param_sha256 {sha[:16]}...)"
                       for (lam, seed), sha in zip([(0, 0), (0, 1), (3, 0), (3, 1)], recorded, strict=True)]
  assert not any("NOT" in line for line in lines)


def test_one_altered_seed_is_the_only_one_reported(two_seeds, tmp_path, capsys):
  copy = edited_copy(two_seeds, tmp_path, lambda record: record["runs"][3].update(param_sha256="0" * 64))
  status, lines, result = replayed(copy, tmp_path / "again", capsys)
  assert status == 1 and not result["identical"]
  assert [r["identical"] for r in result["runs"]] == [True, True, True, False]
  assert [line for line in lines if "NOT" in line] == [
      ("scratch, lambda=3, seed 1: NOT bitwise identical; the metrics of every epoch agree; only the final parameters"
       f" differ (param_sha256 recorded {'0' * 16}..., replayed {result['runs'][3]['replayed_sha256'][:16]}...)"),
      f"replay of e3 from {copy.absolute()}: NOT bitwise identical"]


def test_e2_with_two_seeds_replays_seed_by_seed(tmp_path, capsys):
  out = tmp_path / "run"
  assert cli.main(["run", "e2", "--dataset", "digits", "--epochs", "1", "--seeds", "2", "--quiet", "--out",
                   str(out)]) == 0
  capsys.readouterr()
  entries = json.loads((out / "record.json").read_text())["runs"]
  assert [len(e["param_sha256"]) for e in entries] == [2, 2]  # one seeds entry per version, a hash per seed
  status, lines, result = replayed(out, tmp_path / "again", capsys)
  assert status == 0 and result["identical"]
  assert [(r["name"], r["seed"]) for r in result["runs"]] == [("scratch", 0), ("scratch", 1), ("concise", 0),
                                                             ("concise", 1)]
  assert [r["recorded_sha256"] for r in result["runs"]] == [h for e in entries for h in e["param_sha256"]]
  assert lines[1] == f"scratch, seed 1: bitwise identical (param_sha256 {entries[0]['param_sha256'][1][:16]}...)"

  def second_seed_of_concise(record):  # the seeds entry's list and the seed's own entry, as a record says
    run = record["runs"][1]
    run["param_sha256"][1] = run["per_seed"][1]["param_sha256"] = "f" * 64
    run["per_seed"][1]["history"]["train_loss"][0] += 1e-3

  copy = edited_copy(out, tmp_path, second_seed_of_concise)
  status, lines, result = replayed(copy, tmp_path / "again2", capsys)
  assert status == 1 and [r["identical"] for r in result["runs"]] == [True, True, True, False]
  assert [line.split(":")[0] for line in lines if "NOT" in line] == ["concise, seed 1", f"replay of e2 from {copy.absolute()}"]
  assert "first differs at epoch 1 (train_loss" in lines[3]


def test_a_replay_that_trains_other_runs_than_the_record_is_refused(recorded, tmp_path, capsys):
  copy = edited_copy(recorded, tmp_path, lambda record: record["runs"].pop())
  assert cli.main(["replay", str(copy), "--out", str(tmp_path / "again"), "--quiet"]) == 2
  err = capsys.readouterr().err
  assert "trained other runs than the record holds (models recorded: 1, replayed: 2; model 2 is nothing in the" \
         " record and 'scratch, lambda=3' (seed 0) in the replay)" in err and len(err.strip().splitlines()) == 1
  assert (tmp_path / "again" / "record.json").exists() and not (tmp_path / "again" / "replay.json").exists()


def test_every_folder_reproduce_writes_is_replayable(small_records):
  root, _ = small_records
  for part in PARTS:  # each record is accepted as it is (the parts are replayed below and in the tests above)
    assert set(replay_module.load_parts(root / part)) == {""}, part
  assert replay_module.load_parts(root / "dropout")[""]["experiment"] == replay_module.DROPOUT


def reproduce_folder(small_records, tmp_path, parts):
  """A folder as ``reproduce`` leaves it (its marker, report.md), holding the small runs of ``parts``."""
  root = tmp_path / "reproduce"
  root.mkdir()
  (root / MARKER_FILE).write_text(json.dumps({"written_by": "jaxdrop", "kind": "reproduce", "options": {"seeds": 2}}))
  (root / "report.md").write_text("# jaxdrop: reproduction report\n")
  for part in parts:
    shutil.copytree(small_records[0] / part, root / part)
  return root


def test_a_reproduce_folder_replays_each_part(small_records, tmp_path, capsys):
  root = reproduce_folder(small_records, tmp_path, ("e3", "dropout"))
  record = (root / "e3" / "record.json").read_text()
  assert cli.main(["replay", str(root), "--out", str(root / "e3"), "--overwrite", "--quiet"]) == 2  # a part's own
  assert "is the recorded run's own folder" in capsys.readouterr().err
  assert (root / "e3" / "record.json").read_text() == record
  with jax.numpy_dtype_promotion("standard"):  # as the small runs were made
    status, lines, result = replayed(root, tmp_path / "again", capsys)
  assert status == 0 and result["identical"] and list(result["parts"]) == ["dropout", "e3"]  # reproduce's order
  assert len(result["parts"]["e3"]["runs"]) == 8 and len(result["parts"]["dropout"]["runs"]) == 4
  for part in ("e3", "dropout"):
    assert json.loads((tmp_path / "again" / part / "replay.json").read_text())["identical"]
  assert sum(line.startswith("dropout: no dropout, seed 1: bitwise identical (") for line in lines) == 1
  assert f"dropout: replay of dropout_vs_none from {(root / 'dropout').absolute()}: bitwise identical" in lines
  assert lines[-3:] == [f"e3: replay of e3 from {(root / 'e3').absolute()}: bitwise identical",
                        f"replay of reproduce from {root.absolute()}: bitwise identical",
                        f"wrote {tmp_path / 'again' / 'replay.json'}"]


def test_the_dropout_comparison_reports_an_altered_seed(small_records, tmp_path, capsys):
  def altered(record):
    record["groups"]["no dropout"]["runs"][0]["param_sha256"] = "0" * 64

  copy = edited_copy(small_records[0] / "dropout", tmp_path, altered)
  status, lines, result = replayed(copy, tmp_path / "again", capsys)
  assert status == 1 and [r["identical"] for r in result["runs"]] == [True, True, False, True]
  verdict = f"replay of dropout_vs_none from {copy.absolute()}"
  assert [line.split(":")[0] for line in lines if "NOT" in line] == ["no dropout, seed 0", verdict]


# --- a damaged record: one line naming the file and the field, before anything is trained -----------------


class RawText(str):
  """What an edit returns to replace the whole file."""


def deeply_nested(record):
  return RawText("[" * 100_000 + "]" * 100_000)


BAD_RECORDS = [
    ("runs a string", lambda r: r.update(runs="abc"), "runs is str 'abc', not a list of run entries"),
    ("no runs", lambda r: r.update(runs=[]), "runs is empty: there is no run to compare"),
    ("config a string", lambda r: r.update(config="abc"), "config is str 'abc', not an object of options"),
    ("environment a list", lambda r: r.update(environment=[1, 2]), "environment is list [1, 2], not an object"),
    ("environment a string", lambda r: r.update(environment="abc"), "environment is str 'abc', not an object"),
    ("a run that is a number", lambda r: r["runs"].__setitem__(1, 3), "runs[1] is int 3, not a run entry"),
    ("a run without its hash", lambda r: r["runs"][0].pop("param_sha256"),
     "runs[0].param_sha256 is NoneType None, not a hash"),
    ("a history that is a list", lambda r: r["runs"][1].update(history=[1]),
     "runs[1].history is list [1], not an object of per-epoch lists"),
    ("an unknown option", lambda r: r["config"].update(dropout9=0.5), "config.dropout9 is not an option of e3"),
    ("a tuple option as a string", lambda r: r["config"].update(versions="scratch"),
     "config.versions is str 'scratch', not a list of strings"),
    ("epochs a string", lambda r: r["config"].update(epochs="abc"), "config.epochs is str 'abc', not an integer;"),
    ("epochs out of range", lambda r: r["config"].update(epochs=0), "config: --epochs must be a positive integer, got 0"),
    ("an experiment that is a path", lambda r: r.update(experiment="../../../../tmp/x"),
     "experiment is str '../../../../tmp/x', not one of jaxdrop's experiments (e1, e2"),
    ("deeply nested JSON", deeply_nested, "cannot be read as a record (its JSON is nested too deeply"),
]


@pytest.mark.parametrize(("edit", "message"), [row[1:] for row in BAD_RECORDS], ids=[row[0] for row in BAD_RECORDS])
def test_a_damaged_record_is_one_line_naming_the_file_before_any_training(recorded, tmp_path, capsys, monkeypatch,
                                                                           edit, message):
  copy = tmp_path / "copy"
  copy.mkdir()
  record = json.loads((recorded / "record.json").read_text())
  text = edit(record)
  (copy / "record.json").write_text(text if isinstance(text, RawText) else json.dumps(record))

  def no_training(*args, **kwargs):
    raise AssertionError("trained before the record was checked")

  monkeypatch.setattr(replay_module, "run_experiment", no_training)
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")  # the default --out: runs/replay-<experiment>-<time> in here
  assert cli.main(["replay", str(copy), "--quiet"]) == 2
  err = capsys.readouterr().err
  assert message in err and f"{copy / 'record.json'}" in err and len(err.strip().splitlines()) == 1
  assert list((tmp_path / "cwd").iterdir()) == [] and sorted(p.name for p in copy.iterdir()) == ["record.json"]


# --- the code that defines a run ------------------------------------------------------------------------


def test_a_code_edit_is_refused_by_resume_and_replay_naming_the_fingerprint(tmp_path, capsys, monkeypatch):
  out = tmp_path / "run"
  argv = [*E3, "--checkpoint-every", "2", "--out", str(out)]
  assert cli.main(argv) == 0
  ran = records.code_fingerprint()
  assert json.loads((out / "record.json").read_text())["environment"]["source_sha256"] == ran["source_sha256"]
  assert json.loads((out / MARKER_FILE).read_text())["environment"]["source_sha256"] == ran["source_sha256"]
  # As after editing experiments/models.py (nn.relu -> jnp.tanh) and committing nothing: another source hash.
  edited = {"source_sha256": "f" * 64, "git_commit": "0123456789abcdef" * 2 + "01234567", "git_dirty": True}
  monkeypatch.setattr(records, "code_fingerprint", lambda: edited)
  before = (out / "record.json").read_text()
  assert cli.main([*argv, "--epochs", "7", "--resume"]) == 2
  err = capsys.readouterr().err
  was = f"the run has {ran['source_sha256'][:12]} ({records._code_state(ran)})"
  assert f"started under another environment (source_sha256 (the code, {records.SOURCES}, was edited): {was}," \
         " now ffffffffffff (git commit 0123456789ab, with uncommitted changes))" in err
  assert (out / "record.json").read_text() == before  # nothing was touched

  assert cli.main(["replay", str(out), "--out", str(tmp_path / "again"), "--quiet"]) == 2
  err = capsys.readouterr().err
  assert f"recorded under another environment (source_sha256 (the code, {records.SOURCES}, was edited): {was}" in err
  assert "replay it there (with " in err and "--allow-env-change" in err
  assert not (tmp_path / "again").exists()
  # Under the environment's override rule; here the code did not really change, so its bits survive.
  status, lines, result = replayed(out, tmp_path / "again", capsys, "--allow-env-change")
  assert status == 0 and lines[0].startswith("environment changed, replaying anyway: source_sha256")
  assert len(result["environment_differences"]) == 1


def test_a_commit_that_leaves_the_sources_as_they_were_is_no_difference():
  now = environment()
  assert "git_commit" in now and "git_commit" not in PINNED and "git_dirty" not in PINNED
  committed = {**now, "git_commit": "f" * 40, "git_dirty": not now["git_dirty"]}
  assert records.environment_differences(committed, now) == []
  assert records.environment_differences({**now, "source_sha256": "0" * 64}, now)[0].startswith("source_sha256")
