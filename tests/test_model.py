"""The GPT model on its own: accounting formulas, causality, KV cache, GQA, loss, config validation,
initialisation, and that it can learn (overfit one batch). CPU, fp32."""

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from model import GPT, ModelConfig
from model.accounting import flops_per_token, kv_bytes_per_token, matmul_params, param_count
from model.ffn.mlp import gelu_tanh
from tiny_run import tiny, tokens

BASE = dict(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64)  # learned positions, MHA


def built(cfg: ModelConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


# ----------------------------------------------------------------------------- accounting
def rung_combinations() -> list[dict]:
    """Every norm x placement x mlp x qk_norm, with sinks, tying, positions, bias and GQA cycling
    through their values so each value of each field meets many of the others."""
    combos = []
    grid = itertools.product(
        ["layernorm", "rmsnorm"], ["pre", "post", "sandwich"], ["gelu", "swiglu", "geglu", "relu2"],
        ["none", "head", "full"],
    )
    for i, (norm, placement, mlp, qk_norm) in enumerate(grid):
        combos.append(dict(
            norm=norm, norm_placement=placement, mlp=mlp, qk_norm=qk_norm,
            attn_sinks=i % 2 == 1, tie_embeddings=i % 4 < 2, pos=["learned", "rope", "none"][i % 3],
            bias=i % 5 < 3, n_kv_head=[4, 2, 1][i // 3 % 3], norm_unit_offset=i % 7 == 0,
        ))
    return combos


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(tie_embeddings=False),
        dict(bias=False, tie_embeddings=False),
        dict(n_kv_head=1, bias=False),
        dict(mlp_hidden=96),
        dict(head_dim=24, n_kv_head=2),  # n_head * head_dim != n_embd
        dict(vocab_size=129, vocab_multiple=32),
        *rung_combinations(),
        dict(head_dim=24, n_kv_head=2, qk_norm="full", mlp="swiglu", mlp_hidden=40, norm="rmsnorm"),
        dict(attn_gate=True, n_kv_head=2),  # the output gate's projection, with its bias
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "gpt2",
)
def test_param_count_formula_matches_model(overrides):
    cfg = tiny(BASE, **overrides)
    with torch.device("meta"):
        model = GPT(cfg)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    assert param_count(cfg) == model.num_params()


def test_rung_combinations_cover_every_value():
    combos = rung_combinations()
    for field, values in dict(
        attn_sinks=[False, True], tie_embeddings=[False, True], pos=["learned", "rope", "none"],
        bias=[False, True], n_kv_head=[4, 2, 1], norm_unit_offset=[False, True],
    ).items():
        assert {c[field] for c in combos} == set(values), field


def test_param_count_gpt2_small():
    # HF GPT-2 small has 124,439,808 parameters; padding 50257 -> 50304 adds 47 * 768 rows.
    assert param_count(ModelConfig()) == 124_439_808 + 47 * 768


def test_flops_and_kv_bytes():
    cfg = tiny(BASE, n_kv_head=2)  # d=64, head_dim=16, q 64, kv 32: c_attn 64x128, c_proj 64x64
    per_layer = 64 * 128 + 64 * 64 + 64 * 256 + 256 * 64
    assert matmul_params(cfg) == 2 * per_layer + 64 * 128  # + LM head over the padded vocab
    assert flops_per_token(cfg, 32) == 6 * matmul_params(cfg) + 12 * 2 * 4 * 16 * 32
    assert kv_bytes_per_token(cfg) == 2 * 2 * 2 * 16 * 2
    assert kv_bytes_per_token(cfg, bytes_per_elem=4) == 2 * kv_bytes_per_token(cfg)
    # GPT-2 small, 1024 tokens: ~0.85 GFLOPs per token per training step (6N with N ~ 124M + attn)
    assert flops_per_token(ModelConfig(), 1024) == pytest.approx(8.5465e8, rel=1e-4)


def test_flops_glu_and_sliding_window():
    glu = tiny(BASE, mlp="swiglu", mlp_hidden=96)  # gate, up and down: three 64 x 96 matrices
    assert matmul_params(glu) == 2 * (64 * 192 + 64 * 64 + 3 * 64 * 96) + 64 * 128
    full = tiny(BASE, mlp="swiglu", mlp_hidden=96, n_layer=4)
    attn_per_key = 12 * 4 * 16  # 12 * n_head * head_dim per layer and key
    base = 6 * matmul_params(full)
    assert flops_per_token(full, 32) == base + attn_per_key * 4 * 32
    local = tiny(BASE, mlp="swiglu", mlp_hidden=96, n_layer=4, window=8)  # every layer sees 8 keys
    assert flops_per_token(local, 32) == base + attn_per_key * 4 * 8
    alternating = tiny(BASE, mlp="swiglu", mlp_hidden=96, n_layer=4, window=8, global_every=2)
    assert flops_per_token(alternating, 32) == base + attn_per_key * (8 + 32 + 8 + 32)
    assert flops_per_token(alternating, 4) == base + attn_per_key * 4 * 4  # window out of reach


# ----------------------------------------------------------------------------- forward
def test_causality_future_tokens_do_not_change_past_logits():
    model = built(tiny(BASE))
    idx = tokens(32, vocab=100, seed=1)
    t = 13
    changed = idx.clone()
    changed[:, t:] = (idx[:, t:] + 1 + tokens(32 - t, vocab=100, seed=2) % 98) % 100  # every one differs
    assert torch.all(changed[:, t:] != idx[:, t:])
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.equal(a[:, :t], b[:, :t])
    assert (a[:, t:] - b[:, t:]).abs().amax(-1).min() > 1e-3  # every later position does change


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_kv_cache_decode_matches_full_forward(n_kv_head):
    model = built(tiny(BASE, n_kv_head=n_kv_head))
    idx = tokens(20, vocab=100, seed=1)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(batch_size=2)
        steps = [model(idx[:, :6], cache=cache)]  # prefill of several tokens
        steps += [model(idx[:, t : t + 1], cache=cache) for t in range(6, 12)]  # one at a time
        steps += [model(idx[:, 12:20], cache=cache)]  # a chunk after single tokens
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_gqa_equals_mha_with_repeated_kv_heads(n_kv_head):
    gqa = built(tiny(BASE, n_kv_head=n_kv_head, n_embd=64, n_head=4))
    mha = built(tiny(BASE, n_embd=64, n_head=4), seed=1)
    group, hd = 4 // n_kv_head, 16
    state = gqa.state_dict()
    for i in range(2):
        for suffix in ("weight", "bias"):
            key = f"transformer.h.{i}.attn.c_attn.{suffix}"
            q, k, v = state[key].split([4 * hd, n_kv_head * hd, n_kv_head * hd])
            # query head h reads key/value head h // group: repeat each kv head `group` times
            k, v = (x.unflatten(0, (n_kv_head, hd)).repeat_interleave(group, 0).flatten(0, 1)
                    for x in (k, v))
            state[key] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    idx = tokens(32, vocab=100, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx), mha(idx), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_tanh_traced_form_equals_atens(dtype, monkeypatch):
    """Under torch.compile gelu_tanh is written as x sigmoid(2u); it must be GPT-2's GELU, with the
    same gradient, over the whole range (large |x| included, where one factor saturates)."""
    x = torch.cat([torch.linspace(-12, 12, 2401), torch.tensor([-1e4, -30.0, 30.0, 1e4])]).to(dtype)
    x.requires_grad_()
    ref = F.gelu(x, approximate="tanh")
    (ref_grad,) = torch.autograd.grad(ref.float().square().sum(), x)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    out = gelu_tanh(x)
    (grad,) = torch.autograd.grad(out.float().square().sum(), x)
    tol = {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1.6e-2}
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(grad, ref_grad, **tol)


def test_gelu_tanh_is_gpt2s_tanh_approximation():
    """Eager gelu_tanh is 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), not the erf GELU."""
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    expected = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(gelu_tanh(x), expected, atol=1e-12, rtol=0)


def test_logits_cover_the_real_vocab_and_loss_is_cross_entropy():
    cfg = tiny(BASE)
    assert cfg.padded_vocab_size == 128
    model = built(cfg)
    idx, targets = tokens(32, vocab=100, seed=1), tokens(32, vocab=100, seed=5)
    with torch.no_grad():
        logits = model(idx)
        none, terms = model(idx, targets)  # the loss never builds the (B, T, V) logits (model/loss.py)
    assert none is None and set(terms) == {"loss"}  # eval mode: the LM loss alone
    loss = terms["loss"]
    assert model.lm_head.out_features == 128 and logits.shape == (2, 32, 100)
    manual = -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(loss, manual, atol=1e-6, rtol=0)


def test_ignore_index_excluded_from_mean():
    model = built(tiny(BASE))
    idx, targets = tokens(32, vocab=100, seed=1), tokens(32, vocab=100, seed=5)
    masked = targets.clone()
    masked[0, :20] = -100
    masked[1, 5] = -100
    with torch.no_grad():
        logits, loss = model(idx), model(idx, masked)[1]["loss"]
    keep = masked != -100
    nll = -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(loss, nll[keep].mean(), atol=1e-6, rtol=0)
    assert not torch.allclose(loss, nll.mean())  # the masked positions would change the mean
    with torch.no_grad():
        loss_custom = model(idx, torch.where(keep, targets, -1), ignore_index=-1)[1]["loss"]
    torch.testing.assert_close(loss_custom, loss, atol=0, rtol=0)


def test_sequence_longer_than_block_size_raises():
    model = built(tiny(BASE))
    with pytest.raises(ValueError, match="block_size"):
        model(tokens(33, B=1, vocab=100, seed=1))
    cache = model.new_cache(batch_size=1)
    model(tokens(30, B=1, vocab=100, seed=1), cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(tokens(3, B=1, vocab=100, seed=1), cache=cache)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(n_embd=64, n_head=5), "n_head"),
        (dict(n_head=4, n_kv_head=3), "n_kv_head"),
        (dict(dropout=-0.1), "dropout"),
        (dict(dropout=1.0), "dropout"),
        (dict(pos="rope-ish"), "pos"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(norm_eps=float("nan")), "norm_eps"),
        (dict(block_size=0), "block_size"),
        (dict(n_layer=2.5), "n_layer"),
        (dict(vocab_size=True), "vocab_size"),
        (dict(mlp="relu"), "mlp"),
    ],
    ids=str,
)
def test_invalid_config_raises_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"model\.{field}\b"):
        tiny(BASE, **overrides)


def test_config_resolves_derived_sizes():
    cfg = tiny(BASE)
    assert (cfg.n_kv_head, cfg.head_dim, cfg.mlp_hidden) == (4, 16, 256)


# ----------------------------------------------------------------------------- init
def test_gpt2_init():
    cfg = ModelConfig(vocab_size=256, block_size=64, n_layer=4, n_head=4, n_embd=256)
    model = built(cfg)
    std, residual = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layer)
    for block in model.transformer.h:  # 256 x 1024 matrices: std estimate good to ~0.2%
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual, rel=0.03)
        assert block.attn.c_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(std, rel=0.03)
        assert block.attn.c_attn.weight.std().item() == pytest.approx(std, rel=0.03)
        for norm in (block.ln_1, block.ln_2):
            assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert model.transformer.wte.weight.std().item() == pytest.approx(std, rel=0.03)
    assert model.transformer.wpe.weight.std().item() == pytest.approx(std, rel=0.03)
    biases = [p for n, p in model.named_parameters() if n.endswith("bias") and ".ln_" not in n]
    assert len(biases) == 4 * cfg.n_layer and all(torch.all(b == 0) for b in biases)
    assert model.lm_head.weight is model.transformer.wte.weight


# ----------------------------------------------------------------------------- learning
def test_overfits_one_batch():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=257, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg).train()
    idx = tokens(65, B=4, vocab=257, seed=7)
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for step in range(300):
        loss = model(x, y)[1]["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.05:
            break
    assert losses[0] == pytest.approx(math.log(257), rel=0.1)  # starts near uniform
    assert losses[-1] < 0.1, f"loss {losses[-1]:.3f} after {len(losses)} steps"
