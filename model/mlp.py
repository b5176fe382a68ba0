"""Feed-forward (MLP) blocks, chosen by `model.mlp`.

The MLP is the component slot of a block that a Mixture-of-Experts layer will later fill, so every
class here takes only the config and maps (B, T, n_embd) -> (B, T, n_embd).
"""

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig


class MLP(nn.Module):
    """GPT-2's feed-forward: Linear -> GELU (tanh approximation) -> Linear -> dropout.

    Radford et al. 2019; GELU from Hendrycks & Gimpel 2016 (arXiv:1606.08415). Matches HF `GPT2MLP`.
    Config: n_embd, mlp_hidden (default 4 * n_embd), bias, dropout.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


MLPS = {"gelu": MLP}


def build_mlp(cfg: ModelConfig) -> nn.Module:
    return MLPS[cfg.mlp](cfg)
