"""Attention masks for causal and sliding-window attention, with or without a KV cache.

Queries are always the last T of S keys (S = T without a cache, S = cached + T with one), so query i
sits at absolute position i + S - T. A key at position j is visible to it when
    j <= i + S - T                      (causal)
    j >  i + S - T - window             (sliding window: the query itself and the window - 1 before it)
which is HF's `sliding_window_overlay` (Mistral, Gemma 2/3).
"""

import torch


def visible_keys(T: int, S: int, window: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, S) mask, True where the key may be attended; window 0 = no window."""
    q_pos = torch.arange(S - T, S, device=device)[:, None]  # (T, 1) absolute query positions
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    mask = k_pos <= q_pos
    if window:
        mask = mask & (k_pos > q_pos - window)
    return mask


def sdpa_mask(T: int, S: int, window: int, device: torch.device) -> tuple[torch.Tensor | None, bool]:
    """(attn_mask, is_causal) for `F.scaled_dot_product_attention`, without a mask tensor whenever
    the pattern allows it: FlashAttention takes `is_causal` but no mask.

    - a window that reaches past the first key (S > window) needs the band mask;
    - otherwise attention is plain causal: one query sees every key, T == S is SDPA's `is_causal`,
      and 1 < T < S needs the bottom-right-aligned mask (`is_causal` aligns top-left).
    """
    if window and S > window:
        return visible_keys(T, S, window, device), False
    if T == 1:
        return None, False
    if T == S:
        return None, True
    return visible_keys(T, S, 0, device), False
