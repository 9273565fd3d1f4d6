"""Every bad input of the README's table that the library sees, tried: each gets a clear error that names
the argument, or the documented answer.

Each row is (fault, what is tried, the error, a fragment of its message).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop

X = jnp.ones((4, 8))


def reused_key():
  key = jax.random.key(0)
  jaxdrop.dropout(key, X, 0.5)
  jaxdrop.dropout(key, X, 0.5)


LIBRARY = [
    ("rate above 1", lambda: jaxdrop.dropout(jax.random.key(0), X, 1.5), ValueError, "rate must be in \\[0, 1\\]"),
    ("rate NaN", lambda: jaxdrop.dropout(jax.random.key(0), X, float("nan")), ValueError, "rate"),
    ("integer input", lambda: jaxdrop.dropout(jax.random.key(0), jnp.ones(3, jnp.int32), 0.5), TypeError,
     "floating"),
    ("missing key", lambda: jaxdrop.dropout(None, X, 0.5), ValueError, "jax.random.key"),
    ("key reused (jax_debug_key_reuse)", reused_key, jax.errors.KeyReuseError, "consumed"),
    ("broadcast_dims out of range", lambda: jaxdrop.dropout(jax.random.key(0), X, 0.5, broadcast_dims=(5,)),
     ValueError, "broadcast_dims"),
    ("unknown mask_bits", lambda: jaxdrop.dropout(jax.random.key(0), X, 0.5, mask_bits=12), ValueError, "mask_bits"),
    ("float mask_bits", lambda: jaxdrop.dropout(jax.random.key(0), X, 0.5, mask_bits=16.0), TypeError,
     "mask_bits must be an int"),
    ("broadcast_dims not axes", lambda: jaxdrop.dropout(jax.random.key(0), X, 0.5, broadcast_dims=1.5), TypeError,
     "broadcast_dims must be a sequence of axes"),
    ("raw key data of no PRNG's shape", lambda: jaxdrop.dropout(jnp.zeros(3, jnp.uint32), X, 0.5), ValueError,
     "raw key data of shape \\(3,\\)"),
    ("bool-mask leaf that is not a bool", lambda: jaxdrop.resolve_mask({"w": X}, {"w": "no"}), TypeError,
     "holds Python bools"),
    ("negative NumPy weight_decay", lambda: jaxdrop.adamw(1e-3, weight_decay=np.float32(-1)), ValueError,
     "weight_decay must be a finite number >= 0"),
    ("negative NumPy max_value", lambda: jaxdrop.max_norm(np.float64(-3.0)), ValueError, "max_value must be > 0"),
]


@pytest.mark.parametrize(("fault", "action", "error", "message"), LIBRARY, ids=[row[0] for row in LIBRARY])
def test_library_inputs(fault, action, error, message):
  with pytest.raises(error, match=message):
    action()


def test_sharp_library_edges_give_the_documented_answer():
  key = lambda: jax.random.key(0)  # a fresh key object per call (the tests check key reuse)
  half = np.asarray(jaxdrop.dropout(key(), X, 0.5))
  np.testing.assert_array_equal(jaxdrop.dropout(key(), X, jnp.bfloat16(0.5)), half)  # a concrete bfloat16 rate
  np.testing.assert_array_equal(jaxdrop.dropout(key(), X, 0.5, broadcast_dims=1),
                                jaxdrop.dropout(key(), X, 0.5, broadcast_dims=(1,)))  # one axis as an int
  for impl in ("rbg", "unsafe_rbg"):  # legacy uint32[4] keys, as jax.random.PRNGKey(seed, impl=...) makes them
    raw = jax.random.PRNGKey(0, impl=impl)
    np.testing.assert_array_equal(jaxdrop.dropout(raw, X, 0.5),
                                  jaxdrop.dropout(jax.random.wrap_key_data(raw, impl="rbg"), X, 0.5))
  invalid = jax.jit(lambda r: (jaxdrop.dropout_eval(X, r), jaxdrop.dropout_eval(X, r, mode="classic"),
                               jaxdrop.keep_probability(r)))(jnp.float32(1.5))
  assert all(bool(jnp.all(jnp.isnan(v))) for v in invalid)  # an invalid traced rate is NaN, not a number
  valid = jax.jit(lambda r: jaxdrop.dropout_eval(X, r))(jnp.float32(0.5))
  np.testing.assert_array_equal(valid, X)
  empty = jnp.ones((2, 0, 0, 3))
  assert jaxdrop.drop_block(key(), empty, 0.5, block_size=3).shape == empty.shape  # 0 x 0 maps: nothing to drop


@pytest.mark.parametrize("name", ["dropout", "alpha_dropout", "drop_path"])
def test_forward_mode_autodiff_works_and_agrees_with_reverse_mode(name):
  fn = getattr(jaxdrop, name)
  x = jax.random.normal(jax.random.key(4), (4, 6))
  f = lambda x: fn(jax.random.key(3), x, 0.4)
  y, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
  np.testing.assert_array_equal(y, f(x))
  np.testing.assert_array_equal(jax.jacfwd(f)(x), jax.jacrev(f)(x))
  _, vjp = jax.vjp(f, x)
  np.testing.assert_array_equal(tangent, vjp(jnp.ones_like(x))[0])  # elementwise: J 1 == J^T 1
  np.testing.assert_array_equal(jax.jit(lambda x: jax.jvp(f, (x,), (x,))[1])(x), jax.jvp(f, (x,), (x,))[1])
  assert jax.hessian(lambda x: jnp.sum(f(x) ** 2))(x).shape == (4, 6, 4, 6)
