"""Flax NNX layers: a ``deterministic`` attribute (``train()``/``eval()``/``nnx.view``) and ``rngs``."""

from jaxdrop.nnx._attention import MultiHeadAttention
from jaxdrop.nnx._concrete_dropout import ConcreteDropout
from jaxdrop.nnx._drop_connect import DropConnectLinear
from jaxdrop.nnx._dropout import AlphaDropout, DropBlock, Dropout, DropPath, GaussianDropout
from jaxdrop.nnx._gaussian_noise import GaussianNoise
from jaxdrop.nnx._layer_drop import LayerDrop
from jaxdrop.nnx._lora import LoRA, LoRALinear
from jaxdrop.nnx._lstm import LSTM
from jaxdrop.nnx._structured import EmbeddingDropout, FrequencyMasking, PatchDropout, TimeMasking

__all__ = [
    "LSTM",
    "AlphaDropout",
    "ConcreteDropout",
    "DropBlock",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "EmbeddingDropout",
    "FrequencyMasking",
    "GaussianDropout",
    "GaussianNoise",
    "LayerDrop",
    "LoRA",
    "LoRALinear",
    "MultiHeadAttention",
    "PatchDropout",
    "TimeMasking",
]
