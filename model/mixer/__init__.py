"""Sequence mixers: the slot of a block that moves information between positions (attention)."""

from ..config import ModelConfig
from .attention import CausalSelfAttention
from .mla import MultiHeadLatentAttention

# `model.attention` -> the mixer of each block; a new mixer (linear attention, ...) is one more entry.
MIXERS = {"gqa": CausalSelfAttention, "mla": MultiHeadLatentAttention}


def build_mixer(cfg: ModelConfig, layer_idx: int):
    return MIXERS[cfg.attention](cfg, layer_idx)
