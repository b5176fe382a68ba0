"""Parity with HF Llama, Mistral, Qwen3, OLMo 2, Gemma 2, Gemma 3 and GPT-NeoX on tiny random models, both directions,
through the production converter (model/hf/). CPU, fp32, eager HF attention, no downloads.

Every weight on the side being converted is random, norm scales included (a norm left at ones would
hide a missing copy), and the batch (T = 40) is longer than every sliding window (16), so the
window pattern is exercised.
"""

import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import (  # noqa: E402
    ATOL, BATCH, VOCAB, assert_logits_match, check_from_hf, check_to_hf_and_back, hf_config, random_hf_model,
)
from tiny_run import tokens  # noqa: E402
from model import GPT, ModelConfig, RopeConfig  # noqa: E402
from model.hf import config_from_hf, config_to_hf, from_hf  # noqa: E402

LLAMA3 = dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)
YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=16)

NEOX = dict(use_parallel_residual=False, hidden_act="gelu_new",
            rope_parameters=dict(rope_type="default", rope_theta=1e4, partial_rotary_factor=1.0))
# name: (model_type, HF config kwargs, ModelConfig fields the conversion must produce)
CASES = {
    "llama-gqa-head_dim-untied": ("llama", dict(head_dim=32, tie_word_embeddings=False),
                                  dict(n_kv_head=2, head_dim=32, tie_embeddings=False, mlp="swiglu")),
    "llama-mqa-llama3-tied": ("llama", dict(num_key_value_heads=1, tie_word_embeddings=True,
                                            rope_parameters=LLAMA3),
                              dict(n_kv_head=1, tie_embeddings=True, rope=RopeConfig(
                                  theta=500000.0, scaling="llama3", factor=8.0, original_max_pos=16))),
    "llama-yarn-bias": ("llama", dict(rope_parameters=YARN, attention_bias=True, mlp_bias=True),
                        dict(bias=True, rope=RopeConfig(scaling="yarn", factor=4.0, original_max_pos=16))),
    "llama-linear-geglu": ("llama", dict(rope_parameters=dict(rope_type="linear", rope_theta=1e4, factor=2.0),
                                         hidden_act="gelu_pytorch_tanh"),
                           dict(mlp="geglu", rope=RopeConfig(scaling="linear", factor=2.0))),
    "mistral-window": ("mistral", dict(sliding_window=16), dict(window=16, global_every=0)),
    "qwen3-qk_norm-head_dim-tied": ("qwen3", dict(head_dim=32, tie_word_embeddings=True),
                                    dict(qk_norm="head", head_dim=32, window=0)),
    "qwen3-window-mqa": ("qwen3", dict(num_key_value_heads=1, use_sliding_window=True, sliding_window=16,
                                       max_window_layers=0), dict(qk_norm="head", window=16, global_every=0)),
    "olmo2-post-qk_norm-full": ("olmo2", dict(tie_word_embeddings=False),
                                dict(norm_placement="post", qk_norm="full")),
    "gemma2-sandwich-softcaps": ("gemma2", dict(
        head_dim=32, sliding_window=16, query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
        final_logit_softcapping=10.0), dict(
        norm_placement="sandwich", norm_unit_offset=True, mlp="geglu", embed_scale=True, head_dim=32,
        window=16, global_every=2, attn_scale=24**-0.5, attn_softcap=5.0, final_softcap=10.0)),
    "gemma3-qk_norm-local_rope": ("gemma3_text", dict(
        head_dim=32, sliding_window=16, query_pre_attn_scalar=24, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters=dict(full_attention=dict(rope_type="linear", rope_theta=1e6, factor=8.0),
                             sliding_attention=dict(rope_type="default", rope_theta=1e4))), dict(
        norm_placement="sandwich", norm_unit_offset=True, qk_norm="head", mlp="geglu", embed_scale=True,
        head_dim=32, window=16, global_every=2, attn_scale=24**-0.5,
        rope=RopeConfig(theta=1e6, scaling="linear", factor=8.0, local_theta=1e4))),
    # rung 01: GPT-2 with RoPE; and Pythia's partial rotary, untied (its GELU and parallel block refused)
    "gpt_neox-rope-bias-tied": ("gpt_neox", dict(NEOX, tie_word_embeddings=True), dict(
        pos="rope", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True, rope=RopeConfig())),
    "gpt_neox-partial-untied": ("gpt_neox", dict(NEOX, hidden_act="gelu_pytorch_tanh", rope_parameters=dict(
        rope_type="default", rope_theta=1e4, partial_rotary_factor=0.25)), dict(rope=RopeConfig(fraction=0.25))),
}


@pytest.mark.parametrize("case", CASES)
def test_from_hf_logits_match(case):
    gpt = check_from_hf(*CASES[case])
    assert gpt.config.padded_vocab_size == 192 and torch.all(gpt.transformer.wte.weight[VOCAB:] == 0)
    assert (gpt.lm_head.weight is gpt.transformer.wte.weight) == gpt.config.tie_embeddings


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match_and_round_trip_is_bit_identical(case):
    check_to_hf_and_back(*CASES[case][:2])


@pytest.mark.parametrize("case", ["mistral-window", "qwen3-window-mqa", "gemma2-sandwich-softcaps",
                                  "gemma3-qk_norm-local_rope"])
def test_sliding_window_matters_at_this_length(case):
    """The parity above would also pass if both sides ignored the window: show that it bites. The
    same layers with a window as long as the context (Gemma 3's sliding layers keep their RoPE)."""
    hf = random_hf_model(*CASES[case][:2])
    gpt = from_hf(hf)
    unwindowed = GPT(ModelConfig(**{**vars(gpt.config), "window": gpt.config.block_size}))
    unwindowed.load_state_dict(gpt.state_dict())
    idx = tokens(**BATCH)
    with torch.no_grad():
        expected, full = hf(idx).logits, unwindowed.eval()(idx)
    torch.testing.assert_close(full[:, :16], expected[:, :16], atol=ATOL, rtol=0)  # window not reached
    assert (full[:, 16:] - expected[:, 16:]).abs().max() > 1e-2


def test_from_pretrained_local_dir(tmp_path):
    hf = random_hf_model(*CASES["gemma2-sandwich-softcaps"][:2], seed=3)
    hf.save_pretrained(tmp_path)
    gpt = GPT.from_pretrained(str(tmp_path))
    assert gpt.config.norm_placement == "sandwich"
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(gpt(idx), hf(idx).logits)


# ----------------------------------------------------------------------------- what is refused
@pytest.mark.parametrize("model_type", ["llama", "qwen3", "olmo2"])
def test_every_shared_field_goes_both_ways_under_the_decoders_names(model_type):
    """Each size and setting every Llama-layout config holds, at a value no default has."""
    theirs = dict(vocab_size=101, max_position_embeddings=48, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, hidden_size=64, head_dim=24, intermediate_size=72,
                  rms_norm_eps=3e-6, tie_word_embeddings=False, initializer_range=0.05)
    ours = dict(vocab_size=101, block_size=48, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, head_dim=24,
                mlp_hidden=72, norm_eps=3e-6, tie_embeddings=False, init_std=0.05)
    back = config_from_hf(hf_config(model_type, **theirs))
    assert {name: getattr(back, name) for name in ours} == ours
    hf = config_to_hf(back, model_type)
    assert {name: getattr(hf, name) for name in theirs} == theirs


@pytest.mark.parametrize(
    "model_type, overrides, field",
    [
        ("llama", dict(attention_bias=True, mlp_bias=False), "attention_bias"),
        ("llama", dict(hidden_act="gelu"), "hidden_act"),  # exact-erf GELU gate
        ("llama", dict(attention_dropout=0.1), "attention_dropout"),
        ("llama", dict(rope_parameters=dict(rope_type="dynamic", rope_theta=1e4, factor=2.0)), "rope_type"),
        ("llama", dict(rope_parameters=dict(rope_type="default", rope_theta=1e4, partial_rotary_factor=0.5)),
         "partial_rotary_factor"),
        ("llama", dict(rope_parameters={**YARN, "attention_factor": 2.0}), "attention_factor"),
        ("llama", dict(rope_parameters={**YARN, "mscale": 1.0, "mscale_all_dim": 0.5}), "mscale"),
        ("qwen3", dict(attention_bias=True), "attention_bias"),
        ("qwen3", dict(use_sliding_window=True, sliding_window=16, max_window_layers=1), "max_window_layers"),
        ("olmo2", dict(attention_bias=True), "attention_bias"),
        ("gemma2", dict(attention_bias=True), "attention_bias"),
        ("gemma2", dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
        ("gemma2", dict(hidden_activation="relu"), "hidden_activation"),
        ("gemma2", dict(layer_types=["full_attention", "sliding_attention", "sliding_attention"]),
         "layer_types"),
        ("gemma2", dict(sliding_window=None), "sliding_window"),
        ("gpt_neox", dict(NEOX, use_parallel_residual=True), "use_parallel_residual"),
        ("gpt_neox", dict(NEOX, hidden_act="gelu"), "hidden_act"),  # Pythia's exact GELU
        ("gpt_neox", dict(NEOX, attention_dropout=0.1), "attention_dropout"),
        ("gpt_neox", dict(NEOX, attention_bias=False), "attention_bias"),  # its MLP keeps biases
    ],
)
def test_unrepresentable_hf_config_raises(model_type, overrides, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(hf_config(model_type, **overrides))


LLAMA_LIKE = dict(vocab_size=VOCAB, block_size=64, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, mlp_hidden=96,
                  pos="rope", norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", bias=False)


@pytest.mark.parametrize(
    "model_type, overrides, field",
    [
        ("llama", dict(window=8), "window"),
        ("llama", dict(qk_norm="head"), "qk_norm"),
        ("llama", dict(mlp="gelu"), "mlp"),
        ("llama", dict(dropout=0.1), "dropout"),
        ("llama", dict(norm="layernorm"), "norm"),
        ("llama", dict(pos="learned"), "pos"),
        ("llama", dict(rope=RopeConfig(fraction=0.5)), "rope.fraction"),
        ("llama", dict(attn_sinks=True), "attn_sinks"),
        ("mistral", dict(window=8, global_every=2), "global_every"),
        ("qwen3", dict(qk_norm="head", bias=True), "bias"),
        ("olmo2", dict(qk_norm="full", norm_placement="pre"), "norm_placement"),
        ("gemma2", dict(norm_placement="sandwich", norm_unit_offset=True, embed_scale=True, attn_scale=0.3),
         "attn_scale"),
        ("gemma2", dict(norm_placement="sandwich", norm_unit_offset=True, embed_scale=False), "embed_scale"),
        ("gpt_neox", dict(norm="layernorm", mlp="gelu", bias=True), "n_kv_head"),  # no KV groups
        ("gpt_neox", dict(norm="layernorm", mlp="gelu", n_kv_head=4), "bias"),
    ],
)
def test_unrepresentable_model_config_raises(model_type, overrides, field):
    cfg = ModelConfig(**{**LLAMA_LIKE, **overrides})
    with pytest.raises(ValueError, match=rf"HF {model_type} cannot represent .*model\.{re.escape(field)}="):
        config_to_hf(cfg, model_type)
