"""Gemma 2 (HF `Gemma2ForCausalLM`, arXiv:2408.00118): the Llama layout with sandwich norms,
unit-offset RMSNorm, GeGLU, embeddings scaled by sqrt(n_embd), softcapped attention and output
logits, attention scaled by query_pre_attn_scalar ** -0.5, and local/global layers alternating
(layer 0 local).
"""

from ..config import ModelConfig
from .llama import (
    HF_IGNORE, SANDWICH_NORMS, decoder_config_from_hf, decoder_config_to_hf, decoder_weights,
    layer_types_to_hf, rope_from_hf, window_from_layer_types,
)
from .table import Family, reject_unsupported


def gemma2_config_from_hf(c, rope=rope_from_hf, preferred_global_every: int = 2) -> ModelConfig:
    """(`rope` and `preferred_global_every`: Gemma 3 reads a RoPE per layer type, and 5 : 1 layers.)"""
    reject_unsupported(c, {
        "attention_bias": c.attention_bias,  # q/k/v/o biases without MLP biases
        "use_bidirectional_attention": c.use_bidirectional_attention,
    })
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return ModelConfig(**decoder_config_from_hf(c, activation="hidden_activation", rope=rope) | dict(
        norm_placement="sandwich", norm_unit_offset=True, embed_scale=True,
        # 0 = our default 1/sqrt(head_dim), so configs that do not rescale stay canonical
        attn_scale=0.0 if c.query_pre_attn_scalar == head_dim else c.query_pre_attn_scalar**-0.5,
        attn_softcap=c.attn_logit_softcapping or 0.0, final_softcap=c.final_logit_softcapping or 0.0,
        **window_from_layer_types(c, c.sliding_window, preferred_global_every=preferred_global_every),
    ))


def gemma2_config_to_hf(cfg: ModelConfig, model_type: str = "gemma2", **overrides):
    scalar = round(cfg.attn_scale**-2) if cfg.attn_scale else cfg.head_dim  # HF wants an int
    return decoder_config_to_hf(
        model_type, cfg, activation="hidden_activation", query_pre_attn_scalar=scalar,
        attn_logit_softcapping=cfg.attn_softcap or None, final_logit_softcapping=cfg.final_softcap or None,
        sliding_window=cfg.window or None, layer_types=layer_types_to_hf(cfg), **overrides,
    )


GEMMA2 = Family(gemma2_config_from_hf, gemma2_config_to_hf, decoder_weights(SANDWICH_NORMS), HF_IGNORE)
