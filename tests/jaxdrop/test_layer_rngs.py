"""Layers without the random stream they need say which to give: linen attention like the other linen layers,
NNX layers at construction (as flax's own would fail there) and at call time."""

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx

X = jax.random.normal(jax.random.key(0), (2, 5, 8))

# flax.linen.SelfAttention (which jdl.SelfAttention extends) warns that it will be deprecated, on every call.
pytestmark = pytest.mark.filterwarnings("ignore:SelfAttention will be deprecated:DeprecationWarning")

# --- linen attention: the other jaxdrop linen layers' message, not flax's 'None needs PRNG for "dropout"'


def attention_layers():
  return {"MultiHeadDotProductAttention": jdl.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.1),
          "SelfAttention": jdl.SelfAttention(num_heads=2, dropout_rate=0.1)}


@pytest.mark.parametrize("name", sorted(attention_layers()))
def test_linen_attention_training_without_a_dropout_rng_names_the_fixes(name):
  layer = attention_layers()[name]
  variables = layer.init(jax.random.key(1), X, deterministic=True)
  with pytest.raises(flax.errors.InvalidRngError) as raised:
    layer.apply(variables, X, deterministic=False)
  message = str(raised.value)
  assert message.startswith(f'{name} is not deterministic, so it needs a PRNG key from the "dropout"')
  assert 'rngs={"dropout": jax.random.key(0)}' in message and "dropout_rng=" in message
  assert "deterministic=True" in message
  # The words of the other linen layers (only the layer's name and its key argument differ).
  with pytest.raises(flax.errors.InvalidRngError) as other:
    jdl.Dropout(0.5).apply({}, X, deterministic=False)
  assert message.replace(name, "Dropout").replace("dropout_rng=", "rng=") == str(other.value)


@pytest.mark.parametrize("name", sorted(attention_layers()))
def test_linen_attention_still_runs_wherever_flax_finds_a_key(name):
  layer = attention_layers()[name]
  variables = layer.init(jax.random.key(1), X, deterministic=False)  # init: make_rng falls back to "params"
  evaluation = layer.apply(variables, X, deterministic=True)
  flax_layer = (nn.MultiHeadDotProductAttention if name != "SelfAttention" else nn.SelfAttention)(
      num_heads=2, dropout_rate=0.1)
  # Bitwise: without dropout both layers run the same projections and softmax attention of flax's code.
  np.testing.assert_array_equal(evaluation, flax_layer.apply(variables, X, deterministic=True))
  trained = {
      "rngs dropout": layer.apply(variables, X, deterministic=False, rngs={"dropout": jax.random.key(2)}),
      "dropout_rng": layer.apply(variables, X, deterministic=False, dropout_rng=jax.random.key(2)),
      "rngs params": layer.apply(variables, X, deterministic=False, rngs={"params": jax.random.key(2)}),
  }
  for how, out in trained.items():
    assert out.shape == X.shape and not np.array_equal(out, evaluation), how  # dropped something
  no_rate = (jdl.MultiHeadDotProductAttention if name != "SelfAttention" else jdl.SelfAttention)(num_heads=2)
  # Rate 0: nothing to draw, no rng needed.
  np.testing.assert_array_equal(no_rate.apply(variables, X, deterministic=False), evaluation)


def test_linen_attention_keeps_flax_s_deterministic_errors():
  layer = jdl.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.1)
  variables = layer.init(jax.random.key(1), X, deterministic=True)
  with pytest.raises(ValueError, match="deterministic"):  # neither attribute nor argument: flax's error
    layer.apply(variables, X)


# --- NNX: an nnx.Rngs without the stream ---------------------------------------------------------------


NNX_OPTIONAL_RNGS = {  # layers whose rngs may be None (a key at call time instead)
    "Dropout": lambda r: jdx.Dropout(0.5, rngs=r),
    "GaussianDropout": lambda r: jdx.GaussianDropout(0.5, rngs=r),
    "AlphaDropout": lambda r: jdx.AlphaDropout(0.5, rngs=r),
    "DropPath": lambda r: jdx.DropPath(0.5, rngs=r),
    "DropBlock": lambda r: jdx.DropBlock(0.5, block_size=2, rngs=r),
    "GaussianNoise": lambda r: jdx.GaussianNoise(0.5, rngs=r),
}
NNX_WITH_PARAMS = {  # layers whose rngs also draws their parameters
    "LSTM": lambda r: jdx.LSTM(8, 4, dropout=0.5, rngs=r),
    "DropConnectLinear": lambda r: jdx.DropConnectLinear(8, 4, rngs=r),
    "ConcreteDropout": lambda r: jdx.ConcreteDropout(nnx.Linear(8, 4, rngs=nnx.Rngs(0)), length_scale=1e-2,
                                                     data_size=10, rngs=r),
    "MultiHeadAttention": lambda r: jdx.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=0.5,
                                                           decode=False, rngs=r),
}


@pytest.mark.parametrize("name", sorted(NNX_OPTIONAL_RNGS) + sorted(NNX_WITH_PARAMS))
def test_nnx_layers_built_without_a_dropout_stream_say_how_to_build_them(name):
  make = {**NNX_OPTIONAL_RNGS, **NNX_WITH_PARAMS}[name]
  with pytest.raises(ValueError) as raised:
    make(nnx.Rngs(params=0))
  message = str(raised.value)
  assert message.startswith(f'{name} needs a "dropout" random stream, but its rngs has none')
  assert "(its streams: params)" in message
  assert "rngs=nnx.Rngs(0) or nnx.Rngs(params=0, dropout=1)" in message
  if name in NNX_OPTIONAL_RNGS:
    assert message.endswith(", or with rngs=None and pass rngs= at call time.")
  elif name == "MultiHeadAttention":
    assert message.endswith(", or with keep_rngs=False and pass rngs= at call time.")
  else:
    assert message.endswith("nnx.Rngs(params=0, dropout=1).")
  for rngs in (nnx.Rngs(0), nnx.Rngs(params=0, dropout=1)):  # what it says works (the default stream too)
    layer = make(rngs)
    out = layer(X if name != "DropBlock" else X[..., None], deterministic=False)
    assert out.shape[0] == X.shape[0]


def test_an_empty_rngs_is_named_as_such():
  with pytest.raises(ValueError, match=r"\(its streams: none\): construct it with rngs=nnx.Rngs\(0\) or "
                                       r"nnx.Rngs\(dropout=0\), or with rngs=None"):
    jdx.Dropout(0.5, rngs=nnx.Rngs())


def test_nnx_layers_take_the_stream_at_call_time_as_flax_does():
  layer = jdx.Dropout(0.5)  # rngs=None, as flax.nnx.Dropout allows
  assert layer(X, rngs=nnx.Rngs(dropout=1)).shape == X.shape
  with pytest.raises(ValueError, match=r'^Dropout needs a "dropout" random stream, but the rngs passed at '
                                       r"call time has none \(its streams: params\): pass rngs=nnx.Rngs\(0\)"
                                       r" or nnx.Rngs\(params=0, dropout=1\), an nnx.RngStream or a key.$"):
    layer(X, rngs=nnx.Rngs(params=1))
  np.testing.assert_array_equal(layer(X, rngs=nnx.Rngs(params=1), deterministic=True), X)  # nothing drawn


def test_nnx_attention_follows_flax_where_it_needs_no_stream():
  no_dropout = jdx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, rngs=nnx.Rngs(params=0))
  np.testing.assert_array_equal(no_dropout(X, deterministic=False), no_dropout(X, deterministic=True))
  late = jdx.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=0.5, decode=False, keep_rngs=False,
                                rngs=nnx.Rngs(params=0))  # flax: no stream kept, rngs= at call time
  evaluation = late(X, deterministic=True)
  assert not np.array_equal(late(X, deterministic=False, rngs=nnx.Rngs(dropout=1)), evaluation)
  with pytest.raises(ValueError, match=r"^MultiHeadAttention needs .* the rngs passed at call time has none "
                                       r"\(its streams: params\): .* or an nnx.RngStream.$"):
    late(X, deterministic=False, rngs=nnx.Rngs(params=1))
  stream = nnx.Rngs(dropout=1).dropout
  assert late(X, deterministic=False, rngs=stream).shape == X.shape


def test_a_stream_from_the_default_seed_is_the_same_as_before():
  # nnx.Rngs(0)'s "default" stream serves "dropout" as in flax: the layer draws what flax.nnx.Dropout would
  # draw its key from (the same stream, forked alike), so both see the same keys.
  ours, flax_layer = jdx.Dropout(0.5, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(0))
  assert jnp.array_equal(jax.random.key_data(ours.rngs()), jax.random.key_data(flax_layer.rngs()))
