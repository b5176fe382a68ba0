"""Parity with HF `Olmo3ForCausalLM` on tiny random models, both directions, through the production
converter (model/hf/llama.py): OLMo 2's layer (norms on the branch outputs, QK-norm over the whole
projections) plus OLMo 3's sliding-window layers (3 sliding : 1 full) and its RoPE per layer type
(YaRN on the full layers only, plain RoPE on the sliding ones). CPU, fp32, eager attention.

Every weight is random, norms included."""

import dataclasses
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import (  # noqa: E402
    BATCH, assert_logits_match, assert_preset_round_trips, check_to_hf_and_back, hf_config, random_hf_model,
)
from tiny_run import tokens  # noqa: E402
from model.config import RopeConfig  # noqa: E402
from model.hf import config_from_hf, config_to_hf, from_hf  # noqa: E402

YARN = dict(rope_type="yarn", rope_theta=500000.0, factor=8.0, beta_fast=32.0, beta_slow=1.0,
            original_max_position_embeddings=8)
PLAIN = dict(rope_type="default", rope_theta=500000.0)
SIZES = dict(num_hidden_layers=4, sliding_window=5, head_dim=16)
CASES = {  # name: (HF config overrides on SIZES, our (window, global_every), our RopeConfig)
    # OLMo 3 7B's shape: the default layer_types (sliding, sliding, sliding, full), YaRN on full
    # layers only, written out with its derived attention_factor as the real checkpoint does
    "3-to-1-yarn-on-full": (dict(rope_parameters=dict(
        full_attention={**YARN, "attention_factor": 0.1 * torch.log(torch.tensor(8.0)).item() + 1.0},
        sliding_attention=PLAIN)),
        (5, 4), RopeConfig(theta=5e5, scaling="yarn", factor=8.0, original_max_pos=8, local_theta=5e5)),
    "3-to-1-one-rope-gqa-tied": (dict(num_key_value_heads=2, tie_word_embeddings=True, rope_parameters=dict(
        full_attention=dict(rope_type="default", rope_theta=1e4), sliding_attention=dict(rope_type="default",
                                                                                        rope_theta=1e4))),
        (5, 4), RopeConfig(theta=1e4)),
    "alternating-other-theta": (dict(layer_types=["sliding_attention", "full_attention"] * 2, rope_parameters=dict(
        full_attention=dict(rope_type="default", rope_theta=5e5), sliding_attention=dict(rope_type="default",
                                                                                        rope_theta=1e4))),
        (5, 2), RopeConfig(theta=5e5, local_theta=1e4)),
}


def overrides(case: str) -> dict:
    return {**SIZES, **CASES[case][0]}


@pytest.mark.parametrize("case", CASES)
def test_from_hf_logits_match(case):
    hf = random_hf_model("olmo3", overrides(case))
    gpt = from_hf(hf)
    _, (window, every), rope = CASES[case]
    cfg = gpt.config
    assert (cfg.window, cfg.global_every, cfg.rope) == (window, every, rope)
    assert (cfg.norm_placement, cfg.qk_norm) == ("post", "full")
    assert [cfg.is_local(i) for i in range(4)] == [t == "sliding_attention" for t in hf.config.layer_types]
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(gpt(idx), hf(idx).logits)


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match_and_round_trip_is_bit_identical(case):
    check_to_hf_and_back("olmo3", overrides(case))


@torch.no_grad()
def test_the_window_and_the_per_type_rope_matter_at_this_size():
    """Parity above would also pass if the window or the sliding layers' own RoPE did nothing here."""
    hf, idx = random_hf_model("olmo3", overrides("3-to-1-yarn-on-full")), tokens(**BATCH)
    expected = hf(idx).logits
    cfg = from_hf(hf).config
    for changed in (dict(window=0, global_every=0), dict(rope=dataclasses.replace(cfg.rope, local_theta=0.0))):
        gpt = from_hf(hf)
        other = type(gpt)(dataclasses.replace(cfg, **changed))
        other.load_state_dict(gpt.state_dict())
        assert (other.eval()(idx) - expected).abs().max() > 1e-2, changed


@pytest.mark.parametrize(
    "hf_overrides, field",
    [
        (dict(layer_types=["full_attention", "sliding_attention"] * 2), "layer_types"),
        (dict(rope_parameters=dict(full_attention=PLAIN, sliding_attention=YARN)), "sliding_attention"),
        (dict(rope_parameters=dict(full_attention={**YARN, "attention_factor": 2.0}, sliding_attention=PLAIN)),
         "attention_factor"),
        (dict(attention_bias=True), "attention_bias"),
    ],
)
def test_unrepresentable_hf_config_raises(hf_overrides, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(hf_config("olmo3", **{**SIZES, **hf_overrides}))


@pytest.mark.parametrize("changed, field", [
    (dict(norm_placement="pre"), "norm_placement"),
    (dict(qk_norm="head"), "qk_norm"),
    (dict(attn_sinks=True), "attn_sinks"),
    (dict(bias=True), "model.bias"),
])
def test_unrepresentable_model_config_raises(changed, field):
    cfg = config_from_hf(hf_config("olmo3", **overrides("3-to-1-yarn-on-full")))
    with pytest.raises(ValueError, match=re.escape(field)):
        config_to_hf(dataclasses.replace(cfg, **changed), "olmo3")


def test_preset_converts_to_its_hf_family():
    assert_preset_round_trips("olmo3", "olmo3")
