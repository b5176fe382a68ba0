"""Transformer blocks: residual attention and MLP branches, norms placed by `model.norm_placement`.

Where the norms sit is the only difference between the three blocks here:

    pre       x = x + attn(ln_1(x));              x = x + mlp(ln_2(x))               GPT-2, Llama
    post      x = x + ln_1(attn(x));              x = x + ln_2(mlp(x))               OLMo 2
    sandwich  x = x + ln_1_post(attn(ln_1(x)));   x = x + ln_2_post(mlp(ln_2(x)))    Gemma 2/3

Every block takes `(x, positions, cache, ve, terms)` and returns x, shape (B, T, n_embd); ve is the
block's value embedding (model/value_embed.py), passed on to the attention layer only when there is
one. terms (a training forward's dict of extra loss terms, else None) goes to both layers: a layer
with a term of the objective (MoE's balancing, DSA's indexer loss) adds it there. The `mlp` slot
holds the dense MLP of `model.mlp` or, on MoE layers (`model.moe`), a Mixture of Experts.
"""

import torch
from torch import nn

from .inference.cache import ModelCache
from .config import ModelConfig
from .ffn.mlp import build_mlp
from .ffn.moe import MoE
from .mixer import MIXERS
from .norm import build_norm


class Block(nn.Module):
    """Pre-norm residual block (GPT-2, Radford et al. 2019). Normalising the input of each branch,
    not the residual stream, keeps a clean identity path from the embeddings to the output, which is
    what lets deep stacks train without warm-up tricks. Matches HF `GPT2Block` /
    `LlamaDecoderLayer`. Config: norm_placement = "pre", norm, mlp.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = build_norm(cfg)
        self.attn = build_mixer(cfg, layer_idx)
        self.ln_2 = build_norm(cfg)
        self.mlp = build_feed_forward(cfg, layer_idx)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: ModelCache | None = None,
                ve: torch.Tensor | None = None, terms: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), positions, cache, *values(ve), terms=terms)
        return x + self.mlp(self.ln_2(x), terms)


class PostNormBlock(nn.Module):
    """Norm on each branch's output (OLMo 2, arXiv:2501.00656). Unlike the original post-LN
    transformer, the residual stream itself is never normalised; normalising what each branch adds
    bounds its contribution, which OLMo 2 found steadier than pre-norm. Matches HF
    `Olmo2DecoderLayer` (ln_1 = post_attention_layernorm, ln_2 = post_feedforward_layernorm).
    Config: norm_placement = "post", norm, mlp.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn = build_mixer(cfg, layer_idx)
        self.ln_1 = build_norm(cfg)
        self.mlp = build_feed_forward(cfg, layer_idx)
        self.ln_2 = build_norm(cfg)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: ModelCache | None = None,
                ve: torch.Tensor | None = None, terms: dict | None = None) -> torch.Tensor:
        x = x + self.ln_1(self.attn(x, positions, cache, *values(ve), terms=terms))
        return x + self.ln_2(self.mlp(x, terms))


class SandwichBlock(nn.Module):
    """Norms on each branch's input and output (Gemma 2, arXiv:2408.00118; Gemma 3). Matches HF
    `Gemma2DecoderLayer` (ln_1 = input_layernorm, ln_1_post = post_attention_layernorm, ln_2 =
    pre_feedforward_layernorm, ln_2_post = post_feedforward_layernorm).
    Config: norm_placement = "sandwich", norm, mlp.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = build_norm(cfg)
        self.attn = build_mixer(cfg, layer_idx)
        self.ln_1_post = build_norm(cfg)
        self.ln_2 = build_norm(cfg)
        self.mlp = build_feed_forward(cfg, layer_idx)
        self.ln_2_post = build_norm(cfg)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: ModelCache | None = None,
                ve: torch.Tensor | None = None, terms: dict | None = None) -> torch.Tensor:
        x = x + self.ln_1_post(self.attn(self.ln_1(x), positions, cache, *values(ve), terms=terms))
        return x + self.ln_2_post(self.mlp(self.ln_2(x), terms))


def values(ve: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The mixer's extra arguments: the value embedding when there is one, else none (a mixer
    without value embeddings, e.g. the Gated DeltaNet, takes none)."""
    return () if ve is None else (ve,)


def build_mixer(cfg: ModelConfig, layer_idx: int) -> nn.Module:
    """The sequence-mixer slot of block `layer_idx`: `model.attention`, or `model.linear_attention`
    on the linear layers of a hybrid (`ModelConfig.mixer`, model/mixer/)."""
    return MIXERS[cfg.mixer(layer_idx)](cfg, layer_idx)


def build_feed_forward(cfg: ModelConfig, layer_idx: int) -> nn.Module:
    """The MLP slot of block `layer_idx`: a Mixture of Experts, or the dense MLP of `model.mlp`."""
    return MoE(cfg) if cfg.is_moe(layer_idx) else build_mlp(cfg)


BLOCKS = {"pre": Block, "post": PostNormBlock, "sandwich": SandwichBlock}


def build_block(cfg: ModelConfig, layer_idx: int) -> nn.Module:
    return BLOCKS[cfg.norm_placement](cfg, layer_idx)
