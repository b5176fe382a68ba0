"""Gated DeltaNet: linear attention whose memory is a fixed-size matrix per head, written by the
gated delta rule (Yang, Kautz & Hatamizadeh 2024, arXiv:2412.06464), as Qwen3-Next and Qwen3.5 use it
in 3 of every 4 layers.

    [q; k; v] = SiLU(causal depthwise conv_size-tap conv(W_qkv x))      short local mixing
    q, k      = L2-normalised per head (q also scaled by 1/sqrt(head_dim))
    beta      = sigmoid(W_b x)                                           write strength, per value head
    g         = -exp(A_log) * softplus(W_a x + dt_bias)                  log decay (Mamba2), per value head
    o         = gated delta rule(q, k, v, g, beta)                        model/mixer/delta_rule.py
    y         = W_o (RMSNorm(o) * weight * SiLU(W_z x))                  gated RMSNorm, per value head

No positions: the conv and the decay give the order. Training runs the chunked form; decoding keeps
only the conv's last conv_size - 1 inputs and the (head_dim x v_head_dim) state per value head
(model/inference/cache/recurrent.py), whatever the context length.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..inference.cache import CacheSpec, ModelCache
from ..inference.cache.recurrent import RecurrentState, Snapshot
from ..canon import causal_conv
from ..config import ModelConfig
from ..norm import RMSNorm
from .delta_rule import RULES, recurrent_delta_rule

L2_EPS = 1e-6  # q / sqrt(sum q^2 + eps), as FLA and HF


class Decay(nn.Module):
    """g = -exp(A_log) * softplus(a + dt_bias): the log of the per-step decay, always < 0, in fp32.
    Init as HF (`Qwen3_5PreTrainedModel._init_weights`): A ~ U(0.01, 16), dt_bias = 1."""

    def __init__(self, n_v_head: int):
        super().__init__()
        self.A_log = nn.Parameter(torch.empty(n_v_head))
        self.dt_bias = nn.Parameter(torch.empty(n_v_head))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(0.01, 16).log())
        nn.init.ones_(self.dt_bias)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias)


class GatedRMSNorm(RMSNorm):
    """RMSNorm(o) * weight * SiLU(z) over each value head (HF `Qwen3_5RMSNormGated`, FLA's
    `FusedRMSNormGated`): normalised in fp32, cast, scaled (Llama's RMSNorm), then gated in fp32.
    Plain scale (not 1 + weight), init 1. Config: norm_eps."""

    def forward(self, o: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (super().forward(o) * F.silu(z.float())).to(o.dtype)


class GatedDeltaNet(nn.Module):
    """A Gated DeltaNet layer (module docstring). One fused input projection `in_proj` with rows
    [q; k; v; z; b; a] (HF `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`), `conv1d`, `decay`
    (A_log, dt_bias), `norm`, `out_proj`; no biases, as HF. (Names apart from attention's c_attn /
    c_proj, so that a conversion table row names one kind of layer.) Matches HF
    `Qwen3_5GatedDeltaNet` (and `Qwen3NextGatedDeltaNet` up to its projection layout).
    Config: [model.deltanet] n_head, n_v_head, head_dim, v_head_dim, conv_size; norm_eps, dropout.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        d = cfg.deltanet
        self.layer_idx = layer_idx
        self.n_head, self.n_v_head, self.head_dim, self.v_head_dim = d.n_head, d.n_v_head, d.head_dim, d.v_head_dim
        self.key_dim, self.value_dim = d.n_head * d.head_dim, d.n_v_head * d.v_head_dim
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.splits = [self.conv_dim, self.value_dim, d.n_v_head, d.n_v_head]  # [q; k; v], z, b, a
        self.in_proj = nn.Linear(cfg.n_embd, sum(self.splits), bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d.conv_size, groups=self.conv_dim, bias=False)
        self.decay = Decay(d.n_v_head)
        self.norm = GatedRMSNorm(d.v_head_dim, cfg.norm_eps)
        self.out_proj = nn.Linear(self.value_dim, cfg.n_embd, bias=False)  # residual init, as c_proj
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.kernel = "torch"  # the chunked form; "fla" by hand only (model/kernels.py says why)
        self.chunked = RULES[self.kernel]

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: ModelCache | None = None,
                terms: dict | None = None) -> torch.Tensor:
        """x: (B, T, n_embd); positions are unused (the conv and the decay carry the order), and so are
        terms (this layer adds no loss term)."""
        B, T, _ = x.shape
        qkv, z, b, a = self.in_proj(x).split(self.splits, dim=-1)
        past = cache.layer(self.layer_idx) if cache is not None else None
        # conv_in: the conv's inputs (B, conv_dim, conv_size - 1 + T), the past's and x's
        qkv, conv_in = causal_conv(qkv, self.conv1d, None if past is None else past.conv)
        q, k, v = F.silu(qkv).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        # (B, n_v_head, T, head_dim): q/k head h serves value heads h * r ... h * r + r - 1
        q, k = (l2norm(self.heads(t, self.head_dim)).repeat_interleave(self.n_v_head // self.n_head, dim=1)
                for t in (q, k))
        q = q * self.head_dim**-0.5
        v = self.heads(v, self.v_head_dim)  # (B, n_v_head, T, v_head_dim)
        g, beta = self.decay(a).transpose(1, 2), torch.sigmoid(b.float()).transpose(1, 2)  # (B, n_v_head, T)
        # decoding one token: the recurrence itself; otherwise (training, a prompt) the chunked form;
        # a cache that may be rolled back also keeps the states of the last positions (speculative)
        kept = []
        if past is not None and past.max_rollback:
            o, state, kept = self.rule_keeping(q, k, v, g, beta, past, conv_in, cache.length)
        else:
            rule = recurrent_delta_rule if past is not None and T == 1 else self.chunked
            o, state = rule(q, k, v, g, beta, None if past is None else past.state)
        if past is not None:
            past.write(conv_in[..., conv_in.shape[-1] - past.conv.shape[-1]:], state, kept)
        o = self.norm(o.transpose(1, 2).to(x.dtype), z.view(B, T, self.n_v_head, self.v_head_dim))
        return self.resid_dropout(self.out_proj(o.reshape(B, T, self.value_dim)))

    def rule_keeping(self, q, k, v, g, beta, past: RecurrentState, conv_in: torch.Tensor, start: int):
        """The delta rule over the T tokens that continue `past` at position `start`, with a
        Snapshot after each of the last m = min(T, max_rollback + 1) (model/inference/cache/recurrent.py):
        the chunked form up to those, then the recurrence one token at a time."""
        T, width = q.shape[2], past.conv.shape[-1]
        m = min(T, past.max_rollback + 1)
        outs, state, kept = [], past.state, []
        if T > m:
            o, state = self.chunked(*(x[:, :, :T - m] for x in (q, k, v, g, beta)), state)
            outs.append(o)
        for t in range(T - m, T):
            o, state = recurrent_delta_rule(*(x[:, :, t:t + 1] for x in (q, k, v, g, beta)), state)
            outs.append(o)
            kept.append(Snapshot(start + t, state, conv_in[..., t + 1:t + 1 + width]))  # conv_in: width before x
        return torch.cat(outs, dim=2), state, kept

    def heads(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """(B, T, heads * dim) -> (B, heads, T, dim)."""
        return t.unflatten(-1, (-1, dim)).transpose(1, 2)

    def new_cache(self, spec: CacheSpec) -> RecurrentState:
        """This layer's generation cache: the conv's last inputs and the recurrent state, of a fixed
        size (model/inference/cache/recurrent.py). The state stays in fp32 whatever `kv_dtype` says."""
        state = (self.n_v_head, self.head_dim, self.v_head_dim)
        return RecurrentState(spec, self.conv_dim, self.conv1d.kernel_size[0], state)

    def use_kernel(self, kernel: str) -> None:
        self.kernel, self.chunked = kernel, RULES[kernel]


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dimension, in fp32 (FLA's `l2norm`)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + L2_EPS)
