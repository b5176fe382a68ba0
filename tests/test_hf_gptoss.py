"""Parity with HF `GptOssForCausalLM` on tiny random models, both directions, through the production
converter (model/hf/gpt_oss.py): attention sinks, biased q/k/v/o, alternating sliding windows, YaRN
without truncation, and the MoE (router with a bias, top-k then softmax, experts with biases and
the clamped SwiGLU stored interleaved). CPU, fp32, eager HF attention, no downloads.

Every weight is random (norms, sinks, router bias and expert biases included)."""

import dataclasses
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import (  # noqa: E402
    BATCH, VOCAB, assert_logits_match, assert_preset_round_trips, check_to_hf_and_back, hf_config,
    random_hf_model,
)
from tiny_run import tokens  # noqa: E402
from model import ModelConfig  # noqa: E402
from model.config import MoEConfig  # noqa: E402
from model.hf import FAMILIES, config_from_hf, config_to_hf, from_hf  # noqa: E402
from model.hf.gpt_oss import EXPERT_T  # noqa: E402

YARN = dict(rope_type="yarn", rope_theta=150000.0, factor=4.0, beta_fast=32.0, beta_slow=1.0, truncate=False,
            original_max_position_embeddings=16)
SIZES = dict(head_dim=16, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2, sliding_window=6,
             rope_parameters=YARN)
CASES = {  # name: HF config overrides on SIZES
    "alternating-yarn-default-clamp": dict(),  # layer_types default: sliding, full, sliding
    # a limit this low clamps most gate/up values, and alpha differs from 1.702
    "all-sliding-tight-clamp-tied": dict(layer_types=["sliding_attention"] * 3, swiglu_limit=0.8, swiglu_alpha=1.3,
                                         tie_word_embeddings=True),
    "full-top1-of-4": dict(layer_types=["full_attention"] * 3, num_local_experts=4, num_experts_per_tok=1,
                           rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
}


def overrides(case: str) -> dict:
    return {**SIZES, **CASES[case]}


@pytest.mark.parametrize("case", CASES)
def test_from_hf_logits_match(case):
    hf = random_hf_model("gpt_oss", overrides(case))
    gpt = from_hf(hf)
    c, cfg = hf.config, gpt.config
    assert cfg.attn_sinks and cfg.bias and cfg.mlp == "swiglu_clamped"
    assert (cfg.swiglu_alpha, cfg.swiglu_limit) == (c.swiglu_alpha, c.swiglu_limit)
    assert cfg.moe == MoEConfig(n_expert=c.num_local_experts, top_k=c.num_experts_per_tok, expert_hidden=32,
                                router_bias=True)
    assert [cfg.is_local(i) for i in range(3)] == [t == "sliding_attention" for t in c.layer_types]
    assert gpt.transformer.h[0].mlp.router.bias.abs().min() > 0  # the router bias came across
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(gpt(idx), hf(idx).logits)


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match_and_round_trip_is_bit_identical(case):
    check_to_hf_and_back("gpt_oss", overrides(case))


@torch.no_grad()
def test_the_clamp_the_router_bias_and_the_interleaving_matter_at_this_size(monkeypatch):
    """Parity above would also pass if one of them did nothing here: changing the limit, zeroing the
    router bias, or reading gate_up_proj without de-interleaving changes the logits."""
    hf, idx = random_hf_model("gpt_oss", overrides("all-sliding-tight-clamp-tied")), tokens(**BATCH)
    expected = hf(idx).logits
    gpt = from_hf(hf)
    for block in gpt.transformer.h:
        block.mlp.experts.act.limit = 7.0
    assert (gpt(idx) - expected).abs().max() > 1e-2
    gpt = from_hf(hf)
    for block in gpt.transformer.h:
        block.mlp.router.bias.zero_()
    assert (gpt(idx) - expected).abs().max() > 1e-2
    family = FAMILIES["gpt_oss"]
    plain = [(o, h, EXPERT_T if h == ("model.layers.{i}.mlp.experts.gate_up_proj",) else t) for o, h, t in family.weights]
    monkeypatch.setitem(FAMILIES, "gpt_oss", dataclasses.replace(family, weights=plain))
    assert (from_hf(hf)(idx) - expected).abs().max() > 1e-2


@pytest.mark.parametrize(
    "hf_overrides, field",
    [
        (dict(attention_bias=False), "attention_bias"),
        (dict(layer_types=["full_attention", "sliding_attention", "sliding_attention"]), "layer_types"),
        (dict(rope_parameters={**YARN, "mscale": 2.0}), "mscale"),
        (dict(attention_dropout=0.1), "attention_dropout"),
    ],
)
def test_unrepresentable_hf_config_raises(hf_overrides, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(hf_config("gpt_oss", **{**SIZES, **hf_overrides}))


OSS_LIKE = dict(vocab_size=VOCAB, block_size=64, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, head_dim=16,
                mlp_hidden=32, pos="rope", norm="rmsnorm", norm_eps=1e-6, mlp="swiglu_clamped", bias=True,
                attn_sinks=True, window=6, global_every=2, tie_embeddings=False)
OSS_MOE = dict(n_expert=8, top_k=2, expert_hidden=32, router_bias=True)


@pytest.mark.parametrize(
    "ours, moe, field",
    [
        (dict(), dict(router_bias=False), "moe.router_bias"),
        (dict(), dict(norm_topk=False), "moe.norm_topk"),
        (dict(), dict(first_dense=1), "moe.first_dense"),
        (dict(), dict(n_shared=1), "moe.n_shared"),
        (dict(mlp="swiglu"), dict(), "model.mlp"),
        (dict(attn_sinks=False), dict(), "attn_sinks"),
        (dict(qk_norm="head"), dict(), "qk_norm"),
        (dict(bias=False), dict(), "attention_bias"),
        (dict(), dict(n_expert=0), "num_local_experts"),
    ],
)
def test_unrepresentable_model_config_raises(ours, moe, field):
    cfg = ModelConfig(**{**OSS_LIKE, **ours, "moe": MoEConfig(**{**OSS_MOE, **moe})})
    with pytest.raises(ValueError, match=re.escape(field)):
        config_to_hf(cfg, "gpt_oss")


def test_preset_converts_to_its_hf_family():
    assert_preset_round_trips("gpt-oss", "gpt_oss")
