"""Autoregressive sampling with temperature and top-k, decoding through the KV cache."""

import torch

from .gpt import GPT
from .sampling import check_sampling, sample_next


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend idx (B, T) by `max_new_tokens` sampled tokens; returns (B, T + max_new_tokens).

    The prompt is run once to fill the cache, then each new token costs one single-token forward.
    The total length is capped at model.config.block_size. temperature 0 means greedy decoding;
    top_k 0 means sampling from the whole vocabulary.
    """
    check_sampling(temperature, top_k, 1.0)
    block_size = model.config.block_size
    if idx.shape[1] + max_new_tokens > block_size:
        raise ValueError(
            f"prompt ({idx.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
            f"model.block_size={block_size}"
        )
    model.eval()
    cache = model.new_cache(idx.shape[0], idx.shape[1] + max_new_tokens)
    logits = model(idx, cache=cache)[:, -1, :]  # (B, vocab_size)
    out = [idx]
    for i in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, generator)  # (B, 1)
        out.append(next_id)
        if i + 1 < max_new_tokens:
            logits = model(next_id, cache=cache)[:, -1, :]
    return torch.cat(out, dim=1)
