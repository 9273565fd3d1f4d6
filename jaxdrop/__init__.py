"""jaxdrop: dropout, weight penalties and weight decay for JAX, Flax and optax.

Pure functions take an explicit PRNG key first (``rate`` is always the drop
probability); Flax layers live in :mod:`jaxdrop.linen` and :mod:`jaxdrop.nnx`.
"""

from jaxdrop import _bits, attention
from jaxdrop._alpha_dropout import alpha_dropout
from jaxdrop._averaging import EmaState, SwaState, averaged_params, ema, ema_decay, swa
from jaxdrop._concrete_dropout import concrete_dropout, concrete_dropout_regularizer
from jaxdrop._drop_block import drop_block
from jaxdrop._drop_connect import drop_connect
from jaxdrop._drop_path import drop_path
from jaxdrop._dropout import dropout, dropout_eval, keep_probability
from jaxdrop._embedding_dropout import embedding_dropout, embedding_matrix_dropout
from jaxdrop._gaussian_dropout import gaussian_dropout
from jaxdrop._gaussian_noise import gaussian_noise
from jaxdrop._layer_drop import layer_drop, layer_drop_mask
from jaxdrop._lstm import init_lstm_params, lstm
from jaxdrop._max_norm import fan_in_axes, max_norm, max_norm_projection
from jaxdrop._mc_dropout import MCDropoutPrediction, mc_dropout
from jaxdrop._param_masks import all_params, decay_mask, param_names, resolve_mask, weights_only
from jaxdrop._patch_dropout import patch_dropout
from jaxdrop._penalties import (
    elastic_net_penalty,
    l1_penalty,
    l2_norm_penalty,
    l2_penalty,
    orthogonal_penalty,
)
from jaxdrop._r_drop import r_drop_loss, symmetric_kl
from jaxdrop._schedules import drop_path_rates, early_dropout, late_dropout
from jaxdrop._spec_augment import frequency_mask, mask_along_axis, time_mask
from jaxdrop._swa_schedules import cyclic_swa_schedule, swa_lr_schedule
from jaxdrop._update_bn import update_bn
from jaxdrop._weight_decay import adam, adamw, add_weight_decay, sgd

__version__ = "0.1.0"

# Assigned here, not imported, so that Sphinx reads the #: comment under the public name.
#: The name and version of what decides the mask bits drawn for a key (the generator, its rounds, the lane
#: layout). Runs record it, and a change to the masks must change it.
MASK_GENERATOR = _bits.MASK_GENERATOR
#: The name and version of the masks drawn for keys of :data:`PHILOX7` (7-round Philox, four words a hash);
#: runs record it beside :data:`MASK_GENERATOR`.
MASK_GENERATOR_7 = _bits.MASK_GENERATOR_7
#: A ``jax.random`` key implementation, Philox-4x32 of 7 rounds: jaxdrop draws the masks of
#: ``jax.random.key(seed, impl=jaxdrop.PHILOX7)`` from it (an opt-in, cheaper generator; see
#: "How masks are drawn").
PHILOX7 = _bits.PHILOX7
mask_generator = _bits.mask_generator

__all__ = [
    "MASK_GENERATOR",
    "MASK_GENERATOR_7",
    "PHILOX7",
    "EmaState",
    "MCDropoutPrediction",
    "SwaState",
    "adam",
    "adamw",
    "add_weight_decay",
    "all_params",
    "alpha_dropout",
    "attention",
    "averaged_params",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "cyclic_swa_schedule",
    "decay_mask",
    "drop_block",
    "drop_connect",
    "drop_path",
    "drop_path_rates",
    "dropout",
    "dropout_eval",
    "early_dropout",
    "elastic_net_penalty",
    "ema",
    "ema_decay",
    "embedding_dropout",
    "embedding_matrix_dropout",
    "fan_in_axes",
    "frequency_mask",
    "gaussian_dropout",
    "gaussian_noise",
    "init_lstm_params",
    "keep_probability",
    "l1_penalty",
    "l2_norm_penalty",
    "l2_penalty",
    "late_dropout",
    "layer_drop",
    "layer_drop_mask",
    "lstm",
    "mask_along_axis",
    "mask_generator",
    "max_norm",
    "max_norm_projection",
    "mc_dropout",
    "orthogonal_penalty",
    "param_names",
    "patch_dropout",
    "r_drop_loss",
    "resolve_mask",
    "sgd",
    "swa",
    "swa_lr_schedule",
    "symmetric_kl",
    "time_mask",
    "update_bn",
    "weights_only",
]
