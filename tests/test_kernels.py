"""Device kernels (model/mixer/flex.py, the grouped-GEMM experts): the CUDA paths' forward, run on
CPU where the op allows it, equals the path the CPU trains with; and kernel selection per device."""

import pytest
import torch

from model import GPT, ModelConfig
from model.mixer import flex
from model.ffn.moe import Experts, expert_kernel, grouped_mm
from model.kernels import use_build_kernels, use_device_kernels
from model.mixer.attention import CausalSelfAttention, device_kernel

from test_moe import build  # noqa: E402  (the MoE test cases, randomised)
from tiny_run import ROOT
from train.config import load_config

needs_flex = pytest.mark.skipif(not flex.available(), reason="this PyTorch has no FlexAttention")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def layer(**overrides) -> CausalSelfAttention:
    base = dict(vocab_size=97, block_size=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, pos="rope")
    torch.manual_seed(0)
    attn = CausalSelfAttention(ModelConfig(**{**base, **overrides}), layer_idx=0)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn.eval()


@needs_flex
@pytest.mark.parametrize("fields", [
    dict(window=48),  # a band narrower than T (and than one 128-block)
    dict(window=160),  # a band that spans two 128-blocks
    dict(attn_softcap=2.0),
    dict(attn_sinks=True),
    dict(window=48, attn_softcap=2.0, attn_sinks=True, n_kv_head=1),
    dict(attn_scale=0.3, attn_softcap=5.0, n_kv_head=4),
])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_forward_equals_the_cpu_kernel(fields):
    attn, T = layer(**fields), 200  # two 128-blocks, the second one partial
    x = torch.randn(2, T, 64)
    with torch.no_grad():
        if attn.sinks is not None:
            attn.sinks.copy_(torch.tensor([-1.0, 0.5, 2.0, 0.0]))
        expected = attn(x, torch.arange(T))
        attn.use_kernel("flex")
        attn.attend = lambda *a: attn.flex_attention(*a, compiled=False)  # eager on CPU
        got = attn(x, torch.arange(T))
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-5)


@needs_flex
@pytest.mark.parametrize("window", [0, 48])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_queries_are_the_last_of_the_keys(window):
    """T queries against S > T keys (a prompt that continues a cache): query i sits at position
    p = i + S - T and sees keys j with p - window < j <= p; checked against a masked softmax."""
    g = torch.Generator().manual_seed(0)
    T, S, hd = 5, 140, 16
    q, k, v = (torch.randn(1, 2, n, hd, generator=g) for n in (T, S, S))
    p, j = torch.arange(S - T, S)[:, None], torch.arange(S)[None]
    visible = (j <= p) & (j > p - window) if window else j <= p
    scores = (q @ k.transpose(-1, -2)) * hd**-0.5
    expected = scores.masked_fill(~visible, float("-inf")).softmax(-1) @ v
    got = flex.flex_attend(q, k, v, window, hd**-0.5, compiled=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_kernels_chosen_per_device():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert device_kernel(layer(), cuda) == "sdpa"  # plain causal stays on SDPA (flash)
    assert device_kernel(layer(window=32), cpu) == "sdpa"
    assert device_kernel(layer(attn_softcap=2.0), cpu) == "softmax"
    if flex.available():
        assert device_kernel(layer(window=32), cuda) == "flex"
        assert device_kernel(layer(attn_sinks=True), cuda) == "flex"
    assert device_kernel(layer(window=32, dropout=0.1), cuda) == "sdpa"  # Flex has no dropout
    cfg = ModelConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=64, window=16, global_every=2)
    model = GPT(cfg)
    assert use_device_kernels(model, cpu, torch.float32) == {"transformer.h.0.attn": "sdpa", "transformer.h.1.attn": "sdpa"}
    if flex.available():
        chosen = use_device_kernels(model, cuda, torch.bfloat16)  # layer 1 is global: plain causal
        assert chosen == {"transformer.h.0.attn": "flex", "transformer.h.1.attn": "sdpa"}


@pytest.mark.skipif(grouped_mm is None, reason="this PyTorch has no grouped_mm")
@pytest.mark.parametrize("name", ["mixtral-like top-2 of 4", "switch-like top-1, gelu, biases, raw weights",
                                  "deepseek-like sigmoid, groups, shared, scale",
                                  "gpt-oss-like clamped swiglu, biases, router bias"])
@pytest.mark.parametrize("hidden", [{}, {"expert_hidden": 13}], ids=["aligned", "hidden 13, padded"])
def test_grouped_experts_forward_equals_the_loop(name, hidden):
    """The grouped-GEMM path computes in bf16: its forward equals the per-expert loop to bf16
    precision, on tokens where one expert gets none; a hidden size that is not a multiple of 8 is
    padded with zero units (Experts.aligned)."""
    moe = build(name, **hidden).eval()
    x = torch.randn(2, 16, 32)
    ex = moe.experts
    counts = torch.tensor([9, 0, 14, 9][: moe.n_expert] + [0] * (moe.n_expert - 4))
    rows = torch.randn(int(counts.sum()), 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the loop's matmuls in bf16 too
        loop = ex.loop(rows, counts)
        grouped = ex.grouped(rows, counts)
        y_loop = moe(x)
        assert expert_kernel(ex, torch.device("cpu"), torch.bfloat16) == "loop"
        ex.use_kernel("grouped")
        y_grouped = moe(x)
    assert grouped.dtype == loop.dtype == torch.bfloat16
    scale = loop.float().abs().max().item()
    torch.testing.assert_close(grouped.float(), loop.float(), atol=2e-2 * scale, rtol=0)
    torch.testing.assert_close(y_grouped.float(), y_loop.float(), atol=2e-2 * scale, rtol=0)
    assert (grouped.float() - loop.float()).abs().mean() < 2e-3 * scale


def test_build_kernels_undo_the_device_choice():
    """scripts/bench.py --kernels build: every layer goes back to the kernel it was built with."""
    cfg = ModelConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=64, window=16, global_every=2,
                      attn_softcap=3.0)
    model = GPT(cfg)
    for m in model.modules():
        if isinstance(m, CausalSelfAttention):
            m.use_kernel("flex")  # what use_device_kernels picks for these layers on CUDA
    assert use_build_kernels(model) == {"transformer.h.0.attn": "softmax", "transformer.h.1.attn": "softmax"}
    assert all(m.attend == m.fallback for m in model.modules() if isinstance(m, CausalSelfAttention))


def grads(module: torch.nn.Module, x: torch.Tensor, *inputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The output and the gradients (input first, then every parameter) of sum(out * fixed noise)."""
    x = x.detach().clone().requires_grad_()
    module.zero_grad()
    out = module(x, *inputs)
    out = out[0] if isinstance(out, tuple) else out
    (out.float() * torch.linspace(-1, 1, out.numel(), device=x.device).view_as(out)).sum().backward()
    return out.detach(), [x.grad, *(p.grad for p in module.parameters() if p.grad is not None)]


@needs_cuda
@needs_flex
@pytest.mark.parametrize("fields", [dict(window=48), dict(attn_softcap=2.0), dict(attn_sinks=True),
                                    dict(window=160, attn_softcap=2.0, attn_sinks=True, n_kv_head=1)])
def test_flex_backward_equals_the_build_kernel_on_cuda(fields):
    """FlexAttention has no backward on CPU; on CUDA its gradients equal the build-time kernel's (fp32)."""
    attn = layer(**fields).train().cuda()
    x, positions = torch.randn(2, 200, 64, device="cuda"), torch.arange(200, device="cuda")
    ref_out, ref = grads(attn, x, positions)
    attn.use_kernel("flex")
    out, got = grads(attn, x, positions)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-4)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-4 * r.abs().max().item(), rtol=1e-3)


@pytest.mark.skipif(grouped_mm is None, reason="this PyTorch has no grouped_mm")
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("name", ["mixtral-like top-2 of 4", "switch-like top-1, gelu, biases, raw weights",
                                  "deepseek-like sigmoid, groups, shared, scale"])
@pytest.mark.parametrize("hidden", [{}, {"expert_hidden": 13}], ids=["aligned", "hidden 13, padded"])
def test_grouped_experts_backward_equals_the_loop(name, hidden, device):
    """The grouped-GEMM backward gives the loop's gradients, to bf16 precision. On CPU the op's
    backward runs when the incoming gradient is contiguous (it raises on an expanded one, such as
    the gradient of `.sum()`), which it is inside the MoE layer."""
    moe = build(name, **hidden).train().to(device)
    x = torch.randn(2, 16, 32, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        ref_out, ref = grads(moe, x)
        on_device = expert_kernel(moe.experts, torch.device(device), torch.bfloat16)
        assert on_device == ("grouped" if device == "cuda" else "loop")
        moe.experts.use_kernel("grouped")
        out, got = grads(moe, x)
    torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-2 * ref_out.float().abs().max().item(), rtol=0)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        scale = r.float().abs().max().item()
        torch.testing.assert_close(g.float(), r.float(), atol=3e-2 * scale, rtol=0)


@pytest.mark.parametrize("config", ["default.toml", "ladder/14-hybrid-deltanet.toml", "ladder/15-mtp.toml",
                                    "presets/deepseek-v3.2.toml", "presets/gpt-oss.toml"])
def test_a_training_forward_traces_as_one_graph(config):
    """torch.compile sees the whole training forward, loss included, as one graph: no graph break
    and so no host sync inside it, with the experts on the grouped GEMM that CUDA runs. Covers
    dense GPT-2, the Gated DeltaNet + MoE hybrid, MTP, MLA + DSA + sigmoid-routed MoE, and
    windows + sinks + MoE, at two layers."""
    cfg = load_config(ROOT / "configs" / config, ["--model.n_layer=2"])
    torch.manual_seed(0)
    model = GPT(cfg.model).train()
    for m in model.modules():
        if isinstance(m, Experts):
            m.use_kernel("grouped")
    idx = torch.randint(0, cfg.model.vocab_size, (1, 64))

    def loss(idx):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(idx, idx)[1]["loss"]

    explained = torch._dynamo.explain(loss)(idx)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
