"""DeepSeek Sparse Attention (DSA): a lightning indexer picks, for each query, the keys MLA attends to.

DeepSeek-V3.2 (DeepSeek-AI, arXiv:2512.02556). A few small heads score every visible past token
cheaply; each query then attends, with the full MLA heads, only to its `index_topk` best tokens:

    I[t, s] = sum_j w[t, j] * relu(q_I[t, j] . k_I[s] / sqrt(index_head_dim)),   w = W_w x_t / sqrt(n_I)
    chosen  = top index_topk of I[t, :] among the keys t may see (causal, window); ties to the earlier

q_I[t, j] (index_n_head heads of index_head_dim) is an up-projection of MLA's query latent (the
output of `q_a_layernorm`), k_I[s] = LayerNorm(W_k x_s) one key shared by all heads; the first
qk_rope_head_dim dims of both rotate with MLA's RoPE, as rotate-half pairs (MLA's own rotary pairs
are interleaved in HF; model/hf/deepseek.py reorders those rows, the indexer's need nothing).
The real model scores in FP8 after a Hadamard rotation, which leaves the dot products as they are;
here it runs in the model's dtype, as HF does.

The choice is discrete, so the language-model loss sends no gradient to the indexer: DeepSeek
trains it with its own KL loss towards the main attention's distribution (a dense warm-up, then
sparse training), which this file does not implement. Its weights stay at their initial values
in our training; converted checkpoints bring trained ones.

With a generation cache the indexer's key k_I joins MLA's cached [latent ; rotary key], so
decoding chooses among the same keys as the full forward.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from .masks import visible_keys

INDEX_NORM_EPS = 1e-6  # HF `DeepseekV32Indexer.k_norm` (a LayerNorm with a bias)


class NoIndexer(nn.Module):
    """Dense MLA: every visible key is attended; nothing is added to the cache."""

    width = 0  # numbers added to each cached token

    def project(self, x, q_latent, positions, rotary):
        return None, x.new_zeros(x.shape[0], 1, x.shape[1], 0)

    def select(self, x, q_index, k_index, q_pos, k_pos, window: int) -> tuple:
        return ()  # no extra argument for the attention kernel


class LightningIndexer(nn.Module):
    """DSA's indexer (module docstring): scores past tokens, returns which keys each query keeps.

    Matches HF `DeepseekV32Indexer` (`wq_b`, `wk`, `k_norm`, `weights_proj`).
    Config: mla.index_topk, mla.index_n_head, mla.index_head_dim, mla.q_lora_rank, mla.qk_rope_head_dim.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        m = cfg.mla
        self.topk, self.n_head, self.head_dim = m.index_topk, m.index_n_head, m.index_head_dim
        self.width = m.index_head_dim
        self.q_up = nn.Linear(m.q_lora_rank, self.n_head * self.head_dim, bias=False)  # HF wq_b
        self.k_proj = nn.Linear(cfg.n_embd, self.head_dim, bias=False)  # HF wk
        self.k_norm = nn.LayerNorm(self.head_dim, eps=INDEX_NORM_EPS)
        self.head_weights = nn.Linear(cfg.n_embd, self.n_head, bias=False)  # HF weights_proj

    def project(self, x: torch.Tensor, q_latent: torch.Tensor, positions: torch.Tensor, rotary: nn.Module):
        """Indexer queries (B, n_I, T, head_dim) and keys (B, 1, T, head_dim), rotated."""
        B, T, _ = x.shape
        q = self.q_up(q_latent).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_norm(self.k_proj(x)).unsqueeze(1)
        return rotary(q, k, positions)  # the first qk_rope_head_dim dims rotate, the rest pass

    @torch.no_grad()  # a top-k choice: no gradient reaches the indexer through it
    def select(self, x, q_index, k_index, q_pos: torch.Tensor, k_pos: torch.Tensor | None, window: int) -> tuple:
        """(chosen,): bool (B, 1, T, S), True at the index_topk keys each query keeps."""
        scores = F.relu(q_index @ k_index.transpose(-2, -1) * self.head_dim**-0.5)  # (B, n_I, T, S)
        w = self.head_weights(x).transpose(1, 2).unsqueeze(-1) * self.n_head**-0.5  # (B, n_I, T, 1)
        index = (w * scores).sum(dim=1, keepdim=True)  # (B, 1, T, S)
        S = k_index.shape[2]
        index = index.masked_fill(~visible_keys(q_pos, k_pos, S, window), float("-inf"))
        # Ties are common (relu zeroes whole keys): break them towards earlier positions, the same with
        # or without a cache, whatever order a ring buffer keeps the keys in. A stable sort does that.
        order = torch.arange(S, device=index.device) if k_pos is None else k_pos.argsort()
        ranked = index[..., order].sort(dim=-1, descending=True, stable=True).indices[..., : self.topk]
        return (torch.zeros_like(index, dtype=torch.bool).scatter_(-1, order[ranked], True),)

    def extra_repr(self) -> str:
        return f"index_topk={self.topk}, n_head={self.n_head}, head_dim={self.head_dim}"


INDEXERS = {False: lambda cfg: NoIndexer(), True: LightningIndexer}  # keyed by mla.index_topk > 0


def build_indexer(cfg: ModelConfig) -> nn.Module:
    """The indexer of an MLA layer: `mla.index_topk > 0` -> DSA's lightning indexer, else none."""
    return INDEXERS[cfg.mla.index_topk > 0](cfg)
