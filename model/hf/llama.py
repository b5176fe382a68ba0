"""The Llama layout and the families that share it: Llama, Mistral, Qwen3, OLMo 2, OLMo 3 (Gemma 2 in gemma2.py).

All of them store `model.embed_tokens`, `model.layers.{i}.self_attn.{q,k,v,o}_proj`,
`mlp.{gate,up,down}_proj`, RMSNorms and `model.norm`; they differ in which norms a layer holds
(`PRE_NORMS`, `POST_NORMS`), QK-norm, biases and the sliding-window pattern. Each family's config
translator states those differences as our typed fields; the weight table is shared, since a row
whose tensors exist on neither side is skipped (`q_norm` of a Llama) and on one side only is an
error (a Qwen3 `q_norm` with our `qk_norm="none"`).
"""

import math
from functools import partial
from types import SimpleNamespace

from ..config import ModelConfig, RopeConfig
from .table import IDENTITY, VOCAB, Family, Row, concat, names, reject_unsupported

# ----------------------------------------------------------------------------- weights
QKV = concat(lambda cfg: [cfg.n_head * cfg.head_dim] + 2 * [cfg.n_kv_head * cfg.head_dim])  # [q; k; v]


def _biased(ours: str, hf: str | tuple[str, ...], transform) -> list[Row]:
    """A linear layer's weight row and its bias row (absent on both sides when bias=False)."""
    return [(f"{ours}.{p}", tuple(f"{n}.{p}" for n in names(hf)), transform)
            for p in ("weight", "bias")]


def glu_rows(ours: str, hf: str, width=lambda cfg: cfg.mlp_hidden) -> list[Row]:
    """A gated MLP `width(cfg)` wide: HF gate_proj and up_proj are our c_fc's rows [gate; up]."""
    gate_up = concat(lambda cfg: 2 * [width(cfg)])
    return [*_biased(f"{ours}.c_fc", (f"{hf}.gate_proj", f"{hf}.up_proj"), gate_up),
            *_biased(f"{ours}.c_proj", f"{hf}.down_proj", IDENTITY)]


_ATTN_MLP = [
    *_biased("attn.c_attn", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), QKV),
    *_biased("attn.c_proj", "self_attn.o_proj", IDENTITY),
    ("attn.q_norm.weight", "self_attn.q_norm.weight", IDENTITY),  # Qwen3 (per head), OLMo 2 (full)
    ("attn.k_norm.weight", "self_attn.k_norm.weight", IDENTITY),
    *glu_rows("mlp", "mlp"),
]

# our block norm -> HF layer norm, per `model.norm_placement`
PRE_NORMS = {"ln_1": "input_layernorm", "ln_2": "post_attention_layernorm"}  # Llama: "post" = pre-MLP
POST_NORMS = {"ln_1": "post_attention_layernorm", "ln_2": "post_feedforward_layernorm"}  # OLMo 2
SANDWICH_NORMS = {  # Gemma 2
    "ln_1": "input_layernorm", "ln_1_post": "post_attention_layernorm",
    "ln_2": "pre_feedforward_layernorm", "ln_2_post": "post_feedforward_layernorm",
}

HF_IGNORE = (r"rotary_emb\.(original_)?inv_freq$", r"embed_tokens\.embed_scale$")  # derived buffers


def decoder_weights(norms: dict[str, str], extra: list[Row] = (), attn_mlp: list[Row] = _ATTN_MLP) -> list[Row]:
    """The whole table; `extra` adds per-layer rows, named relative to our block / HF layer
    (model/hf/moe.py adds the router and experts of MoE layers); `attn_mlp` replaces Llama's
    attention and MLP rows (model/hf/deepseek.py: MLA)."""
    layer = [(f"{ours}.weight", f"{hf}.weight", IDENTITY) for ours, hf in norms.items()] + list(attn_mlp)
    layer += list(extra)
    return [
        ("transformer.wte.weight", "model.embed_tokens.weight", VOCAB),
        *[(_prefix("transformer.h.{i}.", o), _prefix("model.layers.{i}.", h), t) for o, h, t in layer],
        ("transformer.ln_f.weight", "model.norm.weight", IDENTITY),
        ("lm_head.weight", "lm_head.weight", VOCAB),  # only when untied
    ]


def _prefix(prefix: str, row_names: str | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(prefix + n for n in names(row_names))


# ----------------------------------------------------------------------------- RoPE
ROPE_TYPES = {"default": "none", "linear": "linear", "llama3": "llama3", "yarn": "yarn"}  # HF -> ours
_ROPE_FIELDS = {  # our RopeConfig field -> HF rope_parameters key, per scaling
    "none": {},
    "linear": {"factor": "factor"},
    "llama3": {"factor": "factor", "low_freq_factor": "low_freq_factor", "high_freq_factor": "high_freq_factor",
               "original_max_pos": "original_max_position_embeddings"},
    "yarn": {"factor": "factor", "beta_fast": "beta_fast", "beta_slow": "beta_slow",
             "original_max_pos": "original_max_position_embeddings", "truncate": "truncate"},
}
# HF settings that change the rotation but have no field here, with the value that means "off"
_ROPE_OFF = {"partial_rotary_factor": 1.0, "attention_factor": None, "mscale": None,
             "mscale_all_dim": None}


def rope_from_hf(c, partial_rotary: bool = False) -> RopeConfig:
    """`rope_parameters` (transformers 5.x; older `rope_theta`/`rope_scaling` are folded into it by
    the HF config) -> RopeConfig. original_max_position_embeddings equal to max_position_embeddings
    becomes our 0 ("= block_size"). partial_rotary: the family's attention rotates only the first
    `partial_rotary_factor` of each head (Qwen3.5), our `rope.fraction`; elsewhere it is refused."""
    p = dict(c.rope_parameters or {})
    fraction = p.pop("partial_rotary_factor", 1.0) if partial_rotary else 1.0
    where = f"HF {c.model_type} config rope_parameters"
    if p.get("rope_type", "default") not in ROPE_TYPES:
        raise ValueError(f"{where} rope_type={p['rope_type']!r} is not supported; "
                         f"supported: {', '.join(ROPE_TYPES)}")
    if any(isinstance(v, dict) for v in p.values()):
        raise ValueError(f"{where} differ per layer type; one RoPE for all layers is supported")
    if p.get("rope_type") == "yarn" and p.get("attention_factor") is not None:
        # written out by some checkpoints (OLMo 3): accepted when it is the value YaRN derives
        if math.isclose(p["attention_factor"], 0.1 * math.log(p.get("factor", 1.0)) + 1.0, rel_tol=1e-6):
            p.pop("attention_factor")
    for key, off in _ROPE_OFF.items():
        if p.get(key, off) != off:
            raise ValueError(f"{where} {key}={p[key]!r} is not supported")
    scaling = ROPE_TYPES[p.get("rope_type", "default")]
    fields = {ours: p[hf] for ours, hf in _ROPE_FIELDS[scaling].items() if p.get(hf) is not None}
    if fields.get("original_max_pos") == c.max_position_embeddings:
        fields["original_max_pos"] = 0
    return RopeConfig(theta=float(p.get("rope_theta", 10000.0)), scaling=scaling, fraction=fraction, **fields)


def rope_to_hf(cfg: ModelConfig) -> dict:
    r = cfg.rope
    p = {"rope_type": {v: k for k, v in ROPE_TYPES.items()}[r.scaling], "rope_theta": r.theta}
    p |= {hf: getattr(r, ours) for ours, hf in _ROPE_FIELDS[r.scaling].items()}
    if "original_max_position_embeddings" in p:
        p["original_max_position_embeddings"] = r.original_max_pos or cfg.block_size
    return p


# ----------------------------------------------------------------------------- sliding windows
def window_from_layer_types(c, window: int | None, preferred_global_every: int = 0, note: str = "") -> dict:
    """HF `layer_types` + `sliding_window` -> our (window, global_every): sliding layers must be all
    layers, or all but those with (i + 1) % global_every == 0 (see `ModelConfig.is_local`)."""
    types = list(c.layer_types)
    if set(types) - {"full_attention", "sliding_attention"}:
        raise ValueError(f"HF {c.model_type} config layer_types={types} is not supported")
    local = [t == "sliding_attention" for t in types]
    if not any(local):
        return dict(window=0, global_every=0)
    if not window:
        raise ValueError(f"HF {c.model_type} config has sliding layers in layer_types but "
                         f"sliding_window={window}")
    n = len(types)
    for every in dict.fromkeys([preferred_global_every, 0, *range(2, n + 1)]):
        if local == [every == 0 or (i + 1) % every != 0 for i in range(n)]:
            return dict(window=window, global_every=every)
    raise ValueError(f"HF {c.model_type} config layer_types={types} is not supported: sliding "
                     f"layers must be all, or all but every k-th (model.global_every){note}")


def layer_types_to_hf(cfg: ModelConfig) -> list[str]:
    return ["sliding_attention" if cfg.is_local(i) else "full_attention" for i in range(cfg.n_layer)]


# ----------------------------------------------------------------------------- config
GLU_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu", "gelu_new": "geglu"}
_ACTIVATION_TO_HF = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh"}
# our ModelConfig field -> the HF field, the same in every Llama-layout config (read both ways)
_FIELDS = {"vocab_size": "vocab_size", "block_size": "max_position_embeddings",
           "n_layer": "num_hidden_layers", "n_head": "num_attention_heads", "n_embd": "hidden_size",
           "norm_eps": "rms_norm_eps", "tie_embeddings": "tie_word_embeddings",
           "init_std": "initializer_range"}


def decoder_config_from_hf(c, activation: str = "hidden_act", rope=rope_from_hf,
                           width: str = "intermediate_size") -> dict:
    """The ModelConfig fields every Llama-layout family reads the same way (`rope` reads the RoPE;
    `width` names the HF field our mlp_hidden is read from, for a family without a dense MLP)."""
    reject_unsupported(c, {
        activation: getattr(c, activation) not in GLU_ACTIVATIONS,
        # model.dropout would also drop the residual branches and the embeddings
        "attention_dropout": (getattr(c, "attention_dropout", 0.0) or 0.0) != 0.0,
    })
    return {ours: getattr(c, hf) for ours, hf in _FIELDS.items()} | dict(
        n_kv_head=c.num_key_value_heads or 0, mlp_hidden=getattr(c, width), bias=False,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        mlp=GLU_ACTIVATIONS[getattr(c, activation)], pos="rope", rope=rope(c), norm="rmsnorm",
    )


def decoder_config_to_hf(model_type: str, cfg: ModelConfig, activation: str = "hidden_act",
                         width: str = "intermediate_size", **kwargs):
    """An HF config of `model_type` with the fields all Llama-layout families share, plus `kwargs`
    (`width`: as in `decoder_config_from_hf`). Settings HF cannot hold are written as the nearest
    value; `config_to_hf`'s round trip names them."""
    from transformers import AutoConfig

    shared = {hf: getattr(cfg, ours) for ours, hf in _FIELDS.items()} | {
        "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim, width: cfg.mlp_hidden,
        "rope_parameters": rope_to_hf(cfg), activation: _ACTIVATION_TO_HF.get(cfg.mlp, "silu"),
        "attention_dropout": 0.0,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,  # pass them as overrides
    }
    return AutoConfig.for_model(model_type, **{**shared, **kwargs})


def no_attention_bias(c) -> None:
    # q/k/v/o biases without MLP biases: our one `model.bias` covers both
    reject_unsupported(c, {"attention_bias": getattr(c, "attention_bias", False)})


# ----------------------------------------------------------------------------- families
def llama_config_from_hf(c) -> ModelConfig:
    if c.attention_bias != c.mlp_bias:
        raise ValueError(f"HF llama config attention_bias={c.attention_bias} with "
                         f"mlp_bias={c.mlp_bias} is not supported: model.bias sets both")
    return ModelConfig(**decoder_config_from_hf(c) | dict(bias=c.attention_bias))


def llama_config_to_hf(cfg: ModelConfig, **overrides):
    return decoder_config_to_hf("llama", cfg, attention_bias=cfg.bias, mlp_bias=cfg.bias, **overrides)


def mistral_config_from_hf(c) -> ModelConfig:
    """Mistral: every layer sliding when sliding_window is set (its layer_types are ignored by HF)."""
    return ModelConfig(**decoder_config_from_hf(c) | dict(window=c.sliding_window or 0))


def mistral_config_to_hf(cfg: ModelConfig, **overrides):
    return decoder_config_to_hf("mistral", cfg, sliding_window=cfg.window or None, **overrides)


def qwen3_config_from_hf(c) -> ModelConfig:
    """Qwen3: per-head QK-norm. With use_sliding_window, HF makes layers >= max_window_layers
    sliding; only patterns our `window`/`global_every` express are accepted (all layers sliding)."""
    no_attention_bias(c)
    note = f"; use_sliding_window makes layers >= max_window_layers={c.max_window_layers} sliding"
    windows = window_from_layer_types(c, c.sliding_window, note=note)
    return ModelConfig(**decoder_config_from_hf(c) | dict(qk_norm="head", **windows))


def qwen3_config_to_hf(cfg: ModelConfig, **overrides):
    return decoder_config_to_hf(
        "qwen3", cfg, use_sliding_window=cfg.window > 0, sliding_window=cfg.window or None,
        max_window_layers=0 if cfg.window else cfg.n_layer, layer_types=layer_types_to_hf(cfg),
        **overrides,
    )


def olmo2_config_from_hf(c) -> ModelConfig:
    """OLMo 2: norms on each branch's output, QK-norm over the whole q and k projections.

    `Olmo2RMSNorm` multiplies by its scale in fp32 and casts after, ours (as Llama) casts first:
    equal in fp32, rounded differently in bf16."""
    no_attention_bias(c)
    return ModelConfig(**decoder_config_from_hf(c) | dict(norm_placement="post", qk_norm="full"))


def olmo3_rope_from_hf(c) -> RopeConfig:
    """OLMo 3 keeps one rope_parameters per layer type. Ours: `rope` for the full-attention layers;
    sliding layers use the same, or plain RoPE at `rope.local_theta` (OLMo 3 7B: YaRN only on full
    layers). A layer type no layer uses is not read."""
    per_type = c.rope_parameters or {}
    types = set(c.layer_types)
    read = {t: rope_from_hf(SimpleNamespace(rope_parameters=per_type.get(t), model_type=c.model_type,
                                            max_position_embeddings=c.max_position_embeddings))
            for t in ("full_attention", "sliding_attention") if t in types}
    full, sliding = read.get("full_attention"), read.get("sliding_attention")
    if full is None or sliding is None or sliding == full:
        return full or sliding
    if sliding.scaling == "none":
        return RopeConfig(**{**vars(full), "local_theta": sliding.theta})
    raise ValueError(f"HF {c.model_type} config rope_parameters['sliding_attention']={per_type['sliding_attention']!r} "
                     "is not supported: sliding layers take the full layers' RoPE or plain RoPE (model.rope.local_theta)")


def olmo3_rope_to_hf(cfg: ModelConfig) -> dict:
    full = rope_to_hf(cfg)
    local = {"rope_type": "default", "rope_theta": cfg.rope.local_theta} if cfg.rope.local_theta else full
    return {"full_attention": full, "sliding_attention": local}


def olmo3_config_from_hf(c) -> ModelConfig:
    """OLMo 3 (Ai2, arXiv:2512.13961): OLMo 2's layer, plus sliding-window layers from layer_types
    (3 sliding : 1 full by default: our global_every = 4) and a RoPE per layer type."""
    no_attention_bias(c)
    windows = window_from_layer_types(c, c.sliding_window, preferred_global_every=4)
    fields = decoder_config_from_hf(c, rope=olmo3_rope_from_hf) | dict(norm_placement="post", qk_norm="full")
    return ModelConfig(**fields | windows)


def olmo3_config_to_hf(cfg: ModelConfig, **overrides):
    # HF builds the sliding mask even when no layer uses it, so it needs some window
    return decoder_config_to_hf("olmo3", cfg, sliding_window=cfg.window or cfg.block_size,
                                layer_types=layer_types_to_hf(cfg), rope_parameters=olmo3_rope_to_hf(cfg),
                                **overrides)


LLAMA = Family(llama_config_from_hf, llama_config_to_hf, decoder_weights(PRE_NORMS), HF_IGNORE)
MISTRAL = Family(mistral_config_from_hf, mistral_config_to_hf, decoder_weights(PRE_NORMS), HF_IGNORE)
QWEN3 = Family(qwen3_config_from_hf, qwen3_config_to_hf, decoder_weights(PRE_NORMS), HF_IGNORE)
OLMO2 = Family(olmo2_config_from_hf, partial(decoder_config_to_hf, "olmo2"),
               decoder_weights(POST_NORMS), HF_IGNORE)
OLMO3 = Family(olmo3_config_from_hf, olmo3_config_to_hf, decoder_weights(POST_NORMS),
               HF_IGNORE + (r"rotary_emb\.\w+_attention_(original_)?inv_freq$",))
