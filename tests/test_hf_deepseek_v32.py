"""Parity with HF `DeepseekV32ForCausalLM` on tiny random models, both directions, through the
production converter (model/hf/deepseek_v32.py): DeepSeek-V3's MLA and MoE plus the lightning
indexer of DeepSeek Sparse Attention, with index_topk below the 40-token context (so the choice
matters) and above it. CPU, fp32, eager HF attention, no downloads.

Every weight is random (norms, the indexer's LayerNorm and the router's correction bias included).
The indexer has 8 heads here: with few heads relu zeroes every head for some keys and the scores
tie, and HF's topk breaks ties in its own order (ours: the earlier key, model/mixer/dsa.py)."""

import dataclasses

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import (  # noqa: E402
    BATCH, assert_logits_match, assert_preset_round_trips, check_to_hf_and_back, hf_config, random_hf_model,
    randomize_router_bias_,
)
from tiny_run import tokens  # noqa: E402
from model.hf import config_from_hf, config_to_hf, from_hf  # noqa: E402
from test_hf_deepseek import SIZES  # noqa: E402

INDEX = dict(q_lora_rank=24, index_n_heads=8, index_head_dim=16)
CASES = {  # name: HF config overrides on SIZES + INDEX
    "top7-of-40": dict(index_topk=7),
    "top16-two-shared-untied": dict(index_topk=16, n_shared_experts=2, tie_word_embeddings=False, index_head_dim=12),
    "top64-covers-the-context": dict(index_topk=64),
}


def overrides(case: str) -> dict:
    return {**SIZES, **INDEX, **CASES[case]}


def random_hf(case: str):
    hf = random_hf_model("deepseek_v32", overrides(case))
    randomize_router_bias_(hf, seed=7)
    return hf


@pytest.mark.parametrize("case", CASES)
def test_from_hf_logits_match(case):
    hf = random_hf(case)
    gpt = from_hf(hf)
    c, m = hf.config, gpt.config.mla
    assert (m.index_topk, m.index_n_head, m.index_head_dim) == (c.index_topk, c.index_n_heads, c.index_head_dim)
    assert gpt.transformer.h[0].attn.indexer.k_norm.bias.abs().min() > 0  # the LayerNorm bias came across
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(gpt(idx), hf(idx).logits)


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match_and_round_trip_is_bit_identical(case):
    check_to_hf_and_back("deepseek_v32", overrides(case), prepare=lambda gpt: randomize_router_bias_(gpt, seed=8))


@torch.no_grad()
def test_the_selection_matters_at_this_size():
    """top7-of-40 would also pass if the indexer chose nothing: the same weights attending to every
    key (index_topk = 64) give other logits."""
    hf, idx = random_hf("top7-of-40"), tokens(**BATCH)
    gpt = from_hf(hf)
    cfg = gpt.config
    dense = type(gpt)(dataclasses.replace(cfg, mla=dataclasses.replace(cfg.mla, index_topk=64)))
    dense.load_state_dict(gpt.state_dict())
    assert (dense.eval()(idx) - hf(idx).logits).abs().max() > 1e-2


@torch.no_grad()
def test_cached_decode_equals_the_full_forward_after_from_hf():
    hf, idx = random_hf("top7-of-40"), tokens(**BATCH)
    gpt = from_hf(hf)
    cache = gpt.new_cache(2, 40)
    steps = [gpt(idx[:, :20], cache=cache)] + [gpt(idx[:, t:t + 1], cache=cache) for t in range(20, 40)]
    # the absorbed path rounds differently from the naive one at these weight sizes (N(0, 0.3))
    torch.testing.assert_close(torch.cat(steps, dim=1), gpt(idx), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "hf_overrides, field",
    [
        (dict(q_lora_rank=0), "q_lora_rank"),
        (dict(index_topk=0), "index_topk"),
        (dict(mlp_bias=True), "mlp_bias"),
        (dict(mlp_layer_types=["sparse", "dense", "sparse"]), "mlp_layer_types"),
        (dict(index_head_dim=4), "index_head_dim"),  # below qk_rope_head_dim = 8
    ],
)
def test_unrepresentable_hf_config_raises(hf_overrides, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(hf_config("deepseek_v32", **{**SIZES, **INDEX, "index_topk": 7, **hf_overrides}))


def test_dense_mla_cannot_be_written_as_v32():
    cfg = config_from_hf(hf_config("deepseek_v3", **{**SIZES, "q_lora_rank": 24}))
    with pytest.raises(ValueError, match="index_topk"):
        config_to_hf(cfg, "deepseek_v32")


def test_preset_converts_to_its_hf_family():
    assert_preset_round_trips("deepseek-v3.2", "deepseek_v32")
