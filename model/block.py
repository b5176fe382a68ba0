"""One transformer block: attention and MLP, each wrapped in a norm and a residual connection."""

import torch
from torch import nn

from .attention import CausalSelfAttention
from .config import ModelConfig
from .kv_cache import KVCache
from .mlp import build_mlp
from .norm import build_norm


class Block(nn.Module):
    """Pre-norm residual block (GPT-2, Radford et al. 2019): x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    Normalising the input of each branch, not the residual stream, keeps a clean identity path from
    the embeddings to the output, which is what lets deep stacks train without warm-up tricks.
    Matches HF `GPT2Block`. Config: norm, mlp (and everything attention and the MLP read).
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = build_norm(cfg)
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.ln_2 = build_norm(cfg)
        self.mlp = build_mlp(cfg)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), positions, cache)
        x = x + self.mlp(self.ln_2(x))
        return x
