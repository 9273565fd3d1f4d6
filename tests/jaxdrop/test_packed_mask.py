"""The mask packed to one bit per element: the backward pass's residual on XLA:CPU (jaxdrop._packed_mask).

The packed bits are exactly the generator's mask, the gradients are bitwise those of the stored-mask
formula, the residual is the packed mask (or, where it cannot be packed, the seed alone), and the compiled
backward pass on CPU hashes nothing."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import _bits
from jaxdrop._masked import dropout_terms, masked_affine_stored
from jaxdrop._packed_mask import pack_mask, packable, unpack_mask
from tests._asserts import assert_trees_equal, vjp_residuals

SEED = jnp.array([3, 7], jnp.uint32)
THRESHOLDS = {8: 200, 16: 40_000, 32: 3_000_000_000}


def key(seed=0):
  return jax.random.key(seed)


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("shape", [(32,), (4, 64), (96, 40), (3, 7, 32), (2, 1, 4, 16)])
def test_packed_bits_are_the_generators_mask(shape, bits):
  assert packable(shape, bits)
  packed = jax.jit(lambda s: pack_mask(s, shape, THRESHOLDS[bits], bits))(SEED)
  assert packed.dtype == jnp.uint8 and packed.shape == (math.prod(shape) // 8,)
  mask = np.asarray(_bits.bernoulli_lanes(SEED, shape, THRESHOLDS[bits], bits))
  np.testing.assert_array_equal(np.asarray(unpack_mask(packed, shape)), mask)
  # bit r of byte b is element 8b + r, row-major: NumPy's little-endian packbits of the flat mask
  np.testing.assert_array_equal(np.asarray(packed), np.packbits(mask.reshape(-1), bitorder="little"))
  assert 0 < mask.sum() < mask.size


def test_which_masks_are_packed():
  assert packable((16,), 16) and packable((8,), 32) and packable((32,), 8)
  assert not packable((8,), 16)  # 16-bit lanes: two parts of the mask, each whole bytes: 16 elements
  assert not packable((16,), 8)
  assert not packable((0, 16), 16)
  assert not packable((jax.export.symbolic_shape("b")[0], 16), 16)


def stored_loss(seed, shape, bits, rate, weight):
  threshold, scale, fill = dropout_terms(rate, "inverted", bits)
  return lambda x: jnp.sum(masked_affine_stored(seed, x, threshold, scale, None, fill, mask_shape=shape,
                                                bits=bits) * weight)


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("shape", [(64, 48), (5, 7)])  # packed, and not (the seed alone)
def test_gradients_are_the_stored_mask_formula_bitwise(shape, bits):
  x = jax.random.normal(key(1), shape)
  weight = jnp.cos(x)
  loss = lambda v: jnp.sum(jaxdrop.dropout(key(2), v, 0.3, mask_bits=bits) * weight)
  expected = jax.grad(stored_loss(_bits.derive_seed(key(2)), shape, bits, 0.3, weight))(x)
  for grad in (jax.grad(loss), jax.jit(jax.grad(loss)), jax.grad(jax.checkpoint(loss)),
               jax.jit(jax.grad(jax.checkpoint(loss, policy=jax.checkpoint_policies.everything_saveable)))):
    assert_trees_equal(grad(x), expected)
  _, tangent = jax.jvp(lambda v: jaxdrop.dropout(key(2), v, 0.3, mask_bits=bits), (x,), (weight,))
  assert_trees_equal(tangent, expected)  # both where(mask, weight * scale, 0)


def test_the_residual_is_the_packed_mask_or_the_seed():
  x = jnp.ones((256, 256))
  kept = vjp_residuals(lambda v: jaxdrop.dropout(key(3), v, 0.5), x)
  arrays = [r for r in kept if r.size > 1]
  assert sorted((r.shape, r.dtype) for r in arrays) == sorted([((2,), jnp.uint32), ((8192,), jnp.uint8)])
  assert sum(r.size * r.dtype.itemsize for r in kept) < 8192 + 64  # 1/32 of the float32 activation
  odd = vjp_residuals(lambda v: jaxdrop.dropout(key(3), v, 0.5), jnp.ones((255, 3)))
  assert [(r.shape, r.dtype) for r in odd if r.size > 1] == [((2,), jnp.uint32)]  # not packable: the seed
  # under a rematerialized function nothing is kept but its input
  remat = vjp_residuals(jax.checkpoint(lambda v: jaxdrop.dropout(key(3), v, 0.5)), x)
  assert not any(r.dtype == jnp.uint8 for r in remat)


def backward_hlo(f, x):
  """The compiled backward pass of ``f`` at ``x``, its residuals as arguments (not folded constants)."""
  _, vjp = jax.vjp(f, x)
  return jax.jit(lambda vjp, g: vjp(g)).lower(vjp, x).compile().as_text()


def test_the_compiled_backward_pass_hashes_nothing_on_cpu():
  x = jax.random.normal(key(4), (128, 64))
  f = lambda v: jaxdrop.dropout(key(5), v, 0.5)
  backward, backward_odd = backward_hlo(f, x), backward_hlo(f, x[:127, :63])
  assert re.search(r"\bxor\(", backward_odd)  # Philox's rounds: the mask is regenerated from the seed
  assert not re.search(r"\bxor\(", backward) and "u8[1024]" in backward  # the packed mask is unpacked


def test_vmap_scan_and_hessian_keep_the_stored_mask_formula():
  # the same keys twice on purpose: each program's mask against the one of the same key alone
  with jax.debug_key_reuse(False):
    xs = jax.random.normal(key(6), (3, 16, 32))
    keys = jax.random.split(key(7), 3)
    # one rounding (where(mask, w * scale, 0)), the same in every program
    per_example = lambda k, x: jax.grad(lambda v: jnp.sum(jaxdrop.dropout(k, v, 0.4) * xs[2]))(x)
    vmapped = jax.jit(jax.vmap(per_example))(keys, xs)
    for i in range(3):
      assert_trees_equal(vmapped[i], per_example(keys[i], xs[i]))

    def body(carry, kx):
      k, x = kx
      return carry + jnp.sum(jaxdrop.dropout(k, x, 0.4) ** 2), None

    scanned = jax.grad(lambda x: jax.lax.scan(body, 0.0, (keys, x))[0])(xs)
    for i in range(3):
      alone = jax.grad(lambda v: jnp.sum(jaxdrop.dropout(keys[i], v, 0.4) ** 2))(xs[i])
      assert_trees_equal(scanned[i], alone)
    small = xs[0, :1]  # 32 elements: packable
    hessian = jax.hessian(lambda v: jnp.sum(jaxdrop.dropout(keys[0], v, 0.4) ** 2))(small)
    kept = np.asarray(jaxdrop.dropout(keys[0], small, 0.4) != 0).reshape(-1)
    scale = 1 / 0.6
    expected = np.diag(np.where(kept, 2 * np.float32(scale) * np.float32(scale), 0.0)).reshape(hessian.shape)
    np.testing.assert_allclose(np.asarray(hessian), expected, rtol=1e-6)


def test_the_packed_gradient_exports_for_every_platform_and_runs_the_cpu_branch():
  x = jax.random.normal(key(8), (64, 32))
  grad = jax.jit(jax.grad(lambda v, k: jnp.sum(jaxdrop.dropout(k, v, 0.3) * x)))
  exported = jax.export.export(grad, platforms=("cpu", "cuda", "tpu"))(x, key(9))
  assert exported.platforms == ("cpu", "cuda", "tpu")
  with jax.debug_key_reuse(False):
    assert_trees_equal(exported.call(x, key(9)), grad(x, key(9)))  # one rounding: where(mask, x * scale, 0)
  accelerators = jax.export.export(grad, platforms=("cuda",))(x, key(9)).mlir_module()
  # lowered for CUDA alone, nothing is packed and no placeholder is left: no 8-bit array at all
  assert "stablehlo.reduce" not in accelerators and "ui8" not in accelerators
