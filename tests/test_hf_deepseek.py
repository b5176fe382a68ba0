"""Parity with HF `DeepseekV3ForCausalLM` on tiny random models, both directions, through the
production converter (model/hf/deepseek.py): MLA with and without low-rank queries, interleaved
RoPE, a dense first layer, the shared expert, sigmoid group-limited routing with a non-zero
correction bias, routed_scaling_factor and norm_topk_prob. CPU, fp32, eager HF attention, no downloads.

Every weight is random (norms and the router's correction bias included)."""

import dataclasses
import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import (  # noqa: E402
    BATCH, VOCAB, assert_logits_match, assert_preset_round_trips, check_to_hf_and_back, hf_config,
    random_hf_model, randomize_router_bias_,
)
from tiny_run import ROOT, tokens  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402
from model.config import MLAConfig, MoEConfig  # noqa: E402
from model.hf import FAMILIES, IDENTITY, config_from_hf, config_to_hf, from_hf  # noqa: E402
from train.config import load_config  # noqa: E402

SIZES = dict(num_key_value_heads=4, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
             n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2, moe_intermediate_size=32,
             n_shared_experts=1, first_k_dense_replace=1, routed_scaling_factor=2.5)
# name: HF config overrides on SIZES
CASES = {
    "low-rank-q-normed-topk": dict(q_lora_rank=24, norm_topk_prob=True),
    "full-rank-q-raw-topk-tied": dict(q_lora_rank=None, norm_topk_prob=False, tie_word_embeddings=True),
    "two-shared-top3-one-group": dict(q_lora_rank=20, n_shared_experts=2, num_experts_per_tok=3, n_group=1,
                                      topk_group=1, tie_word_embeddings=False),
}


def overrides(case: str) -> dict:
    return {**SIZES, **CASES[case]}


def random_hf(case: str):
    hf = random_hf_model("deepseek_v3", overrides(case))
    randomize_router_bias_(hf, seed=7)
    return hf


@pytest.mark.parametrize("case", CASES)
def test_from_hf_logits_match(case):
    hf = random_hf(case)
    gpt = from_hf(hf)
    c = hf.config
    assert gpt.config.attention == "mla" and gpt.config.n_kv_head == 4
    assert gpt.config.mla == MLAConfig(q_lora_rank=c.q_lora_rank or 0, kv_lora_rank=16, qk_nope_head_dim=16,
                                       qk_rope_head_dim=8, v_head_dim=12)
    assert gpt.config.moe.router == "sigmoid" and gpt.config.moe.first_dense == 1
    assert [gpt.config.is_moe(i) for i in range(3)] == [False, True, True]
    assert gpt.transformer.h[1].mlp.router.expert_bias.abs().min() > 0  # the bias came across
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(gpt(idx), hf(idx).logits)


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match_and_round_trip_is_bit_identical(case):
    # the class is DeepseekV3ForCausalLM; the round trip compares state dicts, expert_bias included
    check_to_hf_and_back("deepseek_v3", overrides(case), prepare=lambda gpt: randomize_router_bias_(gpt, seed=8))


@torch.no_grad()
def test_the_correction_bias_and_the_rope_layout_matter_at_this_size(monkeypatch):
    """Parity above would also pass if the bias were ignored or RoPE's pair layout did not matter:
    zeroing the bias, or copying the rotary rows unreordered, changes the logits."""
    hf, idx = random_hf("low-rank-q-normed-topk"), tokens(**BATCH)
    expected = hf(idx).logits
    gpt = from_hf(hf)
    for block in gpt.transformer.h[1:]:
        block.mlp.router.expert_bias.zero_()
    assert (gpt(idx) - expected).abs().max() > 1e-2
    family = FAMILIES["deepseek_v3"]
    plain = [(o, h, IDENTITY if "q_b_proj" in str(h) or "kv_a_proj" in str(h) else t) for o, h, t in family.weights]
    monkeypatch.setitem(FAMILIES, "deepseek_v3", dataclasses.replace(family, weights=plain))
    assert (from_hf(hf)(idx) - expected).abs().max() > 1e-2


def test_dense_only_model_round_trips():
    cfg = config_from_hf(hf_config("deepseek_v3", **{**SIZES, "first_k_dense_replace": 3}))
    assert cfg.moe == MoEConfig() and cfg.attention == "mla"
    assert config_from_hf(config_to_hf(cfg, "deepseek_v3")) == cfg


@pytest.mark.parametrize(
    "hf_overrides, field",
    [
        (dict(rope_interleave=False), "rope_interleave"),
        (dict(num_key_value_heads=2), "num_key_value_heads"),
        (dict(attention_bias=True), "attention_bias"),
        (dict(n_shared_experts=0), "n_shared_experts"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, mscale_all_dim=1.0,
                                   original_max_position_embeddings=16)), "mscale_all_dim"),
    ],
)
def test_unrepresentable_hf_config_raises(hf_overrides, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(hf_config("deepseek_v3", **{**SIZES, **hf_overrides}))


MLA_LIKE = dict(vocab_size=VOCAB, block_size=64, n_layer=3, n_head=4, n_embd=64, head_dim=12, mlp_hidden=96,
                pos="rope", norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", bias=False, attention="mla",
                mla=MLAConfig(kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12))
SIGMOID = dict(n_expert=8, top_k=2, expert_hidden=32, n_shared=1, router="sigmoid", n_group=4, topk_group=2,
               first_dense=1)


@pytest.mark.parametrize(
    "ours, field",
    [
        (dict(attention="gqa", mla=MLAConfig(), head_dim=16), "attention"),
        (dict(head_dim=16), "head_dim"),  # HF has no head size of its own: ours is v_head_dim
        (dict(moe=MoEConfig(**{**SIGMOID, "router": "softmax"})), "moe.router"),
        (dict(moe=MoEConfig(**{**SIGMOID, "n_shared": 0})), "n_shared_experts"),
        (dict(window=16), "window"),
        (dict(attn_sinks=True), "attn_sinks"),
    ],
)
def test_unrepresentable_model_config_raises(ours, field):
    cfg = ModelConfig(**{**MLA_LIKE, "moe": MoEConfig(**SIGMOID), **ours})
    with pytest.raises(ValueError, match=re.escape(field)):
        config_to_hf(cfg, "deepseek_v3")


def test_preset_converts_to_its_hf_family():
    assert_preset_round_trips("deepseek-v3", "deepseek_v3")


@pytest.mark.parametrize("preset, family", [("deepseek-v3", "deepseek_v3"), ("deepseek-v3.2", "deepseek_v32")])
def test_the_config_names_the_sigmoid_router_as_deepseeks_own_does(preset, family, tmp_path):
    """HF always routes DeepSeek-V3 with sigmoid scores and reads no field for it; DeepSeek's released
    config.json says so in `scoring_func` and `topk_method`, and llama.cpp's converter reads
    scoring_func: without it, it builds a softmax router (logits 3.9 apart, docs/LOG.md)."""
    config_to_hf(load_config(ROOT / "configs" / "presets" / f"{preset}.toml").model, family).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["scoring_func"], saved["topk_method"]) == ("sigmoid", "noaux_tc")
