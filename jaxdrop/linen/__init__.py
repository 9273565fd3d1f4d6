"""Flax linen layers: ``deterministic`` as an attribute or call argument, keys from ``"dropout"``."""

from jaxdrop.linen.attention import MultiHeadDotProductAttention, SelfAttention
from jaxdrop.linen.drop_connect import DropConnectDense
from jaxdrop.linen.dropout import AlphaDropout, DropBlock, DropPath, Dropout, GaussianDropout
from jaxdrop.linen.lstm import LSTM

__all__ = [
    "LSTM",
    "AlphaDropout",
    "DropBlock",
    "DropConnectDense",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "MultiHeadDotProductAttention",
    "SelfAttention",
]
