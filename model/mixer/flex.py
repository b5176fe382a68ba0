"""FlexAttention (PyTorch `torch.nn.attention.flex_attention`, Dong et al. 2024, arXiv:2412.05496)
for the attention variants that SDPA's fused kernels cannot take:

    sliding window   a block mask: whole (128 x 128) blocks outside the band are skipped, not masked
    logit softcap    a score_mod: score -> cap * tanh(score / cap), inside the fused kernel (Gemma 2)
    attention sinks  the kernel's log-sum-exp: a sink logit s joins the softmax denominator, so
                     out = out_without_sink * sigmoid(lse - s)   (gpt-oss)

The result equals `softmax_attention` (model/mixer/attention.py), without the (T, S) score matrix.
FlexAttention is fast only compiled and has no backward on CPU, so `model.kernels.use_device_kernels`
picks it on CUDA only; the CPU tests compare its (eager) forward with the written-out kernel.
Block masks are built once per (T, S, window, device) and cached.
"""

import functools

import torch

try:  # PyTorch >= 2.9 (AuxRequest)
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older PyTorch: the CUDA path keeps SDPA / softmax
    flex_attention = None


def available() -> bool:
    return flex_attention is not None


@functools.lru_cache(maxsize=64)
def block_mask(T: int, S: int, window: int, device: str):
    """Causal (and, with window > 0, sliding-window) mask of T queries that are the last T of S keys."""
    offset = S - T  # query i sits at absolute position i + S - T

    def visible(b, h, q_idx, kv_idx):
        q_pos = q_idx + offset
        keep = kv_idx <= q_pos
        return keep & (kv_idx > q_pos - window) if window else keep

    return create_block_mask(visible, None, None, T, S, device=device)


@functools.lru_cache(maxsize=None)
def _compiled():
    return torch.compile(flex_attention, dynamic=False)


def flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float,
                softcap: float = 0.0, sinks: torch.Tensor | None = None, compiled: bool = True
                ) -> torch.Tensor:
    """q (B, n_head, T, hd), k/v (B, n_kv_head, S, hd) -> (B, n_head, T, hd)."""
    mask = block_mask(q.shape[2], k.shape[2], window, str(q.device))
    score_mod = None
    if softcap:
        def score_mod(score, b, h, q_idx, kv_idx):
            return softcap * torch.tanh(score / softcap)
    attend = _compiled() if compiled else flex_attention
    out, aux = attend(q, k, v, score_mod=score_mod, block_mask=mask, scale=scale,
                      enable_gqa=k.shape[1] != q.shape[1], return_aux=AuxRequest(lse=True))
    if sinks is not None:  # (B, n_head, T) lse in fp32; the sink's share of each softmax is removed
        keep = torch.sigmoid(aux.lse - sinks.float().view(1, -1, 1))
        out = out * keep.unsqueeze(-1).to(out.dtype)
    return out
