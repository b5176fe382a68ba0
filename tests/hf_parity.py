"""Helpers for the parity tests against HF transformers: tiny sizes, random weights, one batch."""

import torch

ATOL = 1e-4
VOCAB = 130  # not a multiple of 64: the padding rows of our tables are exercised
TINY = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter N(0, 0.3); 1-D parameters (norm scales, biases, sinks) around 1 instead, so
    plain RMSNorm scales keep their sign and the residual stream its size. Unit-offset scales
    (Gemma) then sit around 2, which is as good a test."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return model.eval()


def tokens(B: int = 2, T: int = 40) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(1))


def assert_logits_match(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Within ATOL everywhere; returns the largest |difference| for the record."""
    assert ours.shape == theirs.shape == (2, 40, VOCAB)
    assert theirs.std() > 0.3  # logits far from constant, so a missing copy cannot hide under ATOL
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    return (ours - theirs).abs().max().item()
