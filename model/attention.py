"""Causal self-attention through `F.scaled_dot_product_attention`.

SDPA dispatches to FlashAttention / memory-efficient kernels on CUDA and to a fused kernel on CPU,
so the model never materialises the (T, T) score matrix itself.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .kv_cache import KVCache


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al. 2017, arXiv:1706.03762).

    One fused projection `c_attn` produces queries, keys and values; with `n_kv_head < n_head`
    several query heads share one key/value head (GQA, arXiv:2305.13245; MQA when n_kv_head = 1).
    Matches HF `GPT2Attention`. Config: n_head, n_kv_head, head_dim, bias, dropout.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        q_dim, kv_dim = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, q_dim + 2 * kv_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(q_dim, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """x: (B, T, n_embd); positions: (T,) absolute positions of x's tokens."""
        B, T, _ = x.shape
        q_dim, kv_dim = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([q_dim, kv_dim, kv_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, hd)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, n_kv_head, S, hd), S = cached + T
        S = k.shape[2]
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=causal_mask(T, S, x.device) if 1 < T < S else None,
            is_causal=T == S and T > 1,  # T == 1: one new token may see every cached one
            dropout_p=self.attn_dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )
        y = y.transpose(1, 2).reshape(B, T, q_dim)
        return self.resid_dropout(self.c_proj(y))


def causal_mask(T: int, S: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, S) mask for T queries that are the last T of S keys: key j is visible to query i
    when j <= i + (S - T). (SDPA's `is_causal` aligns the corner top-left, which is only right for T == S.)"""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)
