"""Every bad input of the README's table that the library sees, tried: each gets a clear error that names
the argument, or the documented answer.

Each row is (fault, what is tried, the error, a fragment of its message).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdrop
from jaxdrop import _checks

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
    # Hyperparameters accepted at build and wrong (or a TypeError naming nothing) at update, before issue 17.
    ("weight_decay an array (broadcast per column)", lambda: jaxdrop.sgd(0.1, weight_decay=np.array([0.1, 0.2])),
     ValueError, "weight_decay must be a scalar"),
    ("complex weight_decay", lambda: jaxdrop.adamw(1e-3, weight_decay=1j), TypeError,
     "weight_decay must be a real number or a schedule"),
    ("bool weight_decay (True as 1.0)", lambda: jaxdrop.sgd(0.1, weight_decay=True), TypeError,
     "weight_decay .*got the bool True"),
    ("string weight_decay", lambda: jaxdrop.adam(1e-3, weight_decay="0.1"), TypeError, "weight_decay .*got str '0.1'"),
    ("None weight_decay", lambda: jaxdrop.add_weight_decay(None), TypeError, "weight_decay .*got NoneType None"),
    ("list weight_decay", lambda: jaxdrop.sgd(0.1, weight_decay=[0.1]), TypeError, "weight_decay .*got list"),
    ("bad group rate", lambda: jaxdrop.adamw(1e-3, groups={"head": "0.1"}), TypeError,
     "weight_decay .*for groups\\[0\\] \\('head'\\)"),
    ("string max_value", lambda: jaxdrop.max_norm("3"), TypeError, "max_value must be a real number .*str '3'"),
    ("string learning_rate", lambda: jaxdrop.sgd("0.1"), TypeError, "learning_rate must be a real number"),
    ("negative learning_rate", lambda: jaxdrop.adamw(-1e-3), ValueError, "learning_rate must be a finite number >= 0"),
    ("bool momentum", lambda: jaxdrop.sgd(0.1, momentum=True), TypeError, "momentum .*got the bool True"),
    ("momentum as a schedule", lambda: jaxdrop.sgd(0.1, momentum=optax.constant_schedule(0.9)), TypeError,
     "momentum .*cannot be a schedule here"),
    ("Adam b2 of 1", lambda: jaxdrop.adam(1e-3, b2=1.0), ValueError, "b2 must be in \\[0, 1\\)"),
    ("nesterov not a bool", lambda: jaxdrop.sgd(0.1, momentum=0.9, nesterov="yes"), TypeError,
     "nesterov must be True or False"),
    ("fractional stop_step", lambda: jaxdrop.early_dropout(0.1, 2.5), ValueError,
     "stop_step must be a whole number of steps >= 0"),
    ("bool start_step", lambda: jaxdrop.late_dropout(0.1, True), TypeError, "start_step must be an int"),
    ("a penalty over a leaf of PRNG keys", lambda: jaxdrop.l2_penalty({"rng": jax.random.split(jax.random.key(0), 4)
                                                                        .reshape(2, 2)}),
     TypeError, "params leaf \\['rng'\\] has dtype key"),
    # Key hints that named a positional key the function does not take.
    ("lstm without a key", lambda: jaxdrop.lstm(jaxdrop.init_lstm_params(jax.random.key(0), 8, 4), X[:, None],
                                               dropout=0.2),
     ValueError, re.escape("jaxdrop.lstm(..., key=jax.random.key(0))")),
    ("attention without dropout_rng", lambda: jaxdrop.attention.dot_product_attention(
        *[X.reshape(1, 4, 2, 4)] * 3, dropout_rate=0.1, deterministic=False),
     ValueError, re.escape("dot_product_attention(..., dropout_rng=jax.random.key(0)), ") + ".*deterministic=True"),
]


@pytest.mark.parametrize(("fault", "action", "error", "message"), LIBRARY, ids=[row[0] for row in LIBRARY])
def test_library_inputs(fault, action, error, message):
  with pytest.raises(error, match=message):
    action()


def test_sharp_library_edges_give_the_documented_answer():
  key = lambda: jax.random.key(0)  # a fresh key object per call (the tests check key reuse)
  half = np.asarray(jaxdrop.dropout(key(), X, 0.5))
  # Bitwise by construction below: each input is normalized first to the same Python float, tuple or key.
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
  np.testing.assert_array_equal(valid, X)  # exact: inverted evaluation selects x where the rate is valid
  empty = jnp.ones((2, 0, 0, 3))
  assert jaxdrop.drop_block(key(), empty, 0.5, block_size=3).shape == empty.shape  # 0 x 0 maps: nothing to drop


def test_the_key_hint_of_a_positional_key_is_unchanged():
  with pytest.raises(ValueError, match=re.escape("got key=None. Pass one, e.g. f(jax.random.key(0), ...), and")):
    _checks.check_key(None, fn="f")
  with pytest.raises(ValueError, match=re.escape("e.g. f(..., rng=jax.random.key(0)), and use a fresh key")):
    _checks.check_key(None, fn="f", argument="rng")


def test_values_that_were_silently_wrong_are_right():
  """Issue 17: complex and int32 penalties, and the max-norm gradient at an all-zero column (the exact checks
  are in test_penalties.py and test_weight_decay.py)."""
  assert float(jaxdrop.l2_penalty({"kernel": jnp.array([[1j, 1j]], jnp.complex64)})) == 1.0  # was -1+0j
  assert float(jaxdrop.l1_penalty({"kernel": jnp.array([[2j, 2j]], jnp.complex64)})) == 4.0  # was -4+0j
  big = jaxdrop.l2_penalty({"kernel": jnp.full((2, 2), 50000, jnp.int32)})  # int32 overflowed
  np.testing.assert_allclose(float(big), 4 * 50000.0**2 / 2, rtol=1e-6)
  grad = jax.grad(lambda k: jnp.sum(jaxdrop.max_norm_projection({"kernel": k}, 3.0)["kernel"]))(jnp.zeros((3, 2)))
  np.testing.assert_array_equal(grad, np.ones((3, 2), np.float32))  # was NaN; the identity's row sums


@pytest.mark.parametrize("name", ["dropout", "alpha_dropout", "drop_path"])
def test_forward_mode_autodiff_works_and_agrees_with_reverse_mode(name):
  fn = getattr(jaxdrop, name)
  x = jax.random.normal(jax.random.key(4), (4, 6))
  f = lambda x: fn(jax.random.key(3), x, 0.4)
  y, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
  # Bitwise by construction: the primal runs the same eager ops; every tangent and cotangent is t * scale or
  # 0, one multiply by the same float32 scale (nothing to fuse), in either mode, jitted or not.
  np.testing.assert_array_equal(y, f(x))
  np.testing.assert_array_equal(jax.jacfwd(f)(x), jax.jacrev(f)(x))
  _, vjp = jax.vjp(f, x)
  np.testing.assert_array_equal(tangent, vjp(jnp.ones_like(x))[0])  # elementwise: J 1 == J^T 1
  np.testing.assert_array_equal(jax.jit(lambda x: jax.jvp(f, (x,), (x,))[1])(x), jax.jvp(f, (x,), (x,))[1])
  assert jax.hessian(lambda x: jnp.sum(f(x) ** 2))(x).shape == (4, 6, 4, 6)
