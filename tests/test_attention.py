"""Attention oracles: an independent per-head reference, KV-cached decode, GQA vs MHA, causality,
the layer pattern, and parity with HF attention classes on copied random weights (CPU, fp32)."""

import pytest
import torch
from torch import nn

from model import GPT, RopeConfig
from model.mixer.attention import CausalSelfAttention
from model.mixer.attention import sdpa_mask
from model.mixer.masks import visible_keys
from tiny_run import randomize_, tiny, tokens

TOL = dict(atol=1e-5, rtol=1e-5)


@torch.no_grad()
def reference_attention(attn: CausalSelfAttention, x, window=0, softcap=0.0, sinks=None):
    """Loops over heads, queries and the keys each query may see: no masks, no SDPA, no broadcasting
    tricks. Rotary comes from attn.rotary (pinned to HF in test_rope.py); no QK-norm."""
    B, T, _ = x.shape
    nh, nkv, hd = attn.n_head, attn.n_kv_head, attn.head_dim
    q, k, v = (x @ attn.c_attn.weight.T + attn.c_attn.bias).split([nh * hd, nkv * hd, nkv * hd], -1)
    q, k, v = (t.view(B, T, -1, hd).transpose(1, 2) for t in (q, k, v))  # (B, heads, T, hd)
    q, k = attn.rotary(q, k, torch.arange(T))
    out = torch.zeros(B, nh, T, hd)
    for h in range(nh):
        g = h // (nh // nkv)  # the key/value head this query head reads
        for i in range(T):
            seen = [j for j in range(i + 1) if window == 0 or i - j < window]
            logits = torch.stack([(q[:, h, i] * k[:, g, j]).sum(-1) * attn.scale for j in seen], -1)
            if softcap:
                logits = softcap * torch.tanh(logits / softcap)
            if sinks is not None:
                logits = torch.cat([logits, sinks[h].expand(B, 1)], -1)
            p = torch.softmax(logits, -1)
            out[:, h, i] = sum(p[:, n, None] * v[:, g, j] for n, j in enumerate(seen))
    return out.transpose(1, 2).reshape(B, T, nh * hd) @ attn.c_proj.weight.T + attn.c_proj.bias


@pytest.mark.parametrize("extra", [{}, dict(window=8), dict(attn_sinks=True)], ids=["sdpa", "window", "softmax"])
def test_dropout_acts_in_training_only(extra):
    """In eval a model built with dropout computes exactly what the same weights without it do, on
    every attention kernel (SDPA with and without a mask, the explicit softmax)."""
    torch.manual_seed(0)
    dropped = GPT(tiny(dropout=0.5, **extra)).eval()
    plain = GPT(tiny(dropout=0.0, **extra)).eval()
    plain.load_state_dict(dropped.state_dict())
    idx = tokens(24)
    with torch.no_grad():
        torch.testing.assert_close(dropped(idx), plain(idx), atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------
# masks and sliding windows


def test_masks_with_a_cache():
    """Queries are the last T of S keys; the window counts back from each query's position."""
    last = lambda T, S: torch.arange(S - T, S)  # noqa: E731  positions of the last T of S
    m = visible_keys(last(2, 5), None, 5, window=3)
    assert m.tolist() == [[False, True, True, True, False], [False, False, True, True, True]]
    assert torch.equal(visible_keys(last(4, 9), None, 9, window=9), visible_keys(last(4, 9), None, 9, window=0))
    assert sdpa_mask(last(8, 8), None, 8, window=0) == (None, True)  # flash-eligible
    assert sdpa_mask(last(1, 8), None, 8, window=0) == (None, False)
    assert sdpa_mask(last(8, 8), None, 8, window=8) == (None, True)  # a window out of reach is no window
    mask, is_causal = sdpa_mask(last(1, 9), None, 9, window=8)
    assert not is_causal and mask.tolist() == [[False] + [True] * 8]


def test_masks_from_key_positions():
    """Keys in any order (a ring buffer): visibility follows their positions; FREE slots are hidden."""
    from model.inference.cache.rolling import FREE

    k_pos = torch.tensor([8, 9, 6, 7, FREE])
    mask, is_causal = sdpa_mask(torch.tensor([9]), k_pos, 5, window=3)
    assert not is_causal and mask.tolist() == [[True, True, False, True, False]]
    assert visible_keys(torch.tensor([7, 8]), k_pos, 5, window=0).tolist() == [
        [False, False, True, True, False], [True, False, True, True, False]]


@pytest.mark.parametrize("extra", [{}, {"attn_softcap": 20.0, "attn_sinks": True}], ids=["sdpa", "softmax"])
def test_window_at_least_T_is_full_attention(extra):
    full = randomize_(GPT(tiny(**extra)))
    idx = tokens(16)
    for window in (16, 40):
        windowed = GPT(tiny(window=window, **extra))
        windowed.load_state_dict(full.state_dict())
        assert torch.equal(windowed.eval()(idx), full(idx))


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
@pytest.mark.parametrize("softcap,sinks", [(0.0, False), (5.0, False), (0.0, True), (5.0, True)])
def test_window_matches_reference(n_kv_head, softcap, sinks):
    cfg = tiny(n_kv_head=n_kv_head, window=3, attn_softcap=softcap, attn_sinks=sinks, attn_scale=0.25)
    attn = randomize_(CausalSelfAttention(cfg, layer_idx=0), std=0.5)
    assert attn.kernel == ("softmax" if softcap or sinks else "sdpa") and attn.scale == 0.25
    x = torch.randn(2, 10, cfg.n_embd, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = attn(x, torch.arange(10))
    torch.testing.assert_close(y, reference_attention(attn, x, 3, softcap, attn.sinks), **TOL)
    full = reference_attention(attn, x, 0, softcap, attn.sinks)
    assert (y - full).abs().max() > 1e-2  # the window matters at T = 10


@pytest.mark.parametrize(
    "extra", [{}, {"attn_softcap": 10.0}, {"attn_sinks": True, "qk_norm": "head"}], ids=["sdpa", "softcap", "sinks"]
)
def test_windowed_kv_cache_decode_equals_full_forward(extra):
    """Prefill, a chunk (1 < T < S, window in reach), then single tokens; a local and a global layer."""
    model = randomize_(GPT(tiny(window=4, global_every=2, **extra)), std=0.2)
    idx = tokens(14)
    full = model(idx)
    cache = model.new_cache(batch_size=2)
    steps = [model(idx[:, :5], cache=cache), model(idx[:, 5:9], cache=cache)]
    steps += [model(idx[:, t : t + 1], cache=cache) for t in range(9, 14)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)


# ---------------------------------------------------------------------------------------------
# softcap and sinks


def test_huge_softcap_equals_sdpa():
    """cap * tanh(s / cap) -> s as cap grows: the explicit path then equals SDPA."""
    for window in (0, 5):
        plain = randomize_(GPT(tiny(window=window)))
        capped = GPT(tiny(window=window, attn_softcap=1e6))
        capped.load_state_dict(plain.state_dict())
        assert capped.transformer.h[0].attn.kernel == "softmax" != plain.transformer.h[0].attn.kernel
        idx = tokens(20)
        torch.testing.assert_close(capped.eval()(idx), plain(idx), **TOL)


def test_sinks_at_minus_infinity_are_plain_attention():
    plain = randomize_(GPT(tiny(window=6)))
    sinks = GPT(tiny(window=6, attn_sinks=True))
    sinks.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        for block in sinks.transformer.h:
            block.attn.sinks.fill_(float("-inf"))
    idx = tokens(20)
    torch.testing.assert_close(sinks.eval()(idx), plain(idx), **TOL)


def test_sinks_are_zero_at_init_and_train():
    model = GPT(tiny(attn_sinks=True))
    attn = model.transformer.h[0].attn
    assert attn.sinks.shape == (4,) and not attn.sinks.any()
    loss = model(tokens(8), tokens(8, seed=1))[1]["loss"]
    loss.backward()
    assert attn.sinks.grad is not None and attn.sinks.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# GQA, layer pattern, causality


@pytest.mark.parametrize("n_kv_head", [1, 2])
@pytest.mark.parametrize("extra", [{}, {"attn_sinks": True, "window": 5}], ids=["sdpa", "softmax"])
def test_gqa_equals_mha_with_repeated_kv_heads(n_kv_head, extra):
    gqa = randomize_(GPT(tiny(n_kv_head=n_kv_head, qk_norm="head", **extra)))
    mha = GPT(tiny(n_kv_head=4, qk_norm="head", **extra))
    state = gqa.state_dict()
    hd, rep = 8, 4 // n_kv_head
    for i in range(2):
        name = f"transformer.h.{i}.attn.c_attn."
        for p in ("weight", "bias"):
            q, k, v = state[name + p].split([4 * hd, n_kv_head * hd, n_kv_head * hd])
            k, v = (t.view(n_kv_head, hd, *t.shape[1:]).repeat_interleave(rep, 0).flatten(0, 1) for t in (k, v))
            state[name + p] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    idx = tokens(20)
    torch.testing.assert_close(mha.eval()(idx), gqa(idx), **TOL)


def test_layer_pattern():
    def local(**kw):
        return [b.attn.local for b in GPT(tiny(n_layer=6, **kw)).transformer.h]

    assert local(window=4, global_every=2) == [True, False] * 3  # Gemma 2
    assert local(window=4, global_every=6) == [True] * 5 + [False]  # Gemma 3
    assert local(window=4) == [True] * 6  # Mistral
    assert local() == [False] * 6
    windows = [b.attn.window for b in GPT(tiny(n_layer=6, window=4, global_every=2)).transformer.h]
    assert windows == [4, 0] * 3


def test_causality_with_every_feature():
    cfg = tiny(n_layer=4, window=5, global_every=2, attn_softcap=30.0, attn_sinks=True, qk_norm="full",
               rope=RopeConfig(scaling="yarn", factor=2.0, original_max_pos=16, fraction=0.5, local_theta=500.0))
    model = randomize_(GPT(cfg), std=0.2)
    idx = tokens(24, B=1)
    perturbed = idx.clone()
    perturbed[:, 12:] = (perturbed[:, 12:] + 1) % 97
    a, b = model(idx), model(perturbed)
    torch.testing.assert_close(a[:, :12], b[:, :12], atol=0, rtol=0)
    assert (a[:, 12:] - b[:, 12:]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# parity with HF attention classes (eager kernels, explicit additive masks)

HF_PARITY = {  # name: (HF module, HF config kwargs, our ModelConfig kwargs)
    "llama-gqa-llama3": ("llama", dict(rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16)), dict(rope=RopeConfig(
            theta=500000.0, scaling="llama3", factor=8.0, original_max_pos=16))),
    "qwen3-qk-norm-head": ("qwen3", dict(rope_parameters=dict(rope_type="default", rope_theta=1e6)),
                           dict(qk_norm="head", rope=RopeConfig(theta=1e6))),
    "olmo2-qk-norm-full": ("olmo2", dict(rope_parameters=dict(rope_type="default", rope_theta=5e5)),
                           dict(qk_norm="full", rope=RopeConfig(theta=5e5))),
    "gemma2-softcap-window": ("gemma2", dict(query_pre_attn_scalar=24, attn_logit_softcapping=2.0, sliding_window=5),
                              dict(attn_scale=24**-0.5, attn_softcap=2.0, window=5, global_every=2)),
    "gpt_oss-sinks-window": ("gpt_oss", dict(attention_bias=True, sliding_window=5,
                                             rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
                             dict(attn_sinks=True, window=5, global_every=2, bias=True)),
}


def hf_attention(family: str, **kwargs):
    import importlib

    from transformers import AutoConfig

    hf_cfg = AutoConfig.for_model(
        family, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=64, rms_norm_eps=1e-6, **kwargs
    )
    hf_cfg._attn_implementation = "eager"
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    prefix = {"llama": "Llama", "qwen3": "Qwen3", "olmo2": "Olmo2", "gemma2": "Gemma2", "gpt_oss": "GptOss"}[family]
    attn = getattr(module, f"{prefix}Attention")(hf_cfg, layer_idx=0)
    return attn, getattr(module, f"{prefix}RotaryEmbedding")(hf_cfg)


@torch.no_grad()
def copy_from_hf(ours: CausalSelfAttention, hf: nn.Module, eps: float) -> None:
    ours.c_attn.weight.copy_(torch.cat([hf.q_proj.weight, hf.k_proj.weight, hf.v_proj.weight]))
    if hf.q_proj.bias is not None:
        ours.c_attn.bias.copy_(torch.cat([hf.q_proj.bias, hf.k_proj.bias, hf.v_proj.bias]))
    ours.c_proj.load_state_dict(hf.o_proj.state_dict())
    for name in ("q_norm", "k_norm"):
        if hasattr(hf, name):  # RMSNorm stands in for build_norm(cfg, dim) with norm="rmsnorm"
            setattr(ours, name, nn.RMSNorm(hf.get_submodule(name).weight.shape[0], eps=eps))
            ours.get_submodule(name).weight.copy_(hf.get_submodule(name).weight)
    if hasattr(hf, "sinks"):
        ours.sinks.copy_(hf.sinks)


@pytest.mark.parametrize("case", list(HF_PARITY))
def test_attention_matches_hf(case):
    family, hf_kwargs, our_kwargs = HF_PARITY[case]
    hf, hf_rotary = hf_attention(family, **hf_kwargs)
    randomize_(hf, seed=3, std=0.3)
    cfg = tiny(**{**dict(n_embd=64, n_head=4, n_kv_head=2, head_dim=16, bias=False, norm_eps=1e-6), **our_kwargs})
    ours = CausalSelfAttention(cfg, layer_idx=0)
    copy_from_hf(ours, hf, cfg.norm_eps)
    T, window = 12, our_kwargs.get("window", 0)
    x = torch.randn(2, T, 64, generator=torch.Generator().manual_seed(4))
    positions = torch.arange(T)
    i, j = positions[:, None], positions[None, :]
    allowed = (j <= i) & ((i - j < window) if window else True)
    mask = torch.zeros(1, 1, T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with torch.no_grad():
        expected, _ = hf(x, position_embeddings=hf_rotary(x, positions[None]), attention_mask=mask)
        got = ours.eval()(x, positions)
    torch.testing.assert_close(got, expected, **TOL)
