"""From logits to the next token: temperature, top-k and top-p (nucleus) filtering, and the draw.

Greedy decoding is temperature 0. Otherwise logits are divided by the temperature, the top_k best
kept (0 = all), then the smallest set of best tokens whose probability reaches top_p (1.0 = all;
Holtzman et al. 2019, arXiv:1904.09751). `probabilities` is what speculative decoding compares
between the draft and the target; `sample_next` draws from it.
"""

import torch

from ..config import check_int

# What `GPT.generate` and `python -m train.sample` sample with when not told otherwise: a slightly
# sharpened distribution (0.8, as nanoGPT's sample.py) among the 50 most likely tokens (HF
# transformers' default top_k). Temperature 0 is greedy; top_k 0 keeps the whole vocabulary.
TEMPERATURE = 0.8
TOP_K = 50


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """ValueError naming the argument for settings that define no distribution."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
    check_int("top_k", top_k, 0)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p}")


def probabilities(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(..., V) logits -> (..., V) fp32 probabilities after the filters; temperature must be > 0."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the better tokens
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the best token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample_next(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from (B, V) logits -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = probabilities(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)
