"""Generation: GPT.generate's options and bad input, and cached decoding equal to the full forward
for every preset and ladder rung."""

from pathlib import Path

import pytest
import torch

from model import GPT
from model.config import MLAConfig
from test_ladder import shrink
from tiny_run import chunked_logits, randomize_, tiny, tokens
from train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "presets").glob("*.toml")) + sorted((ROOT / "configs" / "ladder").glob("*.toml"))
TOL = dict(atol=1e-5, rtol=1e-5)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def preset(path: Path) -> GPT:
    cfg = shrink(load_config(path).model)
    torch.manual_seed(0)
    return randomize_(GPT(cfg), std=0.05)  # logits of std ~1: fp32 reordering stays below 1e-5


# ----------------------------------------------------------------------------- cached == uncached
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_cached_decode_equals_full_forward(path):
    """Every preset and rung: a 20-token prefill, single tokens past the 16-token window, a chunk;
    logits within 1e-5 of the uncached forward, and greedy generation gives the same tokens."""
    model = preset(path)
    V = model.config.vocab_size
    idx = tokens(48, vocab=V)
    with torch.no_grad():
        full = model(idx)
    got = chunked_logits(model, idx, [20] + [1] * 20 + [8])
    torch.testing.assert_close(got, full, **TOL)
    prompt = idx[:, :10]
    cached = model.generate(prompt, 30, temperature=0.0)
    uncached = model.generate(prompt, 30, temperature=0.0, use_cache=False)
    assert torch.equal(cached, uncached)


def test_generate_samples_the_same_tokens_with_and_without_cache():
    model = randomize_(GPT(tiny()), std=0.2)
    prompt = tokens(5)
    draws = [model.generate(prompt, 12, temperature=0.9, top_k=20, top_p=0.9, use_cache=use,
                            generator=torch.Generator().manual_seed(3)) for use in (True, False)]
    assert torch.equal(*draws) and draws[0].shape == (2, 17)
    assert torch.equal(draws[0][:, :5], prompt)


def test_generate_restores_training_mode_and_returns_the_prompt_for_zero_tokens():
    model = randomize_(GPT(tiny()), std=0.2).train()
    assert torch.equal(model.generate(tokens(5), 0), tokens(5))
    assert model.training


# ----------------------------------------------------------------------------- sampling filters
@pytest.mark.parametrize("top_p, kept", [
    (0.5, [1]),  # the best token alone reaches 0.5: the smallest such set
    (0.6, [1, 3]),  # 0.5 falls short, so the token that crosses 0.6 stays
    (0.75, [1, 3]),  # 0.5 + 0.25 reaches 0.75 exactly
    (0.8, [1, 3, 0]),
    (0.95, [1, 3, 0, 2, 4]),  # 0.9375 falls short: the last token crosses it
    (1.0, [0, 1, 2, 3, 4]),
])
def test_top_p_keeps_the_smallest_set_that_reaches_it(top_p, kept):
    """Nucleus filtering (model/inference/sampling.py): the best tokens, in order, up to and including the one
    whose cumulative probability reaches top_p, renormalised. Powers of two: softmax of their logs
    gives them back exactly, so the boundaries are exact."""
    from model.inference.sampling import probabilities

    probs = torch.tensor([0.125, 0.5, 0.0625, 0.25, 0.0625])
    expected = torch.zeros(5)
    expected[kept] = probs[kept] / probs[kept].sum()
    logits = torch.stack([probs.log(), probs.flip(0).log()])  # a second row in another order
    got = probabilities(logits, temperature=1.0, top_p=top_p)
    torch.testing.assert_close(got, torch.stack([expected, expected.flip(0)]), atol=1e-7, rtol=0)


@pytest.mark.parametrize("top_k, kept", [(1, [1]), (2, [1, 3]), (3, [1, 3, 0]), (5, [0, 1, 2, 3, 4])])
def test_top_k_keeps_the_k_best_renormalised(top_k, kept):
    """Top-k filtering: exactly the k most likely tokens keep probability, renormalised among themselves."""
    from model.inference.sampling import probabilities

    probs = torch.tensor([0.125, 0.5, 0.0625, 0.25, 0.0625])
    expected = torch.zeros(5)
    expected[kept] = probs[kept] / probs[kept].sum()
    torch.testing.assert_close(probabilities(probs.log(), temperature=1.0, top_k=top_k), expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_divides_the_logits_before_the_softmax(temperature):
    """probabilities(log p, T) = p^(1/T) / sum p^(1/T), a distribution; with top_p, the same renormalised
    over the kept tokens."""
    from model.inference.sampling import probabilities

    probs = torch.tensor([0.5, 0.25, 0.125, 0.125])
    expected = probs ** (1 / temperature) / (probs ** (1 / temperature)).sum()
    torch.testing.assert_close(probabilities(probs.log(), temperature), expected, atol=1e-6, rtol=0)
    top2 = expected[:2] / expected[:2].sum()
    got = probabilities(probs.log(), temperature, top_p=expected[0].item() + 1e-3)  # the second token crosses it
    torch.testing.assert_close(got, torch.cat([top2, torch.zeros(2)]), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kv_dtype="fp8"), "kv_dtype must be one of"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_k=-1), "top_k must be an integer"),
        (dict(temperature=-0.5), "temperature must be >= 0"),
        (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0"),
        (dict(max_new_tokens=60), r"exceeds model.block_size=64"),
        (dict(idx=tokens(65)), r"the prompt \(65 tokens\) is longer than the context"),
        (dict(idx=torch.zeros(2, 3)), "idx must be a"),
        (dict(use_cache=False, kv_dtype="int8"), "needs use_cache=True"),
        (dict(kv_residual=-1), "kv_residual must be an integer >= 0"),
        (dict(kv_dtype="int8", kv_group=1), "kv_group must be an integer >= 2"),
    ],
)
def test_bad_generation_input_raises_one_line(kwargs, message):
    model = GPT(tiny())
    args = dict(idx=tokens(5), max_new_tokens=4) | kwargs
    with pytest.raises(ValueError, match=message) as err:
        model.generate(args.pop("idx"), args.pop("max_new_tokens"), **args)
    assert "\n" not in str(err.value)


def test_bad_cache_requests_raise():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="exceeds model.block_size=64"):
        model.new_cache(1, 65)
    for kwargs, message in [(dict(kv_dtype="int2"), "kv_dtype must be one of"),
                            (dict(kv_group=0), "kv_group must be an integer >= 2"),
                            (dict(rollback=-1), "rollback must be an integer >= 0")]:
        with pytest.raises(ValueError, match=message):
            model.new_cache(1, **kwargs)


# ----------------------------------------------------------------------------- quantized cache
@pytest.mark.parametrize("kv_dtype, bits", [("int8", 8), ("int4", 4)])
def test_quantize_dequantize_round_trip_is_within_half_a_step(kv_dtype, bits):
    from model.inference.cache.quantized import dequantize, pack, quantize, unpack

    x = torch.randn(2, 3, 40, 16) * torch.linspace(0.1, 10, 16)  # channels of very different ranges
    for dim in (2, 3):  # per channel over tokens (keys), per token over channels (values)
        codes, scale, zero = quantize(x, dim, bits, torch.float32)
        assert codes.dtype == torch.uint8 and codes.shape[-1] == 16 * bits // 8
        err = (dequantize(codes, scale, zero, bits) - x).abs()
        assert (err <= scale / 2 * (1 + 1e-4) + 1e-6).all()
        assert err.max() > scale.min() / 100  # it does round
        span = x.amax(dim, keepdim=True) - x.amin(dim, keepdim=True)
        torch.testing.assert_close(scale, span / (2**bits - 1))
    q = torch.randint(0, 2**bits, (5, 8), dtype=torch.uint8)
    assert torch.equal(unpack(pack(q, bits), bits), q)


def test_codes_are_computed_from_the_stored_bf16_zero_and_scale():
    """In bf16 the stored zero (the min) is rounded; the codes are those of the stored zero and
    scale, so dequantizing gives round((x - zero) / scale) * scale + zero computed from them."""
    from model.inference.cache.quantized import dequantize, quantize

    x = 100.1 + torch.linspace(0, 0.3, 16).repeat(2, 1, 3, 1)  # bf16 rounds 100.1 to 100.0
    codes, scale, zero = quantize(x, 3, 8, torch.bfloat16)
    assert zero.dtype == torch.bfloat16 and (zero.float() != x.amin(3, keepdim=True)).all()
    s, z = scale.float(), zero.float()
    want = ((x - z) / s).round().clamp(0, 255) * s + z
    torch.testing.assert_close(dequantize(codes, scale, zero, 8), want)


def min_max_round_trip(x: torch.Tensor, dim: int, bits: int) -> torch.Tensor:
    """x quantized to 2^bits levels between its min and max along `dim`, and back."""
    lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
    step = (hi - lo) / (2**bits - 1)
    return ((x - lo) / step).round().clamp(0, 2**bits - 1) * step + lo


@pytest.mark.parametrize("kv_dtype, bits", [("int8", 8), ("int4", 4)])
def test_gqa_cache_quantizes_keys_per_channel_and_values_per_token(kv_dtype, bits):
    """KIVI's layout in the cache an attention layer builds: a key channel 100x the others (keys
    have outlier channels) widens only its own scale, each over a group of kv_group tokens; a value
    token 100x the others (the axis values' outliers follow) widens only its own, each over kv_group
    channels. What the cache returns equals that quantization written out here; keys quantized per
    token instead would give the channels grouped with the outlier ~25x their error."""
    B, H, T, D, G = 1, 2, 16, 16, 8  # tiny(n_embd=64): 2 kv heads of 16 channels
    cache = GPT(tiny(n_embd=64)).new_cache(B, 32, kv_dtype=kv_dtype, kv_group=G, kv_residual=0)
    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)
    k[..., 0] *= 100
    v[:, :, 3] *= 100
    got_k, got_v, _ = cache.layers[0].update(0, k, v)  # 16 tokens, none kept in full precision
    want_k = min_max_round_trip(k.view(B, H, T // G, G, D), 3, bits).view(B, H, T, D)
    want_v = min_max_round_trip(v.view(B, H, T, D // G, G), 4, bits).view(B, H, T, D)
    torch.testing.assert_close(got_k, want_k, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(got_v, want_v, atol=1e-5, rtol=1e-6)
    keys_per_token = min_max_round_trip(k.view(B, H, T, D // G, G), 4, bits).view(B, H, T, D)
    beside_outlier = slice(1, G)  # the channels that share a per-token group with channel 0
    error = (got_k - k)[..., beside_outlier].abs().mean()
    assert error < (keys_per_token - k)[..., beside_outlier].abs().mean() / 10  # ~25x apart
    assert (got_k - k)[..., 0].abs().max() > 0 and (got_v - v).abs().max() > 0  # it does round


# the quantized caches against the uncached forward: GQA's keys per channel and values per token, MLA's
# latent row per token (model/mixer/mla.py); 11-moe is 12-mla with GQA
QUANTIZED_ROWS = {
    "gqa": lambda: randomize_(GPT(tiny(n_head=2, n_kv_head=2, n_embd=64)), std=0.1),  # head_dim 32
    "11-moe": lambda: preset(ROOT / "configs" / "ladder" / "11-moe.toml"),
    "12-mla": lambda: preset(ROOT / "configs" / "ladder" / "12-mla.toml"),
    "deepseek-v3": lambda: preset(ROOT / "configs" / "presets" / "deepseek-v3.toml"),
}


@pytest.mark.parametrize("row", QUANTIZED_ROWS)
def test_quantized_decode_is_close_to_the_full_precision_one(row):
    """The largest logit error at each position, in units of the logits' std: with int8 under 0.02
    at every position of the dense GQA model and at 98 % of them with MoE; with int4 under 0.15 at 9
    positions in 10. Not at every one: with MoE a small change can flip a token's routing, which
    moves its logits by up to ~1 std whatever the cache (measured with GQA and MLA alike; on
    deepseek-v3 int8 swaps one expert of eight at one position of 100, 0.14 std); int4's maximum
    stays under 0.3 on the dense model."""
    model = QUANTIZED_ROWS[row]()
    idx = tokens(60, vocab=model.config.vocab_size)
    with torch.no_grad():
        full = model(idx)
    err = {}
    for kv_dtype in ("int8", "int4"):
        got = chunked_logits(model, idx, [11] + [1] * 49, kv_dtype=kv_dtype, kv_group=8, kv_residual=4)
        err[kv_dtype] = ((got - full).abs().amax(-1) / full.std()).flatten()  # (B * T,)
        torch.testing.assert_close(got[:, :11], full[:, :11], **TOL)  # quantizing starts at 8 + 4 tokens
    assert 0 < err["int8"].max() and (err["int8"] > 0.02).float().mean() <= 0.02, err
    assert err["int4"].quantile(0.9) < 0.15 and err["int8"].quantile(0.9) < err["int4"].quantile(0.9), err
    if row == "gqa":
        assert err["int8"].max() < 0.02 and err["int4"].max() < 0.3
    prompt = idx[:, :10]
    greedy = model.generate(prompt, 20, temperature=0.0)
    quantized = model.generate(prompt, 20, temperature=0.0, kv_dtype="int8", kv_residual=4, kv_group=8)
    assert (quantized == greedy).float().mean() > 0.9  # groups quantized from 12 tokens on


def test_quantized_decode_with_dsa_keeps_most_positions_and_the_greedy_tokens():
    """DSA (deepseek-v3.2): the indexer key is quantized with the latent. Its top-k choice is
    discrete, so a small change can swap a chosen key and move a position's logits by ~1 std (as MoE
    routing does); int8 keeps 9 positions in 10 within the dense bound and the greedy tokens. The
    indexer key keeps 8 bits in an int4 cache: quantized to 4 bits too it moved 33 positions of 120
    by more than 0.5 std and half the greedy tokens; now 4, and 82 % of the tokens."""
    model = preset(ROOT / "configs" / "presets" / "deepseek-v3.2.toml")
    idx = tokens(60, vocab=model.config.vocab_size)
    with torch.no_grad():
        full = model(idx)
    got = chunked_logits(model, idx, [11] + [1] * 49, kv_dtype="int8", kv_group=8, kv_residual=4)
    err = (got - full).abs().amax(-1) / full.std()
    assert 0 < err.quantile(0.9) < 0.02, err
    prompt = idx[:, :10]
    greedy = model.generate(prompt, 20, temperature=0.0)
    quantized = model.generate(prompt, 20, temperature=0.0, kv_dtype="int8", kv_residual=4, kv_group=8)
    assert (quantized == greedy).float().mean() > 0.9  # groups quantized from 12 tokens on
    got = chunked_logits(model, idx, [11] + [1] * 49, kv_dtype="int4", kv_group=8, kv_residual=4)
    assert ((got - full).abs().amax(-1) / full.std() > 0.5).float().mean() < 0.1
    quantized = model.generate(prompt, 20, temperature=0.0, kv_dtype="int4", kv_residual=4, kv_group=8)
    assert (quantized == greedy).float().mean() > 0.75


# ----------------------------------------------------------------------------- accounting and dtypes
@pytest.mark.parametrize("overrides", [
    {}, dict(n_kv_head=1), dict(window=8, global_every=2), dict(window=8),
    dict(attention="mla", n_kv_head=4),  # latent 32: two channel groups of kv_group 16, rotary key 4
    dict(attention="mla", n_kv_head=4, window=8, global_every=2, mla=MLAConfig(q_lora_rank=8, index_topk=4)),
], ids=["gqa", "mqa", "window", "all-local", "mla", "mla-window-dsa"])
@pytest.mark.parametrize("kv_dtype", [None, "int8", "int4"])
def test_accounting_equals_the_bytes_the_cache_allocates(overrides, kv_dtype):
    from model.accounting import kv_cache_bytes

    model = GPT(tiny(**overrides))
    options = dict(kv_dtype=kv_dtype, kv_residual=4, kv_group=16, rollback=3)
    for batch, max_len in [(1, 64), (3, 40)]:
        cache = model.new_cache(batch, max_len, **options)
        assert cache.nbytes() == kv_cache_bytes(model.config, max_len, batch, dtype_bytes=4, **options)
    per_token = model.kv_cache_bytes_per_token(kv_dtype, kv_group=16)
    grown = model.new_cache(2, 64, **options).nbytes() - model.new_cache(2, 32, **options).nbytes()
    assert per_token == model.new_cache(1, **options).bytes_per_token() == grown / (2 * 32)
    assert model.new_cache(3, **options).bytes_per_token() == per_token  # per token of one sequence


def test_quantized_bytes_against_bf16():
    """GPT-2's head size (64): int8 keeps <= 0.53x and int4 <= 0.28x the bf16 bytes, scales included."""
    model = GPT(tiny(n_head=2, n_kv_head=2, n_embd=128, block_size=256))
    with torch.autocast("cpu", torch.bfloat16):
        bf16 = model.kv_cache_bytes_per_token()
        assert bf16 == 2 * 2 * 2 * 64 * 2
        assert model.kv_cache_bytes_per_token("int8") / bf16 <= 0.53
        assert model.kv_cache_bytes_per_token("int4") / bf16 <= 0.28


def test_cache_is_allocated_in_the_autocast_dtype():
    model = randomize_(GPT(tiny(window=8, global_every=2)), std=0.2)
    with torch.autocast("cpu", torch.bfloat16):
        assert {b.dtype for layer in model.new_cache(1).layers for b in layer.buffers} == {torch.bfloat16}
        quantized = model.new_cache(1, kv_dtype="int4").layers[1]
        assert quantized.params[0][0].dtype == quantized.ring[0].dtype == torch.bfloat16
        assert quantized.codes[0].dtype == torch.uint8
        out = model.generate(tokens(5), 20, temperature=0.0)
        ref = model.generate(tokens(5), 20, temperature=0.0, use_cache=False)
    assert (out == ref).float().mean() > 0.9  # bf16 rounding differs between the paths; the tokens hardly


# ----------------------------------------------------------------------------- static cache, compile
def test_static_cache_decodes_the_same_tokens_as_the_dynamic_one():
    """Fixed buffers, tensor positions, masks from k_pos (windowed and global layers, sinks); one
    cache reused by a second request of another prompt length in the same length bucket."""
    from model.inference.decoder import StaticDecoder, bucket
    from model.inference.generate import decode

    model = randomize_(GPT(tiny(window=8, global_every=2, attn_sinks=True, block_size=128)), std=0.2)
    decoder = StaticDecoder(model, compile=False)
    for prompt in (tokens(10), tokens(7, seed=1)):
        want = model.generate(prompt, 40, temperature=0.0)
        got = decode(decoder.step(2, prompt.shape[1] + 40), prompt, 40, 0.0, 0, 1.0, None)
        assert torch.equal(got, want)
    assert list(decoder.caches) == [(2, 64, torch.float32)]
    assert [bucket(n, 128) for n in (1, 64, 65, 200)] == [64, 64, 128, 128]


def test_a_static_step_holds_the_positions_it_was_made_for():
    """step(batch, length) serves `length` positions: 65 of a 128-position model in the 128 bucket."""
    from model.inference.decoder import StaticDecoder

    model = randomize_(GPT(tiny(block_size=128)), std=0.2)
    decoder = StaticDecoder(model, compile=False)
    idx = tokens(65, B=1)
    with torch.no_grad():
        torch.testing.assert_close(decoder.step(1, 65)(idx), model(idx)[:, -1], atol=1e-5, rtol=0)
    assert list(decoder.caches) == [(1, 128, torch.float32)]


def test_a_static_step_sends_the_prompt_to_prefill_and_each_token_to_decode_one():
    """Only the one-token step is what compile=True compiles (one shape, replayed per token); the prompt runs
    eagerly whatever its length."""
    from model.inference.decoder import StaticDecoder
    from model.inference.generate import decode

    model = randomize_(GPT(tiny()), std=0.2)
    compiled = StaticDecoder(model, compile=True)
    assert compiled.prefill == compiled.forward and compiled.decode_one != compiled.forward
    decoder, calls = StaticDecoder(model, compile=False), []
    for name in ("prefill", "decode_one"):
        setattr(decoder, name, lambda idx, cache, name=name: calls.append((name, idx.shape[1])) or
                decoder.forward(idx, cache))
    with torch.no_grad():
        decode(decoder.step(1, 8), tokens(5, B=1), 3, 0.0, 0, 1.0, None)
    assert calls == [("prefill", 5), ("decode_one", 1), ("decode_one", 1)]


@pytest.mark.slow  # compiling on a CPU takes a minute or more
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_compiled_decode_gives_the_same_tokens(device):
    """On CUDA the one-token step is recorded as a CUDA graph and replayed (mode="reduce-overhead")."""
    model = randomize_(GPT(tiny(n_layer=1, window=8, block_size=64)), std=0.2).to(device)
    keys = set(model.state_dict())
    decoders = []
    for prompt in (tokens(10).to(device), tokens(7, seed=1).to(device)):  # the second prompt length reuses the graphs
        want = model.generate(prompt, 20, temperature=0.0)
        assert torch.equal(model.generate(prompt, 20, temperature=0.0, compile=True), want)
        decoders.append(model._compiled_decoder)
    assert decoders[0] is decoders[1] and set(model.state_dict()) == keys  # kept on the model, no weights


def test_compile_rejects_formats_it_cannot_serve():
    model = GPT(tiny())
    for kwargs in (dict(kv_dtype="int8"), dict(use_cache=False)):
        with pytest.raises(ValueError, match="compile=True decodes through a static cache"):
            model.generate(tokens(3), 2, compile=True, **kwargs)


def test_cached_loss_equals_the_forward_loss_and_int4_costs_something():
    from model.inference.cache.evaluate import cached_loss

    model = randomize_(GPT(tiny(n_head=2, n_kv_head=2, n_embd=64)), std=0.1)
    x, y = tokens(48), tokens(48, seed=1)
    with torch.no_grad():
        plain = model(x, y)[1]["loss"].item()
    assert cached_loss(model, x, y, chunk=5) == pytest.approx(plain, abs=1e-5)
    int4 = cached_loss(model, x, y, chunk=5, kv_dtype="int4", kv_group=8, kv_residual=4)
    assert int4 != pytest.approx(plain, abs=1e-4)
    with pytest.raises(ValueError, match="chunk must be"):
        cached_loss(model, x, y, chunk=0)


@pytest.mark.parametrize("options", [{}, {"use_cache": False}, {"draft": "self"}],
                         ids=["cache", "uncached", "speculative"])
def test_stream_sees_every_new_token_once_in_order(options):
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = tokens(5, B=1)
    if options.get("draft") == "self":
        options = {"draft": model, "n_draft": 3}
    seen = []
    out = model.generate(idx, 12, temperature=0.9, top_k=0, generator=torch.Generator().manual_seed(1),
                         stream=lambda new: seen.append(new.clone()), **options)
    assert torch.equal(torch.cat(seen, dim=1), out[:, 5:])
    again = model.generate(idx, 12, temperature=0.9, top_k=0, generator=torch.Generator().manual_seed(1), **options)
    assert torch.equal(again, out)  # streaming changes nothing


def test_train_sample_prints_each_piece_once_whole_characters_only(capsys):
    from train.sample import Printer
    from train.tokenizer import get_tokenizer

    tok = get_tokenizer("byte")
    printer = Printer(tok, list(b"x = "), stop=tok.eot)
    assert capsys.readouterr().out == "x = "  # the prompt, before any new token
    pieces = []
    for t in [*"é".encode(), *b"1", tok.eot, *b"ignored"]:
        printer(torch.tensor([[t]]))
        pieces.append(capsys.readouterr().out)
    assert pieces[0] == "" and pieces[1] == "é" and pieces[2] == "1"  # the first byte of é waits
    assert pieces[3] == tok.decode([tok.eot]) and pieces[4:] == [""] * 7  # nothing after the stop token
    assert printer.shown == "x = é1" + tok.decode([tok.eot])


def test_decoding_ends_when_every_row_has_drawn_the_stop_token():
    model = randomize_(GPT(tiny()), std=0.2)
    prompt = tokens(5)
    full = model.generate(prompt, 20, temperature=0.0)
    stop = int(full[0, 8])  # a token row 0 draws, at its fourth new position
    steps = []
    got = model.generate(prompt, 20, temperature=0.0, stop_token=stop, stream=lambda t: steps.append(t))
    assert got.shape == full.shape
    for row, want in zip(got.tolist(), full.tolist()):  # the same tokens up to each row's first stop
        new, ref = row[5:], want[5:]
        cut = ref.index(stop) + 1 if stop in ref else len(ref)
        assert new[:cut] == ref[:cut] and all(t == stop for t in new[cut:])
    ends = [(r[5:].index(stop) + 1 if stop in r[5:] else 20) for r in full.tolist()]
    assert len(steps) == max(ends)  # no token drawn after the last row stopped


def test_top_p_measures_its_mass_after_top_k():
    """top_k first, renormalised, then top_p on that: [0.4, 0.3, 0.2, 0.1] with top_k=2 gives
    [4/7, 3/7]; its best token alone reaches top_p=0.5, so only it is kept (on the distribution
    before top_k, 0.4 would fall short and keep two)."""
    from model.inference.sampling import probabilities

    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    got = probabilities(probs.log(), temperature=1.0, top_k=2, top_p=0.5)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.0, 0.0]), atol=1e-7, rtol=0)
    got = probabilities(probs.log(), temperature=1.0, top_k=2, top_p=0.6)  # 4/7 < 0.6: both stay
    torch.testing.assert_close(got, torch.tensor([4 / 7, 3 / 7, 0.0, 0.0]), atol=1e-6, rtol=0)
