"""Side-by-side timings and memory, measured in one run: ``python -m benchmarks.bench --help``.

The machine this runs on may be shared and noisy, so every comparison is a
ratio taken in the same run, with the variants interleaved round by round and
the median kept. Sections:

1. ``dropout``: forward and forward+backward of dropout on float32 arrays of
   1M, 4M and 16M elements: jaxdrop (8-, 16- and 32-bit masks, and 16-bit
   masks from a ``jaxdrop.PHILOX7`` key) against
   ``flax.linen.Dropout``, ``jax.random.bernoulli`` + ``where``, a plain copy
   (the memory-bandwidth yardstick) and ``torch.nn.functional.dropout`` when
   torch is installed.
2. ``epoch``: one epoch of E2's MLP on 60,000 x 784 inputs (Fashion-MNIST's
   shape), batch 256: the jaxdrop engine against the same model with
   ``flax.linen.Dropout`` in a plain jitted loop, and PyTorch eager.
3. ``seeds``: K = 1, 4, 16 seeds trained together (vmapped) for E3 and for
   E2's MLP on the digits: wall time per seed.
5. ``conv``: train steps of E4's CNN and E6's MatConvNet on CIFAR-10's
   shape: the jaxdrop engine (automatic path and XLA options; E4 also forced
   into a scan) against the plain-flax models in a jitted step loop and
   PyTorch eager.
4. ``memory``: compiled temporary memory of E2's and E4's train steps with
   jaxdrop dropout (its residual the seed, or on CPU the mask packed to a bit
   an element), with the same masks under plain autodiff (which saves them
   when it must), with
   ``flax.linen.Dropout``, and without dropout; and of 12 and 24 dropout
   layers under ``nn.scan``, where the residuals of every layer are kept.
6. ``attention``: a train step of ``flax.linen.MultiHeadDotProductAttention``
   (batch 8, 8 heads of 64, length 256 and 512), its attention dropout
   (rate 0.1, one mask per example and head or one shared mask) done by
   :func:`jaxdrop.attention.dot_product_attention` or by Flax's own, and
   without dropout: time and compiled temporary memory.
7. ``attention_long``: a self-attention gradient step at lengths 1024 to 16384
   (``benchmarks/attention_long.py``): Flax's dropout, jaxdrop's reference and
   blockwise paths, and ``jax.nn.dot_product_attention``.
8. ``step_overhead``: dropout's cost inside the train steps of E2's MLP, E4's
   CNN, E8's ViT and a 12-block encoder, jaxdrop's against Flax's, on the
   engine's loop and scan paths (``benchmarks/step_overhead.py``).
9. ``sweep``: 48 runs of E2's MLP on ``mnist_5k`` (4 dropout rates x 3 weight
   decays x 4 seeds) in one ``fit_sweep`` against one ``fit`` per run
   (``benchmarks/sweep.py``).
10. ``layer_drop``: the train step of a scanned 12-block stack at LayerDrop
    rates 0, 0.25 and 0.5, the step time falling with the rate
    (``benchmarks/layer_drop.py``).
"""

from __future__ import annotations

import datetime
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from benchmarks import attention_long, layer_drop, step_overhead, sweep
from experiments.files import write_json
from experiments.models import CNN, MLP, MatConvNet
from experiments.records import environment
from experiments.runner import linen_task
from experiments.timing import interleaved_medians
from jaxdrop import _bits, training
from jaxdrop import linen as jdl
from jaxdrop._masked import keep_for, masked_affine_stored

__all__ = ["SECTIONS", "run_bench"]

SECTIONS = ("dropout", "epoch", "seeds", "memory", "conv", "attention", "attention_long", "step_overhead", "sweep",
            "layer_drop")


def _torch():
  try:
    import torch
  except ImportError:
    return None
  return torch


def _block(fn, *args):
  return lambda: jax.block_until_ready(fn(*args))


# --- 1. dropout alone ---------------------------------------------------------------


def _flax_dropout(key, x):
  return nn.Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": key})


def _bernoulli_where(key, x):
  return jnp.where(jax.random.bernoulli(key, 0.5, x.shape), x / 0.5, 0.0)


def _copy(key, x):
  del key
  return x * 1.0001  # a fresh output of the same size: what any out-of-place op must at least pay


def dropout_variants() -> dict[str, Callable]:
  return {
      "jaxdrop 16-bit (default)": lambda k, x: jaxdrop.dropout(k, x, 0.5),
      "jaxdrop 8-bit": lambda k, x: jaxdrop.dropout(k, x, 0.5, mask_bits=8),
      "jaxdrop 32-bit": lambda k, x: jaxdrop.dropout(k, x, 0.5, mask_bits=32),
      "jaxdrop 16-bit, PHILOX7 key": lambda k, x: jaxdrop.dropout(step_overhead.as_philox7(k), x, 0.5),
      "flax.linen.Dropout": _flax_dropout,
      "bernoulli + where": _bernoulli_where,
      "copy (yardstick)": _copy,
  }


def bench_dropout(sizes=(1 << 20, 1 << 22, 1 << 24), reps: int = 20) -> list[dict[str, Any]]:
  """Rows ``{size, variant, pass, ms, gb_s}``; GB/s counts the bytes read and written."""
  rows = []
  torch = _torch()
  key = jax.random.key(0)
  for size in sizes:
    x = jnp.ones((size // 1024, 1024), jnp.float32)
    fns = {}
    for name, fn in dropout_variants().items():
      fwd = jax.jit(fn)
      grad = jax.jit(jax.grad(lambda x, k, fn=fn: jnp.sum(fn(k, x) * x)))
      fns[(name, "forward")] = _block(fwd, key, x)
      fns[(name, "forward+backward")] = _block(grad, x, key)
    if torch is not None:
      tx = torch.ones(size, dtype=torch.float32)
      fns[("torch.nn.functional.dropout", "forward")] = lambda tx=tx: torch.nn.functional.dropout(tx, 0.5, True)

      def torch_fb(tx=tx):
        t = tx.clone().requires_grad_(True)
        (torch.nn.functional.dropout(t, 0.5, True) * t).sum().backward()

      fns[("torch.nn.functional.dropout", "forward+backward")] = torch_fb
    with jax.debug_key_reuse(False):  # every repetition reuses the key on purpose: same work each time
      medians = interleaved_medians(fns, reps if size < (1 << 24) else max(reps // 2, 10))
    for (name, kind), seconds in medians.items():
      bytes_moved = size * 4 * (2 if kind == "forward" else 3)  # x in, y out (+ x read again for the grad)
      rows.append({"size": size, "variant": name, "pass": kind, "ms": seconds * 1e3,
                   "gb_s": bytes_moved / seconds / 1e9})
  return rows


# --- 2. an epoch of E2's MLP ----------------------------------------------------------


def _plain_flax_trainer(module: nn.Module, tx: optax.GradientTransformation, sample) -> Callable:
  """``train(xb, yb, key) -> params``: one jitted, donated step of ``module`` written the plain flax way.

  The parameters and optimizer state live in the closure, initialized from ``sample``.
  """
  params = module.init(jax.random.key(0), sample[:1], train=False)["params"]
  state = {"params": params, "opt": tx.init(params)}

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, xb, yb, key):
    def loss(p):
      logits = module.apply({"params": p}, xb, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def train(xb, yb, key):
    state["params"], state["opt"] = step(state["params"], state["opt"], xb, yb, key)
    return state["params"]

  return train


def bench_epoch(reps: int = 3, n: int = 60_000, batch: int = 256) -> list[dict[str, Any]]:
  """Seconds per epoch: jaxdrop engine (scan), flax plain jitted loop, PyTorch eager."""
  rng = np.random.default_rng(0)
  x_np = rng.random((n, 784), dtype=np.float32)
  y_np = rng.integers(0, 10, n).astype(np.int32)
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  fns = {}

  # jaxdrop: the experiments' engine, a whole epoch in one compiled call.
  model = MLP((256, 256), (0.2, 0.5), kernel_init=nn.initializers.normal(0.01))
  task = linen_task(model)
  params = model.init(jax.random.key(0), x[:1], train=False)["params"]
  epoch_fn = training.make_train_epoch(task, batch, "scan")
  keys = training.run_keys(0)
  state = {"s": training.TrainState.create(apply_fn=task.apply, params=params, tx=jaxdrop.sgd(0.5))}
  counter = iter(range(10**9))

  def jaxdrop_epoch():
    state["s"], metrics = epoch_fn(state["s"], x, y, jax.random.fold_in(keys["shuffle"], next(counter)), keys["dropout"])
    jax.block_until_ready(metrics)

  fns["jaxdrop engine (epoch in one scan)"] = jaxdrop_epoch

  # flax reference: the same model with flax.linen.Dropout, one jitted step per batch.
  reference = MLP((256, 256), (0.2, 0.5), kernel_init=nn.initializers.normal(0.01), dropout_layer=nn.Dropout)
  ref_train = _plain_flax_trainer(reference, optax.sgd(0.5), x_np)

  def flax_epoch():
    perm = rng.permutation(n)
    for i, start in enumerate(range(0, n, batch)):
      idx = perm[start:start + batch]
      params = ref_train(x_np[idx], y_np[idx], jax.random.key(i))
    jax.block_until_ready(params)

  fns["flax.linen.Dropout, jitted step loop"] = flax_epoch

  torch = _torch()
  if torch is not None:
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(256, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    tx_t, ty_t = torch.from_numpy(x_np), torch.from_numpy(y_np.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def torch_epoch():
      net.train()
      perm = torch.randperm(n)
      for start in range(0, n, batch):
        idx = perm[start:start + batch]
        opt.zero_grad()
        loss_fn(net(tx_t[idx]), ty_t[idx]).backward()
        opt.step()

    fns["PyTorch eager (torch)"] = torch_epoch
  medians = interleaved_medians(fns, reps, warmup=1)
  return [{"variant": name, "s_per_epoch": seconds} for name, seconds in medians.items()]


# --- 3. many seeds in one compile ----------------------------------------------------------


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def bench_seeds(ks=(1, 4, 16), epochs: int = 100) -> list[dict[str, Any]]:
  """Wall time (compilation included) of K seeds trained together, total and per seed."""
  from experiments.data import load_dataset
  from experiments.e2_d2l_mlp import E2Config
  from experiments.e2_d2l_mlp import build as build_e2
  from experiments.e3_weight_decay import E3Config, synthetic_data
  from experiments.e3_weight_decay import build as build_e3

  rows = []
  e3 = E3Config()
  e3_data = synthetic_data(e3)
  digits = load_dataset("digits")
  e2 = E2Config(dataset="digits")
  cases = {
      f"E3 (scratch, lambda=3, {epochs} epochs)": (lambda: build_e3("scratch", 3.0, e3, e3_data.x_train), e3_data,
                                                     dict(epochs=epochs, batch_size=5, eval_every=5, eval_train=True)),
      f"E2 MLP on the digits ({epochs} epochs)": (lambda: build_e2("concise", e2, digits) + (jaxdrop.sgd(0.5),),
                                                digits, dict(epochs=epochs, batch_size=256)),
  }
  for name, (make, data, options) in cases.items():
    for k in ks:
      task, init, tx = make()
      seconds = _timed(lambda: training.fit_seeds(task, init, tx, data, seeds=list(range(k)), quiet=True, **options))
      rows.append({"case": name, "k": k, "total_s": seconds, "per_seed_s": seconds / k})
  return rows


# --- 4. compiled memory of train steps ---------------------------------------------------


class _StoredMaskDropout(nn.Module):
  """jaxdrop's dropout with plain autodiff (the mask kept for the backward pass), for comparison."""

  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic:
      return x
    keep = keep_for(self.rate, 16)
    seed = _bits.derive_seed(self.make_rng("dropout"))
    scale = jnp.float32(1 / keep.probability)
    return masked_affine_stored(seed, x, keep.threshold, scale, mask_shape=x.shape, bits=16, materialize=False)


DROPOUT_LAYERS = {
    "jaxdrop (seed or packed mask)": lambda rate: jdl.Dropout(rate),
    "jaxdrop masks, plain autodiff": _StoredMaskDropout,
    "flax.linen.Dropout": lambda rate: nn.Dropout(rate),
    "no dropout": None,
}


class _ScanBlock(nn.Module):
  layer: Callable | None

  @nn.compact
  def __call__(self, x, _):
    x = nn.relu(nn.Dense(x.shape[-1])(x))
    if self.layer is not None:
      x = self.layer(0.1)(x, deterministic=False)
    return x, None


class _ScannedStack(nn.Module):
  """``depth`` Dense/ReLU/dropout blocks under ``nn.scan``: residuals are saved per layer."""

  layer: Callable | None
  depth: int

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    stack = nn.scan(_ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                    length=self.depth)
    return nn.Dense(10)(stack(self.layer)(x, None)[0])


def train_step_memory(module: nn.Module, x_shape) -> dict[str, int]:
  """``memory_analysis()`` of a compiled SGD train step of ``module`` on a batch of ``x_shape``."""
  x = jnp.ones(x_shape, jnp.float32)
  y = jnp.zeros((x_shape[0],), jnp.int32)
  params = module.init(jax.random.key(0), x, train=False)["params"]

  def step(params, x, y, key):
    def loss(p):
      logits = module.apply({"params": p}, x, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

  stats = jax.jit(step).lower(params, x, y, jax.random.key(1)).compile().memory_analysis()
  return {"temp_bytes": int(stats.temp_size_in_bytes), "argument_bytes": int(stats.argument_size_in_bytes),
          "output_bytes": int(stats.output_size_in_bytes)}


def bench_memory() -> list[dict[str, Any]]:
  """Train-step memory of E2 and E4, and of scanned stacks of 12 and 24 layers (256 x 1024 activations)."""
  rows = []
  models = (
      ("E2 MLP, batch 256", lambda layer: MLP((256, 256), (0.2, 0.5), dropout_layer=layer), (256, 784)),
      ("E4 CNN, batch 64", lambda layer: CNN(dropout_layer=layer, cpu_workarounds=False), (64, 32, 32, 3)),
      ("12 scanned layers, 256x1024", lambda layer: _ScannedStack(layer, 12), (256, 1024)),
      ("24 scanned layers, 256x1024", lambda layer: _ScannedStack(layer, 24), (256, 1024)),
  )
  for model_name, make, shape in models:
    for variant, layer in DROPOUT_LAYERS.items():
      rows.append({"model": model_name, "variant": variant, **train_step_memory(make(layer), shape)})
  return rows


# --- 5. convolutional steps and epochs (E4, E6) --------------------------------------------------


def _torch_cnn(torch):
  t = torch.nn
  return t.Sequential(
      t.Conv2d(3, 32, 3), t.ReLU(), t.MaxPool2d(2), t.Conv2d(32, 64, 3), t.ReLU(), t.MaxPool2d(2),
      t.Conv2d(64, 128, 3), t.ReLU(), t.MaxPool2d(2), t.Flatten(), t.Dropout(0.25), t.Linear(512, 512), t.ReLU(),
      t.Dropout(0.25), t.Linear(512, 10),
  )


def _torch_matconvnet(torch):
  t = torch.nn

  def conv(cin, cout, size):
    return [t.Conv2d(cin, cout, size, padding="same"), t.ReLU()]

  class SpatialMean(t.Module):
    def forward(self, x):
      return x.mean(dim=(2, 3))

  pool = lambda: t.MaxPool2d(3, 2, padding=1)
  return t.Sequential(
      *conv(3, 64, 5), pool(), *conv(64, 64, 5), pool(), *conv(64, 128, 5), *conv(128, 128, 5), *conv(128, 128, 5),
      pool(), t.Dropout(0.5), *conv(128, 256, 4), *conv(256, 256, 4), *conv(256, 256, 4), pool(), t.Dropout(0.5),
      *conv(256, 512, 4), *conv(512, 512, 4), pool(), t.Dropout(0.5), *conv(512, 512, 1), t.Conv2d(512, 10, 1),
      SpatialMean(),
  )


def bench_conv(reps: int = 3, steps: int = 10, batch: int = 64,
               models: Sequence[str] = ("E4 CNN", "E6 MatConvNet")) -> list[dict[str, Any]]:
  """Milliseconds per train step of E4's CNN (SGD with momentum) and E6's MatConvNet (Adam), over
  ``steps`` batches of CIFAR-10's shape: the jaxdrop engine (its automatic path and compiler options,
  and forced into a scan), the plain-flax model in a jitted step loop, and PyTorch eager. ``models``
  picks some of the two."""
  torch = _torch()
  rng = np.random.default_rng(0)
  n = steps * batch
  x_np = rng.random((n, 32, 32, 3), dtype=np.float32)
  y_np = rng.integers(0, 10, n).astype(np.int32)
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  rows = []
  plain_flax = dict(dropout_layer=nn.Dropout, cpu_workarounds=False)
  cases = (("E4 CNN", CNN(), CNN(**plain_flax), lambda: optax.sgd(0.01, momentum=0.9), _torch_cnn,
            lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)),
           ("E6 MatConvNet", MatConvNet(), MatConvNet(**plain_flax), lambda: optax.adam(1e-3), _torch_matconvnet,
            lambda params: torch.optim.Adam(params, lr=1e-3)))
  for name, model, reference, make_tx, make_torch, make_torch_opt in cases:
    if name not in models:
      continue
    fns = {}
    task = linen_task(model)
    params = model.init(jax.random.key(0), x[:1], train=False)["params"]
    keys = training.run_keys(0)
    paths = ["auto", "scan"] if name.startswith("E4") else ["auto"]
    for path in paths:
      chosen = training.xla_cpu.choose_path(task, params, x)[0] if path == "auto" else path
      epoch_fn = training.make_train_epoch(task, batch, chosen,
                                         compiler_options=training.xla_cpu.choose_compiler_options(task, params, x) or None)
      state = {"s": training.TrainState.create(apply_fn=task.apply, params=jax.tree.map(jnp.copy, params),
                                             tx=make_tx())}

      def run(epoch_fn=epoch_fn, state=state):
        state["s"], metrics = epoch_fn(state["s"], x, y, jax.random.clone(keys["shuffle"]), keys["dropout"])
        jax.block_until_ready(metrics)

      label = f"jaxdrop engine ({chosen}{', chosen' if path == 'auto' else ''})"
      fns[label] = run

    def flax_loop(ref_train=_plain_flax_trainer(reference, make_tx(), x)):
      for i in range(steps):
        sl = slice(i * batch, (i + 1) * batch)
        params = ref_train(x[sl], y[sl], jax.random.key(i))
      jax.block_until_ready(params)

    fns["plain flax, jitted step loop"] = flax_loop
    if torch is not None:
      net = make_torch(torch)
      opt = make_torch_opt(net.parameters())
      tx_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
      ty_t = torch.from_numpy(y_np.astype(np.int64))

      def torch_loop(net=net, opt=opt, tx_t=tx_t, ty_t=ty_t):
        net.train()
        for i in range(steps):
          sl = slice(i * batch, (i + 1) * batch)
          opt.zero_grad()
          torch.nn.functional.cross_entropy(net(tx_t[sl]), ty_t[sl]).backward()
          opt.step()

      fns["PyTorch eager (torch)"] = torch_loop
    with jax.debug_key_reuse(False):
      medians = interleaved_medians(fns, reps, warmup=1)
    rows += [{"model": name, "variant": v, "ms_per_step": s * 1e3 / steps} for v, s in medians.items()]
  return rows


# --- the report -------------------------------------------------------------------------------


# --- 6. attention dropout in a transformer's attention layer ----------------------------------------

ATTENTION_VARIANTS = {
    "jaxdrop.attention (key-only mask)": (jaxdrop.attention.dot_product_attention, 0.1),
    "flax attention dropout": (nn.dot_product_attention, 0.1),
    "no dropout": (nn.dot_product_attention, 0.0),
}


def bench_attention(lengths=(256, 512), reps: int = 5, batch: int = 8, heads: int = 8,
                    depth: int = 64) -> list[dict[str, Any]]:
  """Rows ``{length, broadcast_dropout, variant, ms, temp_bytes}`` of an attention layer's SGD train step."""
  rows = []
  key = jax.random.key(0)
  for length in lengths:
    x = jax.random.normal(jax.random.key(1), (batch, length, heads * depth))
    for broadcast in (False, True):
      fns, memory = {}, {}
      for variant, (attention_fn, rate) in ATTENTION_VARIANTS.items():
        layer = nn.MultiHeadDotProductAttention(num_heads=heads, dropout_rate=rate, broadcast_dropout=broadcast,
                                                attention_fn=attention_fn)
        params = layer.init(key, x[:1], deterministic=True)

        def step(params, x, key, layer=layer):
          loss = lambda p: jnp.mean(layer.apply(p, x, deterministic=False, rngs={"dropout": key}) ** 2)
          return jax.tree.map(lambda p, g: p - 0.1 * g, params, jax.grad(loss)(params))

        compiled = jax.jit(step).lower(params, x, key).compile()
        memory[variant] = int(compiled.memory_analysis().temp_size_in_bytes)
        fns[variant] = _block(compiled, params, x, key)
      with jax.debug_key_reuse(False):  # every repetition reuses the key on purpose: same work each time
        medians = interleaved_medians(fns, reps)
      rows += [{"length": length, "broadcast_dropout": broadcast, "variant": v, "ms": medians[v] * 1e3,
                "temp_bytes": memory[v]} for v in ATTENTION_VARIANTS]
  return rows


def _fmt_size(n: int) -> str:
  return f"{n // (1 << 20)}M"


def render(results: dict[str, Any]) -> str:
  """The results as Markdown tables, each with the ratios the targets are stated in."""
  env = results["environment"]
  out = [f"Measured {results['date']} on {env['backend']} ({env['device_kind']}, {env['machine']},"
         f" {results['cpu_count']} CPU threads); jax {env['jax']}, flax {env['flax']}"
         f"{', torch ' + results['torch'] if results.get('torch') else ''}. Medians of interleaved repetitions.", ""]
  if "dropout" in results:
    rows = results["dropout"]
    sizes = sorted({r["size"] for r in rows})
    lookup = {(r["size"], r["variant"], r["pass"]): r for r in rows}
    for kind in ("forward", "forward+backward"):
      out += [f"**Dropout {kind}, rate 0.5, float32** (ms; × = speed-up over flax.linen.Dropout;"
              " copy% = throughput as a share of the copy's)", "",
              "| variant | " + " | ".join(f"{_fmt_size(s)} ms | × | copy%" for s in sizes) + " |",
              "|---|" + "---|---|---|" * len(sizes)]
      variants = dict.fromkeys(r["variant"] for r in rows if r["pass"] == kind)
      for v in variants:
        cells = []
        for s in sizes:
          r, flax_r, copy_r = lookup[(s, v, kind)], lookup[(s, "flax.linen.Dropout", kind)], lookup[(s, "copy (yardstick)", kind)]
          cells.append(f"{r['ms']:.2f} | {flax_r['ms'] / r['ms']:.1f} | {copy_r['ms'] / r['ms']:.0%}")
        out.append(f"| {v} | " + " | ".join(cells) + " |")
      out.append("")
  if "epoch" in results:
    rows = results["epoch"]
    torch_s = next((r["s_per_epoch"] for r in rows if r["variant"].startswith("PyTorch eager")), None)
    out += ["**E2's MLP, one epoch of 60,000 x 784, batch 256**", "",
            "| variant | s per epoch | × PyTorch eager's time |", "|---|---|---|"]
    for r in rows:
      ratio = f"{r['s_per_epoch'] / torch_s:.2f}" if torch_s else "–"
      out.append(f"| {r['variant']} | {r['s_per_epoch']:.3f} | {ratio} |")
    out.append("")
  if "seeds" in results:
    out += ["**K seeds trained together (vmapped), wall time including compilation**", "",
            "| case | K | total s | s per seed | total ÷ one seed's |", "|---|---|---|---|---|"]
    ones = {r["case"]: r["total_s"] for r in results["seeds"] if r["k"] == 1}
    for r in results["seeds"]:
      out.append(f"| {r['case']} | {r['k']} | {r['total_s']:.2f} | {r['per_seed_s']:.3f} |"
                 f" {r['total_s'] / ones[r['case']]:.2f} |")
    out.append("")
  if "conv" in results:
    out += ["**Convolutional train steps** (CIFAR-10's shape, batch 64; ms per step over an epoch of a few"
            " batches)", "", "| model | variant | ms per step | × PyTorch eager's time |", "|---|---|---|---|"]
    torch_ms = {r["model"]: r["ms_per_step"] for r in results["conv"] if r["variant"].startswith("PyTorch eager")}
    for r in results["conv"]:
      ratio = f"{r['ms_per_step'] / torch_ms[r['model']]:.2f}" if r["model"] in torch_ms else "–"
      out.append(f"| {r['model']} | {r['variant']} | {r['ms_per_step']:.1f} | {ratio} |")
    out.append("")
  if "attention" in results:
    out += ["**Attention layer train step** (MultiHeadDotProductAttention, batch 8, 8 heads of 64, attention"
            " dropout 0.1; × = Flax's time ÷ this one's; memory = compiled temporary bytes)", "",
            "| length | mask | variant | ms per step | × | temp MiB | vs no dropout |", "|---|---|---|---|---|---|---|"]
    lookup = {(r["length"], r["broadcast_dropout"], r["variant"]): r for r in results["attention"]}
    for r in results["attention"]:
      flax_r = lookup[(r["length"], r["broadcast_dropout"], "flax attention dropout")]
      none_r = lookup[(r["length"], r["broadcast_dropout"], "no dropout")]
      mask = "shared" if r["broadcast_dropout"] else "per example and head"
      out.append(f"| {r['length']} | {mask} | {r['variant']} | {r['ms']:.1f} | {flax_r['ms'] / r['ms']:.2f} |"
                 f" {r['temp_bytes'] / 2**20:.1f} | {r['temp_bytes'] / none_r['temp_bytes'] - 1:+.1%} |")
    out.append("")
  if "attention_long" in results:  # benchmarks/attention_long.py
    out += [attention_long.render(results["attention_long"]), ""]
  if "step_overhead" in results:  # benchmarks/step_overhead.py
    out += ["**Dropout inside train steps** (ms per step; overhead against the same step without dropout)", "",
            step_overhead.render(results["step_overhead"]), ""]
  if "layer_drop" in results:  # benchmarks/layer_drop.py
    out += ["**LayerDrop skips compute** (a scanned 12-block stack's train step, ms; median of interleaved"
            " rounds)", "", layer_drop.render(results["layer_drop"]), ""]
  if "sweep" in results:  # benchmarks/sweep.py
    out += ["**A grid in one program** (E2's MLP on mnist_5k, 4 rates x 3 decays x 4 seeds; wall seconds"
            " including compilation)", "", sweep.render(results["sweep"]), ""]
  if "memory" in results:
    out += ["**Compiled temporary memory of a train step** (`memory_analysis().temp_size_in_bytes`)", "",
            "| model | variant | temp MiB | extra MiB | vs no dropout |", "|---|---|---|---|---|"]
    base = {r["model"]: r["temp_bytes"] for r in results["memory"] if r["variant"] == "no dropout"}
    for r in results["memory"]:
      extra = r["temp_bytes"] - base[r["model"]]
      out.append(f"| {r['model']} | {r['variant']} | {r['temp_bytes'] / 2**20:.2f} | {extra / 2**20:+.2f} |"
                 f" {r['temp_bytes'] / base[r['model']] - 1:+.1%} |")
    out.append("")
  return "\n".join(out)


def run_bench(out_dir: str | Path, sections=SECTIONS, reps: int = 20, emit: Callable[[str], None] = print) -> Path:
  """Runs the chosen sections, writes ``bench.json`` and ``bench.md`` into ``out_dir``; returns the Markdown path."""
  import os

  out_dir = Path(out_dir)
  torch = _torch()
  results: dict[str, Any] = {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "environment": environment(), "cpu_count": os.cpu_count(), "torch": torch.__version__ if torch else None,
  }
  runners = {"dropout": lambda: bench_dropout(reps=reps), "epoch": bench_epoch, "seeds": bench_seeds,
             "memory": bench_memory, "conv": bench_conv, "attention": bench_attention,
             "attention_long": attention_long.bench_attention_long,
             "step_overhead": step_overhead.bench_step_overhead, "sweep": sweep.bench_sweep,
             "layer_drop": lambda: layer_drop.bench_layer_drop(reps=reps)}
  for section in sections:
    emit(f"== {section}")
    results[section] = runners[section]()
    write_json(out_dir / "bench.json", results)
  markdown = render(results)
  (out_dir / "bench.md").write_text(markdown + "\n")
  emit(markdown)
  return out_dir / "bench.md"


def main(argv: list[str] | None = None) -> int:
  """``python -m benchmarks.bench [--sections ...] [--reps N] [--out DIR]``; returns the exit status."""
  from experiments.command_line import OneLineParser, add_output_options, check_backend, default_out, one_line_errors
  from experiments.errors import ConfigError
  from experiments.run_folder import open_run_folder

  parser = OneLineParser(
      prog="python -m benchmarks.bench",
      description="Time dropout, an epoch of E2, vmapped seeds, convolutional steps, train-step memory and attention"
      " against flax (and torch when installed), in one run; writes bench.json and bench.md.",
  )
  parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure")
  parser.add_argument("--reps", type=int, default=20, help="timed repetitions per dropout variant (default: 20)")
  add_output_options(parser, "runs/bench-<UTC time>")
  args = parser.parse_args(argv)

  def bench(args) -> int:
    if args.reps < 1:
      raise ConfigError(f"--reps must be a positive integer, got {args.reps}.")
    check_backend()
    emit = (lambda line: None) if args.quiet else print
    with open_run_folder(args.out or default_out("bench"), kind="bench", overwrite=args.overwrite) as folder:
      print(f"wrote {run_bench(folder.path, args.sections, reps=args.reps, emit=emit)}")
    return 0

  return one_line_errors(bench, args)


if __name__ == "__main__":
  import sys

  sys.exit(main())
