"""Attention masks from the absolute positions of queries and keys, with or without a cache.

A key at position j is visible to a query at position i when
    j <= i                      (causal)
    j >  i - window             (sliding window: the query itself and the window - 1 before it)
which is HF's `sliding_window_overlay` (Mistral, Gemma 2/3). Query positions are always given; key
positions are None when the keys are positions 0 .. S - 1 in order (no cache, or a full cache), else
a (S,) tensor from the cache (a ring buffer, a static buffer whose unwritten slots sit after every
query).
"""

import torch


def visible_keys(q_pos: torch.Tensor, k_pos: torch.Tensor | None, S: int, window: int) -> torch.Tensor:
    """Boolean (T, S) mask, True where the key may be attended; window 0 = no window."""
    if k_pos is None:
        k_pos = torch.arange(S, device=q_pos.device)
    q, k = q_pos[:, None], k_pos[None, :]  # (T, 1), (1, S)
    mask = k <= q
    if window:
        mask = mask & (k > q - window)
    return mask
