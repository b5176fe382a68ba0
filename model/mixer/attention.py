"""Causal self-attention: projections, QK-norm, rotary, then one of three attention kernels.

The kernel is chosen once, when the layer is built (`AttentionKernels` holds them for every
attention mixer, this one and MLA):
- "sdpa": `F.scaled_dot_product_attention`, for plain causal attention, GQA/MQA, RoPE, QK-norm,
  `attn_scale` and sliding windows. Without a window in reach SDPA gets `is_causal` and no mask, so
  on CUDA it can run FlashAttention; a sliding window is a boolean band mask, which FlashAttention
  cannot take, so CUDA then uses the memory-efficient kernel (still no (T, S) score matrix in HBM;
  GQA heads are repeated for it, since that kernel has no `enable_gqa`).
- "softmax": explicit scores -> softmax -> weighted values, only where the math needs the scores
  themselves: a softcap (tanh on every logit) or attention sinks (an extra softmax column).
- "flex": FlexAttention (model/mixer/flex.py) for windows, softcaps and sinks on CUDA, switched to by
  `model.kernels.use_device_kernels` once the model is on its device; it has no backward on CPU.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from ..inference.cache import CacheSpec, ModelCache, PerChannel, PerToken, kv_layer_cache
from . import flex
from .gate import OutputGate
from .masks import visible_keys
from ..norm import build_norm
from ..rope import build_rotary
from ..value_embed import add_value_embed, value_gate
from ..canon import Canon, ConvKV

# `model.qk_norm` -> the groups QK-norm normalises over, as (query size, key size).
QK_NORM_GROUPS = {
    "none": lambda cfg: (),
    "head": lambda cfg: (cfg.head_dim, cfg.head_dim),  # each head on its own (Qwen3, Gemma 3)
    "full": lambda cfg: (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim),  # whole projection (OLMo 2)
}


def kv_layouts(n_kv_head: int, head_dim: int) -> tuple[int, tuple]:
    """(heads, layouts) of an attention layer's quantized cache (model/inference/cache/quantized.py),
    KIVI's split: per KV head, keys quantized per channel and values per token. model/accounting.py
    counts the bytes from the same layouts."""
    return n_kv_head, (PerChannel(head_dim), PerToken(head_dim))


class AttentionKernels(nn.Module):
    """The part every attention mixer shares once it has q, k and v: the mask and the kernel.

    A mixer calls `init_kernels(cfg, layer_idx, scale)` in its constructor, then `self.attend(q, k, v,
    q_pos, k_pos)` in forward; the kernel is chosen there and never branched on later.
    Config: window, global_every, attn_softcap, attn_sinks, dropout.
    """

    def init_kernels(self, cfg: ModelConfig, layer_idx: int, scale: float) -> None:
        self.n_head = cfg.n_head
        self.window = cfg.window if cfg.is_local(layer_idx) else 0
        self.scale = scale
        self.softcap = cfg.attn_softcap
        # One sink logit per head; 0 at init: exp(0) = 1 joins each softmax denominator, i.e. the sink
        # starts as one more key with an average score, and training moves it up or down from there.
        self.sinks = nn.Parameter(torch.zeros(cfg.n_head)) if cfg.attn_sinks else None
        self.kernel = "softmax" if cfg.attn_softcap or cfg.attn_sinks else "sdpa"
        self.build_kernel = self.kernel  # model/kernels.py may switch to "flex" on CUDA
        self.attend = self.fallback = self.softmax_attention if self.kernel == "softmax" else self.sdpa_attention
        self.attn_dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def sdpa_attention(self, q, k, v, q_pos: torch.Tensor, k_pos: torch.Tensor | None) -> torch.Tensor:
        mask, is_causal = sdpa_mask(q_pos, k_pos, k.shape[2], self.window)
        if mask is not None:
            # CUDA's memory-efficient kernel (the one that takes a mask) has no enable_gqa: with it, SDPA
            # would fall back to the math kernel and its (T, S) scores. Repeated heads keep it eligible.
            k, v = repeat_kv(k, self.n_head), repeat_kv(v, self.n_head)  # (B, n_head, S, hd)
        dropout_p = self.attn_dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                              scale=self.scale, dropout_p=dropout_p,
                                              enable_gqa=k.shape[1] != q.shape[1])

    def softmax_attention(self, q, k, v, q_pos: torch.Tensor, k_pos: torch.Tensor | None) -> torch.Tensor:
        mask = visible_keys(q_pos, k_pos, k.shape[2], self.window)
        return softmax_attention(q, k, v, mask, self.scale, self.softcap, self.sinks,
                                 dropout_p=self.attn_dropout if self.training else 0.0)

    def sparse_attention(self, q, k, v, q_pos: torch.Tensor, k_pos: torch.Tensor | None, chosen: torch.Tensor,
                         scores: torch.Tensor | None = None, terms: dict | None = None):
        """Only the keys DSA's indexer chose (`chosen`, bool (B, 1, T, S)), among the visible ones. With
        the indexer's `scores` (a training forward), its loss towards these probabilities (no gradient
        to them) joins terms["index_loss"] (model/mixer/dsa.py)."""
        mask = visible_keys(q_pos, k_pos, k.shape[2], self.window) & chosen
        if scores is not None:
            terms.setdefault("index_loss", []).append(self.indexer.loss(scores, q, k, mask, self.scale))
        return softmax_attention(q, k, v, mask, self.scale, dropout_p=self.attn_dropout if self.training else 0.0)

    def flex_attention(self, q, k, v, q_pos: torch.Tensor, k_pos: torch.Tensor | None, compiled: bool = True):
        if k_pos is not None or q.shape[2] != k.shape[2]:  # decoding from a cache: a new mask every step
            return self.fallback(q, k, v, q_pos, k_pos)
        return flex.flex_attend(q, k, v, self.window, self.scale, self.softcap, self.sinks, compiled)

    def use_kernel(self, kernel: str) -> None:
        """Switch to another kernel (model/kernels.py, per device; DSA's "sparse" for MLA)."""
        kernels = {"sdpa": self.sdpa_attention, "softmax": self.softmax_attention, "flex": self.flex_attention,
                   "sparse": self.sparse_attention}  # sparse: DeepSeek Sparse Attention (model/mixer/dsa.py)
        self.kernel, self.attend = kernel, kernels[kernel]


class CausalSelfAttention(AttentionKernels):
    """Multi-head causal self-attention (Vaswani et al. 2017, arXiv:1706.03762).

    One fused projection `c_attn` gives rows [q; k; v]. GQA/MQA (arXiv:2305.13245) when
    n_kv_head < n_head; RoPE (arXiv:2104.09864, model/rope.py); QK-norm (arXiv:2010.04245) per head
    (Qwen3) or over the whole projection (OLMo 2, arXiv:2501.00656); sliding windows (Longformer,
    arXiv:2004.05150; Mistral, Gemma 2/3); logit softcap (Gemma 2, arXiv:2408.00118); attention
    sinks (gpt-oss, arXiv:2508.10925; idea from arXiv:2309.17453); a sigmoid output gate (Qwen3-Next,
    arXiv:2505.06708, model/mixer/gate.py).
    Matches HF `GPT2Attention`, `LlamaAttention`, `Qwen3Attention`, `Olmo2Attention`,
    `Gemma2Attention`, `GptOssAttention`, `Qwen3_5Attention`. Config: n_head, n_kv_head, head_dim, bias,
    dropout, pos, rope, qk_norm, norm, window, global_every, attn_scale, attn_softcap, attn_sinks, attn_gate.
    """

    # weight-only quantization (model/inference/quantize.py) leaves it, as it leaves the MoE router
    keep_full_precision = ("ve_gate",)

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_dim, self.kv_dim = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, self.q_dim + 2 * self.kv_dim, bias=cfg.bias)
        # sigmoid(W_g x) on the heads' output (model.attn_gate, model/mixer/gate.py)
        self.gate = OutputGate(cfg, self.q_dim) if cfg.attn_gate else None
        self.c_proj = nn.Linear(self.q_dim, cfg.n_embd, bias=cfg.bias)
        self.q_norm = self.k_norm = None  # QK-norm: over each head, or over the whole projection
        if cfg.qk_norm != "none":
            self.q_group, self.k_group = QK_NORM_GROUPS[cfg.qk_norm](cfg)
            self.q_norm, self.k_norm = build_norm(cfg, self.q_group), build_norm(cfg, self.k_group)
        self.local = cfg.is_local(layer_idx)
        self.rotary = build_rotary(cfg, self.local) if cfg.pos == "rope" else None  # model/rope.py
        self.ve_gate = value_gate(cfg, layer_idx) if cfg.value_embeds else None  # None: no value embedding
        # Canon-B (model/canon.py): a short causal conv with a residual on [q; k; v]; None when off
        self.canon = Canon(self.q_dim + 2 * self.kv_dim, cfg.attn_conv) if cfg.attn_conv else None
        # Gemma 2: query_pre_attn_scalar ** -0.5
        self.init_kernels(cfg, layer_idx, scale=cfg.attn_scale or self.head_dim**-0.5)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: ModelCache | None = None,
                ve: torch.Tensor | None = None, terms: dict | None = None) -> torch.Tensor:
        """x: (B, T, n_embd); positions: (T,) absolute positions of x's tokens; ve: this layer's value
        embedding of the tokens (model/value_embed.py), when it has one; terms: a training forward's
        extra loss terms, of which this layer has none."""
        B, T, _ = x.shape
        qkv = self.c_attn(x)
        if self.canon is not None:
            past = cache.layer(self.layer_idx) if cache is not None else None
            qkv, conv_past = self.canon(qkv, None if past is None else past.past)
            if past is not None:
                past.write(conv_past)
        q, k, v = qkv.split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        if self.q_norm is not None:  # QK-norm over groups of q_group / k_group features
            q = self.q_norm(q.view(B, T, -1, self.q_group))
            k = self.k_norm(k.view(B, T, -1, self.k_group))
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, hd)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, hd)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, hd)
        if ve is not None:
            v = add_value_embed(v, ve, self.ve_gate, x)
        if self.rotary is not None:
            q, k = self.rotary(q, k, positions)
        k_pos = None  # positions of the keys: None = 0 .. S - 1 in order
        if cache is not None:  # k, v: (B, n_kv_head, S, hd), S = what the cache shows of the past + T
            k, v, k_pos = cache.update(self.layer_idx, k, v)
        y = self.attend(q, k, v, positions, k_pos)  # (B, n_head, T, head_dim)
        y = y.transpose(1, 2).reshape(B, T, self.q_dim)  # the heads side by side
        if self.gate is not None:
            y = self.gate(x, y)
        return self.resid_dropout(self.c_proj(y))

    def new_cache(self, spec: CacheSpec):
        """This layer's generation cache: keys and values (of the last `window` positions when local);
        quantized, keys per channel and values per token (KIVI, model/inference/cache/quantized.py)."""
        kv = kv_layer_cache(spec, *kv_layouts(self.n_kv_head, self.head_dim), self.window)
        return kv if self.canon is None else ConvKV(kv, spec, self.canon.conv1d.in_channels, self.canon.conv1d.kernel_size[0])


def device_kernel(layer: "CausalSelfAttention", device: torch.device) -> str:
    """The kernel for this layer on `device`: FlexAttention on CUDA for what SDPA's fused kernels
    cannot do (window, softcap, sinks), unless dropout is on (Flex has none) or the head size is
    not a power of two >= 16; elsewhere the layer's build-time kernel."""
    hd = layer.head_dim
    flex_fits = flex.available() and not layer.attn_dropout and hd >= 16 and hd & (hd - 1) == 0
    special = layer.window or layer.softcap or layer.sinks is not None
    if device.type == "cuda" and flex_fits and special:
        return "flex"
    return layer.build_kernel


def sdpa_mask(q_pos: torch.Tensor, k_pos: torch.Tensor | None, S: int, window: int
              ) -> tuple[torch.Tensor | None, bool]:
    """(attn_mask, is_causal) for `F.scaled_dot_product_attention`, without a mask tensor whenever
    the pattern allows it: FlashAttention takes `is_causal` but no mask.

    Keys 0 .. S - 1 in order (k_pos None), queries the last T of them:
    - a window that reaches past the first key (S > window) needs the band mask;
    - otherwise attention is plain causal: one query sees every key, T == S is SDPA's `is_causal`,
      and 1 < T < S needs the bottom-right-aligned mask (`is_causal` aligns top-left).
    Keys at given positions (a ring or static buffer) always get the mask.
    """
    T = q_pos.shape[0]
    if k_pos is not None or (window and S > window) or 1 < T < S:
        return visible_keys(q_pos, k_pos, S, window), False
    return None, T == S and T > 1


def repeat_kv(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, n_kv_head, S, hd) -> (B, n_head, S, hd): kv head g serves query heads g*rep ... g*rep + rep - 1
    (HF `repeat_kv`). A view when n_kv_head == n_head."""
    B, n_kv_head, S, hd = x.shape
    return x[:, :, None].expand(B, n_kv_head, n_head // n_kv_head, S, hd).reshape(B, n_head, S, hd)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                      scale: float, softcap: float = 0.0, sinks: torch.Tensor | None = None,
                      dropout_p: float = 0.0) -> torch.Tensor:
    """Attention written out: q (B, n_head, T, hd), k/v (B, n_kv_head, S, hd), mask (T, S) bool.

    softcap > 0: logits -> softcap * tanh(logits / softcap) before masking (Gemma 2).
    sinks (n_head,): a per-head logit that joins the softmax and is then dropped, so a head may give
    less than all of its attention to real keys (HF gpt-oss `eager_attention_forward`).
    The softmax runs in fp32, as HF's eager attention does.
    """
    B, n_head, T, _ = q.shape
    S = k.shape[2]
    k, v = repeat_kv(k, n_head), repeat_kv(v, n_head)  # (B, n_head, S, hd)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, n_head, T, S)
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~mask, float("-inf"))  # mask (T, S), or (B, 1, T, S) with DSA
    if sinks is not None:
        sink = sinks.to(scores.dtype).view(1, n_head, 1, 1).expand(B, n_head, T, 1)
        scores = torch.cat([scores, sink], dim=-1)  # (B, n_head, T, S + 1)
    probs = F.softmax(scores.float(), dim=-1)[..., :S].to(q.dtype)  # drop the sink column
    probs = F.dropout(probs, p=dropout_p)
    return probs @ v  # (B, n_head, T, hd)
