"""Helpers for the parity tests against HF transformers: tiny sizes, random HF models, the batch, the checks."""

import torch

from tiny_run import randomize_, tokens

ATOL = 1e-4
VOCAB = 130  # not a multiple of 64: the padding rows of our tables are exercised
BATCH = dict(T=40, vocab=VOCAB, seed=1)  # tokens(**BATCH): the (2, 40) batch both models are fed
TINY = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)


@torch.no_grad()
def randomize_router_bias_(model: torch.nn.Module, seed: int) -> None:
    """The MoE router's correction bias (HF's `e_score_correction_bias`, our `expert_bias`) is a
    buffer, which randomize_ leaves alone: N(0, 0.5), large next to sigmoid scores in (0, 1), so it
    changes which experts win."""
    g = torch.Generator().manual_seed(seed)
    for name, buffer in model.named_buffers():
        if name.endswith(("e_score_correction_bias", "expert_bias")):
            buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.5)


@torch.no_grad()
def moderate_decay_(model: torch.nn.Module, seed: int = 5) -> torch.nn.Module:
    """Gated DeltaNet at a decay HF's fp32 chunked reference computes accurately: A_log ~ N(-2, 0.3)
    and the weights of the decay's input `a` scaled by 0.2. At randomize_'s N(1, 0.3) / N(0, 0.3) the
    decay is ~e^-30 per token and HF's chunked form lands ~2e-4 from fp64 (tests/test_hf_qwen3_5.py).
    In an HF model `in_proj_a` (Qwen3.5), or the a rows of each key-head group of `in_proj_ba`
    (Qwen3-Next, [b; a] per group); in ours the last n_v_head rows of `in_proj`."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("A_log"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 - 2.0)
        elif name.endswith("in_proj_a.weight"):
            p.mul_(0.2)
    for module in model.modules():
        if hasattr(module, "in_proj_ba"):
            module.in_proj_ba.weight.unflatten(0, (module.num_k_heads, 2, -1))[:, 1].mul_(0.2)
        elif hasattr(module, "decay") and hasattr(module, "in_proj"):
            module.in_proj.weight[-module.n_v_head:].mul_(0.2)
    return model


@torch.no_grad()
def centre_unit_offset_norms_(model: torch.nn.Module) -> torch.nn.Module:
    """The zero-centred RMSNorms' weights (scale 1 + w: Qwen3.5, Qwen3-Next) at N(0, 0.3) rather than
    randomize_'s N(1, 0.3), so that their scales sit around 1 as plain norms' do, not around 2. Every
    norm doubling its input makes each layer's gates and softmaxes saturate and its branch outweigh
    the residual stream, and in the hybrid MoE families puts the fp32 error past ATOL. HF names
    (`*layernorm`, `q_norm`, `k_norm`, `model.norm`) and ours (`ln_1`, `ln_2`, `ln_f`, `q_norm`,
    `k_norm`); Gated DeltaNet's gated norm (`linear_attn.norm`, ours `attn.norm`) has a plain scale."""
    for name, p in model.named_parameters():
        module = name.rsplit(".", 2)[-2]
        if module.endswith(("layernorm", "q_norm", "k_norm", "ln_1", "ln_2", "ln_f")) or name == "model.norm.weight":
            p.sub_(1.0)
    return model


@torch.no_grad()
def moderate_gates_(model: torch.nn.Module, scale: float = 0.25) -> torch.nn.Module:
    """Gate logits of order 1 rather than saturated: the weights of the MoE router, the shared-expert
    gate and Gated DeltaNet's write strength b and output gate z times `scale`. At randomize_'s
    N(0, 0.3) over 64 inputs these logits have std ~5, so a sigmoid sits at 0 or 1 and the softmax
    picks one expert: a misplaced gate would hardly show, and in the hybrid MoE families the fp32
    error (ours or HF's, against fp64) reaches ~3e-4 on a few tokens, past ATOL. In an HF model
    `mlp.gate`, `shared_expert_gate`, `in_proj_b` and `in_proj_z` (Qwen3.5), or the b rows of each
    group of `in_proj_ba` and the z rows of each group of `in_proj_qkvz` (Qwen3-Next); in ours the
    router, `shared.gate` and the z and b rows of `in_proj` ([q; k; v; z; b; a])."""
    gates = ("mlp.gate.weight", "shared_expert_gate.weight", "in_proj_b.weight", "in_proj_z.weight",
             "mlp.router.weight", "mlp.shared.gate.weight")
    for name, p in model.named_parameters():
        if name.endswith(gates):
            p.mul_(scale)
    for module in model.modules():
        if hasattr(module, "in_proj_qkvz"):  # per key-head group: [q; k; v; z] and [b; a]
            z_from = 2 * module.head_k_dim + module.value_dim // module.num_k_heads
            module.in_proj_qkvz.weight.unflatten(0, (module.num_k_heads, -1))[:, z_from:].mul_(scale)
            module.in_proj_ba.weight.unflatten(0, (module.num_k_heads, 2, -1))[:, 0].mul_(scale)
        elif hasattr(module, "decay") and hasattr(module, "in_proj"):
            _, z, b, _ = module.in_proj.weight.split(module.splits)
            z.mul_(scale)
            b.mul_(scale)
    return model


def assert_logits_match(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Within ATOL everywhere; returns the largest |difference| for the record."""
    assert ours.shape == theirs.shape == (2, 40, VOCAB)
    assert theirs.std() > 0.3  # logits far from constant, so a missing copy cannot hide under ATOL
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    return (ours - theirs).abs().max().item()


@torch.no_grad()
def assert_cached_decode_matches_hf(hf, prefill: int = 25) -> None:
    """Our import of `hf` takes the prompt's first `prefill` tokens in one chunk, then the rest token
    by token through its cache: HF's full forward gives the same logits at every position."""
    from model.hf import from_hf

    gpt, idx = from_hf(hf), tokens(**BATCH)
    cache = gpt.new_cache(2, idx.shape[1])
    parts = [gpt(idx[:, :prefill], cache=cache)]
    parts += [gpt(idx[:, t:t + 1], cache=cache) for t in range(prefill, idx.shape[1])]
    assert_logits_match(torch.cat(parts, dim=1), hf(idx).logits)


def hf_config(model_type: str, **overrides):
    """A tiny HF config of `model_type` (TINY sizes, then `overrides`)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**TINY, **overrides})


def random_hf_model(model_type: str, overrides: dict, seed: int = 0):
    """A tiny HF causal LM with every weight random, eager attention, in eval mode."""
    from transformers import AutoModelForCausalLM

    config = hf_config(model_type, **overrides)
    return randomize_(AutoModelForCausalLM.from_config(config, attn_implementation="eager"), seed, ones="vectors")


def assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Bit-identical state dicts (a round trip)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def check_to_hf_and_back(model_type: str, overrides: dict, prepare=None) -> None:
    """Our random model for that HF config -> `to_hf`: the HF class of that family, the same logits;
    -> `from_hf` again: the same config and bit-identical tensors. `prepare(gpt)` randomizes more
    (e.g. buffers) before the conversion."""
    from transformers import AutoModelForCausalLM

    from model import GPT
    from model.hf import config_from_hf, from_hf, to_hf

    gpt = randomize_(GPT(config_from_hf(hf_config(model_type, **overrides))), seed=1, ones="vectors")
    if prepare is not None:
        prepare(gpt)
    with torch.no_grad():
        gpt.transformer.wte.weight[VOCAB:] = 0  # padding rows cannot survive HF's (vocab_size) table
        gpt.lm_head.weight[VOCAB:] = 0
    hf = to_hf(gpt, model_type)
    assert type(hf).__name__ == type(AutoModelForCausalLM.from_config(hf.config)).__name__
    hf.set_attn_implementation("eager")
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(hf(idx).logits, gpt(idx))
    back = from_hf(hf)
    assert back.config == gpt.config
    assert_same_tensors(gpt, back)


def check_from_hf(model_type: str, overrides: dict, expected: dict):
    """A random HF model -> `from_hf`: the expected config fields, the same logits; returns ours."""
    from model.hf import from_hf

    hf = random_hf_model(model_type, overrides)
    gpt = from_hf(hf)
    assert {k: getattr(gpt.config, k) for k in expected} == expected
    idx = tokens(**BATCH)
    with torch.no_grad():
        assert_logits_match(gpt(idx), hf(idx).logits)
    return gpt


def assert_preset_round_trips(preset: str, family: str) -> None:
    """configs/presets/<preset>.toml survives config_to_hf -> config_from_hf for `family`. HF configs
    have no field for MoE's training-only settings (balancing, capacity), which come back as 0."""
    import dataclasses
    from pathlib import Path

    from model.config import MoEConfig
    from model.hf import config_from_hf, config_to_hf
    from train.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "presets" / f"{preset}.toml").model
    expected = cfg
    if cfg.moe.n_expert:
        untrained = dict.fromkeys(MoEConfig.TRAINING_ONLY, 0.0)
        expected = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, **untrained))
    assert config_from_hf(config_to_hf(cfg, family)) == expected
