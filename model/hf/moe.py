"""Mixture-of-Experts families on the Llama layout: Mixtral and Qwen3-MoE (model/ffn/moe.py).

Attention, norms and embeddings are stored as in llama.py. An MoE layer holds its router as
`mlp.gate.weight` (n_expert, n_embd) and its experts stacked, `mlp.experts.gate_up_proj`
(n_expert, [gate; up], n_embd) and `down_proj` (n_expert, n_embd, hidden): the layout of our
`Router.weight`, `Experts.c_fc` and `Experts.c_proj`, so each row is a copy. A dense layer
(Qwen3-MoE's `mlp_only_layers`) keeps Llama's gate/up/down rows; every layer has one kind or the
other, and the converter skips the rows a layer has on neither side.

Both HF routers are a softmax over the experts; neither has shared experts, a sigmoid router,
group-limited routing, a routed scale or a router bias. A config using one of those fails the
round trip of `config_to_hf`; a model whose `expert_bias` has moved (aux-loss-free balancing)
is refused by `to_hf`. HF's training settings (router_aux_loss_coef, output_router_logits) are not
read: like our `MoEConfig.TRAINING_ONLY` fields, they do not change what a model computes.
Qwen3-Next (qwen3_next.py) shares Qwen3-MoE's layer rule and router (`first_dense_from_hf`).
"""

from ..config import ModelConfig, MoEConfig
from .llama import (
    HF_IGNORE, PRE_NORMS, decoder_config_from_hf, decoder_config_to_hf, decoder_weights, no_attention_bias,
)
from .table import IDENTITY, Family, Row, reject_unsupported

MOE_ROWS: list[Row] = [
    ("mlp.router.weight", "mlp.gate.weight", IDENTITY),
    ("mlp.experts.c_fc", "mlp.experts.gate_up_proj", IDENTITY),
    ("mlp.experts.c_proj", "mlp.experts.down_proj", IDENTITY),
]


# ----------------------------------------------------------------------------- Mixtral
def mixtral_config_from_hf(c) -> ModelConfig:
    """Mixtral (arXiv:2401.04088): Mistral's attention (sliding_window, when set, on every layer),
    and every MLP an MoE whose top-k softmax weights are renormalised to sum to 1; an expert is as
    wide as intermediate_size."""
    reject_unsupported(c, {
        "num_local_experts": c.num_local_experts < 1,
        # multiplies the router's input by U(1 - noise, 1 + noise) in training: we have no such noise
        "router_jitter_noise": c.router_jitter_noise != 0,
    })
    moe = MoEConfig(n_expert=c.num_local_experts, top_k=c.num_experts_per_tok,
                    expert_hidden=c.intermediate_size, norm_topk=True)
    return ModelConfig(**decoder_config_from_hf(c) | dict(window=c.sliding_window or 0, moe=moe))


def mixtral_config_to_hf(cfg: ModelConfig, **overrides):
    """HF Mixtral has one intermediate_size, the experts': `model.mlp_hidden` must equal
    `model.moe.expert_hidden` (no layer is dense, so it computes nothing), or the round trip says so."""
    m = cfg.moe
    return decoder_config_to_hf(
        "mixtral", cfg, intermediate_size=m.expert_hidden, sliding_window=cfg.window or None,
        num_local_experts=m.n_expert, num_experts_per_tok=m.top_k, router_jitter_noise=0.0, **overrides,
    )


# ----------------------------------------------------------------------------- Qwen3-MoE
def first_dense_from_hf(c) -> int:
    """The Qwen MoE families' layer rule (Qwen3-MoE, Qwen3-Next): layer i is MoE when num_experts > 0,
    (i + 1) % decoder_sparse_step == 0 and i is not in mlp_only_layers. Ours: the first
    `moe.first_dense` layers dense, the rest MoE. Returns that count, num_hidden_layers when no layer
    is MoE; any other pattern is a ValueError naming the HF setting."""
    if not c.num_experts:
        return c.num_hidden_layers
    if c.decoder_sparse_step != 1:
        raise ValueError(f"HF {c.model_type} config decoder_sparse_step={c.decoder_sparse_step} is not supported: "
                         "only 1 (every layer after the first model.moe.first_dense is MoE)")
    dense = sorted({i for i in c.mlp_only_layers if 0 <= i < c.num_hidden_layers})
    if dense != list(range(len(dense))):
        raise ValueError(f"HF {c.model_type} config mlp_only_layers={c.mlp_only_layers} is not supported: "
                         "the dense layers must be the first k (model.moe.first_dense)")
    return len(dense)


def qwen_moe_to_hf(cfg: ModelConfig) -> dict:
    """The inverse of `first_dense_from_hf` and the routed experts' HF fields (Qwen3-MoE, Qwen3-Next)."""
    m = cfg.moe
    return dict(num_experts=m.n_expert, num_experts_per_tok=m.top_k,
                moe_intermediate_size=m.expert_hidden or cfg.mlp_hidden, norm_topk_prob=m.norm_topk,
                decoder_sparse_step=1, mlp_only_layers=list(range(m.first_dense)))


def qwen3_moe_config_from_hf(c) -> ModelConfig:
    """Qwen3-MoE (arXiv:2505.09388): Qwen3's attention (per-head QK-norm; use_sliding_window slides
    every layer), an MoE with a softmax router (top-k weights renormalised when norm_topk_prob) of
    experts moe_intermediate_size wide. The layers in mlp_only_layers keep a dense MLP of
    intermediate_size; they must be the first k (our `moe.first_dense`)."""
    no_attention_bias(c)
    fields = decoder_config_from_hf(c) | dict(qk_norm="head", window=c.sliding_window or 0)
    first_dense = first_dense_from_hf(c)
    if first_dense == c.num_hidden_layers:  # every layer dense: no experts are ever used
        return ModelConfig(**fields)
    moe = MoEConfig(n_expert=c.num_experts, top_k=c.num_experts_per_tok, expert_hidden=c.moe_intermediate_size,
                    norm_topk=c.norm_topk_prob, first_dense=first_dense)
    return ModelConfig(**fields | dict(moe=moe))


def qwen3_moe_config_to_hf(cfg: ModelConfig, **overrides):
    return decoder_config_to_hf(
        "qwen3_moe", cfg, use_sliding_window=cfg.window > 0, sliding_window=cfg.window or None,
        **qwen_moe_to_hf(cfg) | overrides,
    )


WEIGHTS = decoder_weights(PRE_NORMS, MOE_ROWS)
MIXTRAL = Family(mixtral_config_from_hf, mixtral_config_to_hf, WEIGHTS, HF_IGNORE)
QWEN3_MOE = Family(qwen3_moe_config_from_hf, qwen3_moe_config_to_hf, WEIGHTS, HF_IGNORE)
