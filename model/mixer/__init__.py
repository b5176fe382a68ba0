"""Sequence mixers: the slot of a block that moves information between positions (attention)."""

from ..config import ModelConfig
from .attention import CausalSelfAttention

# The mixer of block `layer_idx`; a new mixer (MLA, linear attention) is one more entry here.
MIXERS = {"attention": CausalSelfAttention}


def build_mixer(cfg: ModelConfig, layer_idx: int):
    return MIXERS["attention"](cfg, layer_idx)
