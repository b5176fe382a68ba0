"""Logit soft-capping (Gemma 2, arXiv:2408.00118): cap * tanh(logits / cap).

A smooth clamp to (-cap, cap) that is the identity near zero, so no logit can grow without bound.
Gemma 2 applies it to the output logits (`model.final_softcap`) and to the attention scores
(`model.attn_softcap`).
"""

import torch


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(x / cap), in x's dtype, as HF `Gemma2ForCausalLM` computes it."""
    return torch.tanh(x / cap) * cap
