"""Learned routes into the residual stream: x0 lambdas and U-net skip connections.

x0 lambdas (modded-nanogpt; nanochat): before block i the stream is re-mixed with x0, the output
of the embedding,

    x <- a_i x + b_i x0,        a_i = 1, b_i = 0.1 at init (nanochat's),

so every block can read the token itself however deep it sits, and can scale down what the
blocks before it wrote. Two scalars per block.

U-net skips (modded-nanogpt, after Ronneberger et al. 2015, arXiv:1505.04597, and the long skips
of U-ViT, arXiv:2209.12152): the outputs of the first n_layer // 2 blocks are kept and added,
mirrored, to the inputs of the last n_layer // 2, each with a learned weight w_j (1 at init):
with 4 blocks, block 2 gets w_1 * (block 1's output), block 3 gets w_0 * (block 0's output).

Both change only what enters each block, never a block itself, so they apply to every mixer.
Config: x0_lambdas, unet_skips.
"""

import torch
from torch import nn

from .config import ModelConfig

X0_INIT = 0.1


class Streams(nn.Module):
    """Runs the blocks with the routes `cfg` turns on (GPT.forward runs them plainly otherwise)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n = cfg.n_layer
        self.resid_lambdas = nn.Parameter(torch.empty(n)) if cfg.x0_lambdas else None
        self.x0_lambdas = nn.Parameter(torch.empty(n)) if cfg.x0_lambdas else None
        self.skip_weights = nn.Parameter(torch.empty(n // 2)) if cfg.unet_skips else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.x0_lambdas is not None:
            self.resid_lambdas.fill_(1.0)
            self.x0_lambdas.fill_(X0_INIT)
        if self.skip_weights is not None:
            self.skip_weights.fill_(1.0)

    def forward(self, blocks: nn.ModuleList, x: torch.Tensor, positions: torch.Tensor, cache,
                values: list[torch.Tensor | None], terms: dict | None = None) -> torch.Tensor:
        x0, n, saved = x, len(blocks), []
        half = n // 2 if self.skip_weights is not None else 0
        for i, (block, ve) in enumerate(zip(blocks, values)):
            if self.x0_lambdas is not None:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            if i >= n - half:  # the decoder half: the mirrored encoder block's output
                x = x + self.skip_weights[n - 1 - i] * saved[n - 1 - i]
            x = block(x, positions, cache, ve, terms)
            if i < half:
                saved.append(x)
        return x
