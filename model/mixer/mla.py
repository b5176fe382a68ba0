"""Multi-head Latent Attention (MLA): every head's key and value rebuilt from one small cached latent.

DeepSeek-V2 (arXiv:2405.04434) and V3 (arXiv:2412.19437). Each token is compressed to a latent
c = RMSNorm(W_DKV x) of kv_lora_rank numbers plus one rotary key k_pe of qk_rope_head_dim numbers that
all heads share; head h's key and value are up-projections of the latent:

    q_h = [q_nope_h ; q_pe_h]        k_h = [W_UK_h c ; k_pe]        v_h = W_UV_h c

RoPE is "decoupled" into q_pe / k_pe because a position-dependent rotation between q and W_UK would
stop W_UK from being folded into the query (below). The cache keeps only [c ; k_pe]:
kv_lora_rank + qk_rope_head_dim numbers per token and layer, against 2 * n_kv_head * head_dim for GQA.

One attention, two ways to compute it:
- naive (training, the full forward): up-project the latent into per-head keys and values and attend
  as usual;
- absorbed (with a generation cache): q_nope_h . (W_UK_h c) = (W_UK_h^T q_nope_h) . c, so W_UK is folded
  into the query and all heads attend over the cached latent itself -- multi-query attention with
  the one key [c ; k_pe] and the one value c -- and W_UV_h is applied after the softmax. The cached
  latent is never up-projected.
Sliding windows, logit softcaps and sinks use the same masks and kernels as model/mixer/attention.py.
With `mla.index_topk` > 0 an indexer (model/mixer/dsa.py, DeepSeek Sparse Attention) chooses the keys
each query attends to, and its key joins the cache.
"""

import torch
from torch import nn

from ..inference.cache import CacheSpec, Columns, ModelCache, PerChannel, PerToken, kv_layer_cache
from ..config import ModelConfig
from ..norm import RMSNorm
from ..rope import build_rotary
from .attention import AttentionKernels
from .dsa import build_indexer
from .gate import OutputGate

LATENT_NORM_EPS = 1e-6  # DeepSeek's latent RMSNorms keep their default eps, whatever model.norm_eps says


def kv_layouts(rank: int, rope: int, index_width: int) -> tuple[int, tuple]:
    """(heads, layouts) of an MLA layer's quantized cache: one row per position, [latent ; rotary key ;
    indexer key] (`new_cache` says why each is grouped so). model/accounting.py counts the bytes from
    the same layouts."""
    keys = PerChannel(rope), PerChannel(index_width, min_bits=8)
    return 1, (Columns(PerToken(rank, double=True), *keys),)


class FullRankQuery(nn.Module):
    """q = W_Q x (`mla.q_lora_rank = 0`, DeepSeek-V2-Lite). HF `q_proj`."""

    def __init__(self, cfg: ModelConfig, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(cfg.n_embd, out_dim, bias=cfg.bias)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def up(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LowRankQuery(nn.Module):
    """q = W_UQ RMSNorm(W_DQ x), through a q_lora_rank bottleneck (DeepSeek-V2/V3): fewer activations
    to keep in training; nothing changes in the cache. HF `q_a_proj`, `q_a_layernorm`, `q_b_proj`."""

    def __init__(self, cfg: ModelConfig, out_dim: int):
        super().__init__()
        rank = cfg.mla.q_lora_rank
        self.down = nn.Linear(cfg.n_embd, rank, bias=cfg.bias)
        self.norm = RMSNorm(rank, LATENT_NORM_EPS)
        self.up = nn.Linear(rank, out_dim, bias=False)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The normed query latent (B, T, q_lora_rank), which DSA's indexer reads too."""
        return self.norm(self.down(x))


QUERIES = {False: FullRankQuery, True: LowRankQuery}  # keyed by mla.q_lora_rank > 0


class MultiHeadLatentAttention(AttentionKernels):
    """Multi-head Latent Attention (module docstring): naive path without a cache, absorbed with one.

    Matches HF `DeepseekV3Attention` (model/hf/deepseek.py converts its interleaved RoPE layout).
    Biases (`model.bias`) sit on the projections that read x and on c_proj, never on the
    up-projections out of a latent (as HF's `attention_bias`, except that HF's full-rank `q_proj` never
    has one; a kv_b bias would not fold into the query).
    Config: n_head, [model.mla] (q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim,
    v_head_dim, index_topk, index_n_head, index_head_dim), pos, rope, window, global_every, attn_scale,
    attn_softcap, attn_sinks, attn_gate, bias, dropout.
    """

    # weight-only quantization (model/inference/quantize.py) leaves it: decode absorbs it
    keep_full_precision = ("kv_b_proj",)

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        m = cfg.mla
        self.layer_idx, self.n_head = layer_idx, cfg.n_head
        self.nope, self.rope, self.rank, self.v_dim = m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim
        self.query = QUERIES[m.q_lora_rank > 0](cfg, cfg.n_head * (self.nope + self.rope))
        self.kv_a_proj = nn.Linear(cfg.n_embd, self.rank + self.rope, bias=cfg.bias)  # rows [W_DKV; W_KR]
        self.kv_a_norm = RMSNorm(self.rank, LATENT_NORM_EPS)
        # rows per head h: [W_UK_h (qk_nope_head_dim); W_UV_h (v_head_dim)], HF `kv_b_proj`'s layout
        self.kv_b_proj = nn.Linear(self.rank, cfg.n_head * (self.nope + self.v_dim), bias=False)
        # sigmoid(W_g x) on the heads' output (model.attn_gate, model/mixer/gate.py)
        self.gate = OutputGate(cfg, cfg.n_head * self.v_dim) if cfg.attn_gate else None
        self.c_proj = nn.Linear(cfg.n_head * self.v_dim, cfg.n_embd, bias=cfg.bias)
        self.rotary = build_rotary(cfg, cfg.is_local(layer_idx), head_dim=self.rope)
        # masks and kernels as attention.py; HF's scale: qk_head_dim ** -0.5
        self.init_kernels(cfg, layer_idx, scale=cfg.attn_scale or (self.nope + self.rope) ** -0.5)
        self.indexer = build_indexer(cfg)  # DSA: picks the keys each query attends to; or none
        if m.index_topk:
            self.build_kernel = "sparse"
            self.use_kernel("sparse")

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, cache: ModelCache | None = None, terms: dict | None = None
    ) -> torch.Tensor:
        """x: (B, T, n_embd); positions: (T,) absolute positions of x's tokens; terms: a training
        forward's loss terms, which DSA's indexer loss joins."""
        B, T, _ = x.shape
        q_latent = self.query.latent(x)
        q = self.query.up(q_latent).view(B, T, self.n_head, -1).transpose(1, 2)  # (B, n_head, T, nope + rope)
        q_nope, q_pe = q.split([self.nope, self.rope], dim=-1)
        latent, k_pe = self.kv_a_proj(x).unsqueeze(1).split([self.rank, self.rope], dim=-1)  # (B, 1, T, .)
        q_pe, k_pe = self.rotary(q_pe, k_pe, positions)
        q_index, k_index = self.indexer.project(x, q_latent, positions, self.rotary)  # DSA, else (None, empty)
        # (B, 1, T, rank + rope [+ indexer key]): what is cached
        ckv = torch.cat([self.kv_a_norm(latent), k_pe, k_index], dim=-1)
        k_pos = None
        if cache is not None:  # (B, 1, S, .), S = what the cache shows of the past + T
            ckv, k_pos = cache.update(self.layer_idx, ckv)
        ckv, k_index = ckv.split([self.rank + self.rope, self.indexer.width], dim=-1)
        chosen = self.indexer.select(x, q_index, k_index, positions, k_pos, self.window, terms)  # () when dense
        attend = self.naive if cache is None else self.absorbed  # k_pos is None without a cache
        y = attend(q_nope, q_pe, ckv, positions, k_pos, *chosen)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.v_dim)  # the heads side by side
        if self.gate is not None:
            y = self.gate(x, y)
        return self.resid_dropout(self.c_proj(y))

    def new_cache(self, spec: CacheSpec):
        """This layer's generation cache: [latent ; rotary key ; DSA's indexer key] per position, one
        "head" (of the last `window` positions when local). With kv_dtype int8/int4, KIVI's rules
        (arXiv:2402.02750) by what the absorbed decode reads: the latent is a value (mixed token by
        token after the softmax) as well as a key, so it is quantized per token, in groups of at most
        kv_group channels (DeepSeek's FP8 cache for V3.2 in FlashMLA: per token, a scale per 128
        channels); the rotary and indexer keys are keys only, quantized per channel over kv_group
        tokens, with scales of their own: a key of another range never sets the latent's step. The
        indexer keys take 8 bits at least: its top-k choice is discrete, and at 4 bits its flips moved
        the logits by over half a std at a quarter of the positions (DeepSeek-V3.2 keeps them in
        FP8). The latent's per-token scale and zero are themselves uint8 codes (`double`, QLoRA's
        double quantization): a layer's whole cache is one narrow row, on which two scales in the
        compute dtype weigh."""
        return kv_layer_cache(spec, *kv_layouts(self.rank, self.rope, self.indexer.width), self.window)

    def naive(self, q_nope, q_pe, ckv, q_pos: torch.Tensor, k_pos: torch.Tensor | None = None, *chosen) -> torch.Tensor:
        """Up-project the latent into per-head keys and values, then attend: (B, n_head, T, v_head_dim).
        q_nope (B, n_head, T, nope), q_pe (B, n_head, T, rope), ckv (B, 1, S, rank + rope); `chosen`:
        DSA's (B, 1, T, S) key choice, for the "sparse" kernel."""
        B, _, S, _ = ckv.shape
        latent, k_pe = ckv.split([self.rank, self.rope], dim=-1)
        kv = self.kv_b_proj(latent[:, 0]).view(B, S, self.n_head, -1).transpose(1, 2)  # (B, n_head, S, nope + v)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(-1, self.n_head, -1, -1)], dim=-1)  # (B, n_head, S, nope + rope)
        return self.attend(torch.cat([q_nope, q_pe], dim=-1), k, v, q_pos, k_pos, *chosen)

    def absorbed(self, q_nope, q_pe, ckv, q_pos: torch.Tensor, k_pos: torch.Tensor | None = None, *chosen) -> torch.Tensor:
        """The same attention over the latent itself (module docstring): (B, n_head, T, v_head_dim)."""
        w = self.kv_b_proj.weight.view(self.n_head, self.nope + self.v_dim, self.rank)
        w_uk, w_uv = w.split([self.nope, self.v_dim], dim=1)  # (n_head, nope, rank), (n_head, v, rank)
        q = torch.cat([q_nope @ w_uk, q_pe], dim=-1)  # (B, n_head, T, rank + rope)
        y = self.attend(q, ckv, ckv[..., : self.rank], q_pos, k_pos, *chosen)  # one key and value head: (B, n_head, T, rank)
        return y @ w_uv.transpose(1, 2)  # (B, n_head, T, v_head_dim)
