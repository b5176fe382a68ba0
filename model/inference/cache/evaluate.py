"""Teacher-forced loss through a generation cache: what a cache format costs in quality.

The tokens are fed `chunk` at a time into one cache, as decoding would feed them, and each chunk's
logits are scored against the next tokens. With the full-precision cache this equals the plain
forward's loss (up to float rounding); with a quantized cache (`kv_dtype="int8"/"int4"`) later
queries attend to the dequantized keys and values of earlier chunks, so the loss difference is the
quality the format costs. Used by scripts/eval_kv_cache.py.
"""

import torch
from torch.nn import functional as F

from ...config import check_int


@torch.no_grad()
def cached_loss(model, x: torch.Tensor, y: torch.Tensor, chunk: int = 16, **cache_options) -> float:
    """Mean cross-entropy (nats per token) of targets y (B, T) given inputs x (B, T), with x fed
    through a fresh `model.new_cache(B, T, **cache_options)` in chunks of `chunk` tokens."""
    check_int("chunk", chunk, 1)
    cache = model.new_cache(x.shape[0], x.shape[1], **cache_options)
    total = 0.0
    for t in range(0, x.shape[1], chunk):
        logits = model(x[:, t : t + chunk], cache=cache)  # (B, chunk, vocab_size)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y[:, t : t + chunk].flatten(), reduction="sum").item()
    return total / y.numel()
