"""gpt-oss (`GptOssForCausalLM`, OpenAI, arXiv:2508.10925): sinks, alternating windows and its MoE.

Embeddings, block norms, attention (q/k/v/o with biases) and the final norm are stored as in
llama.py; each attention layer adds `self_attn.sinks` (our `attn.sinks`). Every MLP is an MoE:
  * `mlp.router.weight` / `.bias`: our `Router.weight` / `.bias` (`moe.router_bias`); HF's softmax
    over the top-k logits is our softmax renormalised over the chosen experts (`norm_topk`);
  * `mlp.experts.gate_up_proj` (n_expert, n_embd, 2 * hidden), stored transposed and with gate and
    up *interleaved* (columns g0, u0, g1, u1, ...), and its bias (n_expert, 2 * hidden) likewise;
    our `Experts.c_fc` is (n_expert, [gate; up], n_embd), so `GATE_UP` transposes and de-interleaves;
  * `mlp.experts.down_proj` (n_expert, hidden, n_embd) is our `c_proj` transposed; its bias a copy.
The activation is `ClampedSwiGLU` (model/ffn/mlp.py: `model.mlp = "swiglu_clamped"`, swiglu_alpha,
swiglu_limit).

Not supported (ValueError naming the setting): attention_bias = false (the experts always have
biases, and our one `model.bias` covers both), window patterns other than all-sliding or
every-k-th-full, RoPE variants rope_from_hf refuses. HF's experts ignore `hidden_act`; it is
checked as for Llama and written as "silu". router_aux_loss_coef is a training setting, like our
MoEConfig.TRAINING_ONLY, and not read.
"""

import torch

from ..config import ModelConfig, MoEConfig
from .llama import (
    HF_IGNORE, PRE_NORMS, decoder_config_from_hf, decoder_config_to_hf, decoder_weights, layer_types_to_hf,
    window_from_layer_types,
)
from .table import IDENTITY, Family, Row, Transform, reject_unsupported


def deinterleave(t: torch.Tensor) -> torch.Tensor:
    """Rows (dim 1) g0, u0, g1, u1, ... -> [g0, g1, ...; u0, u1, ...]."""
    return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1)


def interleave(t: torch.Tensor) -> torch.Tensor:
    """The inverse of `deinterleave`."""
    gate, up = t.chunk(2, dim=1)
    return torch.stack([gate, up], dim=2).flatten(1, 2)


GATE_UP = Transform(lambda ts, cfg: deinterleave(ts[0].transpose(1, 2)),
                    lambda t, cfg: [interleave(t).transpose(1, 2).contiguous()])
GATE_UP_BIAS = Transform(lambda ts, cfg: deinterleave(ts[0]), lambda t, cfg: [interleave(t)])
EXPERT_T = Transform(lambda ts, cfg: ts[0].transpose(1, 2), lambda t, cfg: [t.transpose(1, 2).contiguous()])

GPT_OSS_ROWS: list[Row] = [
    ("attn.sinks", "self_attn.sinks", IDENTITY),
    ("mlp.router.weight", "mlp.router.weight", IDENTITY),
    ("mlp.router.bias", "mlp.router.bias", IDENTITY),
    ("mlp.experts.c_fc", "mlp.experts.gate_up_proj", GATE_UP),
    ("mlp.experts.c_fc_bias", "mlp.experts.gate_up_proj_bias", GATE_UP_BIAS),
    ("mlp.experts.c_proj", "mlp.experts.down_proj", EXPERT_T),
    ("mlp.experts.c_proj_bias", "mlp.experts.down_proj_bias", IDENTITY),
]


def gpt_oss_config_from_hf(c) -> ModelConfig:
    """HF GptOssConfig -> ModelConfig: sinks, windows from layer_types, biases, and an MoE on every
    layer (experts intermediate_size wide, softmax over the top-k, router bias, clamped SwiGLU)."""
    reject_unsupported(c, {
        "attention_bias": not c.attention_bias,
        "num_local_experts": c.num_local_experts < 1,
    })
    fields = decoder_config_from_hf(c) | window_from_layer_types(c, c.sliding_window, preferred_global_every=2)
    moe = MoEConfig(n_expert=c.num_local_experts, top_k=c.num_experts_per_tok, expert_hidden=c.intermediate_size,
                    router="softmax", norm_topk=True, router_bias=True)
    return ModelConfig(**fields | dict(
        bias=True, attn_sinks=True, mlp="swiglu_clamped", swiglu_alpha=float(c.swiglu_alpha),
        swiglu_limit=float(c.swiglu_limit), moe=moe))


def gpt_oss_config_to_hf(cfg: ModelConfig, **overrides):
    """HF gpt-oss has one intermediate_size, the experts': `model.mlp_hidden` must equal
    `model.moe.expert_hidden` (no layer is dense), or the round trip names it."""
    m = cfg.moe
    return decoder_config_to_hf(
        "gpt_oss", cfg, intermediate_size=m.expert_hidden or cfg.mlp_hidden, hidden_act="silu",
        num_local_experts=m.n_expert, num_experts_per_tok=m.top_k, attention_bias=cfg.bias,
        # HF builds the sliding mask even when no layer uses it, so it needs some window
        sliding_window=cfg.window or cfg.block_size, layer_types=layer_types_to_hf(cfg),
        swiglu_alpha=cfg.swiglu_alpha, swiglu_limit=cfg.swiglu_limit, **overrides,
    )


WEIGHTS = decoder_weights(PRE_NORMS, GPT_OSS_ROWS)
GPT_OSS = Family(gpt_oss_config_from_hf, gpt_oss_config_to_hf, WEIGHTS, HF_IGNORE)
