"""Flax linen layers: ``deterministic`` as an attribute or call argument, keys from ``"dropout"``."""

from jaxdrop.linen._attention import MultiHeadDotProductAttention, SelfAttention
from jaxdrop.linen._concrete_dropout import ConcreteDropout
from jaxdrop.linen._drop_connect import DropConnectDense
from jaxdrop.linen._dropout import AlphaDropout, DropBlock, Dropout, DropPath, GaussianDropout
from jaxdrop.linen._gaussian_noise import GaussianNoise
from jaxdrop.linen._layer_drop import LayerDrop
from jaxdrop.linen._lstm import LSTM
from jaxdrop.linen._structured import EmbeddingDropout, FrequencyMasking, PatchDropout, TimeMasking

__all__ = [
    "LSTM",
    "AlphaDropout",
    "ConcreteDropout",
    "DropBlock",
    "DropConnectDense",
    "DropPath",
    "Dropout",
    "EmbeddingDropout",
    "FrequencyMasking",
    "GaussianDropout",
    "GaussianNoise",
    "LayerDrop",
    "MultiHeadDotProductAttention",
    "PatchDropout",
    "SelfAttention",
    "TimeMasking",
]
