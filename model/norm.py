"""Normalization layers, chosen by `model.norm`.

GPT-2 uses LayerNorm (Ba et al. 2016, arXiv:1607.06450) with a learned scale and, when
`model.bias`, a learned shift. Each norm is built by name from `NORMS`, so a new norm is one class
and one registry entry.
"""

from torch import nn

from .config import ModelConfig


def layer_norm(cfg: ModelConfig, dim: int) -> nn.Module:
    return nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias)


NORMS = {"layernorm": layer_norm}


def build_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    return NORMS[cfg.norm](cfg, dim or cfg.n_embd)
