"""Flax NNX layers: a ``deterministic`` attribute (``train()``/``eval()``/``nnx.view``) and ``rngs``."""

from jaxdrop.nnx.attention import MultiHeadAttention
from jaxdrop.nnx.drop_connect import DropConnectLinear
from jaxdrop.nnx.dropout import AlphaDropout, DropBlock, DropPath, Dropout, GaussianDropout
from jaxdrop.nnx.lstm import LSTM

__all__ = [
    "LSTM",
    "AlphaDropout",
    "DropBlock",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "MultiHeadAttention",
]
