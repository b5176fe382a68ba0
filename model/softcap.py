"""Logit soft-capping (Gemma 2, arXiv:2408.00118): cap * tanh(logits / cap).

A smooth clamp to (-cap, cap) that is the identity near zero, so no logit can grow without bound.
Gemma 2 applies it to the output logits (`model.final_softcap`) and to the attention scores
(`model.attn_softcap`).
"""

import torch
from torch import nn


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(x / cap), in x's dtype, as HF `Gemma2ForCausalLM` computes it."""
    return torch.tanh(x / cap) * cap


class Softcap(nn.Module):
    """`softcap` as a module. Config: final_softcap (0 = off, built as `nn.Identity`)."""

    def __init__(self, cap: float):
        super().__init__()
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softcap(x, self.cap)

    def extra_repr(self) -> str:
        return f"cap={self.cap}"


def build_softcap(cap: float) -> nn.Module:
    return Softcap(cap) if cap else nn.Identity()
