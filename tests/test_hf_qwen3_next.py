"""Parity with HF `Qwen3NextForCausalLM` and `Qwen3_5MoeForCausalLM` (the hybrid MoE families) on tiny
random models, both directions, through the production converter (model/hf/qwen3_next.py): Qwen3-Next's
in_proj_qkvz / in_proj_ba grouped by key head, Qwen3.5-MoE's separate projections, routed experts plus a
gated shared expert one or two expert widths wide, dense first layers (Qwen3-Next's mlp_only_layers),
grouped and equal value heads, tied and untied embeddings; cached decoding through a converted model.
CPU, fp32, eager HF attention, HF's torch fallback for the delta rule, no downloads.

Every weight is random (randomize_), norms, A_log, dt_bias, conv taps, router and shared_expert_gate
included, then brought to the scales where fp32 resolves ATOL (`moderate_`): at randomize_'s own scales
these networks amplify rounding ~10x more than the dense Qwen3.5 (every zero-centred norm scales by ~2,
every gate's logits have std ~5), and our fp32 logits and HF's each land up to ~3e-4 from an fp64
computation on a few tokens. With the zero-centred norms around 1 (`centre_unit_offset_norms_`), a
moderate decay (`moderate_decay_`) and gate logits of order 1 (`moderate_gates_`, which also keeps the
gates from saturating, so that a missing one shows), 64 draws of these cases stay within 4e-5."""

import dataclasses
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import (  # noqa: E402
    BATCH, VOCAB, assert_cached_decode_matches_hf, assert_logits_match, assert_preset_round_trips,
    centre_unit_offset_norms_, check_to_hf_and_back, hf_config, moderate_decay_, moderate_gates_,
    random_hf_model,
)
from tiny_run import tokens  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402
from model.config import DeltaNetConfig, MoEConfig  # noqa: E402
from model.hf import FAMILIES, config_from_hf, config_to_hf, from_hf  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

NEXT, MOE = "qwen3_next", "qwen3_5_moe_text"
L, F = "linear_attention", "full_attention"
SIZES = dict(num_hidden_layers=4, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
             linear_key_head_dim=8, linear_value_head_dim=12, linear_conv_kernel_dim=4,
             num_experts=6, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=32)
# (model_type, name): HF config overrides on SIZES; 40-token sequences run one partial chunk of the delta rule
CASES = {
    (NEXT, "3-linear-1-full-first-dense-untied"): dict(layer_types=[L, L, L, F], mlp_only_layers=[0]),
    (NEXT, "alternating-tied-raw-topk-equal-heads"): dict(
        layer_types=[L, F, L, F], tie_word_embeddings=True, norm_topk_prob=False, linear_num_value_heads=2,
        linear_value_head_dim=8, shared_expert_intermediate_size=16, linear_conv_kernel_dim=3),
    (MOE, "3-linear-1-full-untied"): dict(layer_types=[L, L, L, F]),
    (MOE, "alternating-tied-one-wide-shared"): dict(layer_types=[L, F, L, F], tie_word_embeddings=True,
                                                    shared_expert_intermediate_size=16, num_experts_per_tok=3),
}
IDS = [f"{t}-{name}" for t, name in CASES]


def overrides(key) -> dict:
    return {**SIZES, **CASES[key]}


def moderate_(model: torch.nn.Module) -> torch.nn.Module:
    """An HF model or ours at scales where fp32 resolves 1e-4 in these families (module docstring)."""
    return moderate_gates_(moderate_decay_(centre_unit_offset_norms_(model)))


def random_hf(key, seed: int = 0):
    return moderate_(random_hf_model(key[0], overrides(key), seed))


@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_from_hf_logits_match(key):
    c = hf_config(key[0], **overrides(key))
    hf = random_hf(key)
    gpt = from_hf(hf)
    m = gpt.config.moe
    assert (m.n_expert, m.top_k, m.expert_hidden) == (c.num_experts, c.num_experts_per_tok, c.moe_intermediate_size)
    assert m.shared_gate and m.n_shared * m.expert_hidden == c.shared_expert_intermediate_size
    assert m.first_dense == len(getattr(c, "mlp_only_layers", []))
    assert m.norm_topk == getattr(c, "norm_topk_prob", True)  # Qwen3.5-MoE always renormalises
    assert [gpt.config.is_linear(i) for i in range(c.num_hidden_layers)] == [t == L for t in c.layer_types]
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(gpt(idx), hf(idx).logits)


@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_to_hf_logits_match_and_round_trip_is_bit_identical(key):
    check_to_hf_and_back(key[0], overrides(key), prepare=moderate_)


@pytest.mark.parametrize("key", [(NEXT, "3-linear-1-full-first-dense-untied"), (MOE, "3-linear-1-full-untied")],
                         ids=[NEXT, MOE])
@torch.no_grad()
def test_cached_decode_of_a_converted_model_equals_hf(key):
    """Prompt through the chunked form, then token by token through the recurrent state and the KV
    cache: HF's full forward gives the same logits at every position."""
    assert_cached_decode_matches_hf(random_hf(key))


@torch.no_grad()
def test_the_layout_and_the_gate_matter_at_this_size(monkeypatch):
    """Parity above would also pass if a detail did not change the logits at this size: the shared
    expert without its gate, or in_proj_qkvz read as if q, k, v, z were stacked whole (Qwen3.5's
    order, not grouped by key head), each change them."""
    key = (NEXT, "3-linear-1-full-first-dense-untied")
    hf, idx = random_hf(key), tokens(**BATCH)
    expected = hf(idx).logits
    gpt = from_hf(hf)
    ungated = GPT(dataclasses.replace(gpt.config, moe=dataclasses.replace(gpt.config.moe, shared_gate=False)))
    ungated.load_state_dict({n.replace(".shared.mlp.", ".shared."): t for n, t in gpt.state_dict().items()
                             if ".shared.gate." not in n})
    assert (ungated(idx) - expected).abs().max() > 1e-2
    family = FAMILIES[NEXT]
    rows = family.weights[:]
    i = next(k for k, row in enumerate(rows) if "linear_attn.in_proj_qkvz.weight" in row[1][0])
    ours, hf_names, t = rows[i]
    stacked = type(t)(lambda ts, cfg: torch.cat(ts), t.save)  # q; k; v; z as four whole blocks: wrong
    rows[i] = (ours, hf_names, stacked)
    monkeypatch.setitem(FAMILIES, NEXT, dataclasses.replace(family, weights=rows))
    assert (from_hf(hf)(idx) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("model_type, hf_overrides, field", [
    (NEXT, dict(shared_expert_intermediate_size=24), "shared_expert_intermediate_size=24"),  # 1.5 experts wide
    (NEXT, dict(shared_expert_intermediate_size=0), "shared_expert_intermediate_size=0"),
    (NEXT, dict(moe_intermediate_size=0), "moe_intermediate_size=0"),
    (NEXT, dict(decoder_sparse_step=2), "decoder_sparse_step"),
    (NEXT, dict(mlp_only_layers=[1]), "mlp_only_layers"),
    (NEXT, dict(layer_types=[L, F, F, L]), "layer_types"),
    (NEXT, dict(attention_bias=True), "attention_bias"),
    (MOE, dict(shared_expert_intermediate_size=40), "shared_expert_intermediate_size=40"),
    (MOE, dict(num_experts=0), "num_experts"),
    (MOE, dict(hidden_act="gelu"), "hidden_act"),
])
def test_unrepresentable_hf_config_raises_one_line(model_type, hf_overrides, field):
    with pytest.raises(ValueError, match=re.escape(field)) as e:
        config_from_hf(hf_config(model_type, **{**SIZES, **hf_overrides}))
    assert "\n" not in str(e.value)


HYBRID_MOE = dict(vocab_size=VOCAB, block_size=64, n_layer=4, n_head=4, n_kv_head=2, n_embd=64, head_dim=16,
                  mlp_hidden=16, pos="rope", norm="rmsnorm", norm_eps=1e-6, norm_unit_offset=True, mlp="swiglu",
                  bias=False, qk_norm="head", attn_gate=True, linear_attention="gated_deltanet",
                  deltanet=DeltaNetConfig(n_head=2, n_v_head=4, head_dim=8, v_head_dim=12),
                  moe=MoEConfig(n_expert=6, top_k=2, expert_hidden=16, n_shared=2, shared_gate=True))


@pytest.mark.parametrize("model_type, ours, moe, field", [
    (NEXT, {}, dict(shared_gate=False), "moe.shared_gate"),
    (NEXT, {}, dict(n_shared=0, shared_gate=False), "moe.n_shared"),
    (NEXT, {}, dict(router="sigmoid"), "moe.router"),
    (NEXT, dict(attn_gate=False), {}, "attn_gate"),
    (MOE, {}, dict(norm_topk=False), "moe.norm_topk"),
    (MOE, {}, dict(first_dense=1), "moe.first_dense"),
    (MOE, dict(mlp_hidden=32), {}, "mlp_hidden"),  # no dense MLP: its width is the experts'
    (MOE, {}, dict(shared_gate=False), "moe.shared_gate"),
    (MOE, {}, dict(n_expert=0), "num_experts"),  # every layer is MoE
])
def test_unrepresentable_model_config_raises_one_line(model_type, ours, moe, field):
    cfg = ModelConfig(**HYBRID_MOE | ours | dict(moe=dataclasses.replace(HYBRID_MOE["moe"], **moe)))
    with pytest.raises(ValueError, match=re.escape(field)) as e:
        config_to_hf(cfg, model_type)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("model_type", [NEXT, MOE])
def test_hybrid_moe_config_round_trips(model_type):
    cfg = ModelConfig(**HYBRID_MOE)
    assert config_from_hf(config_to_hf(cfg, model_type)) == cfg


def test_qwen3_next_without_moe_layers_is_the_dense_hybrid():
    for hf_overrides in (dict(num_experts=0), dict(mlp_only_layers=[0, 1, 2, 3])):
        cfg = config_from_hf(hf_config(NEXT, **{**SIZES, **hf_overrides}))
        assert cfg.moe == MoEConfig() and cfg.mlp_hidden == hf_config(NEXT).intermediate_size


@pytest.mark.parametrize("preset, model_type", [("qwen3-next", NEXT), ("qwen3.5-moe", MOE)])
def test_presets_round_trip_through_their_family(preset, model_type):
    assert_preset_round_trips(preset, model_type)
