"""Parity with HF `Qwen3_5ForCausalLM` (Qwen3.5 dense) on tiny random models, both directions,
through the production converter (model/hf/qwen3_5.py): Gated DeltaNet layers mixed with gated
full-attention layers in several patterns, grouped value heads, partial rotary, zero-centred RMSNorms
(1 + w), the gated RMSNorm, tied and untied embeddings; cached decoding through the converted model.
CPU, fp32, eager HF attention, HF's torch fallback for the delta rule, no downloads.

Every weight is random: A_log, dt_bias, conv taps and every norm included. The decay's parameters
(A_log, and the rows of the projection that feed it) are drawn smaller than the rest: at the shared
N(1, 0.3) / N(0, 0.3) the decay is ~e^-30 per token, the log-decay sums within a chunk reach -1e3, and
HF's own chunked fp32 reference lands ~2e-4 from an fp64 computation (ours sums in fp64, see
delta_rule.py). With A_log ~ N(-2, 0.3) both are within ~6e-5 of fp64 (`moderate_decay_`, hf_parity.py)."""

import dataclasses
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import (  # noqa: E402
    BATCH, VOCAB, assert_cached_decode_matches_hf, assert_logits_match, check_to_hf_and_back, hf_config,
    moderate_decay_, random_hf_model,
)
from tiny_run import tokens  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402
from model.config import DeltaNetConfig  # noqa: E402
from model.hf import FAMILIES, config_from_hf, config_to_hf, from_hf  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MODEL_TYPE = "qwen3_5_text"
SIZES = dict(num_hidden_layers=4, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
             linear_key_head_dim=8, linear_value_head_dim=12, linear_conv_kernel_dim=4)
L, F = "linear_attention", "full_attention"
# name: HF config overrides on SIZES (40-token sequences: the chunked form runs one partial chunk)
CASES = {
    "3-linear-1-full-untied": dict(layer_types=[L, L, L, F]),
    "alternating-tied-full-rotary": dict(layer_types=[L, F, L, F], tie_word_embeddings=True,
                                         rope_parameters=dict(rope_type="default", rope_theta=5e5,
                                                              partial_rotary_factor=1.0)),
    "2-to-1-equal-heads-conv3": dict(num_hidden_layers=3, layer_types=[L, L, F], linear_num_value_heads=2,
                                     linear_value_head_dim=8, linear_conv_kernel_dim=3),
    "all-linear": dict(layer_types=[L] * 4, use_cache=False),  # HF's cache needs an attention layer
}


def overrides(case: str) -> dict:
    return {**SIZES, **CASES[case]}


def random_hf(case: str):
    return moderate_decay_(random_hf_model(MODEL_TYPE, overrides(case)))


@pytest.mark.parametrize("case", CASES)
def test_from_hf_logits_match(case):
    c = hf_config(MODEL_TYPE, **overrides(case))
    hf = random_hf(case)
    gpt = from_hf(hf)
    expected = dict(linear_attention="gated_deltanet", attn_gate=True, norm_unit_offset=True, qk_norm="head")
    assert {k: getattr(gpt.config, k) for k in expected} == expected
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(gpt(idx), hf(idx).logits)
    assert [gpt.config.is_linear(i) for i in range(c.num_hidden_layers)] == [t == L for t in c.layer_types]
    assert gpt.config.rope.fraction == c.rope_parameters["partial_rotary_factor"]
    assert gpt.config.deltanet.n_v_head == c.linear_num_value_heads


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match_and_round_trip_is_bit_identical(case):
    check_to_hf_and_back(MODEL_TYPE, overrides(case), prepare=moderate_decay_)


@torch.no_grad()
def test_cached_decode_of_a_converted_model_equals_hf():
    """Prompt through the chunked form, then token by token through the recurrent state: HF's full
    forward gives the same logits at every position."""
    assert_cached_decode_matches_hf(random_hf("3-linear-1-full-untied"))


@torch.no_grad()
def test_the_details_matter_at_this_size(monkeypatch):
    """Parity above would also pass if a detail did not change the logits at this size: an ungated
    attention, a plain (not 1 + w) norm, full rotary, or q/gate rows taken unsplit each change them."""
    hf, idx = random_hf("3-linear-1-full-untied"), tokens(**BATCH)
    expected = hf(idx).logits
    gpt = from_hf(hf)
    for change in (dict(attn_gate=False), dict(norm_unit_offset=False),
                   dict(rope=dataclasses.replace(gpt.config.rope, fraction=1.0))):
        other = GPT(dataclasses.replace(gpt.config, **change))
        other.load_state_dict(gpt.state_dict(), strict=False)
        assert (other(idx) - expected).abs().max() > 1e-2, change
    family = FAMILIES[MODEL_TYPE]
    first = family.weights[:]
    i = next(k for k, row in enumerate(first) if "self_attn.q_proj.weight" in row[1][0])
    ours, hf_names, t = first[i]
    halves = (lambda ts, cfg: [torch.cat([ts[0][: len(ts[0]) // 2], *ts[1:]]), ts[0][len(ts[0]) // 2:]], t.save)
    first[i] = (ours, hf_names, type(t)(*halves))  # the first half of q_proj as queries: wrong layout
    monkeypatch.setitem(FAMILIES, MODEL_TYPE, dataclasses.replace(family, weights=first))
    assert (from_hf(hf)(idx) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("hf_overrides, field", [
    (dict(attention_bias=True), "attention_bias"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(layer_types=[L, F, F, L]), "layer_types"),
    (dict(layer_types=[L, "sliding_attention", L, F]), "layer_types"),
    (dict(rope_parameters=dict(rope_type="dynamic", rope_theta=1e4, factor=2.0)), "rope_type"),
])
def test_unrepresentable_hf_config_raises(hf_overrides, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(hf_config(MODEL_TYPE, **{**SIZES, **hf_overrides}))


HYBRID = dict(vocab_size=VOCAB, block_size=64, n_layer=4, n_head=4, n_kv_head=2, n_embd=64, head_dim=16,
              mlp_hidden=96, pos="rope", norm="rmsnorm", norm_eps=1e-6, norm_unit_offset=True, mlp="swiglu",
              bias=False, qk_norm="head", attn_gate=True, linear_attention="gated_deltanet",
              deltanet=DeltaNetConfig(n_head=2, n_v_head=4, head_dim=8, v_head_dim=12))


@pytest.mark.parametrize("ours, field", [
    (dict(attn_gate=False), "attn_gate"),
    (dict(norm_unit_offset=False), "norm_unit_offset"),
    (dict(window=16), "window"),
    (dict(attn_sinks=True), "attn_sinks"),
    (dict(attention="mla", n_kv_head=0, qk_norm="none"), "attention"),
])
def test_unrepresentable_model_config_raises(ours, field):
    cfg = ModelConfig(**{**HYBRID, **ours})
    with pytest.raises(ValueError, match=re.escape(field)):
        config_to_hf(cfg, MODEL_TYPE)


def test_hybrid_config_round_trips():
    cfg = ModelConfig(**HYBRID)
    assert config_from_hf(config_to_hf(cfg, MODEL_TYPE)) == cfg
