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

The choice is discrete, so the language-model loss sends no gradient to the indexer. DeepSeek
trains it with its own loss (V3.2 report, sec. 2.1), and so do we: in training the indexer's
scores over the chosen keys, softmaxed, are pulled towards the main attention's distribution there,

    L_I = mean_t KL(p_t || softmax(I[t, chosen_t])),   p_t = sum_h attn_h[t, chosen_t] / n_head

(attn_h: MLA head h's attention probabilities, which already sum to 1 over the chosen keys, so the
head mean is the L1-normalised head sum; recomputed without gradient, the attention output is
untouched). The indexer reads x and the query latent detached, so L_I trains the indexer alone and
the language-model loss the rest: the main model's gradients are the same with and without L_I.
This is the paper's *sparse* stage. Its dense warm-up (main model frozen, dense attention, KL over
all keys) has no counterpart here: our runs train sparse from the first step, with no dense
checkpoint to warm up from. The weight, `mla.index_loss_coef`, defaults to 1.0: the term reaches
no other parameter, so it only sets the indexer's own step size (nearly nothing under Adam); 0 turns
it off and leaves the indexer at its initial (random) projections.

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
    """Dense MLA: every visible key is attended; nothing is added to the cache; no loss."""

    width = 0  # numbers added to each cached token

    def project(self, x, q_latent, positions, rotary):
        return None, x.new_zeros(x.shape[0], 1, x.shape[1], 0)

    def select(self, x, q_index, k_index, q_pos, k_pos, window: int, terms: dict | None = None) -> tuple:
        return ()  # no extra argument for the attention kernel


class LightningIndexer(nn.Module):
    """DSA's indexer (module docstring): scores past tokens, returns which keys each query keeps; in
    training, `loss` is its KL loss towards the main attention, which the sparse kernel computes.

    Matches HF `DeepseekV32Indexer` (`wq_b`, `wk`, `k_norm`, `weights_proj`). Config: mla.index_topk,
    mla.index_n_head, mla.index_head_dim, mla.index_loss_coef, mla.q_lora_rank, mla.qk_rope_head_dim.
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
        self.loss_coef, self.learns = m.index_loss_coef, m.index_loss_coef > 0

    def project(self, x: torch.Tensor, q_latent: torch.Tensor, positions: torch.Tensor, rotary: nn.Module):
        """Indexer queries (B, n_I, T, head_dim) and keys (B, 1, T, head_dim), rotated. The inputs are
        detached: no gradient of the indexer's loss reaches the main model."""
        B, T, _ = x.shape
        q = self.q_up(q_latent.detach()).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_norm(self.k_proj(x.detach())).unsqueeze(1)
        return rotary(q, k, positions)  # the first qk_rope_head_dim dims rotate, the rest pass

    def select(self, x, q_index, k_index, q_pos: torch.Tensor, k_pos: torch.Tensor | None, window: int,
               terms: dict | None = None) -> tuple:
        """The sparse kernel's extra arguments (chosen, scores, terms). chosen: bool (B, 1, T, S), True
        at the index_topk keys each query keeps. scores: the index scores with their gradient, only
        in a training forward that fits the indexer (`terms` given and index_loss_coef > 0), else None;
        the kernel then adds `loss` to terms["index_loss"]."""
        S = k_index.shape[2]
        fits = self.learns and self.training and terms is not None and torch.is_grad_enabled()
        with torch.set_grad_enabled(fits):
            scores = F.relu(q_index @ k_index.transpose(-2, -1) * self.head_dim**-0.5)  # (B, n_I, T, S)
            w = self.head_weights(x.detach()).transpose(1, 2).unsqueeze(-1) * self.n_head**-0.5  # (B, n_I, T, 1)
            index = (w * scores).sum(dim=1, keepdim=True)  # (B, 1, T, S)
            index = index.masked_fill(~visible_keys(q_pos, k_pos, S, window), float("-inf"))
        scores = index if fits else None
        # Ties are common (relu zeroes whole keys): break them towards earlier positions, the same with
        # or without a cache, whatever order a ring buffer keeps the keys in. A stable sort does that.
        index = index.detach()  # a top-k choice: no gradient flows through it
        order = torch.arange(S, device=index.device) if k_pos is None else k_pos.argsort()
        ranked = index[..., order].sort(dim=-1, descending=True, stable=True).indices[..., : self.topk]
        return torch.zeros_like(index, dtype=torch.bool).scatter_(-1, order[ranked], True), scores, terms

    def loss(self, scores: torch.Tensor, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor,
             scale: float) -> torch.Tensor:
        """The weighted KL loss of `select`'s scores towards the main attention, from the sparse
        kernel's q (B, n_head, T, d), k (B, n_head or 1, S, d) and mask (B, 1, T, S) (visible and
        chosen)."""
        return self.loss_coef * index_kl(scores, attention_target(q, k, mask, scale), mask)

    def extra_repr(self) -> str:
        return f"index_topk={self.topk}, n_head={self.n_head}, head_dim={self.head_dim}, loss_coef={self.loss_coef}"


@torch.no_grad()
def attention_target(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """The main attention's distribution over the keys, fp32 (B, 1, T, S): softmax(q k^T * scale)
    within `mask`, per head, then the mean over heads (the L1-normalised head sum)."""
    scores = (q @ k.transpose(-2, -1)).float() * scale  # (B, n_head, T, S); k's one head broadcasts
    return F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).mean(dim=1, keepdim=True)


def index_kl(scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over queries of KL(target || softmax(scores)), both over the keys in `mask` (B, 1, T, S);
    target is 0 outside it and sums to 1 per query. >= 0, and 0 when the two distributions agree."""
    log_q = F.log_softmax(scores.float().masked_fill(~mask, float("-inf")), dim=-1)
    kl = torch.xlogy(target, target) - target * log_q.masked_fill(~mask, 0.0)  # 0 off the mask
    return kl.sum(dim=-1).mean()


INDEXERS = {False: lambda cfg: NoIndexer(), True: LightningIndexer}  # keyed by mla.index_topk > 0


def build_indexer(cfg: ModelConfig) -> nn.Module:
    """The indexer of an MLA layer: `mla.index_topk > 0` -> DSA's lightning indexer, else none."""
    return INDEXERS[cfg.mla.index_topk > 0](cfg)
