"""The hybrid MoE families: Qwen3-Next (`Qwen3NextForCausalLM`, model_type "qwen3_next") and
Qwen3.5-MoE (`Qwen3_5MoeForCausalLM`, model_type "qwen3_5_moe_text", the text model of
`Qwen3_5MoeForConditionalGeneration`). Both are Qwen3.5's stack (qwen3_5.py: Gated DeltaNet,
arXiv:2412.06464, between gated attention layers, arXiv:2505.06708; zero-centred RMSNorms; partial
rotary) with a sparse MoE in the MLP slot: a softmax router over routed experts (the layout of
moe.py's rows) plus one shared expert behind a sigmoid gate, `y += sigmoid(x w_g) * shared(x)`
(Qwen2-MoE's design, arXiv:2407.10671): our `moe.n_shared` with `moe.shared_gate`.

Where they differ:
- Qwen3-Next fuses the Gated DeltaNet input projection into `in_proj_qkvz` and `in_proj_ba`, both
  grouped by key head: for each of the n_head q/k heads, rows [q_h; k_h; v; z] (v and z for the
  n_v_head / n_head value heads it serves), then [b; a] per head the same way (HF
  `fix_query_key_value_ordering`). `QKVZ_BA` regroups them into our [q; k; v; z; b; a]. Qwen3.5-MoE
  keeps Qwen3.5's four separate projections.
- Qwen3-Next has Qwen3-MoE's layer rule (decoder_sparse_step, mlp_only_layers: dense layers of
  intermediate_size must be the first k, our `moe.first_dense`) and norm_topk_prob. Qwen3.5-MoE has
  neither: every layer is MoE and the top-k weights always sum to 1; it has no intermediate_size,
  so our mlp_hidden (unused) is written as the experts' width, as for Mixtral.
HF's training settings (router_aux_loss_coef, output_router_logits) are not read, as in moe.py.
Shared width: HF's shared_expert_intermediate_size is ours n_shared * expert_hidden, so it must be a
whole number (>= 1) of moe_intermediate_size; another width is refused (ValueError naming it), and a
model of ours without shared experts or without their gate cannot be exported to these families.
"""

import torch

from ..config import ModelConfig, MoEConfig
from .llama import HF_IGNORE, PRE_NORMS, decoder_weights, glu_rows
from .moe import MOE_ROWS, first_dense_from_hf, qwen_moe_to_hf
from .qwen3_5 import DELTANET, DELTANET_IN_PROJ, GATED_ATTN, hybrid_config_from_hf, hybrid_config_to_hf
from .table import IDENTITY, Family, Transform, reject_unsupported


# ----------------------------------------------------------------------------- weights
def _groups(cfg: ModelConfig) -> tuple[int, list[int], list[int]]:
    """Qwen3-Next's key-head groups: how many, and the rows of one group in in_proj_qkvz, in_proj_ba."""
    d = cfg.deltanet
    per_group = d.n_v_head // d.n_head  # value heads each q/k head serves
    return d.n_head, [d.head_dim, d.head_dim, per_group * d.v_head_dim, per_group * d.v_head_dim], 2 * [per_group]


def _load_qkvz_ba(ts, cfg: ModelConfig) -> torch.Tensor:
    """[in_proj_qkvz, in_proj_ba], grouped by key head -> our in_proj rows [q; k; v; z; b; a]."""
    n_group, qkvz, ba = _groups(cfg)
    parts = [*ts[0].unflatten(0, (n_group, -1)).split(qkvz, dim=1), *ts[1].unflatten(0, (n_group, -1)).split(ba, dim=1)]
    return torch.cat([p.flatten(0, 1) for p in parts])  # each (n_group, rows per group, n_embd)


def _save_qkvz_ba(t: torch.Tensor, cfg: ModelConfig) -> list[torch.Tensor]:
    n_group, qkvz, ba = _groups(cfg)
    parts = [p.unflatten(0, (n_group, -1)) for p in t.split([n_group * rows for rows in qkvz + ba])]
    return [torch.cat(parts[:4], dim=1).flatten(0, 1), torch.cat(parts[4:], dim=1).flatten(0, 1)]


QKVZ_BA = Transform(_load_qkvz_ba, _save_qkvz_ba)
SHARED_ROWS = [
    *glu_rows("mlp.shared.mlp", "mlp.shared_expert",
              lambda cfg: cfg.moe.n_shared * cfg.moe.expert_hidden),
    ("mlp.shared.gate.weight", "mlp.shared_expert_gate.weight", IDENTITY),
]
_IN_PROJ_QKVZ_BA = ("attn.in_proj.weight", ("linear_attn.in_proj_qkvz.weight", "linear_attn.in_proj_ba.weight"),
                    QKVZ_BA)


# ----------------------------------------------------------------------------- config
def _shared_moe(c, **fields) -> MoEConfig:
    """The routed experts and the gated shared expert of an HF config; `fields` add the rest."""
    shared, width = c.shared_expert_intermediate_size, c.moe_intermediate_size
    reject_unsupported(c, {"moe_intermediate_size": width < 1})
    if shared < 1 or shared % width:
        raise ValueError(f"HF {c.model_type} config shared_expert_intermediate_size={shared} is not supported: "
                         f"it must be a whole number (>= 1) of moe_intermediate_size={width} "
                         "(model.moe.n_shared * model.moe.expert_hidden)")
    return MoEConfig(n_expert=c.num_experts, top_k=c.num_experts_per_tok, expert_hidden=width,
                     n_shared=shared // width, shared_gate=True, **fields)


def _shared_to_hf(cfg: ModelConfig, model_type: str) -> dict:
    m = cfg.moe
    if m.n_expert and not m.n_shared:
        raise ValueError(f"HF {model_type} cannot represent model.moe.n_shared=0: its MoE layers always "
                         "add a shared expert behind a sigmoid gate (model.moe.shared_gate)")
    return dict(shared_expert_intermediate_size=m.n_shared * m.expert_hidden)


def qwen3_next_config_from_hf(c) -> ModelConfig:
    """Qwen3-Next: the hybrid stack, MoE after the first mlp_only_layers (all of them MoE by default);
    with num_experts = 0, or every layer in mlp_only_layers, the dense hybrid (as Qwen3.5's)."""
    fields = hybrid_config_from_hf(c)
    first_dense = first_dense_from_hf(c)
    if first_dense == c.num_hidden_layers:  # every layer dense: no experts are ever used
        return ModelConfig(**fields)
    return ModelConfig(**fields | dict(moe=_shared_moe(c, norm_topk=c.norm_topk_prob, first_dense=first_dense)))


def qwen3_next_config_to_hf(cfg: ModelConfig, **overrides):
    return hybrid_config_to_hf("qwen3_next", cfg, **qwen_moe_to_hf(cfg) | _shared_to_hf(cfg, "qwen3_next") | overrides)


def qwen3_5_moe_config_from_hf(c) -> ModelConfig:
    """Qwen3.5-MoE: the hybrid stack with an MoE in every layer, its top-k weights always renormalised;
    our unused mlp_hidden is the experts' width (HF has no intermediate_size; a stray one is ignored, as HF does)."""
    reject_unsupported(c, {"num_experts": c.num_experts < 1})  # every layer is MoE
    return ModelConfig(**hybrid_config_from_hf(c, width="moe_intermediate_size") | dict(moe=_shared_moe(c)))


def qwen3_5_moe_config_to_hf(cfg: ModelConfig, **overrides):
    m = cfg.moe
    return hybrid_config_to_hf(
        "qwen3_5_moe_text", cfg, width="moe_intermediate_size", num_experts=m.n_expert, num_experts_per_tok=m.top_k,
        moe_intermediate_size=m.expert_hidden or cfg.mlp_hidden, **_shared_to_hf(cfg, "qwen3_5_moe_text") | overrides,
    )


QWEN3_NEXT = Family(qwen3_next_config_from_hf, qwen3_next_config_to_hf,
                    decoder_weights(PRE_NORMS, MOE_ROWS + SHARED_ROWS, GATED_ATTN + [_IN_PROJ_QKVZ_BA] + DELTANET),
                    HF_IGNORE)
QWEN3_5_MOE = Family(qwen3_5_moe_config_from_hf, qwen3_5_moe_config_to_hf,
                     decoder_weights(PRE_NORMS, MOE_ROWS + SHARED_ROWS, GATED_ATTN + [DELTANET_IN_PROJ] + DELTANET),
                     HF_IGNORE)
