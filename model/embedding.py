"""Token embeddings, optionally scaled by sqrt(n_embd) (`model.embed_scale`)."""

import math

import torch
from torch import nn


class ScaledEmbedding(nn.Embedding):
    """Token embedding multiplied by sqrt(n_embd) (Vaswani et al. 2017, arXiv:1706.03762; Gemma).

    The original Transformer scaled its (tied) embeddings this way and Gemma keeps it: the table
    stays small, as suits the LM head it is tied to, while the residual stream starts at O(1).
    The factor is rounded to the embedding dtype before multiplying, as HF
    `Gemma2TextScaledWordEmbedding` does (sqrt(3584) is not exact in bf16). Config: embed_scale.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__(num_embeddings, embedding_dim)
        self.scale = math.sqrt(embedding_dim)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = super().forward(idx)  # (B, T, n_embd)
        return x * x.new_full((), self.scale)
