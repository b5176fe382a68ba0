"""Gated attention output: y * sigmoid(W_g x) per head and channel, before the output projection.

Qiu et al. 2025, "Gated Attention for Large Language Models" (arXiv:2505.06708), as used by
Qwen3-Next and Qwen3.5 (HF `Qwen3NextAttention`, `Qwen3_5Attention`: their `q_proj` produces each
head's query and gate side by side; model/hf/qwen3_5.py splits those rows into our `c_attn` and
`gate.proj`). The gate is computed from the block input x, the same normed input q, k, v are read
from, elementwise over each head's output: a head can switch itself off for a token (no attention
sink needed to "attend nowhere") and the gate adds a non-linearity between W_V and W_O.
Config: attn_gate (the attention mixers build the gate only when it is on), bias.
"""

import torch
from torch import nn

from ..config import ModelConfig


class OutputGate(nn.Module):
    """sigmoid(W_g x) * y: x (B, T, n_embd), y (B, T, n_head * head_dim) the concatenated heads."""

    def __init__(self, cfg: ModelConfig, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(cfg.n_embd, out_dim, bias=cfg.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y * torch.sigmoid(self.proj(x))
