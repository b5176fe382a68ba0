"""Multi-head Latent Attention (model/mixer/mla.py): the absorbed decode path equals the naive one,
cached decoding equals the full forward, the accounting equals what is built and allocated, and the
settings MLA cannot honour are refused. CPU, fp32, tiny random models."""

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from model import GPT, ModelConfig
from model.accounting import (
    attention_matrices, flops_per_token, kv_bytes_per_token, kv_cache_bytes, kv_cache_bytes_per_token,
    matmul_params, mha_kv_bytes_per_token, param_count,
)
from model.config import MLAConfig, MoEConfig, RopeConfig
from model.mixer.mla import MultiHeadLatentAttention
from tiny_run import jittered, tokens
from train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=48, pos="rope", norm="rmsnorm",
            mlp="swiglu", bias=False, attention="mla")
MLA = MLAConfig(kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10)

# name: ModelConfig overrides on BASE; sequences are 40 long, so a window of 16 bites
CASES = {
    "full-rank-q": dict(mla=MLA),
    "low-rank-q-bias": dict(mla=dataclasses.replace(MLA, q_lora_rank=20), bias=True),
    "window-global-sinks": dict(mla=MLA, window=16, global_every=2, attn_sinks=True),
    "softcap-scale": dict(mla=MLA, attn_softcap=5.0, attn_scale=0.3),
    "derived-sizes-moe": dict(n_layer=3, moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=16, first_dense=1)),
    # DeepSeek Sparse Attention: each query keeps 8 of up to 40 keys; derived indexer sizes; with a window
    "dsa-top8": dict(mla=dataclasses.replace(MLA, q_lora_rank=20, index_topk=8, index_n_head=3, index_head_dim=12)),
    "dsa-derived-window": dict(mla=dataclasses.replace(MLA, q_lora_rank=20, index_topk=6), window=16, global_every=2),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def mla_config(case: str) -> ModelConfig:
    return ModelConfig(**{**BASE, **CASES[case]})


def random_gpt(cfg: ModelConfig, seed: int = 0) -> GPT:
    """Matrices N(0, 0.1) (logits of std ~0.7, so fp32 rounding stays far below 1e-5) and every
    vector -- norm scales, biases, sinks -- moved off its init by N(0, 0.2)."""
    return jittered(dataclasses.replace(cfg, init_std=0.1), seed, vector_std=0.2)


def prefill_then_decode(model: GPT, idx: torch.Tensor, prefill: int, **cache_options) -> torch.Tensor:
    """Logits of idx through the cache: `prefill` tokens at once, then one token per forward."""
    cache = model.new_cache(idx.shape[0], idx.shape[1], **cache_options)
    out = [model(idx[:, :prefill], cache=cache)]
    out += [model(idx[:, t : t + 1], cache=cache) for t in range(prefill, idx.shape[1])]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_absorbed_equals_naive_on_the_same_cache(case):
    """Run the same cached prefill + decode steps twice: absorbed (the default with a cache), and
    with each layer's absorbed path swapped for the naive one (up-projecting the cached latent)."""
    cfg = mla_config(case)
    model, idx = random_gpt(cfg), tokens(40, vocab=cfg.vocab_size, seed=1)
    absorbed = prefill_then_decode(model, idx, prefill=30)
    for block in model.transformer.h:
        block.attn.absorbed = block.attn.naive  # same signature, same inputs
    naive = prefill_then_decode(model, idx, prefill=30)
    assert naive.std() > 0.3
    torch.testing.assert_close(absorbed, naive, atol=1e-5, rtol=0)


@torch.no_grad()
def test_cached_decoding_never_up_projects_the_latent():
    cfg = mla_config("full-rank-q")
    model, idx = random_gpt(cfg), tokens(40, vocab=cfg.vocab_size, seed=1)
    calls = []
    for block in model.transformer.h:
        block.attn.kv_b_proj.register_forward_hook(lambda *a: calls.append(1))
    model(idx)
    assert len(calls) == cfg.n_layer  # the naive path uses it ...
    prefill_then_decode(model, idx, prefill=30)
    assert len(calls) == cfg.n_layer  # ... the cached one never does


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_cached_decode_equals_full_forward(case):
    cfg = mla_config(case)
    model, idx = random_gpt(cfg), tokens(40, vocab=cfg.vocab_size, seed=1)
    full = model(idx)
    torch.testing.assert_close(prefill_then_decode(model, idx, prefill=30), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(prefill_then_decode(model, idx[:, :24], prefill=1), full[:, :24], atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", [ROOT / "configs/ladder/12-mla.toml", ROOT / "configs/presets/deepseek-v3.toml",
                                  ROOT / "configs/presets/deepseek-v3.2.toml"],
                         ids=lambda p: p.stem)
@torch.no_grad()
def test_greedy_tokens_with_and_without_cache(path):
    """Greedy decoding of 12 tokens: through the cache (absorbed) and by recomputing the whole
    prefix every step (naive) -- the same tokens."""
    cfg = dataclasses.replace(load_config(path).model, n_layer=2, block_size=64)
    model = random_gpt(cfg, seed=3)
    prompt = tokens(8, vocab=cfg.vocab_size, seed=1)
    cache = model.new_cache(2, 20)
    logits, cached = model(prompt, cache=cache)[:, -1], [prompt]
    for _ in range(12):
        cached.append(logits.argmax(-1, keepdim=True))
        logits = model(cached[-1], cache=cache)[:, -1]
    recomputed = prompt
    for _ in range(12):
        recomputed = torch.cat([recomputed, model(recomputed)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(torch.cat(cached, dim=1), recomputed)
    assert len(recomputed[:, 8:].unique()) > 2  # not one token repeated


@torch.no_grad()
def test_window_and_sinks_change_the_output():
    """The masks and the sink column really act on MLA (so the cases above test them)."""
    cfg = mla_config("window-global-sinks")
    model, idx = random_gpt(cfg), tokens(40, vocab=cfg.vocab_size, seed=1)
    plain = GPT(dataclasses.replace(cfg, window=0, global_every=0, attn_sinks=False))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith("sinks")})
    assert (model(idx)[:, 16:] - plain.eval()(idx)[:, 16:]).abs().max() > 1e-2


@torch.no_grad()
def test_the_indexer_choice_changes_the_output_and_is_a_top_k():
    """With index_topk < context the choice acts (so the cases above test it): the same weights with
    index_topk = block_size (every visible key) give other logits past position 8, the same before;
    each query keeps min(8, visible) visible keys, and once 8 are visible, no future one."""
    cfg = mla_config("dsa-top8")
    model, idx = random_gpt(cfg), tokens(40, vocab=cfg.vocab_size, seed=1)
    dense = GPT(dataclasses.replace(cfg, mla=dataclasses.replace(cfg.mla, index_topk=cfg.block_size)))
    dense.load_state_dict(model.state_dict())
    a, b = model(idx), dense.eval()(idx)
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-6, rtol=0)
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-2
    attn = model.transformer.h[0].attn
    x = torch.randn(2, 40, cfg.n_embd)
    q_latent = attn.query.latent(x)
    q_index, k_index = attn.indexer.project(x, q_latent, torch.arange(40), attn.rotary)
    chosen, _, _ = attn.indexer.select(x, q_index, k_index, torch.arange(40), None, 0)
    visible = torch.ones(40, 40, dtype=torch.bool).tril()
    assert chosen.shape == (2, 1, 40, 40) and not chosen[..., 7:, :].triu(1 + 7).any()
    assert (chosen & visible).sum(-1).flatten().tolist() == [min(8, t + 1) for t in range(40)] * 2


def test_flops_charge_index_topk_keys_and_the_indexer():
    cfg, T = mla_config("dsa-top8"), 40
    m = cfg.mla
    qk_dim = m.qk_nope_head_dim + m.qk_rope_head_dim
    attention = 6 * cfg.n_head * (qk_dim + m.v_head_dim) * 8 * cfg.n_layer
    scoring = 2 * m.index_n_head * m.index_head_dim * T * cfg.n_layer  # forward, every visible key
    frozen = dataclasses.replace(cfg, mla=dataclasses.replace(m, index_loss_coef=0.0))
    assert flops_per_token(frozen, T) == 6 * matmul_params(cfg) + attention + scoring
    # trained by its KL loss: scoring forward + backward, and the target recomputed on the 8 chosen keys
    target = 2 * cfg.n_head * qk_dim * 8 * cfg.n_layer
    assert m.index_loss_coef > 0
    assert flops_per_token(cfg, T) == 6 * matmul_params(cfg) + attention + 3 * scoring + target


@torch.no_grad()
def test_the_output_gate_acts_per_channel_before_the_output_projection():
    """c_proj(y * sigmoid(W_g x + b_g)) (arXiv:2505.06708), y the heads' outputs side by side: random
    gate weights and biases, and n_head * v_head_dim == n_embd so that a gate after c_proj would fit too."""
    cfg = mla_config("low-rank-q-bias")
    cfg = dataclasses.replace(cfg, attn_gate=True, mla=dataclasses.replace(cfg.mla, v_head_dim=12))
    gated = random_gpt(cfg).transformer.h[0].attn
    heads = copy.deepcopy(gated)
    heads.gate, heads.c_proj = None, torch.nn.Identity()
    x, pos = torch.randn(2, 10, 48, generator=torch.Generator().manual_seed(1)), torch.arange(10)
    expected = gated.c_proj(heads(x, pos) * torch.sigmoid(gated.gate.proj(x)))
    torch.testing.assert_close(gated(x, pos), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("T", [12, 40])
def test_the_indexer_of_a_sliding_window_scores_at_most_the_window(T):
    """With window = 16 on every layer, the indexer scores min(16, T) keys per query: all 12 of a
    sequence shorter than the window, 16 of a longer one; the heads still attend to 8."""
    cfg = mla_config("dsa-top8")
    cfg = dataclasses.replace(cfg, window=16, mla=dataclasses.replace(cfg.mla, index_loss_coef=0.0))
    m = cfg.mla
    attention = 6 * cfg.n_head * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) * 8 * cfg.n_layer
    scoring = 2 * m.index_n_head * m.index_head_dim * min(16, T) * cfg.n_layer
    assert flops_per_token(cfg, T) == 6 * matmul_params(cfg) + attention + scoring


# ----------------------------------------------------------------------------- accounting
@pytest.mark.parametrize("case", CASES)
def test_params_and_matmuls_match_the_built_model(case):
    cfg = mla_config(case)
    model = GPT(cfg)
    assert param_count(cfg) == model.num_params()
    attn = model.transformer.h[0].attn
    weights = [m.weight for m in attn.modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(w.numel() for w in weights) == sorted(fi * fo for fi, fo in attention_matrices(cfg))
    assert matmul_params(cfg) > sum(w.numel() for w in weights)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_bytes_formula_equals_the_allocated_cache(case, dtype):
    cfg = mla_config(case)
    cache = GPT(cfg).new_cache(batch_size=3, max_len=50, dtype=dtype)
    per_token = kv_bytes_per_token(cfg, bytes_per_elem=dtype.itemsize)  # every layer, every position
    m = cfg.mla
    assert per_token == cfg.n_layer * (m.kv_lora_rank + m.qk_rope_head_dim + m.index_head_dim) * dtype.itemsize
    # sliding-window layers keep a ring of `window` positions and add nothing per token
    global_layers = sum(not cfg.is_local(i) for i in range(cfg.n_layer))
    assert cache.bytes_per_token() == kv_cache_bytes_per_token(cfg, None, dtype.itemsize)
    assert cache.bytes_per_token() == per_token * global_layers // cfg.n_layer
    assert cache.nbytes() == kv_cache_bytes(cfg, 50, 3, dtype_bytes=dtype.itemsize)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kv_dtype", ["int8", "int4"])
def test_quantized_kv_bytes_formula_equals_the_allocated_cache(case, kv_dtype):
    """The latent row's codes (the indexer key's in 8 bits at least); per token a scale and a zero
    per kv_group channels of the latent, as two uint8 codes with a (base, step) grid for each per
    kv_group tokens, and 1/kv_group of the rotary and indexer keys' per-channel scales and zeros;
    plus the full-precision ring."""
    cfg, options = mla_config(case), dict(kv_dtype=kv_dtype, kv_group=8, kv_residual=4, rollback=2)
    model = GPT(cfg)
    for dtype in (torch.float32, torch.bfloat16):
        cache = model.new_cache(3, 50, dtype=dtype, **options)
        assert cache.nbytes() == kv_cache_bytes(cfg, 50, 3, dtype_bytes=dtype.itemsize, **options)
        assert cache.bytes_per_token() == kv_cache_bytes_per_token(cfg, kv_dtype, dtype.itemsize, kv_group=8)
    m, bits = cfg.mla, {"int8": 8, "int4": 4}[kv_dtype]
    codes = (m.kv_lora_rank + m.qk_rope_head_dim) * bits / 8 + m.index_head_dim
    latent_groups = -(-m.kv_lora_rank // 8)
    latent_scales = latent_groups * (2 + 2 * 2 * 2 / 8)  # 2 codes; 2 grids of 2 bf16 per 8 tokens
    key_scales = 2 * (m.qk_rope_head_dim + m.index_head_dim) / 8 * 2
    global_layers = sum(not cfg.is_local(i) for i in range(cfg.n_layer))
    per_token = global_layers * (codes + latent_scales + key_scales)
    assert kv_cache_bytes_per_token(cfg, kv_dtype, 2, kv_group=8) == per_token


@pytest.mark.parametrize("bits", [8, 4])
def test_double_quantized_scales_cover_each_tokens_range(bits):
    """MLA's latent stores each token's scale and zero as uint8 codes on a (base, step) grid per G
    tokens (QLoRA's double quantization). Rebuilt here from the stored grid: the zero is at or below
    the token's min, zero + scale * levels at or above its max, every value within half a step, and
    the scale exceeds the plain per-token one by at most a grid step of each."""
    from model.inference.cache.quantized import dequantize, double_quantize, quantize

    G, levels = 8, 2**bits - 1
    x = torch.randn(2, 3, 16, 12) * torch.linspace(0.5, 4, 16)[:, None] + torch.linspace(-3, 3, 16)[:, None]
    codes, scale_codes, zero_codes, scale_grid, zero_grid = double_quantize(x, G, bits, torch.float32)
    assert scale_codes.dtype == zero_codes.dtype == torch.uint8 and scale_codes.shape == (2, 3, 16, 1)
    assert scale_grid.shape == zero_grid.shape == (2, 3, 2, 2)

    def rebuilt(codes, grid):
        base, step = grid[..., 0].repeat_interleave(G, 2), grid[..., 1].repeat_interleave(G, 2)
        return base[..., None] + codes.float() * step[..., None], step[..., None]

    scale, scale_step = rebuilt(scale_codes, scale_grid)
    zero, zero_step = rebuilt(zero_codes, zero_grid)
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    assert (zero <= lo + 1e-6).all() and (zero + scale * levels >= hi - 1e-5).all()
    err = (dequantize(codes, scale, zero, bits) - x).abs()
    assert (err <= scale / 2 + 1e-5).all() and err.max() > scale.min() / 100
    _, plain, _ = quantize(x, 3, bits, torch.float32)
    assert (scale - plain <= zero_step / levels + scale_step + 1e-6).all()
    assert len(zero_codes.unique()) > 2 and len(scale_codes.unique()) > 2  # the grids are used


@pytest.mark.parametrize("config", ["ladder/16-muon", "presets/qwen3.5", "presets/deepseek-v3"])
def test_a_quantized_cache_costs_at_most_055_and_030_of_bf16_per_token(config):
    """Bytes per token of context, scales and zero-points included (the accounting, which the test
    above and tests/test_generate.py hold equal to the allocated caches): int8 at most 0.55x and
    int4 at most 0.30x of the bf16 cache, on the top rung and the qwen3.5 and deepseek-v3 presets.
    deepseek-v3's latent has 16 channels, beside which a bf16 scale and zero were 0.570 / 0.320."""
    cfg = load_config(ROOT / "configs" / f"{config}.toml").model
    bf16 = kv_cache_bytes_per_token(cfg, None, 2)
    assert kv_cache_bytes_per_token(cfg, "int8", 2) <= 0.55 * bf16
    assert kv_cache_bytes_per_token(cfg, "int4", 2) <= 0.30 * bf16


@torch.no_grad()
def test_quantized_latent_error_does_not_depend_on_the_rotary_keys_range():
    """The rotary key is quantized with scales of its own (per channel): scaling it by 10 (and the
    query's rotary part by 1/10, the same function) leaves the int4 cache's error as it was. One
    group per token for the whole row would let the wider range set the step for both (4-7x the
    error, measured)."""
    cfg = dataclasses.replace(mla_config("full-rank-q"), block_size=64)
    errors = []
    for factor in (1.0, 10.0):
        model = random_gpt(cfg)
        for block in model.transformer.h:
            a = block.attn
            a.kv_a_proj.weight[a.rank :] *= factor
            a.query.proj.weight.view(a.n_head, a.nope + a.rope, -1)[:, a.nope :] /= factor
        idx = tokens(40, vocab=cfg.vocab_size, seed=1)
        full = model(idx)
        got = prefill_then_decode(model, idx, prefill=20, kv_dtype="int4", kv_group=8, kv_residual=4)
        errors.append((got - full).abs().max().item())
    assert errors[0] > 1e-3 and errors[1] == pytest.approx(errors[0], rel=0.05), errors


@pytest.mark.parametrize("kv_dtype", ["int8", "int4"])
@torch.no_grad()
def test_absorbed_equals_naive_on_a_quantized_cache(kv_dtype):
    """Both paths read the same dequantized latent: the quantized cache is the latent's, not a
    path's."""
    cfg = mla_config("low-rank-q-bias")
    model, idx = random_gpt(cfg), tokens(40, vocab=cfg.vocab_size, seed=1)
    options = dict(kv_dtype=kv_dtype, kv_group=8, kv_residual=4)
    absorbed = prefill_then_decode(model, idx, prefill=30, **options)
    for block in model.transformer.h:
        block.attn.absorbed = block.attn.naive
    torch.testing.assert_close(prefill_then_decode(model, idx, prefill=30, **options), absorbed, atol=1e-5, rtol=0)
    assert not torch.allclose(absorbed, prefill_then_decode(model, idx, prefill=30), atol=1e-4)  # it did quantize


def test_kv_bytes_formula_equals_the_allocated_cache_for_gqa_too():
    cfg = ModelConfig(**{**BASE, "attention": "gqa", "n_kv_head": 2})
    cache = GPT(cfg).new_cache(batch_size=2, max_len=10)
    assert cache.nbytes() == 2 * 10 * cache.bytes_per_token() == 2 * 10 * kv_bytes_per_token(cfg, 4)


def test_flops_charge_the_naive_attention_dims():
    cfg, T = mla_config("low-rank-q-bias"), 40
    m = cfg.mla
    attention = 6 * cfg.n_head * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) * T * cfg.n_layer
    assert flops_per_token(cfg, T) == 6 * matmul_params(cfg) + attention
    gqa = ModelConfig(**{**BASE, "attention": "gqa"})
    assert flops_per_token(gqa, T) == 6 * matmul_params(gqa) + 12 * gqa.n_head * gqa.head_dim * T * gqa.n_layer


@pytest.mark.parametrize("path, at_most", [("configs/ladder/12-mla.toml", 0.15), ("configs/presets/deepseek-v3.toml", 0.05)])
def test_mla_cache_is_a_fraction_of_mha(path, at_most):
    cfg = load_config(ROOT / path).model
    assert kv_bytes_per_token(cfg) / mha_kv_bytes_per_token(cfg) <= at_most


@pytest.mark.parametrize("path", ["configs/ladder/12-mla.toml", "configs/ladder/16-muon.toml",
                                  "configs/presets/deepseek-v3.2.toml"])
def test_quantized_latent_cache_against_bf16(path):
    """Scales included, int8 keeps <= 0.55x and int4 <= 0.30x the bf16 bytes per token (per-channel
    scales on the rotary key cost 1/kv_group of a per-token pair). With DSA, int4 halves only the
    latent and the rotary key: the indexer key stays 8-bit (half of the shrunk preset's row, so
    0.42x there; 0.31x at DeepSeek-V3.2's own 512 + 64 + 128)."""
    cfg = load_config(ROOT / path).model
    bf16 = kv_cache_bytes_per_token(cfg, None, 2)
    int8, int4 = (kv_cache_bytes_per_token(cfg, kv_dtype, 2) for kv_dtype in ("int8", "int4"))
    assert int8 / bf16 <= 0.55
    m = cfg.mla
    growing = sum(not (cfg.is_local(i) or cfg.is_linear(i)) for i in range(cfg.n_layer))  # the others keep a fixed size
    assert int8 - int4 == growing * (m.kv_lora_rank + m.qk_rope_head_dim) / 2
    assert int4 / bf16 <= (0.42 if m.index_topk else 0.30)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "overrides, field",
    [
        (lambda: dict(n_kv_head=2), "model.n_kv_head"),
        (lambda: dict(qk_norm="head"), "model.qk_norm"),
        (lambda: dict(rope=RopeConfig(fraction=0.5)), "model.rope.fraction"),
        (lambda: dict(mla=MLAConfig(qk_rope_head_dim=7)), "model.mla.qk_rope_head_dim"),
        (lambda: dict(mla=MLAConfig(kv_lora_rank=-1)), "model.mla.kv_lora_rank"),
        (lambda: dict(attention="gqa", mla=MLAConfig(kv_lora_rank=16)), "model.mla"),
        (lambda: dict(attention="latent"), "model.attention"),
        (lambda: dict(mla=MLAConfig(index_topk=8)), "model.mla.q_lora_rank"),
        (lambda: dict(mla=MLAConfig(index_n_head=2)), "model.mla.index_topk"),
        (lambda: dict(mla=MLAConfig(q_lora_rank=8, index_topk=8, qk_rope_head_dim=8, index_head_dim=4)),
         "model.mla.index_head_dim"),
        (lambda: dict(mla=MLAConfig(q_lora_rank=8, index_topk=8), attn_sinks=True), "model.attn_sinks"),
    ],
)
def test_bad_mla_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ModelConfig(**{**BASE, **overrides()})


def test_mla_sizes_default_to_deepseek_ratios_and_gqa_is_untouched():
    cfg = ModelConfig(**{**BASE, "head_dim": 16})
    assert cfg.mla == MLAConfig(q_lora_rank=0, kv_lora_rank=64, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16)
    assert cfg.n_kv_head == cfg.n_head
    assert isinstance(GPT(cfg).transformer.h[0].attn, MultiHeadLatentAttention)
    default = ModelConfig()
    assert default.attention == "gqa" and default.mla == MLAConfig()
    small = dataclasses.replace(default, n_layer=1, vocab_size=97, n_embd=64, n_head=4, n_kv_head=0, head_dim=0)
    assert type(GPT(small).transformer.h[0].attn).__name__ == "CausalSelfAttention"
