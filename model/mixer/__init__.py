"""Sequence mixers: the slot of a block that moves information between positions (attention)."""

from .attention import CausalSelfAttention
from .deltanet import GatedDeltaNet
from .mla import MultiHeadLatentAttention

# `ModelConfig.mixer(i)` -> the mixer of block i: `model.attention`, or `model.linear_attention` on
# the linear layers of a hybrid ([model.deltanet] full_every).
MIXERS = {"gqa": CausalSelfAttention, "mla": MultiHeadLatentAttention, "gated_deltanet": GatedDeltaNet}
