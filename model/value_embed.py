"""Value embeddings: a second token embedding, added to the attention values of alternate layers.

From modded-nanogpt (Keller Jordan et al. 2024, where three such tables cut the GPT-2 speedrun) and
nanochat (Karpathy 2025, one table per chosen layer with an input-dependent gate). The idea is
ResFormer's value residual (Zhou et al. 2024, arXiv:2410.17897) in its cheapest form: instead of the
first layer's values, every chosen layer gets values straight from the token, so a token's identity
reaches deep attention without passing through the residual stream. It costs a table lookup, no
matmul: parameters, not FLOPs. In the attention layer (model/mixer/attention.py)

    v <- v + 2 sigmoid(W_g x[..., :32]) * ve        (one gate per kv head; W_g starts at 0, gate 1)

Layers: alternate ones counted back from the last, attention layers only (a Gated DeltaNet layer
has no values to add to), never an MTP block: `ModelConfig.has_value_embed`. Config: value_embeds
(needs attention = "gqa").
"""

import torch
from torch import nn

from .config import ModelConfig

GATE_CHANNELS = 32  # the gate reads the first channels of the attention input (nanochat's choice)


def value_gate_matrices(cfg: ModelConfig, layer_idx: int) -> list[tuple[int, int]]:
    """The gate's (in, out) matrix on block `layer_idx`, or nothing (model/accounting.py)."""
    return [(min(GATE_CHANNELS, cfg.n_embd), cfg.n_kv_head)] if cfg.has_value_embed(layer_idx) else []


class ValueEmbeddings(nn.Module):
    """One (padded_vocab_size, n_kv_head * head_dim) table per chosen layer; `forward(idx)` gives
    each block's values to add, (B, T, n_kv_head * head_dim), or None where a block has none."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.n_kv_head * cfg.head_dim
        self.layers = [i for i in range(cfg.n_layer) if cfg.has_value_embed(i)]
        self.tables = nn.ModuleDict({str(i): nn.Embedding(cfg.padded_vocab_size, dim) for i in self.layers})
        self.n_layer = cfg.n_layer

    def forward(self, idx: torch.Tensor) -> list[torch.Tensor | None]:
        return [self.tables[str(i)](idx) if i in self.layers else None for i in range(self.n_layer)]


def value_gate(cfg: ModelConfig, layer_idx: int) -> nn.Linear | None:
    """The gate's projection for an attention layer with a value embedding (zeroed by GPT.init_weights)."""
    matrices = value_gate_matrices(cfg, layer_idx)
    return nn.Linear(*matrices[0], bias=False) if matrices else None


def add_value_embed(v: torch.Tensor, ve: torch.Tensor, gate: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """v (B, n_kv_head, T, hd) plus the gated value embedding ve (B, T, n_kv_head * hd); x: the
    attention input (B, T, n_embd) the gate reads."""
    B, n_kv_head, T, hd = v.shape
    g = 2 * torch.sigmoid(gate(x[..., : gate.in_features]))  # (B, T, n_kv_head), in (0, 2)
    return v + (g.unsqueeze(-1) * ve.view(B, T, n_kv_head, hd)).transpose(1, 2)
