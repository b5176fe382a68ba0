"""Weight-only quantization (model/inference/quantize.py): the formats against values computed here, the CPU
kernels against the expanded weights, every preset and rung quantized with cached == uncached, the
byte accounting against the real tensors, and bad requests."""

import copy

import pytest
import torch
from torch import nn

from model import GPT
from model.accounting import param_count, weight_bytes
from model.inference.quantize import (
    Int4Linear, Int8Linear, QuantizedEmbedding, quantizable, quantize, quantize_int4, quantize_int8,
)
from test_generate import CONFIGS, preset
from tiny_run import chunked_logits, randomize_, tiny, tokens

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def expanded_int4(codes: torch.Tensor, scale_zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """(q - 8) * scale + zero, group by group, written out with loops."""
    N, K = codes.shape
    w = torch.empty(N, K)
    for n in range(N):
        for j in range(K // group_size):
            scale, zero = scale_zero[j, n]
            w[n, j * group_size:(j + 1) * group_size] = (codes[n, j * group_size:(j + 1) * group_size] - 8) * scale + zero
    return w


def test_int8_codes_and_scales_by_hand():
    w = torch.tensor([[1.0, -0.5, 0.25, 0.0], [-2.0, 1.0, 0.5, 0.01]])
    q, scale = quantize_int8(w)
    assert torch.allclose(scale, torch.tensor([1 / 127, 2 / 127]))
    assert q.tolist() == [[127, -64, 32, 0], [-127, 64, 32, 1]]  # round half away: 63.5 -> 64


def test_int4_codes_and_groups_by_hand():
    w = torch.cat([torch.linspace(0, 15, 32), torch.linspace(-3, 0, 32)]).view(1, 64)
    codes, scale_zero = quantize_int4(w, group_size=32)
    assert scale_zero.shape == (2, 1, 2)  # (groups, rows, [scale, zero])
    assert torch.allclose(scale_zero[0, 0], torch.tensor([1.0, 8.0]))  # range 15 over 15 steps; zero = min + 8 * scale
    assert torch.allclose(scale_zero[1, 0], torch.tensor([0.2, -3 + 8 * 0.2]))
    assert codes[0, 0] == 0 and codes[0, 31] == 15 and codes[0, 32] == 0 and codes[0, 63] == 15


@pytest.mark.parametrize("group_size", [32, 64])
def test_quantization_error_is_at_most_half_a_step(group_size):
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(0))
    q, scale = quantize_int8(w)
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()
    codes, scale_zero = quantize_int4(w, group_size)
    steps = scale_zero[..., 0].t().repeat_interleave(group_size, dim=1)  # (N, K)
    assert ((expanded_int4(codes, scale_zero, group_size) - w).abs() <= steps / 2 + 1e-6).all()


@pytest.mark.parametrize("N", [96, 40, 1])  # 40 and 1: rows padded to the CPU packing's 32
def test_kernels_equal_the_expanded_weights(N):
    g = torch.Generator().manual_seed(1)
    w, bias, x = torch.randn(N, 64, generator=g), torch.randn(N, generator=g), torch.randn(2, 3, 64, generator=g)
    q, scale = quantize_int8(w)
    want8 = x @ (q.float() * scale[:, None]).t() + bias
    codes, scale_zero = quantize_int4(w, 32)
    w4 = expanded_int4(codes, scale_zero, 32)
    want4 = x @ w4.t() + bias
    for kernel in ("cpu", "expand"):
        for rows in (x, x[:1, :1]):  # the CPU kernel: ATen's for one row, the expanded weight for several
            assert torch.allclose(Int8Linear(q, scale, bias, kernel)(rows), want8[: len(rows), : rows.shape[1]], atol=1e-4)
            layer = Int4Linear(codes, scale_zero, bias, 32, kernel)
            assert torch.allclose(layer(rows), want4[: len(rows), : rows.shape[1]], atol=1e-4)
    rows = torch.tensor([[0, N - 1], [N // 2, 0]])  # the tied lookup reads the CPU packing's layout
    assert torch.equal(Int4Linear(codes, scale_zero, None, 32, "cpu").rows(rows), w4[rows])
    assert torch.allclose(Int8Linear(q, scale, None, "cpu").rows(rows), (q.float() * scale[:, None])[rows])


@pytest.mark.parametrize("kernel", ["w8a8-cpu", "w8a8-expand"])
def test_w8a8_multiplies_integer_codes_of_each_input_row_and_the_weights(kernel):
    """y = (round(x / a) . q) a s + bias per input row x, with a = max|x| / 127 and the int8 weights
    q, s: the integer dot products, in float64 here, equal the kernel's before the scales."""
    g = torch.Generator().manual_seed(2)
    w, bias, x = torch.randn(40, 96, generator=g), torch.randn(40, generator=g), torch.randn(5, 96, generator=g)
    x[1] *= 50  # rows of other magnitudes: each has its own scale
    x[3] = 0.0
    q, s = quantize_int8(w)
    a = x.abs().amax(dim=1, keepdim=True) / 127
    codes = torch.where(a > 0, torch.round(x / a.clamp(min=1e-30)), 0.0)
    want = (codes.double() @ q.double().t()) * a.double() * s.double() + bias.double()
    layer = Int8Linear(q, s, bias, kernel)
    for rows in (slice(None), slice(1, 2)):  # a batch, and one row (decoding)
        torch.testing.assert_close(layer(x[rows]).double(), want[rows], atol=1e-5, rtol=1e-6)
    assert torch.equal(layer(x[3:4]), bias[None])  # a zero row: nothing but the bias


def rounded_by_hand(w: torch.Tensor, kind: str, group_size: int) -> torch.Tensor:
    """The weights the module docstring's table stores, expanded: int8 (and w8a8) round(w / s) * s
    with s = max|row| / 127; int4 lo + round((w - lo) / s) * s with s = (hi - lo) / 15 per group."""
    if kind != "int4":
        s = w.abs().amax(dim=1, keepdim=True) / 127
        return torch.round(w / s) * s
    g = w.view(w.shape[0], -1, group_size)
    lo, hi = g.amin(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)
    s = (hi - lo) / 15
    return (lo + torch.round((g - lo) / s) * s).view(w.shape)


@pytest.mark.parametrize("kind, group_size", [("int8", 128), ("int4", 64), ("w8a8", 128)])
def test_a_quantized_model_computes_its_weights_rounded_by_hand(kind, group_size):
    """The whole model against full precision with every Linear's weight rounded as written out above
    (w8a8: each Linear's input rows too, by their own max|x| / 127): int4 at a group size other
    than 32 (the groups of the codes and of the CPU kernel), and a tied embedding scaled by
    sqrt(n_embd) (Gemma's embed_scale), which reads the rounded head times 8."""
    model = randomize_(GPT(tiny(n_embd=64, embed_scale=True, mlp_hidden=128)), std=0.1)
    assert model.lm_head.weight is model.transformer.wte.weight
    want = copy.deepcopy(model)
    with torch.no_grad():
        for _, _, linear in quantizable(want):
            linear.weight.copy_(rounded_by_hand(linear.weight, kind, group_size))
            if kind == "w8a8":
                linear.register_forward_pre_hook(lambda _, args: rounded_by_hand(args[0].flatten(0, -2), "int8", 0)
                                                 .view(args[0].shape))
    quantize(model, kind, group_size)
    idx = tokens(12)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), want(idx), atol=1e-4, rtol=1e-4)
        one = idx[:1, :1]  # one row: the CPU's packed kernel
        torch.testing.assert_close(model(one), want(one), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["int8", "int4", "w8a8"])
def test_every_linear_is_replaced_and_a_tied_embedding_shares_the_head(kind):
    tied = quantize(randomize_(GPT(tiny(n_embd=64)), std=0.2), kind, group_size=32)
    assert not quantizable(tied) and not any(type(m) is nn.Linear for m in tied.modules())
    assert isinstance(tied.transformer.wte, QuantizedEmbedding) and tied.transformer.wte.head[0] is tied.lm_head
    untied = quantize(GPT(tiny(n_embd=64, tie_embeddings=False)), kind, group_size=32)
    assert type(untied.transformer.wte) is nn.Embedding  # a lookup reads rows, never the table
    mla = quantize(GPT(tiny(n_embd=64, n_kv_head=0, attention="mla")), kind, group_size=32)
    assert all(type(b.attn.kv_b_proj) is nn.Linear for b in mla.transformer.h)  # absorbed at decode
    gated = quantize(GPT(tiny(n_embd=128, value_embeds=True)), kind)  # int4 at its default group of 128
    gates = [b.attn.ve_gate for b in gated.transformer.h if b.attn.ve_gate is not None]
    assert gates and all(type(g) is nn.Linear and g.in_features == 32 for g in gates)  # a gate, like the router


def test_logits_stay_close_to_full_precision():
    """Random weights are the worst case for a 4-bit grid (no outliers to spare, no structure): the
    relative error of the logits is the weights' (~step / sqrt(12) per weight), 16x smaller at int8."""
    model = randomize_(GPT(tiny(n_embd=64)), std=0.05)
    idx = tokens(20)
    with torch.no_grad():
        want = model(idx)
        error = {kind: ((quantize(copy.deepcopy(model), kind, 32)(idx) - want).norm() / want.norm()).item()
                 for kind in ("int8", "int4", "w8a8")}
    assert 0 < error["int8"] < error["w8a8"] < 0.03 and error["int4"] < 0.3
    assert error["int4"] > 5 * error["w8a8"]


@pytest.mark.parametrize("kind", ["int8", "int4", "w8a8"])
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_quantized_cached_decode_equals_its_full_forward(path, kind):
    model = preset(path)
    if kind == "int4" and any(linear.in_features % 32 for _, _, linear in quantizable(model)):
        with pytest.raises(ValueError, match="the int4 group size 32 does not divide"):
            quantize(model, kind, group_size=32)  # shrunk presets have widths such as 56
        return
    quantize(model, kind, group_size=32)
    idx = tokens(24, vocab=model.config.vocab_size)
    with torch.no_grad():
        want = model(idx)
    got = chunked_logits(model, idx, [20, 1, 1, 2])
    # w8a8 rounds activations: where the two paths' last-bit differences put an input on either side
    # of a rounding boundary, one code moves and the outputs after it by up to ~0.01 (mistral)
    atol = 0.05 if kind == "w8a8" else 1e-4
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("kind", ["int8", "w8a8"])
def test_quantized_model_composes_with_the_kv_cache_formats_and_speculation(kind):
    model = quantize(randomize_(GPT(tiny(n_embd=64)), std=0.05), kind)
    idx = tokens(8)
    plain = model.generate(idx, 12, temperature=0.0)
    assert torch.equal(model.generate(idx, 12, temperature=0.0, use_cache=False), plain)
    assert model.generate(idx, 12, temperature=0.0, kv_dtype="int8").shape == plain.shape
    draft = quantize(randomize_(GPT(tiny(n_embd=64, n_layer=1)), seed=3, std=0.05), "int4", group_size=32)
    for row in idx.split(1):
        assert torch.equal(model.generate(row, 12, temperature=0.0, draft=draft),
                           model.generate(row, 12, temperature=0.0))


@pytest.mark.slow  # compiling on a CPU takes a minute or more
@pytest.mark.parametrize("kind", ["int4", "w8a8"])
def test_compiled_quantized_decode_gives_the_same_tokens(kind):
    model = quantize(randomize_(GPT(tiny(n_layer=1, n_embd=64)), std=0.05), kind, group_size=32)
    idx = tokens(10)
    assert torch.equal(model.generate(idx, 16, temperature=0.0, compile=True), model.generate(idx, 16, temperature=0.0))


ACCOUNTED = [dict(), dict(tie_embeddings=False, bias=True), dict(n_kv_head=0, attention="mla"),
             dict(moe=dict(n_expert=4, top_k=2, n_shared=1, expert_hidden=64, shared_gate=True)),
             dict(linear_attention="gated_deltanet", mtp_depth=1), dict(attn_gate=True, mlp="swiglu"),
             dict(value_embeds=True)]


@pytest.mark.parametrize("overrides", ACCOUNTED, ids=range(len(ACCOUNTED)))
@pytest.mark.parametrize("kind", [None, "int8", "int4", "w8a8"])
def test_weight_bytes_equal_the_tensors_of_the_quantized_model(overrides, kind):
    cfg = tiny(n_embd=64, **{k: v for k, v in overrides.items() if k != "moe"})
    if "moe" in overrides:
        from model.config import MoEConfig

        cfg = tiny(n_embd=64, moe=MoEConfig(**overrides["moe"]))
    model = GPT(cfg)
    if kind:
        quantize(model, kind, group_size=32)
    tensors = {id(p): p for p in model.parameters()}
    tensors |= {id(b): b for m in model.modules() if isinstance(m, (Int8Linear, Int4Linear)) for b in m.buffers()}
    real = sum(t.numel() * t.element_size() for t in tensors.values())
    assert weight_bytes(cfg, kind, group_size=32) == real
    if kind is None:
        assert real == 4 * param_count(cfg)


def test_gpt2_124m_bytes_against_fp32():
    """The issue's figures: GPT-2 124M (tied, 50,304 padded rows) at <= 0.27x (int8) and <= 0.16x (int4)."""
    from model import ModelConfig

    cfg = ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    fp32 = weight_bytes(cfg)
    assert weight_bytes(cfg, "int8") / fp32 <= 0.27
    assert weight_bytes(cfg, "int4", group_size=128) / fp32 <= 0.16
    assert weight_bytes(cfg, "int4", group_size=32) / fp32 > 0.16  # fp32 scales and zeros: 0.25 bytes a weight


@pytest.mark.parametrize("kind, group_size, message", [
    ("int3", 32, "quantize must be one of int8, int4, w8a8"),
    (None, 32, "quantize must be one of int8, int4, w8a8; got None"),
    ("int4", 48, "group size must be one of 32, 64, 128, 256"),
    ("int4", 128, "group size 128 does not divide a layer's input width 64"),
])
def test_bad_requests_raise_one_line(kind, group_size, message):
    model = GPT(tiny(n_embd=64))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        quantize(model, kind, group_size)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing replaced

def test_int8_has_no_groups_so_any_group_size_is_accepted():
    """int8 keeps one scale per output row (module docstring); the group size is int4's alone."""
    model = randomize_(GPT(tiny(n_embd=64)), std=0.2)
    x = torch.randint(0, 64, (1, 8))
    reference = quantize(copy.deepcopy(model), "int8", group_size=32)(x)
    torch.testing.assert_close(quantize(model, "int8", group_size=48)(x), reference, rtol=0, atol=0)


# ----------------------------------------------------------------------------- command lines
def test_sample_cli_quantizes_and_refuses_what_it_cannot_in_one_line(base, capsys):
    from tiny_run import cli, error_line, snapshot
    from train import sample

    before = snapshot(base)
    for extra in (["--quantize", "int8"], ["--quantize", "int4", "--group_size", "32"], ["--quantize", "w8a8"],
                  ["--quantize", "int8", "--draft", str(base), "--kv_dtype", "int8"][:4]):
        code, out, err = cli(capsys, base, "--prompt", "ab", "--temperature", "0", "--max_new_tokens", "8",
                             *extra, entry=sample.main)
        assert code == 0 and out.startswith("# step_"), err
    for bad, message in ((["--quantize", "int3"], "argument --quantize: invalid choice: 'int3'"),
                         (["--quantize", "int4", "--group_size", "64"], "does not divide a layer's input width 32"),
                         (["--quantize", "int4", "--group_size", "48"], "group size must be one of 32, 64, 128, 256"),
                         (["--quantize", "int8", "--group_size", "32"], "it does nothing with --quantize int8"),
                         (["--quantize", "w8a8", "--group_size", "32"], "it does nothing with --quantize w8a8"),
                         (["--group_size", "32"], "it does nothing with no --quantize")):
        code, _, err = cli(capsys, base, *bad, entry=sample.main)
        assert code == 2 and message in error_line(err), err
    assert snapshot(base) == before


@pytest.mark.parametrize("kind", ["int8", "int4", "w8a8"])
def test_the_loss_of_a_quantized_model_is_the_loss_of_its_logits(kind):
    """The chunked LM loss multiplies by the head's matrix itself: the expanded one."""
    model = quantize(randomize_(GPT(tiny(n_embd=64)), std=0.05), kind, group_size=32)
    idx, targets = tokens(20), tokens(20, seed=1)
    with torch.no_grad():
        loss = model(idx, targets)[1]["loss"]
        want = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)


def test_bench_quantize_reports_bytes_bpb_and_interleaved_rates(base, capsys):
    from tiny_run import load_script as load
    from train.cli import run_cli

    main = load("bench_quantize").main
    argv = [str(base), "--context=8", "--new_tokens=2", "--rounds=1", "--group_size=32", "--kv_dtype=int8", "--batches=1,2"]
    assert run_cli(main, argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["fp32", "int8", "int4", "w8a8"]
    rows = {line.split("  ")[0]: line for line in lines[2:]}
    assert set(rows) == {"weight bytes", "val bpb", "decode tok/s b=1", "decode tok/s b=2",
                         "decode tok/s b=1, int8 KV", "decode tok/s b=2, int8 KV"}
    assert rows["weight bytes"].count("(x") == 4 and "(x1.000)" in rows["weight bytes"]
    assert "(+0.00 %)" in rows["val bpb"]  # fp32 against itself
    assert run_cli(main, [*argv, "--dtype=bf16", "--batches=1"]) == 0  # the anchor column names the compute dtype
    assert capsys.readouterr().out.splitlines()[1].split() == ["fp32", "weights,", "bf16", "int8", "int4", "w8a8"]
    assert run_cli(main, [str(base), "--batches=1,x"]) == 2
    for bad in ("--batches=1,-1", "--batches=0", "--threads=-1"):  # refused before the model loads
        assert run_cli(main, [str(base), bad]) == 2 and "must be >= " in capsys.readouterr().err


def test_eval_cli_scores_the_quantized_model(base, capsys):
    from tiny_run import cli, error_line
    from train import eval as train_eval

    bpb = {}
    for kind in ("", "int8", "int4", "w8a8"):
        code, out, err = cli(capsys, base, *(["--quantize", kind] if kind else []),
                             *(["--group_size", "32"] if kind == "int4" else []), entry=train_eval.main)
        assert code == 0, err
        bpb[kind] = float(out.split("val ")[-1].split()[0])
    assert len(set(bpb.values())) == 4  # each really ran through its own weights
    assert abs(bpb["int8"] - bpb[""]) < abs(bpb["int4"] - bpb[""]) + 1e-3
    code, _, err = cli(capsys, base, "--quantize", "int4", "--group_size", "256", entry=train_eval.main)
    assert code == 2 and "does not divide" in error_line(err)


def test_bench_decode_quantizes_and_refuses_hf_on_quantized_weights(base, capsys):
    from tiny_run import load_script as load
    from train.cli import run_cli

    main = load("bench_decode").main
    argv = [str(base), "--context=8", "--new_tokens=2", "--nocache_tokens=1", "--repeat=1", "--device=cpu"]
    assert run_cli(main, [*argv, "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "cpu, fp32, int8 weights" in out
    assert run_cli(main, [*argv, "--quantize", "int4", "--hf"]) == 2
    assert "run it without --quantize" in capsys.readouterr().err
