"""GPT-2 (HF `GPT2LMHeadModel`): our parameter names are GPT-2's, so the table is near-identity."""

from ..config import ModelConfig
from .table import IDENTITY, TRANSPOSE, VOCAB, Family, reject_unsupported


def gpt2_config_from_hf(c) -> ModelConfig:
    reject_unsupported(c, {  # both accepted activations are GELU with the tanh approximation
        "activation_function": c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"),
        "scale_attn_weights": not c.scale_attn_weights,  # scores not divided by sqrt(head_dim)
        "scale_attn_by_inverse_layer_idx": c.scale_attn_by_inverse_layer_idx,
        "add_cross_attention": c.add_cross_attention,
    })
    # `reorder_and_upcast_attn` is accepted: it computes the same function, only with fp32 scores.
    if not c.resid_pdrop == c.embd_pdrop == c.attn_pdrop:
        raise ValueError(
            "model.dropout is one rate, but the HF config has resid_pdrop/embd_pdrop/attn_pdrop = "
            f"{c.resid_pdrop}/{c.embd_pdrop}/{c.attn_pdrop}; load it with equal rates"
        )
    return ModelConfig(
        vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
        n_embd=c.n_embd, mlp_hidden=c.n_inner or 0, norm_eps=c.layer_norm_epsilon,
        tie_embeddings=c.tie_word_embeddings, dropout=float(c.resid_pdrop),
        init_std=c.initializer_range,
    )


def gpt2_config_to_hf(cfg: ModelConfig, **overrides):
    from transformers import GPT2Config

    kwargs = dict(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_embd=cfg.n_embd, n_inner=cfg.mlp_hidden,
        activation_function="gelu_new",
        layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        initializer_range=cfg.init_std,
        bos_token_id=None, eos_token_id=None,  # ours has no special tokens; pass them as overrides
    )
    return GPT2Config(**{**kwargs, **overrides})


_LAYER = [
    ("ln_1.weight", "ln_1.weight", IDENTITY),
    ("ln_1.bias", "ln_1.bias", IDENTITY),
    ("attn.c_attn.weight", "attn.c_attn.weight", TRANSPOSE),  # q, k, v in the same order
    ("attn.c_attn.bias", "attn.c_attn.bias", IDENTITY),
    ("attn.c_proj.weight", "attn.c_proj.weight", TRANSPOSE),
    ("attn.c_proj.bias", "attn.c_proj.bias", IDENTITY),
    ("ln_2.weight", "ln_2.weight", IDENTITY),
    ("ln_2.bias", "ln_2.bias", IDENTITY),
    ("mlp.c_fc.weight", "mlp.c_fc.weight", TRANSPOSE),
    ("mlp.c_fc.bias", "mlp.c_fc.bias", IDENTITY),
    ("mlp.c_proj.weight", "mlp.c_proj.weight", TRANSPOSE),
    ("mlp.c_proj.bias", "mlp.c_proj.bias", IDENTITY),
]

GPT2 = Family(
    config_from_hf=gpt2_config_from_hf,
    config_to_hf=gpt2_config_to_hf,
    weights=[
        ("transformer.wte.weight", "transformer.wte.weight", VOCAB),
        ("transformer.wpe.weight", "transformer.wpe.weight", IDENTITY),
        *[(f"transformer.h.{{i}}.{o}", f"transformer.h.{{i}}.{h}", t) for o, h, t in _LAYER],
        ("transformer.ln_f.weight", "transformer.ln_f.weight", IDENTITY),
        ("transformer.ln_f.bias", "transformer.ln_f.bias", IDENTITY),
        ("lm_head.weight", "lm_head.weight", VOCAB),  # only when untied
    ],
    hf_ignore=(r"\.attn\.(masked_)?bias$",),  # causal-mask buffers of older transformers versions
)
