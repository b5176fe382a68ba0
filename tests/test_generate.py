"""Generation: GPT.generate's options and bad input, and cached decoding equal to the full forward
for every preset and ladder rung."""

from pathlib import Path

import pytest
import torch

from model import GPT, ModelConfig
from test_ladder import shrink
from train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "presets").glob("*.toml")) + sorted((ROOT / "configs" / "ladder").glob("*.toml"))
TOL = dict(atol=1e-5, rtol=1e-5)


def tiny(**overrides) -> ModelConfig:
    base = dict(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, pos="rope")
    return ModelConfig(**{**base, **overrides})


@torch.no_grad()
def randomize(model: GPT, seed: int = 0, std: float = 0.2) -> GPT:
    """Every parameter random, norm scales around 1, so attention is far from uniform."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        is_norm_scale = name.endswith("weight") and p.ndim == 1
        p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if is_norm_scale else 0.0))
    return model.eval()


def tokens(T: int, B: int = 2, vocab: int = 97, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def preset(path: Path) -> GPT:
    cfg = shrink(load_config(path).model)
    torch.manual_seed(0)
    return randomize(GPT(cfg), std=0.05)  # logits of std ~1: fp32 reordering stays below 1e-5


@torch.no_grad()
def chunked_logits(model: GPT, idx: torch.Tensor, chunks: list[int], **cache_options) -> torch.Tensor:
    """Teacher-forced logits of idx fed through one cache in chunks of the given sizes."""
    cache = model.new_cache(idx.shape[0], **cache_options)
    out, t = [], 0
    for n in chunks:
        out.append(model(idx[:, t : t + n], cache=cache))
        t += n
    return torch.cat(out, dim=1)


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
    model = randomize(GPT(tiny()))
    prompt = tokens(5)
    draws = [model.generate(prompt, 12, temperature=0.9, top_k=20, top_p=0.9, use_cache=use,
                            generator=torch.Generator().manual_seed(3)) for use in (True, False)]
    assert torch.equal(*draws) and draws[0].shape == (2, 17)
    assert torch.equal(draws[0][:, :5], prompt)


def test_generate_restores_training_mode_and_returns_the_prompt_for_zero_tokens():
    model = randomize(GPT(tiny())).train()
    assert torch.equal(model.generate(tokens(5), 0), tokens(5))
    assert model.training


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
    ],
)
def test_bad_generation_input_raises_one_line(kwargs, message):
    model = GPT(tiny())
    args = dict(idx=tokens(5), max_new_tokens=4) | kwargs
    with pytest.raises(ValueError, match=message) as err:
        model.generate(args.pop("idx"), args.pop("max_new_tokens"), **args)
    assert "\n" not in str(err.value)


def test_cache_longer_than_the_context_raises():
    with pytest.raises(ValueError, match="exceeds model.block_size=64"):
        GPT(tiny()).new_cache(1, 65)
