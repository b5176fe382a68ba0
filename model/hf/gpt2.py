"""GPT-2 (HF `GPT2LMHeadModel`): our parameter names are GPT-2's, so the table is near-identity."""

from ..config import ModelConfig
from .table import IDENTITY, TRANSPOSE, VOCAB, Family, reject_unsupported

# our ModelConfig field -> GPT2Config's (read both ways)
_FIELDS = {"vocab_size": "vocab_size", "block_size": "n_positions", "n_layer": "n_layer",
           "n_head": "n_head", "n_embd": "n_embd", "norm_eps": "layer_norm_epsilon",
           "tie_embeddings": "tie_word_embeddings", "init_std": "initializer_range"}


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
    return ModelConfig(**{ours: getattr(c, hf) for ours, hf in _FIELDS.items()},
                       mlp_hidden=c.n_inner or 0, dropout=float(c.resid_pdrop))


def gpt2_config_to_hf(cfg: ModelConfig, **overrides):
    from transformers import GPT2Config

    kwargs = {hf: getattr(cfg, ours) for ours, hf in _FIELDS.items()} | dict(
        n_inner=cfg.mlp_hidden, activation_function="gelu_new",
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=None, eos_token_id=None,  # ours has no special tokens; pass them as overrides
        n_ctx=cfg.block_size,  # read by no transformers 5 code, but by llama.cpp's converter (GPT-2's has it)
    )
    return GPT2Config(**{**kwargs, **overrides})


# Our names are GPT-2's; its Conv1D weights are stored (in, out), our nn.Linear's (out, in)
_LAYER = {"ln_1": IDENTITY, "attn.c_attn": TRANSPOSE, "attn.c_proj": TRANSPOSE,  # q, k, v as ours
          "ln_2": IDENTITY, "mlp.c_fc": TRANSPOSE, "mlp.c_proj": TRANSPOSE}
_ROWS = [("transformer.wte.weight", VOCAB), ("transformer.wpe.weight", IDENTITY)]
_ROWS += [(f"transformer.h.{{i}}.{name}.weight", t) for name, t in _LAYER.items()]
_ROWS += [(f"transformer.h.{{i}}.{name}.bias", IDENTITY) for name in _LAYER]
_ROWS += [("transformer.ln_f.weight", IDENTITY), ("transformer.ln_f.bias", IDENTITY),
          ("lm_head.weight", VOCAB)]  # lm_head: only when untied

GPT2 = Family(gpt2_config_from_hf, gpt2_config_to_hf, [(name, name, t) for name, t in _ROWS],
              hf_ignore=(r"\.attn\.(masked_)?bias$",))  # causal-mask buffers of older transformers
