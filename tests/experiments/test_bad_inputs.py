"""Every bad input of the README's table that reaches the command line, the data or the run folder, tried:
each gets a clear error and loses no data (the library's rows: tests/jaxdrop/test_bad_inputs.py).

Each row is (fault, what is tried, the error, a fragment of its message). The
README's "Bad input" table lists the same rows.
"""

import json
import os
import time

import pytest

from experiments import cli, data
from experiments.errors import DatasetCorruptError, DatasetUnavailableError
from experiments.registry import run_experiment
from jaxdrop import training

CLI_USAGE = [  # argparse errors: exit 2, one line, the valid choices
    ("unknown experiment", ["run", "e0"], "invalid choice: 'e0' (choose from 'e1', 'e2'"),
    ("unknown option", ["run", "e2", "--dropout3", "0.1"], "unrecognized arguments: --dropout3"),
    ("unknown data set", ["run", "e2", "--dataset", "imagenet"], "invalid choice: 'imagenet' (choose from 'auto', 'mnist'"),
    ("non-numeric epochs", ["run", "e2", "--epochs", "two"], "invalid int value: 'two'"),
    ("unknown command", ["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("fault", "argv", "message"), CLI_USAGE, ids=[row[0] for row in CLI_USAGE])
def test_cli_usage_errors(fault, argv, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(argv)
  err = capsys.readouterr().err
  assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


CLI_VALUES = [  # checked before anything is created: exit 2, one line
    ("negative epochs", ["--epochs", "-1"], "--epochs must be a positive integer, got -1"),
    ("zero epochs", ["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    ("zero batch size", ["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    ("negative batch size", ["--batch-size", "-5"], "--batch-size must be a positive integer, got -5"),
    ("learning rate NaN", ["--lr", "nan"], "--lr must be a positive number"),
    ("batch larger than the data set", ["--batch-size", "5000"], "--batch-size 5000 is larger than the training set"),
    ("rate out of range", ["--dropout1", "1.5"], "--dropout1 must be a drop probability in [0, 1], got 1.5"),
    ("second rate out of range", ["--dropout2", "1.5"], "--dropout2 must be a drop probability in [0, 1], got 1.5"),
    ("zero seeds", ["--seeds", "0"], "--seeds must be a positive integer, got 0"),
    ("more devices than exist", ["--devices", "64"], "XLA_FLAGS=--xla_force_host_platform_device_count=64"),
    ("--resume without --out", ["--resume"], "--resume needs --out DIR"),
    ("--num-processes without --coordinator", ["--num-processes", "2"], "need --coordinator HOST:PORT"),
    ("--coordinator alone", ["--coordinator", "127.0.0.1:1"], "--coordinator needs --num-processes N and"),
    ("process id out of range", ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be in 0..1"),
    ("zero test examples", ["e3", "--n-test", "0"], "--n-test must be a positive integer, got 0"),
    ("zero training examples", ["e3", "--n-train", "0"], "--n-train must be a positive integer, got 0"),
    ("negative input size", ["e3", "--num-inputs", "-3"], "--num-inputs must be a positive integer, got -3"),
    ("negative hidden units", ["--hidden", "-5"], "--hidden must be a positive integer, got -5"),
    ("seed beyond 32 bits", ["--seed", "99999999999999999999999"], "--seed must be an integer in 0..4294967295"),
    ("negative seed", ["--seed", "-1"], "--seed must be an integer in 0..4294967295"),
    ("negative momentum", ["e1", "--momentum", "-0.5"], "--momentum must be a finite number >= 0"),
    ("--out is /dev/null", ["--out", "/dev/null"], "--out /dev/null is a file, not a folder"),
    ("unknown compiler options", ["--compiler-options", "fast"],
     "--compiler-options: invalid choice 'fast'; choose from auto, none"),
    ("checkpoints across processes", ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0",
                                      "--checkpoint-every", "5"], "not supported across several processes"),
]


@pytest.mark.parametrize(("fault", "argv", "message"), CLI_VALUES, ids=[r[0] for r in CLI_VALUES])
def test_cli_value_errors(fault, argv, message, capsys, tmp_path):
  name, argv = (argv[0], argv[1:]) if argv[0].startswith("e") else ("e2", argv)
  out = [] if "--resume" in argv or "--out" in argv else ["--out", str(tmp_path / "out")]
  dataset = ["--dataset", "digits"] if name != "e3" else []
  assert cli.main(["run", name, *dataset, "--quiet", *argv, *out]) == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "out").exists()  # rejected before the folder is made, or the folder removed again


def test_a_usage_error_found_after_the_folder_was_made_does_not_block_the_corrected_command(tmp_path, capsys):
  argv = ["run", "e2", "--dataset", "digits", "--versions", "concise", "--epochs", "1", "--quiet", "--out",
          str(tmp_path / "run")]
  for _ in range(2):  # the same mistake twice: the same message, not "already holds a run"
    assert cli.main([*argv, "--batch-size", "5000"]) == 2
    assert "larger than the training set" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
  (tmp_path / "run").mkdir()  # an empty folder made by the user stays, empty
  assert cli.main([*argv, "--batch-size", "5000"]) == 2
  assert list((tmp_path / "run").iterdir()) == []
  assert cli.main(argv) == 0


def test_existing_output_folder_is_never_overwritten_without_flag(tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "record.json").write_text("precious")
  for flags in ([], ["--overwrite"], ["--resume"]):  # not jaxdrop's: never used, replaced or resumed
    assert cli.main(["run", "e3", "--quiet", "--out", str(out), *flags]) == 1
    assert "holds files that jaxdrop did not write" in capsys.readouterr().err
  assert cli.main(["run", "e3", "--quiet", "--out", str(out), "--resume", "--overwrite"]) == 2
  assert "pass only one of them" in capsys.readouterr().err
  assert sorted(p.name for p in out.iterdir()) == ["record.json"] and (out / "record.json").read_text() == "precious"


def test_output_folder_that_cannot_be_written(tmp_path, capsys):
  blocker = tmp_path / "a-file"
  blocker.write_text("not a folder")
  assert cli.main(["run", "e3", "--quiet", "--out", str(blocker / "run")]) == 1
  assert "cannot write to output folder" in capsys.readouterr().err
  assert blocker.read_text() == "not a folder"


def test_missing_data_dir_offline_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "network_reachable", lambda timeout=3.0: False)
  start = time.perf_counter()
  with pytest.raises(DatasetUnavailableError, match=f"data_dir={tmp_path / 'missing'}.*--dataset digits"):
    data.load_dataset("mnist", str(tmp_path / "missing"))
  assert time.perf_counter() - start < 10
  assert not (tmp_path / "missing").exists()


def test_data_dir_that_is_a_file(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "network_reachable", lambda timeout=3.0: False)
  bad = tmp_path / "file"
  bad.write_text("x")
  with pytest.raises(DatasetUnavailableError, match="is not prepared in data_dir"):
    data.load_dataset("mnist", str(bad))
  assert bad.read_text() == "x"


def test_offline_download_is_refused_within_seconds(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "network_reachable", lambda timeout=3.0: False)
  with pytest.raises(DatasetUnavailableError, match="network is unreachable"):
    data.load_dataset("fashion_mnist", str(tmp_path), download=True)


def fake_prepared_mnist(data_dir, content: bytes):
  """A tfds mnist folder whose metadata is valid but whose array_record shards hold ``content``."""
  import tensorflow_datasets as tfds

  builder = tfds.builder("mnist", data_dir=str(data_dir), file_format="array_record")
  os.makedirs(builder.data_dir, exist_ok=True)
  template = lambda split: tfds.core.naming.ShardedFileTemplate(
      data_dir=builder.data_dir, dataset_name="mnist", filetype_suffix="array_record", split=split)
  splits = [tfds.core.SplitInfo(name=s, shard_lengths=[4], num_bytes=len(content), filename_template=template(s))
            for s in ("train", "test")]
  builder.info.set_splits(tfds.core.SplitDict(splits))
  builder.info.write_to_directory(builder.data_dir)
  for split in ("train", "test"):
    with open(os.path.join(builder.data_dir, f"mnist-{split}.array_record-00000-of-00001"), "wb") as f:
      f.write(content)
  return builder.data_dir


@pytest.mark.parametrize("content", [b"\x89PNG wrong magic" * 8, b""], ids=["wrong magic", "truncated"])
def test_corrupt_data_files_are_reported_and_kept(tmp_path, content):
  folder = fake_prepared_mnist(tmp_path, content)
  before = sorted(os.listdir(folder))
  with pytest.raises(DatasetCorruptError, match="cannot be read .* truncated or not tfds array_record files"):
    data.load_dataset("mnist", str(tmp_path), download=False)
  assert sorted(os.listdir(folder)) == before  # nothing deleted or rewritten


def test_auto_does_not_hide_a_corrupt_data_set(tmp_path):
  fake_prepared_mnist(tmp_path, b"garbage" * 20)
  with pytest.raises(DatasetCorruptError):
    data.resolve_dataset("auto", "mnist", str(tmp_path))


def test_checkpoint_from_a_different_config_is_refused(tmp_path, capsys):
  base = ["run", "e2", "--dataset", "digits", "--versions", "concise", "--epochs", "1", "--quiet",
          "--checkpoint-every", "3", "--out", str(tmp_path / "run")]
  assert cli.main(base) == 0
  record = (tmp_path / "run" / "record.json").read_text()
  assert cli.main([*base, "--resume", "--lr", "0.1"]) == 2
  assert "other options (--lr: the run has 0.5, now 0.1)" in capsys.readouterr().err
  assert (tmp_path / "run" / "record.json").read_text() == record  # the finished run's record is kept
  assert not list((tmp_path / "run").glob("record-failed-*.json"))  # refused before anything ran


def test_nan_loss_in_an_experiment_writes_a_failed_record(tmp_path):
  with pytest.raises(training.TrainingDivergedError):
    run_experiment("e3", tmp_path, lr=1e30, seeds=1, versions=("scratch",), lambdas=(0.0,))
  record = json.loads((tmp_path / "record.json").read_text())
  assert record["status"] == "failed" and "step" in record["error"]


@pytest.mark.parametrize("content", ["garbage{{", "", "[]", "{}", '{"name": "mnist"}'],
                         ids=["not JSON", "empty", "a list", "no name or version", "no version"])
def test_damaged_tfds_metadata_is_corrupt_not_unprepared(tmp_path, monkeypatch, content):
  folder = fake_prepared_mnist(tmp_path, b"garbage" * 20)
  info = os.path.join(folder, "dataset_info.json")
  with open(info, "w") as f:
    f.write(content)

  def no_network(timeout=3.0):
    raise AssertionError("damaged metadata is not a reason to download")

  monkeypatch.setattr(data, "network_reachable", no_network)
  before = sorted(os.listdir(folder))
  for attempt in (lambda: data.load_dataset("mnist", str(tmp_path), download=False),
                  lambda: data.load_dataset("mnist", str(tmp_path), download=True),
                  lambda: data.resolve_dataset("auto", "mnist", str(tmp_path))):  # no silent fall back to digits
    with pytest.raises(DatasetCorruptError, match=f"metadata file {info} of mnist is damaged .*move"
                       f" {tmp_path / 'mnist'} away and prepare it"):
      attempt()
  assert sorted(os.listdir(folder)) == before
  with open(info) as f:
    assert f.read() == content  # nothing rewritten


def test_an_unfinished_tfds_preparation_is_not_taken_for_corrupt_data(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "network_reachable", lambda timeout=3.0: False)
  unfinished = tmp_path / "mnist" / "incomplete.ABC123_3.0.1"  # tfds' own name while it prepares
  unfinished.mkdir(parents=True)
  (unfinished / "dataset_info.json").write_text("{")
  with pytest.raises(DatasetUnavailableError, match="is not prepared in data_dir"):
    data.load_dataset("mnist", str(tmp_path))
  assert data.resolve_dataset("auto", "mnist", str(tmp_path)).name == "digits"
