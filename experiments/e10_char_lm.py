"""E10: a causal character-level transformer language model on Python's own standard library, at context 1024.

The corpus is a fixed, sorted list of the standard library's source files, read
through ``sysconfig`` (every CPython install has them offline); the record pins
each file's name, size and sha256. Its bytes are the tokens (a vocabulary of
256), the last 10 % of the concatenation is the validation split, and the
windows are ``context + 1`` bytes long, without overlap: the inputs are the
first ``context`` bytes, the targets the next byte at every position.

The model is a decoder-only transformer: learned positions, pre-norm blocks
with causal attention whose dropout is jaxdrop's blockwise (flash-style)
attention (``jaxdrop.attention.dot_product_attention(implementation="blockwise",
is_causal=True)``: memory linear in the context, the mask never stored),
residual dropout, drop-path rising over the blocks
(:func:`jaxdrop.drop_path_rates`) and decoupled weight decay
(``jaxdrop.adamw``). It reports validation bits per character (per byte) over
seeds with 95 % confidence intervals, and the time and compiled temporary memory
of one train step beside the same model on Flax's attention dropout
(``flax.linen.dot_product_attention`` with a causal mask), and the longest
context each fits in 8 GiB of compiled temporary memory (by compiling only).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses
import hashlib
import math
import sysconfig
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
import jaxdrop.linen as jdl
from experiments import command_line
from experiments.config import Config, option
from experiments.data import Dataset
from experiments.errors import ConfigError
from experiments.models import ViTBlock
from experiments.plots import plot_curves
from experiments.records import seed_summary
from experiments.runner import Experiment, Part, train_run
from experiments.timing import interleaved_medians
from jaxdrop import training

# Standard-library modules present, under these paths, in every CPython 3.11+ (sorted; about 650 KB).
STDLIB_FILES = tuple(sorted((
    "abc.py", "argparse.py", "ast.py", "base64.py", "bisect.py", "calendar.py", "colorsys.py",
    "contextlib.py", "copy.py", "csv.py", "dataclasses.py", "fnmatch.py", "fractions.py", "functools.py",
    "heapq.py",
    "json/__init__.py", "numbers.py", "operator.py", "queue.py", "random.py", "shlex.py", "string.py",
    "textwrap.py", "tokenize.py", "types.py", "weakref.py",
)))
VOCAB = 256  # bytes
VALID_FRACTION = 0.1
GRANULE = 256  # the search's resolution (a multiple of the blocks)
VERSIONS = ("jaxdrop", "flax")
# In reproduce: a tiny model at context 256, few windows, one seed pair: seconds, not the full form's minutes.
SUITE = {"context": 256, "dim": 32, "depth": 1, "heads": 2, "mlp_dim": 64, "epochs": 2, "batch_size": 4,
         "max_train_windows": 48, "max_valid_windows": 16, "seeds": 2,
         "search_memory": False, "step_costs": False}


@dataclasses.dataclass
class E10Config(Config):
  epochs: int | None = option(3, "passes over the training windows")
  batch_size: int = option(8, "windows per batch")
  lr: float = option(2e-3, "AdamW learning rate")
  weight_decay: float = option(0.1, "decoupled weight decay (AdamW's, times the learning rate)",
                               nonnegative=True)
  seeds: int = option(2, "seeds (seed, seed+1, ...), trained together, for the mean and confidence interval")
  context: int = option(1024, "tokens (bytes) each window predicts")
  dim: int = option(64, "token width")
  depth: int = option(2, "transformer blocks")
  heads: int = option(4, "attention heads")
  mlp_dim: int = option(256, "hidden units of each block's MLP")
  dropout: float = option(0.1, "drop probability of the residual branches and the MLP", rate=True)
  attention_dropout: float = option(0.1, "drop probability of each attention weight", rate=True)
  drop_path: float = option(0.1, "drop-path rate of the last block (rising linearly from 0)", rate=True)
  max_train_windows: int = option(1_000_000, "train on at most this many windows (the first ones)")
  max_valid_windows: int = option(1_000_000, "validate on at most this many windows (the first ones)")
  step_costs: bool = option(True, "compile one train step of each version (jaxdrop's and Flax's attention"
                            " dropout) and time them side by side")
  search_memory: bool = option(True, "find the longest context each version fits in --memory-limit-mib of"
                               " compiled temporary memory (compiling only)")
  memory_limit_mib: int = option(8192, "the memory of that search, MiB")

  def validate(self) -> None:
    super().validate()
    if self.dim % self.heads:
      raise ConfigError(f"--heads {self.heads} must divide --dim {self.dim}.")
    if self.search_memory and not self.step_costs:
      raise ConfigError("--search-memory reports beside the step costs: drop --no-step-costs, or add"
                        " --no-search-memory.")


def corpus() -> tuple[bytes, list[dict[str, Any]]]:
  """The concatenated bytes of :data:`STDLIB_FILES` and, per file, its name, size and sha256."""
  root = Path(sysconfig.get_paths()["stdlib"])
  texts, files = [], []
  for name in STDLIB_FILES:
    path = root / name
    if not path.is_file():
      raise ConfigError(f"the standard library file {path} is missing (E10 reads {len(STDLIB_FILES)} files"
                        f" under sysconfig's stdlib path {root}); run E10 with a complete CPython 3.11+"
                        " install.")
    text = path.read_bytes()
    texts.append(text)
    files.append({"name": name, "bytes": len(text), "sha256": hashlib.sha256(text).hexdigest()})
  return b"".join(texts), files


def windows(tokens: np.ndarray, context: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
  """Non-overlapping windows of ``context + 1`` tokens: inputs (the first ``context``), targets (the last)."""
  n = min((len(tokens) - 1) // context, limit)
  if n == 0:
    return np.zeros((0, context), np.int32), np.zeros((0, context), np.int32)
  w = np.lib.stride_tricks.sliding_window_view(tokens, context + 1)[: n * context : context]
  return np.ascontiguousarray(w[:, :-1]), np.ascontiguousarray(w[:, 1:])


def char_data(config: E10Config) -> tuple[Dataset, dict[str, Any]]:
  """The train and validation windows (``x_test``/``y_test``: validation), and the corpus' record entry."""
  text, files = corpus()
  tokens = np.frombuffer(text, np.uint8).astype(np.int32)
  split = int(len(tokens) * (1 - VALID_FRACTION))
  x_train, y_train = windows(tokens[:split], config.context, config.max_train_windows)
  x_valid, y_valid = windows(tokens[split:], config.context, config.max_valid_windows)
  if len(x_train) < config.batch_size or len(x_valid) == 0:
    raise ConfigError(f"--context {config.context} leaves {len(x_train)} training and {len(x_valid)}"
                      f" validation windows of the {len(tokens)}-byte corpus; use a shorter --context (and at"
                      f" least --batch-size {config.batch_size} training windows).")
  note = (f"{len(files)} Python standard-library files, {len(tokens)} bytes ({int(np.sum(tokens > 127))}"
          f" non-ASCII), the last {VALID_FRACTION:.0%} for validation; {len(x_train)} training and"
          f" {len(x_valid)} validation windows of {config.context} bytes")
  data = Dataset("stdlib_bytes", x_train, y_train, x_valid, y_valid, VOCAB, note)
  entry = {"stdlib": sysconfig.get_paths()["stdlib"], "files": files, "total_bytes": len(tokens),
           "non_ascii_bytes": int(np.sum(tokens > 127)), "split_at": split, "train_windows": len(x_train),
           "valid_windows": len(x_valid), "sha256": hashlib.sha256(text).hexdigest()}
  return data, entry


class CharLM(nn.Module):
  """A decoder-only transformer over bytes: embedding plus learned positions, ``depth`` causal pre-norm blocks
  with drop-path rising to ``drop_path`` (:func:`jaxdrop.drop_path_rates`), a final norm and a linear head."""

  context: int
  dim: int
  depth: int
  heads: int
  mlp_dim: int
  dropout: float
  attention_dropout: float
  drop_path: float
  impl: str = "jaxdrop"

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    x = nn.Embed(VOCAB, self.dim)(tokens)
    x = x + nn.Embed(self.context, self.dim, name="positions")(jnp.arange(tokens.shape[1])[None])
    x = nn.Dropout(self.dropout)(x, deterministic=not train) if self.impl == "flax" else \
        jdl.Dropout(self.dropout)(x, deterministic=not train)
    for i, rate in enumerate(jaxdrop.drop_path_rates(self.drop_path, self.depth)):
      block = ViTBlock(self.heads, self.mlp_dim, self.dropout, self.attention_dropout, rate, self.impl,
                       causal=True, name=f"Block_{i}")  # E10's parameter names: Block_0, Block_1, ...
      x = block(x, train)
    return nn.Dense(VOCAB)(nn.LayerNorm()(x))


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-window mean cross-entropy (nats per token) of the next-token predictions."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(-1)


def build(version: str, config: E10Config, context: int | None = None):
  """The task, the initializer and the optimizer of one version (``context``: default the config's)."""
  context = context or config.context
  model = CharLM(context=context, dim=config.dim, depth=config.depth, heads=config.heads,
                 mlp_dim=config.mlp_dim, dropout=config.dropout, attention_dropout=config.attention_dropout,
                 drop_path=config.drop_path, impl=version)

  def apply(params, x, train, key):
    return model.apply({"params": params}, x, train=train, rngs={"dropout": key} if train else None)

  task = training.Task(apply, token_cross_entropy, classification=False)
  init = lambda key: model.init(key, jnp.zeros((1, context), jnp.int32), train=False)["params"]
  return task, init, jaxdrop.adamw(config.lr, weight_decay=config.weight_decay)  # no decay on biases, norms


def lowered_step(version: str, config: E10Config, context: int):
  """One train step of ``version`` at ``context``, lowered on abstract values (nothing allocated)."""
  task, init, tx = build(version, config, context)
  create = lambda: training.TrainState.create(apply_fn=task.apply, params=init(jax.random.key(0)), tx=tx)
  state = jax.eval_shape(create)
  b = config.batch_size
  x = jax.ShapeDtypeStruct((b, context), jnp.int32)
  vector = lambda dtype: jax.ShapeDtypeStruct((b,), dtype)
  return jax.jit(training.make_train_step(task)).lower(state, x, x, vector(jnp.int32), vector(jnp.float32),
                                                       training.run_keys(0)["dropout"])


def temp_bytes(version: str, config: E10Config, context: int) -> int:
  """Compiled temporary memory of one train step of ``version`` at ``context`` (compiled, not run)."""
  return int(lowered_step(version, config, context).compile().memory_analysis().temp_size_in_bytes)


def longest_context(version: str, config: E10Config, limit: int, known: dict[int, int] | None = None
                    ) -> dict[str, Any]:
  """The longest context (a multiple of :data:`GRANULE`) whose train step fits in ``limit`` bytes of compiled
  temporary memory: doubling from the config's context until a step is over, then bisecting between the last
  two lengths to within an eighth (0 if even the config's context is over). ``known``: ``{context: bytes}``
  already compiled."""
  probes: dict[int, int] = dict(known or {})

  def fits(n: int) -> bool:
    if n not in probes:
      probes[n] = temp_bytes(version, config, n)
    return probes[n] <= limit

  low, high = 0, config.context
  while fits(high):
    low, high = high, 2 * high
  while high - low > max(GRANULE, high // 8):
    mid = (low + high) // 2 // GRANULE * GRANULE
    if mid in (low, high):
      break
    if fits(mid):
      low = mid
    else:
      high = mid
  return {"longest": low, "over": high, "limit_bytes": limit, "granule": GRANULE,
          "probes": [{"context": n, "temp_mib": b / 2**20} for n, b in sorted(probes.items())]}


def step_costs(config: E10Config, data: Dataset, reps: int = 5) -> dict[str, dict[str, float]]:
  """Compiled temporary memory and median time of one train step of each version at the config's context,
  timed side by side (same data, same batch)."""
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  indices, weights = training.batch_plan(None, len(data.y_train), config.batch_size)
  key = training.run_keys(0)["dropout"]
  compiled, calls = {}, {}
  for version in VERSIONS:
    task, init, tx = build(version, config)
    state = training.TrainState.create(apply_fn=task.apply, params=init(jax.random.key(0)), tx=tx)
    compiled[version] = jax.jit(training.make_train_step(task)).lower(state, x, y, indices[0], weights[0],
                                                                       key).compile()
    calls[version] = (lambda c=compiled[version], s=state:
                      jax.block_until_ready(c(s, x, y, indices[0], weights[0], key)))
  with jax.debug_key_reuse(False):  # the same step, repeated on purpose
    medians = interleaved_medians(calls, reps)
  temp = {v: int(c.memory_analysis().temp_size_in_bytes) for v, c in compiled.items()}
  return {v: {"step_ms": medians[v] * 1e3, "temp_bytes": temp[v], "temp_mib": temp[v] / 2**20,
              "context": config.context} for v in VERSIONS}


def bits(nats: float) -> float:
  return nats / math.log(2)


def run(config: E10Config, record, emit, quiet: bool) -> None:
  data, corpus_entry = char_data(config)
  record.set_dataset(data, "stdlib")
  record.data["corpus"] = corpus_entry
  emit(f"data: {data.note}")
  costs = step_costs(config, data) if config.step_costs else {}
  for v, c in costs.items():
    emit(f"{v}: one train step at context {config.context}: {c['step_ms']:.1f} ms, {c['temp_mib']:.1f} MiB"
         " compiled temporary memory")
  if config.search_memory:
    for v in VERSIONS:
      costs[v]["fits"] = longest_context(v, config, config.memory_limit_mib * 2**20,
                                         {config.context: costs[v]["temp_bytes"]})
      emit(f"{v}: longest context in {config.memory_limit_mib} MiB of compiled temporary memory:"
           f" {costs[v]['fits']['longest']}")
  task, init, tx = build("jaxdrop", config)
  entry, _ = train_run("jaxdrop", task, init, tx, data, config, record, quiet=quiet, emit=emit)
  per_seed = entry.get("per_seed", [entry])
  for e in per_seed:
    e["history"]["train_bpc"] = [bits(v) for v in e["history"]["train_loss"]]
    e["history"]["test_bpc"] = [bits(v) for v in e["history"]["test_loss"]]
  if "per_seed" in entry:
    entry["history"]["train_bpc"] = np.mean([e["history"]["train_bpc"] for e in per_seed], axis=0).tolist()
    entry["history"]["test_bpc"] = np.mean([e["history"]["test_bpc"] for e in per_seed], axis=0).tolist()
  entry["valid_bpc"] = seed_summary([e["history"]["test_bpc"][-1] for e in per_seed], (0.0, math.log2(VOCAB)))
  if costs:
    entry["cost"] = costs
  s = entry["valid_bpc"]
  emit(f"jaxdrop: validation {s['mean']:.4f} +- {s['sd']:.4f} bits per character over {s['n']} seeds"
       f" (95% CI {s['ci95'][0]:.4f}..{s['ci95'][1]:.4f}; uniform: {math.log2(VOCAB):.0f})")
  record.add_run(entry)
  record.add_figure(plot_curves(
      record.out_dir / "curves.png", [entry], {"bits per character": ("train_bpc", "test_bpc")},
      title=f"E10: byte-level LM on the standard library, context {config.context} (test: validation split)",
  ))


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on E10: validation bits per character over seeds, one step against Flax's, and the
  longest context in 8 GiB."""
  config, defaults = record["config"], E10Config()
  (entry,) = record["runs"]
  s, costs, corpus_entry = entry["valid_bpc"], entry.get("cost"), record["corpus"]
  limit = f"{config['memory_limit_mib'] / 1024:g} GiB"
  lines = [
      "## E10: a causal character-level transformer with blockwise attention dropout (beyond the tutorials)",
      "",
      f"{record['dataset']['note']} (sha256 of each pinned in the record). Byte-level (vocabulary {VOCAB});"
      f" {config['depth']} causal pre-norm blocks of width {config['dim']} with {config['heads']} heads,"
      f" learned positions, attention dropout {config['attention_dropout']} through jaxdrop's blockwise"
      f" attention (`implementation=\"blockwise\", is_causal=True`), residual dropout {config['dropout']},"
      f" drop-path rising to {config['drop_path']}, `jaxdrop.adamw` (lr {config['lr']:g}, decay"
      f" {config['weight_decay']:g}), batch {config['batch_size']}, {config['epochs']} epochs, context"
      f" {config['context']} here"
      f" (`python -m experiments run e10` runs context {defaults.context}, {defaults.depth} blocks of width"
      f" {defaults.dim}, {defaults.epochs} epochs, {defaults.seeds} seeds).",
      "",
      f"Validation: **{s['mean']:.3f} ± {s['sd']:.3f} bits per character** (95 % CI {s['ci95'][0]:.3f}.."
      f"{s['ci95'][1]:.3f}, {s['n']} seeds; uniform over bytes: {math.log2(VOCAB):.0f}).",
  ]
  if costs is None:
    lines += ["", "One train step's time and compiled temporary memory against the same model with Flax's"
              " attention dropout are not measured here (`python -m experiments run e10` measures them, and the"
              " longest context each fits in 8 GiB)."]
  else:
    lines += [
        "",
        "One train step at the same context and batch, the same model with Flax's attention dropout"
        " (`nn.dot_product_attention`, causal mask, `broadcast_dropout=False`), timed side by side; the longest"
        f" context whose step compiles into {limit} of temporary memory (a multiple of {GRANULE}, by compiling"
        " only; doubling, then bisecting to within an eighth):",
        "",
        f"| attention dropout | one step (ms) | compiled temp memory (MiB) | longest context in {limit} |",
        "|---|---|---|---|",
    ]
    for v, label in (("jaxdrop", "jaxdrop blockwise"), ("flax", "Flax")):
      c = costs[v]
      longest = c["fits"]["longest"] if "fits" in c else "not searched here"
      lines.append(f"| {label} | {c['step_ms']:.1f} | {c['temp_mib']:.1f} | {longest} |")
  lines += ["", f"Corpus: {corpus_entry['total_bytes']} bytes from `{corpus_entry['stdlib']}`. Train bits per"
            " character are the running mean over the epoch with dropout on.", "",
            "![E10: bits per character per epoch](e10/curves.png)", ""]
  return lines


EXPERIMENT = Experiment(
    name="e10",
    title="causal byte-level transformer LM on Python's standard library at context 1024: blockwise attention"
    " dropout, residual dropout, drop-path, AdamW; memory against Flax's attention dropout",
    source="beyond the tutorials: attention dropout at any length (issue 19)",
    config=E10Config,
    run=run,
    part=Part(report_section, options=lambda seeds: dict(SUITE),
              quick={"context": 128, "dim": 16, "heads": 2, "mlp_dim": 32, "epochs": 2,
                     "max_train_windows": 16, "max_valid_windows": 4, "search_memory": False,
                     "step_costs": True}),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
