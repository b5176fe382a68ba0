"""GPT-NeoX (HF `GPTNeoXForCausalLM`; Pythia, arXiv:2304.01373): GPT-2's block, biases and
LayerNorms included, with RoPE instead of learned positions: rung 01 of the ladder.

- `query_key_value` holds each head's rows together, [q_h; k_h; v_h] per head (`QKV`); our
  `c_attn` holds [q; k; v] over all heads. Multi-head attention only: GPT-NeoX has no KV groups.
- RoPE rotates the first `partial_rotary_factor` of each head (Pythia: 0.25) in the rotate-half
  layout, our `rope.fraction`.
- The MLP always has biases, the attention has them with `attention_bias`: our `model.bias` sets
  both, so both are biased (a bias-free attention is refused).
- Pythia's `use_parallel_residual` (attention and MLP both read the block's input) and exact GELU
  are refused: our block is sequential, our GELU GPT-2's tanh form (HF gelu_new, gelu_pytorch_tanh).
"""

from ..config import ModelConfig
from .llama import rope_from_hf, rope_to_hf
from .table import IDENTITY, VOCAB, Family, Transform, reject_unsupported

# our ModelConfig field -> GPTNeoXConfig's (read both ways)
_FIELDS = {"vocab_size": "vocab_size", "block_size": "max_position_embeddings", "n_layer": "num_hidden_layers",
           "n_head": "num_attention_heads", "n_embd": "hidden_size", "mlp_hidden": "intermediate_size",
           "norm_eps": "layer_norm_eps", "tie_embeddings": "tie_word_embeddings", "init_std": "initializer_range"}
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")


def gpt_neox_config_from_hf(c) -> ModelConfig:
    reject_unsupported(c, {"use_parallel_residual": c.use_parallel_residual,
                           "hidden_act": c.hidden_act not in _TANH_GELU,  # Pythia's exact GELU
                           "attention_bias": not c.attention_bias})
    if c.attention_dropout != c.hidden_dropout:
        raise ValueError("model.dropout is one rate, but the HF config has attention_dropout/hidden_dropout = "
                         f"{c.attention_dropout}/{c.hidden_dropout}; load it with equal rates")
    return ModelConfig(**{ours: getattr(c, hf) for ours, hf in _FIELDS.items()}, pos="rope", norm="layernorm",
                       mlp="gelu", bias=True, rope=rope_from_hf(c, partial_rotary=True),
                       dropout=float(c.hidden_dropout))


def gpt_neox_config_to_hf(cfg: ModelConfig, **overrides):
    from transformers import GPTNeoXConfig

    rope = rope_to_hf(cfg) | {"partial_rotary_factor": cfg.rope.fraction}
    kwargs = {hf: getattr(cfg, ours) for ours, hf in _FIELDS.items()} | dict(
        hidden_act="gelu_new", use_parallel_residual=False, attention_bias=True, rope_parameters=rope,
        attention_dropout=cfg.dropout, hidden_dropout=cfg.dropout,
        bos_token_id=None, eos_token_id=None,  # ours has no special tokens; pass them as overrides
    )
    return GPTNeoXConfig(**{**kwargs, **overrides})


def qkv_to_heads(t, cfg: ModelConfig):
    """Our [q; k; v] over all heads -> HF's [q_h; k_h; v_h] per head (rows; a weight's columns follow)."""
    return t.reshape(3, cfg.n_head, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def qkv_from_heads(t, cfg: ModelConfig):
    """HF's [q_h; k_h; v_h] per head -> our [q; k; v] (llama.cpp's gptneox layout too)."""
    return t.reshape(cfg.n_head, 3, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


QKV = Transform(lambda ts, cfg: qkv_from_heads(ts[0], cfg), lambda t, cfg: [qkv_to_heads(t, cfg)])
_LAYER = {"ln_1": ("input_layernorm", IDENTITY), "attn.c_attn": ("attention.query_key_value", QKV),
          "attn.c_proj": ("attention.dense", IDENTITY), "ln_2": ("post_attention_layernorm", IDENTITY),
          "mlp.c_fc": ("mlp.dense_h_to_4h", IDENTITY), "mlp.c_proj": ("mlp.dense_4h_to_h", IDENTITY)}
_ROWS = [("transformer.wte.weight", "gpt_neox.embed_in.weight", VOCAB)]
_ROWS += [(f"transformer.h.{{i}}.{ours}.{p}", f"gpt_neox.layers.{{i}}.{hf}.{p}", t)
          for ours, (hf, t) in _LAYER.items() for p in ("weight", "bias")]
_ROWS += [(f"transformer.ln_f.{p}", f"gpt_neox.final_layer_norm.{p}", IDENTITY) for p in ("weight", "bias")]
_ROWS += [("lm_head.weight", "lm_head.weight", VOCAB)]  # only when untied

GPT_NEOX = Family(gpt_neox_config_from_hf, gpt_neox_config_to_hf, _ROWS,
                  hf_ignore=(r"rotary_emb\.(original_)?inv_freq$",))
