"""Parity with HF Mixtral and Qwen3-MoE on tiny random models, both directions, through the
production converter (model/hf/moe.py); and our `MoE` module on its own against HF `DeepseekV3MoE`
(the sigmoid router, group-limited routing, the router bias, the routed scale and the shared expert;
the whole DeepSeek-V3 model is converted in tests/test_hf_deepseek.py). CPU, fp32, eager HF attention, no downloads.

Every weight is random, norms and routers included, and the batch (T = 40) is longer than the
sliding window (16) of the windowed cases.
"""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import (  # noqa: E402
    BATCH, VOCAB, check_from_hf, check_to_hf_and_back, hf_config, random_hf_model,
)
from tiny_run import randomize_, tokens  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402
from model.config import MoEConfig  # noqa: E402
from model.hf import config_from_hf, config_to_hf, from_hf, to_hf  # noqa: E402
from model.ffn.moe import MoE  # noqa: E402
from train.config import load_config  # noqa: E402

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "presets"

# name: (model_type, HF config kwargs, ModelConfig fields the conversion must produce)
CASES = {
    "mixtral-gqa-window-untied": (
        "mixtral", dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=16, tie_word_embeddings=False),
        dict(n_kv_head=2, window=16, tie_embeddings=False, moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=96))),
    "mixtral-mqa-top3-head_dim-tied": (
        "mixtral", dict(num_local_experts=6, num_experts_per_tok=3, num_key_value_heads=1, head_dim=32,
                        tie_word_embeddings=True),
        dict(n_kv_head=1, head_dim=32, window=0, moe=MoEConfig(n_expert=6, top_k=3, expert_hidden=96))),
    "qwen3_moe-norm_topk-head_dim": (
        "qwen3_moe", dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                          head_dim=32),
        dict(qk_norm="head", head_dim=32, moe=MoEConfig(n_expert=8, top_k=2, expert_hidden=32))),
    "qwen3_moe-raw_topk-first_dense-window": (
        "qwen3_moe", dict(num_experts=8, num_experts_per_tok=3, moe_intermediate_size=32, norm_topk_prob=False,
                          mlp_only_layers=[0], use_sliding_window=True, sliding_window=16),
        dict(qk_norm="head", window=16, mlp_hidden=96, moe=MoEConfig(
            n_expert=8, top_k=3, expert_hidden=32, norm_topk=False, first_dense=1))),
}


@pytest.mark.parametrize("case", CASES)
def test_from_hf_logits_match(case):
    gpt = check_from_hf(*CASES[case])
    first_dense = CASES[case][2]["moe"].first_dense
    assert [gpt.config.is_moe(i) for i in range(3)] == [i >= first_dense for i in range(3)]


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match_and_round_trip_is_bit_identical(case):
    check_to_hf_and_back(*CASES[case][:2])


@pytest.mark.parametrize("case", ["mixtral-gqa-window-untied", "qwen3_moe-raw_topk-first_dense-window"])
def test_sliding_window_matters_at_this_length(case):
    hf = random_hf_model(*CASES[case][:2])
    gpt = from_hf(hf)
    unwindowed = GPT(dataclasses.replace(gpt.config, window=0))
    unwindowed.load_state_dict(gpt.state_dict())
    idx = tokens(**BATCH)
    with torch.no_grad():
        expected, full = hf(idx).logits, unwindowed.eval()(idx)
    assert (full[:, 16:] - expected[:, 16:]).abs().max() > 1e-2


def test_the_router_matters_at_this_size():
    """Parity above would also pass if routing were trivial: show that each token's choice of
    experts varies, and that renormalising the top-k weights changes the output."""
    hf = random_hf_model(*CASES["qwen3_moe-raw_topk-first_dense-window"][:2])
    gpt = from_hf(hf)
    normed = GPT(dataclasses.replace(gpt.config, moe=dataclasses.replace(gpt.config.moe, norm_topk=True)))
    normed.load_state_dict(gpt.state_dict())
    idx = tokens(**BATCH)
    chosen = []
    hook = gpt.transformer.h[1].mlp.router.register_forward_hook(lambda m, i, out: chosen.append(out[2]))
    with torch.no_grad():
        expected, other = hf(idx).logits, normed.eval()(idx)
        gpt(idx)
    hook.remove()
    assert len(chosen[0].unique()) == 8  # every expert is used by some token
    assert (other - expected).abs().max() > 1e-2


# ----------------------------------------------------------------------------- DeepSeek-V3 MoE
def test_moe_module_matches_hf_deepseek_v3_moe():
    """Sigmoid scores, the best 2 of 4 groups (ranked by their two best biased scores), top-2 of the
    experts there, weights renormalised and times 2.5, plus one shared expert."""
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    hf_cfg = DeepseekV3Config(hidden_size=32, moe_intermediate_size=16, n_routed_experts=8, n_group=4,
                              topk_group=2, num_experts_per_tok=2, n_shared_experts=1,
                              routed_scaling_factor=2.5, norm_topk_prob=True, hidden_act="silu")
    hf = randomize_(DeepseekV3MoE(hf_cfg), seed=2, ones="vectors")
    with torch.no_grad():  # sigmoid scores lie in (0, 1): a bias of this size reorders them
        hf.gate.e_score_correction_bias.copy_(torch.randn(8, generator=torch.Generator().manual_seed(3)) * 0.5)
    cfg = ModelConfig(vocab_size=VOCAB, n_layer=1, n_head=4, n_embd=32, mlp="swiglu", bias=False, moe=MoEConfig(
        n_expert=8, top_k=2, expert_hidden=16, n_shared=1, router="sigmoid", norm_topk=True, routed_scale=2.5,
        n_group=4, topk_group=2))
    ours = MoE(cfg).eval()
    theirs = dict(hf.state_dict())
    copy = {  # our name: HF names (concatenated along dim 0)
        "router.weight": ["gate.weight"], "router.expert_bias": ["gate.e_score_correction_bias"],
        "experts.c_fc": ["experts.gate_up_proj"], "experts.c_proj": ["experts.down_proj"],
        "shared.c_fc.weight": ["shared_experts.gate_proj.weight", "shared_experts.up_proj.weight"],
        "shared.c_proj.weight": ["shared_experts.down_proj.weight"],
    }
    assert sorted(n for names in copy.values() for n in names) == sorted(theirs)  # every HF tensor used
    ours.load_state_dict({k: torch.cat([theirs[n] for n in names]) for k, names in copy.items()})  # strict

    x = torch.randn(3, 20, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x), atol=1e-5, rtol=0)
        # the bias and the groups both change which experts are chosen, so both were exercised
        _, scores, chosen, _ = ours.router(x.reshape(-1, 32))
        biased = scores + ours.router.expert_bias
        chosen = chosen.sort(-1).values
        assert (chosen != scores.topk(2).indices.sort(-1).values).any(-1).float().mean() > 0.2
        assert (chosen != biased.topk(2).indices.sort(-1).values).any(-1).any()


# ----------------------------------------------------------------------------- what is refused
@pytest.mark.parametrize(
    "model_type, overrides, field",
    [
        ("mixtral", dict(router_jitter_noise=0.1), "router_jitter_noise"),
        ("mixtral", dict(num_local_experts=0), "num_local_experts"),
        ("mixtral", dict(hidden_act="gelu"), "hidden_act"),
        ("qwen3_moe", dict(decoder_sparse_step=2), "decoder_sparse_step"),
        ("qwen3_moe", dict(mlp_only_layers=[1]), "mlp_only_layers"),
        ("qwen3_moe", dict(mlp_only_layers=[0, 2]), "mlp_only_layers"),
        ("qwen3_moe", dict(attention_bias=True), "attention_bias"),
    ],
)
def test_unrepresentable_hf_config_raises(model_type, overrides, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(hf_config(model_type, num_experts=4, **overrides) if model_type == "qwen3_moe"
                       else hf_config(model_type, **overrides))


def test_qwen3_moe_without_moe_layers_is_a_dense_model():
    for overrides in (dict(num_experts=0), dict(num_experts=4, mlp_only_layers=[0, 1, 2])):
        cfg = config_from_hf(hf_config("qwen3_moe", **overrides))
        assert cfg.moe == MoEConfig() and cfg.mlp_hidden == 96


MOE_LIKE = dict(vocab_size=VOCAB, block_size=64, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, mlp_hidden=32,
                pos="rope", norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", bias=False)


@pytest.mark.parametrize(
    "model_type, overrides, moe, field",
    [
        ("mixtral", {}, dict(router="sigmoid"), "moe.router"),
        ("mixtral", {}, dict(n_shared=1), "moe.n_shared"),
        ("mixtral", {}, dict(n_group=2, topk_group=1), "moe.n_group"),
        ("mixtral", {}, dict(routed_scale=2.5), "moe.routed_scale"),
        ("mixtral", {}, dict(norm_topk=False), "moe.norm_topk"),
        ("mixtral", {}, dict(first_dense=1), "moe.first_dense"),
        ("mixtral", dict(mlp_hidden=96), {}, "mlp_hidden"),  # one intermediate_size: the experts'
        ("mixtral", dict(qk_norm="head"), {}, "qk_norm"),
        ("qwen3_moe", dict(qk_norm="head"), dict(router="sigmoid"), "moe.router"),
        ("qwen3_moe", dict(qk_norm="head"), dict(n_shared=2), "moe.n_shared"),
        ("qwen3_moe", dict(qk_norm="head"), dict(routed_scale=2.0), "moe.routed_scale"),
        ("qwen3_moe", dict(qk_norm="head"), dict(n_group=2, topk_group=2), "moe.n_group"),
        ("qwen3_moe", dict(qk_norm="head", window=8, global_every=2), {}, "global_every"),
        ("qwen3_moe", {}, {}, "qk_norm"),
        ("llama", {}, {}, "moe.n_expert"),  # a dense family refuses experts
    ],
)
def test_unrepresentable_model_config_raises(model_type, overrides, moe, field):
    cfg = ModelConfig(**{**MOE_LIKE, **overrides}, moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=32, **moe))
    with pytest.raises(ValueError, match=rf"HF {model_type} cannot represent .*model\.{re.escape(field)}="):
        config_to_hf(cfg, model_type)


def test_dense_model_to_mixtral_raises():
    with pytest.raises(ValueError, match="num_local_experts=0"):
        config_to_hf(ModelConfig(**MOE_LIKE), "mixtral")


def test_training_only_settings_are_not_part_of_the_hf_config():
    training = dict(capacity_factor=1.25, aux_loss_coef=0.01, z_loss_coef=1e-3, bias_update_rate=1e-3)
    cfg = ModelConfig(**MOE_LIKE, moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=32, **training))
    back = config_from_hf(config_to_hf(cfg, "mixtral"))
    assert back == dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, **dict.fromkeys(training, 0.0)))


def test_to_hf_refuses_a_moved_expert_bias():
    """Aux-loss-free balancing moves `expert_bias`; HF's routers have none (gpt-oss's bias is added
    to the weights too, DeepSeek-V3's is the one that steers only the choice), so dropping it would
    change which experts a token uses."""
    gpt = GPT(ModelConfig(**MOE_LIKE, moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=32)))
    to_hf(gpt, "mixtral")  # all zero: fine
    with torch.no_grad():
        gpt.transformer.h[2].mlp.router.expert_bias[1] = 1e-3
    moved = r"steers only the choice of experts, but transformer\.h\.2\.mlp\.router\.expert_bias is not zero"
    with pytest.raises(ValueError, match=moved):
        to_hf(gpt, "mixtral")


@pytest.mark.parametrize("preset, model_type", [("mixtral", "mixtral"), ("qwen3-moe", "qwen3_moe")])
def test_presets_convert_to_their_hf_family(preset, model_type):
    cfg = load_config(PRESETS / f"{preset}.toml").model
    assert config_from_hf(config_to_hf(cfg, model_type)).moe.n_expert == cfg.moe.n_expert
