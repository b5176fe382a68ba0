"""Qwen3.5 dense (`Qwen3_5ForCausalLM`, model_type "qwen3_5_text"): Gated DeltaNet layers between
gated full-attention layers, 3 : 1 by default (Qwen3.5 / Qwen3-Next model cards; arXiv:2412.06464,
arXiv:2505.06708).

Everything below maps to one of our typed fields:
- every RMSNorm is zero-centred, `x * (1 + weight)` in fp32 (`model.norm_unit_offset`), the
  per-head QK-norms included (`model.qk_norm = "head"`); the gated RMSNorm inside Gated DeltaNet is
  not (plain `weight`, init 1);
- partial rotary: only the first `partial_rotary_factor` (0.25) of each head's dims rotate
  (`model.rope.fraction`); the multimodal "mrope" sections coincide for text-only positions;
- `q_proj` gives each head's query and output gate side by side, rows [q_h; gate_h] per head
  (`model.attn_gate`): `QUERY_GATE` splits them into our `c_attn` query rows and `gate.proj`;
- `layer_types` "linear_attention" / "full_attention" -> `model.linear_attention` and
  `model.deltanet.full_every` (layer i full when (i + 1) % full_every == 0); `linear_*` sizes ->
  [model.deltanet]; `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a` -> our fused `in_proj`.
Not supported (ValueError naming the setting): attention biases, an activation other than SiLU (it
also drives the conv), a layer pattern that is not "every k-th layer full", RoPE scalings other
than HF's table in llama.py. Qwen3-Next and Qwen3.5-MoE (qwen3_next.py) build on these rows and on
`hybrid_config_from_hf` / `hybrid_config_to_hf`, adding their MoE (and Qwen3-Next its own in_proj layout).
"""

from functools import partial

import torch

from ..config import DeltaNetConfig, ModelConfig
from .llama import (
    _ATTN_MLP, HF_IGNORE, PRE_NORMS, QKV, decoder_config_from_hf, decoder_config_to_hf,
    decoder_weights, rope_from_hf,
)
from .table import IDENTITY, Family, Transform, concat, reject_unsupported

LINEAR, FULL = "linear_attention", "full_attention"


def _load_query_gate(ts, cfg: ModelConfig) -> list[torch.Tensor]:
    """[q_proj, k_proj, v_proj] -> [our c_attn = [q; k; v], our gate.proj]."""
    q_proj, k, v = ts
    per_head = q_proj.view(cfg.n_head, 2, cfg.head_dim, -1)  # rows per head: [q_h; gate_h]
    return [torch.cat([per_head[:, 0].flatten(0, 1), k, v]), per_head[:, 1].flatten(0, 1)]


def _save_query_gate(ts, cfg: ModelConfig) -> list[torch.Tensor]:
    c_attn, gate = ts
    q, k, v = QKV.save(c_attn, cfg)
    per_head = torch.stack([q.view(cfg.n_head, cfg.head_dim, -1), gate.view(cfg.n_head, cfg.head_dim, -1)], dim=1)
    return [per_head.flatten(0, 2), k, v]


QUERY_GATE = Transform(_load_query_gate, _save_query_gate)
IN_PROJ = concat(lambda cfg: [2 * cfg.deltanet.n_head * cfg.deltanet.head_dim + cfg.deltanet.n_v_head * cfg.deltanet.v_head_dim,
                              cfg.deltanet.n_v_head * cfg.deltanet.v_head_dim, cfg.deltanet.n_v_head,
                              cfg.deltanet.n_v_head])

GATED_ATTN = [(("attn.c_attn.weight", "attn.gate.proj.weight"),  # and Llama's dense MLP rows
               ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), QUERY_GATE)]
GATED_ATTN += [row for row in _ATTN_MLP if not row[0].startswith("attn.c_attn")]
DELTANET_IN_PROJ = ("attn.in_proj.weight", tuple(f"linear_attn.in_proj_{p}.weight" for p in ("qkv", "z", "b", "a")),
                    IN_PROJ)  # Qwen3-Next fuses them differently (qwen3_next.py)
DELTANET = [  # the rest of a Gated DeltaNet layer
    ("attn.conv1d.weight", "linear_attn.conv1d.weight", IDENTITY),
    ("attn.decay.A_log", "linear_attn.A_log", IDENTITY),
    ("attn.decay.dt_bias", "linear_attn.dt_bias", IDENTITY),
    ("attn.norm.weight", "linear_attn.norm.weight", IDENTITY),
    ("attn.out_proj.weight", "linear_attn.out_proj.weight", IDENTITY),
]


def full_every_from_layer_types(c) -> int:
    """HF layer_types -> our deltanet.full_every (0: every layer linear)."""
    types, n = list(c.layer_types), c.num_hidden_layers
    if set(types) - {LINEAR, FULL}:
        raise ValueError(f"HF {c.model_type} config layer_types={types} is not supported")
    for every in (0, *range(1, n + 1)):
        if types == _layer_types(n, every):
            return every
    raise ValueError(f"HF {c.model_type} config layer_types={types} is not supported: full-attention layers "
                     "must be every k-th layer (model.deltanet.full_every)")


def _layer_types(n: int, full_every: int) -> list[str]:
    return [FULL if full_every and (i + 1) % full_every == 0 else LINEAR for i in range(n)]


def hybrid_config_from_hf(c, **decoder) -> dict:
    """The ModelConfig fields of the Qwen3.5 / Qwen3-Next hybrid stack, all but the MoE (qwen3_next.py
    adds it); `decoder` goes to `decoder_config_from_hf` (e.g. the HF field of the MLP width)."""
    reject_unsupported(c, {"attention_bias": c.attention_bias,
                           "hidden_act": c.hidden_act not in ("silu", "swish")})  # the conv's activation too
    full_every = full_every_from_layer_types(c)
    linear = full_every != 1
    deltanet = DeltaNetConfig(
        full_every=full_every, n_head=c.linear_num_key_heads, n_v_head=c.linear_num_value_heads,
        head_dim=c.linear_key_head_dim, v_head_dim=c.linear_value_head_dim, conv_size=c.linear_conv_kernel_dim,
    ) if linear else DeltaNetConfig()
    # partial rotary; the multimodal "mrope" sections of rope_parameters coincide for text positions
    return decoder_config_from_hf(c, rope=partial(rope_from_hf, partial_rotary=True), **decoder) | dict(
        norm_unit_offset=True, qk_norm="head", attn_gate=True,
        linear_attention="gated_deltanet" if linear else "none", deltanet=deltanet)


def hybrid_config_to_hf(model_type: str, cfg: ModelConfig, **kwargs):
    """The inverse of `hybrid_config_from_hf` for `model_type`; `kwargs` add or override HF fields."""
    d = cfg.deltanet if cfg.linear_attention != "none" else DeltaNetConfig(full_every=1, n_head=1, n_v_head=1,
                                                                             head_dim=1, v_head_dim=1)
    config = decoder_config_to_hf(
        model_type, cfg, attention_bias=cfg.bias, layer_types=_layer_types(cfg.n_layer, d.full_every),
        linear_num_key_heads=d.n_head, linear_num_value_heads=d.n_v_head, linear_key_head_dim=d.head_dim,
        linear_value_head_dim=d.v_head_dim, linear_conv_kernel_dim=d.conv_size,
        # HF's generation cache needs one attention layer to count the tokens it holds
        **{"use_cache": d.full_every != 0 and d.full_every <= cfg.n_layer} | kwargs,
    )
    config.rope_parameters["partial_rotary_factor"] = cfg.rope.fraction
    return config


def qwen3_5_config_from_hf(c) -> ModelConfig:
    return ModelConfig(**hybrid_config_from_hf(c))


QWEN3_5 = Family(qwen3_5_config_from_hf, partial(hybrid_config_to_hf, "qwen3_5_text"),
                 decoder_weights(PRE_NORMS, attn_mlp=GATED_ATTN + [DELTANET_IN_PROJ] + DELTANET), HF_IGNORE)
