"""Every mode of differentiation of the mask functions: jvp, linearize, jacfwd, hessian, also through jit
(before or after the transformation), checkpoint, scan, cond and vmap; tangents against the stored-mask
formula and against reverse mode, and reverse mode still keeping the seed, not the mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxdrop
from jaxdrop import _alpha_dropout, _bits, _concrete_dropout, _masked, attention
from jaxdrop._masked import masked_affine_stored
from tests._asserts import vjp_residuals


def key(seed=3):
  return jax.random.key(seed)  # a fresh key object per call (the tests check key reuse)


X = jax.random.normal(jax.random.key(0), (2, 6, 2, 5))  # (batch, length, heads, depth) for the attention
U = jax.random.normal(jax.random.key(1), X.shape)  # a tangent
V = jax.random.normal(jax.random.key(2), X.shape)  # a cotangent

FNS = {
    "dropout": lambda k, x: jaxdrop.dropout(k, x, 0.4),
    "dropout 8-bit shared": lambda k, x: jaxdrop.dropout(k, x, 0.4, mask_bits=8, broadcast_dims=(1,)),
    "dropout 32-bit classic": lambda k, x: jaxdrop.dropout(k, x, 0.4, mask_bits=32, mode="classic"),
    "alpha_dropout": lambda k, x: jaxdrop.alpha_dropout(k, x, 0.4),
    "concrete_dropout": lambda k, x: jaxdrop.concrete_dropout(k, x, 0.4),
    "drop_path": lambda k, x: jaxdrop.drop_path(k, x, 0.4),
    "drop_connect": lambda k, x: jaxdrop.drop_connect(k, x, 0.4),
    "attention": lambda k, x: attention.dot_product_attention(x, x, x, dropout_rng=k, dropout_rate=0.4),
}
# Elementwise kernels: every tangent element is 0 or the one rounding fl(u * scale), whichever way (mask
# stored or regenerated, jvp or vjp, eager or compiled, any transformation) it is computed, so tangents are
# compared bitwise; so are outputs, except alpha dropout's x * a + b, which a compiler may fuse into one
# rounding (FMA).
# Concrete dropout (transcendental functions) and the attention (einsums, a softmax) take a tolerance.
ELEMENTWISE = {"dropout", "dropout 8-bit shared", "dropout 32-bit classic", "alpha_dropout", "drop_path",
               "drop_connect"}
NAMES = sorted(FNS)


def assert_same(name, actual, expected, *, output=False):
  if name in ELEMENTWISE and not (output and name == "alpha_dropout"):
    np.testing.assert_array_equal(actual, expected)
  else:
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-6)


def fixed_key(name):
  return lambda x: FNS[name](key(), x)


def stored_mask(name, monkeypatch):
  """The function with the mask stored: the kernels differentiated by plain autodiff (their formula)."""
  def stored(seed, x, threshold, scale, shift=None, fill=None, *, mask_shape, bits):
    return masked_affine_stored(seed, x, threshold, scale, shift, fill, mask_shape=mask_shape, bits=bits,
                                materialize=False)

  monkeypatch.setattr(_masked, "masked_affine", stored)
  monkeypatch.setattr(_alpha_dropout, "masked_affine", stored)
  monkeypatch.setattr(_concrete_dropout, "_relaxed_key_only", _concrete_dropout._relaxed)
  return fixed_key(name)


def reference_jvp(name, u=U):
  with pytest.MonkeyPatch.context() as patch:
    return jax.jvp(stored_mask(name, patch), (X,), (u,))


@pytest.mark.parametrize("name", NAMES)
def test_jvp_gives_the_output_and_the_stored_mask_tangent(name):
  f = fixed_key(name)
  y, tangent = jax.jvp(f, (X,), (U,))
  ref_y, ref_tangent = reference_jvp(name)
  assert_same(name, y, f(X), output=True)
  assert_same(name, y, ref_y, output=True)
  assert_same(name, tangent, ref_tangent)
  assert np.any(np.asarray(tangent) == 0) if name in ELEMENTWISE else not np.allclose(tangent, U)


@pytest.mark.parametrize("name", NAMES)
def test_linearize_eager_and_jitted(name):
  f = fixed_key(name)
  _, ref_tangent = reference_jvp(name)
  y, f_jvp = jax.linearize(f, X)
  assert_same(name, y, f(X), output=True)
  assert_same(name, f_jvp(U), ref_tangent)
  assert_same(name, jax.jit(lambda x, u: jax.linearize(f, x)[1](u))(X, U), ref_tangent)


def scanned(f):
  """``f`` twice in a ``lax.scan``, with the key of each step from the scanned keys."""
  step = lambda carry, k: (f(k, carry), None)
  return lambda x: lax.scan(step, x, jax.random.split(key(), 2))[0]


def unrolled(f):
  def run(x):
    keys = jax.random.split(key(), 2)
    return f(keys[1], f(keys[0], x))
  return run


WRAPPERS = {
    "jit before jvp": lambda f: (jax.jit(f), f),
    "checkpoint": lambda f: (jax.checkpoint(f), f),
    "checkpoint saving everything": lambda f: (
        jax.checkpoint(f, policy=jax.checkpoint_policies.everything_saveable), f),
    "cond": lambda f: (lambda x: lax.cond(jnp.sum(x) > -jnp.inf, f, lambda x: x, x), f),
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("name", NAMES)
def test_jvp_through_jit_checkpoint_and_cond(name, wrapper):
  wrapped, plain = WRAPPERS[wrapper](fixed_key(name))
  y, tangent = jax.jvp(wrapped, (X,), (U,))
  ref_y, ref_tangent = jax.jvp(plain, (X,), (U,))
  assert_same(name, y, ref_y, output=True)
  assert_same(name, tangent, ref_tangent)
  _, jitted = jax.jit(lambda x, u: jax.jvp(wrapped, (x,), (u,)))(X, U)  # the jit outside
  assert_same(name, jitted, ref_tangent)


@pytest.mark.parametrize("name", NAMES)
def test_jvp_and_linearize_through_scan(name):
  f = FNS[name]
  y, tangent = jax.jvp(scanned(f), (X,), (U,))
  ref_y, ref_tangent = jax.jvp(unrolled(f), (X,), (U,))
  assert_same(name, y, ref_y, output=True)
  assert_same(name, tangent, ref_tangent)
  assert_same(name, jax.linearize(scanned(f), X)[1](U), ref_tangent)


@pytest.mark.parametrize("name", NAMES)
def test_jvp_under_vmap_over_keys(name):
  f = FNS[name]
  batched = jax.vmap(lambda k: jax.jvp(lambda x: f(k, x), (X,), (U,))[1])(jax.random.split(key(), 3))
  for i in range(3):
    one = jax.jvp(lambda x, i=i: f(jax.random.split(key(), 3)[i], x), (X,), (U,))[1]
    assert_same(name, batched[i], one)


@pytest.mark.parametrize("name", NAMES)
def test_jvp_is_the_transpose_of_the_vjp(name):
  # <v, J u> == <J^T v, u>: forward and reverse mode are the same linear map.
  f = fixed_key(name)
  _, tangent = jax.jvp(f, (X,), (U,))
  _, vjp = jax.vjp(f, X)
  (cotangent,) = vjp(V)
  forward, reverse = float(jnp.vdot(V, tangent)), float(jnp.vdot(cotangent, U))
  assert forward == pytest.approx(reverse, rel=1e-5, abs=1e-5)
  _, jit_tangent = jax.jit(lambda x, u: jax.jvp(f, (x,), (u,)))(X, U)
  (jit_cotangent,) = jax.jit(lambda x, v: jax.vjp(f, x)[1](v))(X, V)
  jit_forward, jit_reverse = float(jnp.vdot(V, jit_tangent)), float(jnp.vdot(jit_cotangent, U))
  assert jit_forward == pytest.approx(jit_reverse, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_jacfwd_equals_jacrev_and_the_hessians_agree(name):
  x = X[:, :2]  # (2, 2, 2, 5): 40 inputs
  f = lambda x: FNS[name](key(), x).reshape(-1)
  assert_same(name, jax.jacfwd(f)(x), jax.jacrev(f)(x))
  loss = lambda x: jnp.sum(jnp.sin(f(x)))
  forward_over_reverse, reverse_over_reverse = jax.hessian(loss)(x), jax.jacrev(jax.jacrev(loss))(x)
  np.testing.assert_allclose(forward_over_reverse, reverse_over_reverse, rtol=1e-5, atol=1e-6)
  assert forward_over_reverse.shape == (*x.shape, *x.shape) and np.any(forward_over_reverse != 0)


def test_elementwise_hessian_is_diagonal_and_exact():
  # sum(dropout(x) ** 2) has the Hessian 2 * diag(mask * scale**2).
  x = X[:1, :3].reshape(-1)
  f = lambda x: jaxdrop.dropout(key(), x, 0.5)
  hessian = np.asarray(jax.hessian(lambda x: jnp.sum(f(x) ** 2))(x))
  kept = np.asarray(f(x)) != 0
  expected = np.diag(np.where(kept, 2 * np.float32(2.0) ** 2, 0)).astype(np.float32)  # scale 1 / (1 - 0.5)
  np.testing.assert_array_equal(hessian, expected)


def test_the_rate_of_dropout_gets_no_tangent_and_the_rate_of_concrete_dropout_does():
  zero = jax.jvp(lambda r: jaxdrop.dropout(key(), X, r), (jnp.float32(0.4),), (jnp.float32(1),))[1]
  np.testing.assert_array_equal(zero, np.zeros(X.shape, np.float32))  # documented: not differentiable
  concrete = lambda r: jaxdrop.concrete_dropout(key(), X, r)
  _, tangent = jax.jvp(concrete, (jnp.float32(0.4),), (jnp.float32(1),))
  seed = _bits.derive_seed(key())  # the same key: the same noise
  relaxed = lambda r: _concrete_dropout._relaxed(seed, X, r, 0.1)  # the noise drawn directly, no custom rule
  _, expected = jax.jvp(relaxed, (jnp.float32(0.4),), (jnp.float32(1),))
  np.testing.assert_allclose(tangent, expected, rtol=2e-5, atol=2e-6)
  (rate_cotangent,) = jax.vjp(concrete, jnp.float32(0.4))[1](V)
  assert float(jnp.vdot(V, tangent)) == pytest.approx(float(rate_cotangent), rel=1e-5)
  loss = lambda r: jnp.sum(concrete(r) ** 2)
  second = jax.hessian(loss)(jnp.float32(0.4))
  np.testing.assert_allclose(second, jax.jacrev(jax.jacrev(loss))(jnp.float32(0.4)), rtol=1e-4)
  assert float(second) != 0


# The masks that are packed: X's 120 elements with 32-bit lanes (attention dropout keeps its seed alone).
PACKED = {"dropout 32-bit classic": [(120 // 8,)]}


@pytest.mark.parametrize("policy", ["default", "everything_saveable"])
@pytest.mark.parametrize("name", NAMES)
def test_reverse_mode_keeps_the_seed_not_the_mask(name, policy):
  f = fixed_key(name)
  if policy != "default":  # an enclosing checkpoint's policy cannot make the kernel store its mask either
    f = jax.checkpoint(f, policy=getattr(jax.checkpoint_policies, policy))
  kept = vjp_residuals(f, X)
  # on XLA:CPU a mask of a multiple of 8 * (32 // bits) elements is kept packed, one bit an element
  packed = [r.shape for r in kept if r.dtype == jnp.uint8]
  assert packed == PACKED.get(name, [])
  masks = [r for r in kept if not jnp.issubdtype(r.dtype, jnp.floating) and r.size > 2 and r.dtype != jnp.uint8]
  assert masks == []  # no boolean or integer array beyond the uint32[2] seed
  assert any(r.shape == (2,) and r.dtype == jnp.uint32 for r in kept)
  large = [r for r in kept if r.size > 1 and r.dtype != jnp.uint8]
  if name in ELEMENTWISE:
    assert [r.shape for r in large] == [(2,)]  # the seed alone: dropping needs neither x nor its mask
  elif name == "concrete_dropout":
    assert sorted(r.shape for r in large) == [(2,), X.shape]  # x (the rate's gradient needs it) and the seed
