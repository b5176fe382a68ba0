"""DeepSeek-V3 (`DeepseekV3ForCausalLM`, arXiv:2412.19437): MLA attention and a DeepSeek MoE.

Embeddings, block norms and the final norm are stored as in llama.py. Attention is Multi-head Latent
Attention (model/mixer/mla.py): `q_proj`, or `q_a_proj` + `q_a_layernorm` + `q_b_proj` when
q_lora_rank is set; `kv_a_proj_with_mqa` (rows [latent; rotary key]), `kv_a_layernorm`, `kv_b_proj`
(rows per head [k_nope; v]), `o_proj`. The first first_k_dense_replace layers keep a dense SwiGLU
MLP; the others hold a sigmoid router with group-limited choice (`mlp.gate.weight`, and its
`e_score_correction_bias` = our `expert_bias`), stacked routed experts and one shared MLP of
n_shared_experts * moe_intermediate_size.

RoPE layout: with `rope_interleave` (HF's default, and DeepSeek's checkpoints) HF rotates adjacent
pairs (x0, x1), (x2, x3), ... of q_pe and k_pe; we rotate (x_i, x_{i + d/2}). Both give the same
numbers once the rows that produce q_pe and k_pe are reordered evens-then-odds, which is what the
`rope_rows` transforms (`Q_ROWS`, `KV_A_ROWS`) do (and undo in `to_hf`), so attention scores match
exactly.

Not supported (ValueError naming the setting): rope_interleave = false, attention/MLP biases, YaRN's
`mscale_all_dim` softmax rescaling (the real V3's 128K extension), no shared expert, and multi-token
prediction layers (HF does not build them either).
"""

import torch

from ..config import ModelConfig, MLAConfig, MoEConfig
from .llama import (
    HF_IGNORE, PRE_NORMS, decoder_config_from_hf, decoder_config_to_hf, decoder_weights, glu_rows,
)
from .moe import MOE_ROWS
from .table import IDENTITY, Family, Row, Transform, reject_unsupported


def _reorder_rope_rows(w: torch.Tensor, group: int, rope: int, inverse: bool) -> torch.Tensor:
    """Reorder the last `rope` rows of every `group` rows of w (the rotary rows of each head):
    interleaved (x0, x1, x2, x3, ...) -> rotate-half order (x0, x2, ..., x1, x3, ...), or back."""
    order = torch.cat([torch.arange(0, rope, 2), torch.arange(1, rope, 2)])
    order = torch.argsort(order) if inverse else order
    groups = w.reshape(-1, group, *w.shape[1:])
    rows = torch.cat([torch.arange(group - rope), group - rope + order])
    return groups[:, rows].reshape(w.shape)


def rope_rows(group: callable) -> Transform:
    """A projection whose output rows come in groups (per head, or one) ending in rotary rows."""
    return Transform(
        lambda ts, cfg: _reorder_rope_rows(ts[0], group(cfg.mla), cfg.mla.qk_rope_head_dim, inverse=False),
        lambda t, cfg: [_reorder_rope_rows(t, group(cfg.mla), cfg.mla.qk_rope_head_dim, inverse=True)],
    )


Q_ROWS = rope_rows(lambda m: m.qk_nope_head_dim + m.qk_rope_head_dim)  # per head [q_nope; q_pe]
KV_A_ROWS = rope_rows(lambda m: m.kv_lora_rank + m.qk_rope_head_dim)  # [latent; k_pe]

MLA_ROWS: list[Row] = [
    ("attn.query.proj.weight", "self_attn.q_proj.weight", Q_ROWS),  # q_lora_rank = 0
    ("attn.query.down.weight", "self_attn.q_a_proj.weight", IDENTITY),  # q_lora_rank > 0
    ("attn.query.norm.weight", "self_attn.q_a_layernorm.weight", IDENTITY),
    ("attn.query.up.weight", "self_attn.q_b_proj.weight", Q_ROWS),
    ("attn.kv_a_proj.weight", "self_attn.kv_a_proj_with_mqa.weight", KV_A_ROWS),
    ("attn.kv_a_norm.weight", "self_attn.kv_a_layernorm.weight", IDENTITY),
    ("attn.kv_b_proj.weight", "self_attn.kv_b_proj.weight", IDENTITY),
    ("attn.c_proj.weight", "self_attn.o_proj.weight", IDENTITY),
]
DENSE_ROWS = glu_rows("mlp", "mlp")
SHARED_ROWS: list[Row] = [
    ("mlp.router.expert_bias", "mlp.gate.e_score_correction_bias", IDENTITY),
    *glu_rows("mlp.shared", "mlp.shared_experts",
              lambda cfg: cfg.moe.n_shared * cfg.moe.expert_hidden),
]


def deepseek_v3_config_from_hf(c) -> ModelConfig:
    """HF DeepseekV3Config -> ModelConfig: attention = "mla" with its sizes, head_dim = v_head_dim,
    the dense layers' intermediate_size, and an MoE on the layers from first_k_dense_replace on.
    `num_nextn_predict_layers` (MTP) is not read: HF builds no MTP layers and drops their weights
    (`model.layers.61.*`) on load, so the converted model has model.mtp_depth = 0."""
    reject_unsupported(c, {
        "num_key_value_heads": c.num_key_value_heads != c.num_attention_heads,  # MLA has no KV groups
        "rope_interleave": not getattr(c, "rope_interleave", True),  # V3.2 has no such field: always on
        "attention_bias": c.attention_bias,
        "n_shared_experts": not c.n_shared_experts,  # HF would build a zero-width shared MLP
    })
    fields = decoder_config_from_hf(c) | dict(n_kv_head=0, head_dim=c.v_head_dim, attention="mla")
    fields["mla"] = MLAConfig(
        q_lora_rank=c.q_lora_rank or 0, kv_lora_rank=c.kv_lora_rank, qk_nope_head_dim=c.qk_nope_head_dim,
        qk_rope_head_dim=c.qk_rope_head_dim, v_head_dim=c.v_head_dim)
    if c.first_k_dense_replace < c.num_hidden_layers:
        fields["moe"] = MoEConfig(
            n_expert=c.n_routed_experts, top_k=c.num_experts_per_tok, expert_hidden=c.moe_intermediate_size,
            n_shared=c.n_shared_experts, router="sigmoid", norm_topk=c.norm_topk_prob,
            routed_scale=float(c.routed_scaling_factor), n_group=c.n_group, topk_group=c.topk_group,
            first_dense=c.first_k_dense_replace)
    return ModelConfig(**fields)


def deepseek_v3_config_to_hf(cfg: ModelConfig, **overrides):
    """A config that fails the round trip (GQA attention, a softmax router, ...) is named by
    `config_to_hf`. A model without MoE is written with every layer dense."""
    return deepseek_config_to_hf("deepseek_v3", cfg, rope_interleave=True, **overrides)


def deepseek_config_to_hf(model_type: str, cfg: ModelConfig, **overrides):
    """The fields DeepSeek-V3 and V3.2 share."""
    m, moe = cfg.mla, cfg.moe
    experts = dict(
        n_routed_experts=moe.n_expert, num_experts_per_tok=moe.top_k, moe_intermediate_size=moe.expert_hidden,
        n_shared_experts=moe.n_shared, norm_topk_prob=moe.norm_topk, routed_scaling_factor=moe.routed_scale,
        n_group=moe.n_group, topk_group=moe.topk_group, first_k_dense_replace=moe.first_dense,
        # not read by HF, which always routes so; DeepSeek's config.json carries them, and llama.cpp's
        # converter routes with a softmax without scoring_func
        scoring_func="sigmoid", topk_method="noaux_tc",
    ) if moe.n_expert else dict(first_k_dense_replace=cfg.n_layer, n_shared_experts=1)
    fields = dict(
        num_key_value_heads=cfg.n_head, head_dim=m.qk_rope_head_dim,  # HF: the rotary size
        q_lora_rank=m.q_lora_rank or None,
        kv_lora_rank=m.kv_lora_rank, qk_nope_head_dim=m.qk_nope_head_dim, qk_rope_head_dim=m.qk_rope_head_dim,
        v_head_dim=m.v_head_dim, attention_bias=False, **experts,
    )
    return decoder_config_to_hf(model_type, cfg, **{**fields, **overrides})


WEIGHTS = decoder_weights(PRE_NORMS, MOE_ROWS + SHARED_ROWS, attn_mlp=MLA_ROWS + DENSE_ROWS)
DEEPSEEK_V3 = Family(deepseek_v3_config_from_hf, deepseek_v3_config_to_hf, WEIGHTS, HF_IGNORE)
