"""Gated DeltaNet (model/mixer/deltanet.py, delta_rule.py) and the gated attention output
(model/mixer/gate.py): the chunked delta rule equals the recurrent one and HF's torch fallbacks;
a hybrid model's cached decode equals its full forward; its cache is a constant-size state on the
linear layers and the accounting says so; the gate gates. CPU, fp32, tiny random models."""

import dataclasses
import functools
import sys

import pytest
import torch

from model import GPT, ModelConfig
from model.accounting import (
    flops_per_token, kv_bytes_per_token, kv_cache_bytes, kv_cache_bytes_per_token, param_count,
    recurrent_state_bytes,
)
from model.config import DeltaNetConfig, MLAConfig
from model.kernels import use_device_kernels
from model.mixer.delta_rule import chunked_delta_rule, fla_available, recurrent_delta_rule
from model.mixer.deltanet import Decay

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BASE = dict(vocab_size=97, block_size=96, n_layer=4, n_head=4, n_kv_head=2, n_embd=48, pos="rope",
            norm="rmsnorm", mlp="swiglu", bias=False, linear_attention="gated_deltanet")
DELTA = DeltaNetConfig(full_every=2, n_head=2, n_v_head=4, head_dim=12, v_head_dim=8, conv_size=4)
# name: ModelConfig overrides on BASE
CASES = {
    "gqa-gated-1to1": dict(deltanet=DELTA, attn_gate=True, qk_norm="head"),
    "mla-gated-3to1-window": dict(deltanet=dataclasses.replace(DELTA, full_every=4), attn_gate=True,
                                  attention="mla", n_kv_head=0, window=16, global_every=2,
                                  mla=MLAConfig(kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10)),
    "all-linear-derived-sizes": dict(deltanet=DeltaNetConfig(full_every=0)),
    "one-tap-conv": dict(deltanet=dataclasses.replace(DELTA, conv_size=1)),  # no mixing over time: no conv past cached
}


def config(case: str) -> ModelConfig:
    return ModelConfig(**{**BASE, **CASES[case]})


def random_inputs(B=2, H=4, T=150, dk=12, dv=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.nn.functional.normalize(torch.randn(B, H, T, dk, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, dv, generator=g)
    decay = -torch.rand(B, H, T, generator=g) * 0.5  # log decay < 0
    beta = torch.rand(B, H, T, generator=g)
    state = torch.randn(B, H, dk, dv, generator=g)
    return q * dk**-0.5, k, v, decay, beta, state


# ----------------------------------------------------------------------------- the delta rule
@pytest.mark.parametrize("chunk", [64, 16, 1])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_equals_recurrent(chunk, with_state):
    q, k, v, g, beta, state = random_inputs()
    state = state if with_state else None
    o_r, s_r = recurrent_delta_rule(q, k, v, g, beta, state)
    o_c, s_c = chunked_delta_rule(q, k, v, g, beta, state, chunk=chunk)  # 150 = 2 chunks of 64 + a padded one
    torch.testing.assert_close(o_c, o_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_c, s_r, atol=1e-5, rtol=1e-5)
    assert o_r.abs().mean() > 0.05  # not trivially zero


def test_the_rule_is_the_delta_rule():
    """Oracle for one head and two tokens, written out: S1 = a1 * 0 + k1 (b1 v1)^T, then the second
    token writes only the correction of what S1 predicted for k2."""
    q, k, v, g, beta, _ = random_inputs(B=1, H=1, T=2, dk=3, dv=2)
    a, b = g.exp()[0, 0], beta[0, 0]
    k1, k2, v1, v2 = k[0, 0, 0], k[0, 0, 1], v[0, 0, 0], v[0, 0, 1]
    S1 = torch.outer(k1, b[0] * v1)
    S2 = a[1] * S1 + torch.outer(k2, b[1] * (v2 - a[1] * S1.T @ k2))
    o, S = chunked_delta_rule(q, k, v, g, beta)
    torch.testing.assert_close(S[0, 0], S2)
    torch.testing.assert_close(o[0, 0, 1], S2.T @ q[0, 0, 1])


@pytest.mark.parametrize("with_state", [False, True])
def test_matches_hf_torch_fallbacks(with_state):
    """HF Qwen3-Next's chunked and recurrent torch references (they normalise and scale q/k themselves,
    tokens-first layout). They get q/k already repeated for the grouped value heads: transformers
    5.23 and later repeat them inside when the head counts differ, earlier versions (5.20 is the
    last for Python 3.10) leave that to the layer. test_hf_qwen3_next.py checks the layer's grouping."""
    hf = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    g_ = torch.Generator().manual_seed(3)
    B, T, Hk, Hv, dk, dv = 2, 100, 2, 4, 12, 8
    q_raw, k_raw = torch.randn(B, T, Hk, dk, generator=g_), torch.randn(B, T, Hk, dk, generator=g_)
    v = torch.randn(B, T, Hv, dv, generator=g_)
    g, beta = -torch.rand(B, T, Hv, generator=g_), torch.rand(B, T, Hv, generator=g_)
    state = torch.randn(B, Hv, dk, dv, generator=g_) if with_state else None
    kwargs = dict(initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True)
    q_hf, k_hf = (t.repeat_interleave(Hv // Hk, dim=2) for t in (q_raw, k_raw))
    o_hf, s_hf = hf.torch_chunk_gated_delta_rule(q_hf, k_hf, v, g, beta, **kwargs)
    o_hr, s_hr = hf.torch_recurrent_gated_delta_rule(q_hf, k_hf, v, g, beta, **kwargs)

    def ours(t):  # (B, T, Hk, dk) -> l2-normalised (B, Hv, T, dk)
        t = torch.nn.functional.normalize(t, dim=-1, eps=0)  # eps is in HF's rsqrt; negligible here
        return t.transpose(1, 2).repeat_interleave(Hv // Hk, dim=1)

    args = (ours(q_raw) * dk**-0.5, ours(k_raw), v.transpose(1, 2), g.transpose(1, 2), beta.transpose(1, 2), state)
    for rule in (chunked_delta_rule, recurrent_delta_rule):
        o, s = rule(*args)
        for o_ref, s_ref in ((o_hf, s_hf), (o_hr, s_hr)):
            torch.testing.assert_close(o.transpose(1, 2), o_ref, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- the hybrid model
@torch.no_grad()
@pytest.mark.parametrize("case", CASES)
def test_cached_decode_equals_full_forward(case):
    cfg = config(case)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    kinds = [type(b.attn).__name__ for b in model.transformer.h]
    assert kinds.count("GatedDeltaNet") == sum(cfg.is_linear(i) for i in range(cfg.n_layer)) > 0
    idx = torch.randint(0, cfg.vocab_size, (2, 90), generator=torch.Generator().manual_seed(1))
    full = model(idx)
    cache = model.new_cache(2, 90)
    # a 70-token prompt (chunked form, two chunks), then one token at a time (recurrent form), then 5 at once
    parts = [model(idx[:, :70], cache=cache)] + [model(idx[:, t:t + 1], cache=cache) for t in range(70, 85)]
    parts.append(model(idx[:, 85:], cache=cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=0)
    assert full.std() > 0.1


@torch.no_grad()
def test_generate_with_cache_equals_without():
    torch.manual_seed(0)
    model = GPT(config("gqa-gated-1to1"))
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(2))
    cached = model.generate(idx, 30, temperature=0.0, use_cache=True)
    assert torch.equal(cached, model.generate(idx, 30, temperature=0.0, use_cache=False))


def test_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(config("mla-gated-3to1-window")).eval()
    idx = torch.randint(0, 97, (1, 80), generator=torch.Generator().manual_seed(3))
    other = idx.clone()
    other[:, 50:] = (other[:, 50:] + 1) % 97
    with torch.no_grad():
        a, b = model(idx), model(other)
    torch.testing.assert_close(a[:, :50], b[:, :50], atol=1e-5, rtol=0)
    assert (a[:, 50:] - b[:, 50:]).abs().max() > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_cache_is_constant_on_linear_layers_and_accounting_matches(case):
    cfg = config(case)
    model = GPT(cfg)
    linear = [i for i in range(cfg.n_layer) if cfg.is_linear(i)]
    for max_len in (16, 96):
        cache = model.new_cache(3, max_len)
        assert cache.nbytes() == kv_cache_bytes(cfg, max_len, batch_size=3, dtype_bytes=4)
        assert cache.bytes_per_token() == kv_cache_bytes_per_token(cfg, dtype_bytes=4)
        assert [cache.layers[i].nbytes() for i in linear] == [3 * recurrent_state_bytes(cfg, 4)] * len(linear)
    assert kv_bytes_per_token(cfg, 4) == kv_cache_bytes_per_token(cfg, dtype_bytes=4)
    assert kv_cache_bytes(cfg, 32768) - kv_cache_bytes(cfg, 1024) == (32768 - 1024) * kv_cache_bytes_per_token(cfg) \
        or cfg.window  # sliding rings are fixed too


def test_hybrid_cache_is_smaller_at_long_context():
    full = ModelConfig(**{**BASE, "linear_attention": "none"})
    hybrid = config("gqa-gated-1to1")
    assert kv_cache_bytes_per_token(hybrid) == kv_cache_bytes_per_token(full) / 2  # half the layers attend
    all_linear = config("all-linear-derived-sizes")
    assert kv_cache_bytes_per_token(all_linear) == 0
    assert kv_cache_bytes(all_linear, 32768) == kv_cache_bytes(all_linear, 1024) > 0


@pytest.mark.parametrize("case", CASES)
def test_param_count_and_flops(case):
    cfg = config(case)
    assert param_count(cfg) == GPT(cfg).num_params()
    full = dataclasses.replace(cfg, linear_attention="none", deltanet=DeltaNetConfig())
    # attention FLOPs grow with the context; the linear layers' do not
    grow = lambda c: flops_per_token(c, 4096) - flops_per_token(c, 1024)  # noqa: E731
    assert grow(cfg) < grow(full)


def test_speculative_decoding_rolls_the_recurrent_state_back():
    """A rejected guess is undone in the Gated DeltaNet states too (model/inference/cache/recurrent.py):
    greedy speculative decoding with an unrelated draft gives the target's own greedy tokens."""
    torch.manual_seed(0)
    model, draft = GPT(config("gqa-gated-1to1")), GPT(config("gqa-gated-1to1"))
    idx = torch.randint(0, 97, (1, 8))
    want = model.generate(idx, 16, temperature=0.0)
    assert torch.equal(model.generate(idx, 16, temperature=0.0, draft=draft, n_draft=3), want)


@torch.no_grad()
def test_a_rolled_back_cache_continues_as_the_full_forward():
    """10 tokens at once into a cache that may undo 3, back to 7 tokens (the conv's inputs and the
    state as they were after position 6), then the rest: the full forward's logits."""
    torch.manual_seed(0)
    model = GPT(config("gqa-gated-1to1")).eval()
    idx = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(4))
    cache = model.new_cache(1, 16, rollback=3)
    model(idx[:, :10], cache=cache)
    cache.rollback(7)
    torch.testing.assert_close(model(idx[:, 7:], cache=cache), model(idx)[:, 7:], atol=1e-4, rtol=0)


def test_compiled_decoding_keeps_the_state_in_static_buffers():
    """compile=True decodes a hybrid through fixed buffers written in place
    (model/inference/cache/recurrent.py): the same greedy tokens as the dynamic cache; a second
    sequence on the reused buffers starts from a zero state again (its logits are a fresh cache's)."""
    from model.inference.decoder import StaticDecoder

    torch.manual_seed(0)
    model = GPT(config("gqa-gated-1to1")).eval()
    idx = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.generate(idx, 10, temperature=0.0, compile=True), model.generate(idx, 10, temperature=0.0))
    decoder = StaticDecoder(model, compile=False)
    with torch.no_grad():
        for seed in (1, 2):
            idx = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(seed))
            step = decoder.step(2, 12)
            cache = next(iter(decoder.caches.values()))
            state = next(layer for layer in cache.layers if hasattr(layer, "state")).state
            address = state.data_ptr()
            fresh = model.new_cache(2, 12)
            torch.testing.assert_close(step(idx), model(idx, cache=fresh)[:, -1], atol=1e-6, rtol=1e-6)
            nxt = idx[:, :1]
            torch.testing.assert_close(step(nxt), model(nxt, cache=fresh)[:, -1], atol=1e-6, rtol=1e-6)
            assert next(layer for layer in cache.layers if hasattr(layer, "state")).state.data_ptr() == address


def test_cpu_keeps_the_torch_kernel():
    model = GPT(config("gqa-gated-1to1"))
    use_device_kernels(model, torch.device("cpu"), torch.float32)
    assert {b.attn.kernel for i, b in enumerate(model.transformer.h) if i % 2 == 0} == {"torch"}


def fake_fla(monkeypatch) -> None:
    """A stand-in for flash-linear-attention (its kernels need Triton and a GPU), written from the
    contract of `fla.ops.gated_delta_rule.chunk_gated_delta_rule` in fla 0.6.0: tokens-first
    [B, T, H, K] tensors, g the log of the decay, beta after its sigmoid, q multiplied by `scale`,
    initial and final state [B, H, K, V]. Its Triton matmuls (`tl.dot(A, v * beta)` with A in k's
    dtype) need q, k and v in one dtype. The recurrence runs token by token in that layout."""
    import sys
    import types

    def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, **kw):
        assert q.dtype == k.dtype == v.dtype, (q.dtype, k.dtype, v.dtype)
        B, T, H, K = k.shape
        v_dtype = v.dtype
        q, k, v = q.float(), k.float(), v.float()
        scale = K**-0.5 if scale is None else scale
        S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state
        out = []
        for t in range(T):
            S = S * g[:, t, :, None, None].exp()
            u = beta[:, t, :, None] * (v[:, t] - (k[:, t, :, :, None] * S).sum(-2))  # (B, H, V)
            S = S + k[:, t, :, :, None] * u[:, :, None, :]
            out.append((scale * q[:, t, :, :, None] * S).sum(-2))
        return torch.stack(out, dim=1).to(v_dtype), S if output_final_state else None

    ops = types.ModuleType("fla.ops.gated_delta_rule")
    ops.chunk_gated_delta_rule = chunk_gated_delta_rule
    for name, module in (("fla", types.ModuleType("fla")), ("fla.ops", types.ModuleType("fla.ops")),
                         ("fla.ops.gated_delta_rule", ops)):
        monkeypatch.setitem(sys.modules, name, module)


def test_fla_kernel_is_called_in_its_own_layout(monkeypatch):
    """The adapter to flash-linear-attention (heads-first here, tokens-first there; q already
    scaled) gives what the chunked form gives; a layer switched to it computes the same forward, in
    fp32 and under bf16 autocast. (The kernel itself needs a GPU and is not run here.)"""
    from model.mixer.deltanet import GatedDeltaNet
    from model.mixer.delta_rule import fla_delta_rule

    fake_fla(monkeypatch)
    assert fla_available()
    q, k, v, g, beta, state = random_inputs(T=70)
    o_f, s_f = fla_delta_rule(q, k, v, g, beta, state)
    o_c, s_c = chunked_delta_rule(q, k, v, g, beta, state)
    torch.testing.assert_close(o_f, o_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_f, s_c, atol=1e-5, rtol=1e-5)

    torch.manual_seed(0)
    model = GPT(config("gqa-gated-1to1")).eval()
    idx = torch.randint(0, 97, (2, 40))
    with torch.no_grad():
        ref = model(idx)
        layers = [m for m in model.modules() if isinstance(m, GatedDeltaNet)]
        for layer in layers:
            layer.use_kernel("fla")
        torch.testing.assert_close(model(idx), ref, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # v in bf16, q and k fp32 from the L2 norm
            fla_bf16 = model(idx)
            for layer in layers:
                layer.use_kernel("torch")
            torch.testing.assert_close(fla_bf16, model(idx), atol=3e-2, rtol=0)
    assert layers


needs_fla = pytest.mark.skipif(not (torch.cuda.is_available() and fla_available()),
                               reason="needs CUDA and flash-linear-attention")


@functools.cache
def fla_backward_refusal() -> str:
    """fla's message when it refuses its backward on this GPU, else "". fla 0.6.0 refuses its gated
    backward on Hopper GPUs with Triton >= 3.4, < 3.7.1 (a Triton miscompile it names in the error):
    the tests skip with its words rather than fail on an H100/H200 so set up."""
    from model.mixer.delta_rule import fla_delta_rule

    x = torch.zeros(1, 1, 64, 64, device="cuda", requires_grad=True)
    o, _ = fla_delta_rule(x, x.detach(), x.detach(), x.detach()[..., 0], x.detach()[..., 0])
    try:
        o.sum().backward()
    except RuntimeError as error:
        return f"flash-linear-attention refuses its backward here: {error}"
    return ""


def fla_and_chunked(dtype, T: int, with_state: bool, grad: bool):
    """fla's Triton kernel and the chunked form given the same inputs as the layer gives them (q, k
    fp32 from the L2 norm; v in the compute dtype; g, beta fp32): [o, final state] and, with `grad`,
    the five gradients. The reference sees q and k rounded to v's dtype as the kernel does, so what
    differs is the kernels' arithmetic."""
    from model.mixer.delta_rule import fla_delta_rule

    q, k, v, g, beta, state = (x.cuda() for x in random_inputs(B=2, H=4, T=T, dk=64, dv=32, seed=T))
    inputs = [q, k, v.to(dtype), g * 4, beta]  # stronger decays than random_inputs'
    state = state if with_state else None  # a cache's state: no gradient reaches it in training
    weights = torch.randn(2, 4, T, 32, device="cuda"), torch.randn(2, 4, 64, 32, device="cuda")

    def run(rule, rounded: bool):
        xs = [x.detach().clone().requires_grad_(grad) for x in inputs]
        args = [xs[0].to(dtype).float(), xs[1].to(dtype).float(), *xs[2:]] if rounded else xs
        with torch.set_grad_enabled(grad):
            o, S = rule(*args, state)
        if not grad:
            return [o.float(), S]
        ((o.float() * weights[0]).sum() + (S * weights[1]).sum()).backward()
        return [o.float(), S] + [x.grad for x in xs]

    return run(fla_delta_rule, False), run(chunked_delta_rule, True)


FLA_CASES = pytest.mark.parametrize("dtype, T, with_state", [
    pytest.param(dtype, T, with_state, id=f"{str(dtype)[6:]}-T{T}{'-state' * with_state}")
    for dtype in (torch.float32, torch.bfloat16) for T, with_state in ((200, False), (64, True), (3, True))])


def relative_errors(names, got, want) -> dict[str, float]:
    return {name: ((g - w).norm() / w.norm()).item() for name, g, w in zip(names, got, want)}


@needs_fla
@FLA_CASES
def test_fla_forward_equals_the_chunked_form_on_cuda(dtype, T, with_state):
    """The output and the final state, within 5e-3 (fp32: Triton's dots round to tf32) or 3e-2 (bf16)
    of each one's norm. The state is [K, V] in both: a transposed one would fail by ~100 %."""
    errors = relative_errors(["o", "final state"], *fla_and_chunked(dtype, T, with_state, grad=False))
    assert max(errors.values()) <= (5e-3 if dtype == torch.float32 else 3e-2), errors


@needs_fla
@FLA_CASES
def test_fla_kernel_equals_the_chunked_form_on_cuda(dtype, T, with_state):
    """Forward and backward: the output, the state and the five gradients, within the same bounds."""
    if fla_backward_refusal():
        pytest.skip(fla_backward_refusal())
    names = ["o", "final state", "dq", "dk", "dv", "dg", "dbeta"]
    errors = relative_errors(names, *fla_and_chunked(dtype, T, with_state, grad=True))
    assert max(errors.values()) <= (5e-3 if dtype == torch.float32 else 3e-2), errors


def hybrid_on_cuda() -> tuple[GPT, list, torch.Tensor]:
    from model.mixer.deltanet import GatedDeltaNet

    torch.manual_seed(0)
    model = GPT(config("gqa-gated-1to1")).cuda()
    return model, [m for m in model.modules() if isinstance(m, GatedDeltaNet)], \
        torch.randint(0, 97, (2, 96), device="cuda")


@needs_fla
def test_a_hybrid_trains_the_same_on_the_fla_kernel():
    """A whole hybrid on CUDA in bf16: loss and every gradient with the Gated DeltaNet layers on fla
    within bf16 rounding of the chunked form."""
    if fla_backward_refusal():
        pytest.skip(fla_backward_refusal())
    model, layers, idx = hybrid_on_cuda()

    def loss_and_grads(kernel: str):
        for layer in layers:
            layer.use_kernel(kernel)
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(idx, idx)[1]["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (loss, grads), (ref_loss, ref_grads) = loss_and_grads("fla"), loss_and_grads("torch")
    assert abs(loss - ref_loss) <= 1e-2 * ref_loss
    for g, r in zip(grads, ref_grads):
        assert (g - r).norm() <= 5e-2 * r.norm() + 1e-6


@needs_fla
def test_a_hybrid_decodes_the_same_on_the_fla_kernel():
    """In fp32 with the Gated DeltaNet layers on fla: the full forward equals the chunked form's, and
    the cached decode that starts from fla's final state gives the full forward's logits (the state fla
    hands over is the one the recurrence reads)."""
    model, layers, idx = hybrid_on_cuda()
    model.eval()
    with torch.no_grad():
        reference = model(idx)  # the chunked form
        for layer in layers:
            layer.use_kernel("fla")
        full = model(idx)
        cache = model.new_cache(2, 96)
        parts = [model(idx[:, :70], cache=cache)] + [model(idx[:, t:t + 1], cache=cache) for t in range(70, 96)]
    assert (full - reference).abs().max() <= 1e-2 * reference.abs().max()  # fp32 dots at tf32
    assert (torch.cat(parts, dim=1) - full).abs().max() <= 1e-2 * full.abs().max()


def test_no_device_picks_the_fla_kernel_yet(monkeypatch):
    """The Gated DeltaNet row of the kernel table (model/kernels.py): every device keeps the chunked
    PyTorch form, flash-linear-attention installed or not, until its CUDA comparison passes."""
    model = GPT(config("gqa-gated-1to1"))

    def chosen(device: str) -> set[str]:
        kernels = use_device_kernels(model, torch.device(device), torch.bfloat16)
        return {kernels[f"transformer.h.{i}.attn"] for i in (0, 2)}  # the linear layers

    monkeypatch.setitem(sys.modules, "fla", None)  # as if not installed: its import fails
    assert chosen("cuda") == chosen("mps") == chosen("cpu") == {"torch"}
    fake_fla(monkeypatch)
    assert chosen("cuda") == chosen("mps") == chosen("cpu") == {"torch"}


def test_decay_init_is_hf_qwen3_5s():
    """A = exp(A_log) ~ U(0.01, 16) and dt_bias = 1 (HF `Qwen3_5PreTrainedModel._init_weights`),
    checked on the values (mean and std of the uniform law), and restored by GPT.init_weights."""
    torch.manual_seed(0)
    A = Decay(4096).A_log.exp()
    assert 0.01 <= A.min() and A.max() <= 16
    assert abs(A.mean().item() - (16 + 0.01) / 2) < 0.3  # the sample mean's std: 0.07
    assert abs(A.std().item() - (16 - 0.01) / 12**0.5) < 0.3
    model = GPT(config("gqa-gated-1to1"))
    decays = [m for m in model.modules() if isinstance(m, Decay)]
    with torch.no_grad():
        for d in decays:
            d.A_log.fill_(5.0)
            d.dt_bias.fill_(0.0)
    model.init_weights()
    assert decays and all((d.dt_bias == 1).all() for d in decays)
    assert all(0.01 <= a <= 16 for d in decays for a in d.A_log.exp().tolist())


@pytest.mark.parametrize("bad, field", [
    (lambda: dict(deltanet=DeltaNetConfig(n_head=3, n_v_head=4)), "n_v_head"),
    (lambda: dict(deltanet=DeltaNetConfig(conv_size=0)), "conv_size"),
    (lambda: dict(deltanet=DeltaNetConfig(full_every=-1)), "full_every"),
    (lambda: dict(linear_attention="mamba"), "linear_attention"),
    (lambda: dict(linear_attention="none", deltanet=DeltaNetConfig(full_every=2)), "deltanet"),
    (lambda: dict(attn_gate="yes"), "attn_gate"),
])
def test_bad_config_raises(bad, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{**BASE, **bad()})


def test_deltanet_keys_are_ignored_without_linear_attention():
    ignored = ModelConfig().ignored_keys()
    assert "model.deltanet.full_every" in ignored and "model.deltanet.conv_size" in ignored
    assert "model.deltanet.full_every" not in config("gqa-gated-1to1").ignored_keys()


# ----------------------------------------------------------------------------- the gate
@torch.no_grad()
@pytest.mark.parametrize("attention", ["gqa", "mla"])
def test_gate_multiplies_the_attention_output(attention):
    """With the gate's weights at 0, sigmoid(0) = 1/2: the gated mixer gives half of the ungated one's
    output before c_proj, i.e. exactly half of its output when c_proj has no bias."""
    extra = dict(n_kv_head=0, mla=MLAConfig(kv_lora_rank=16)) if attention == "mla" else {}
    plain = ModelConfig(**{**BASE, "linear_attention": "none", "attention": attention, **extra})
    gated = dataclasses.replace(plain, attn_gate=True)
    torch.manual_seed(0)
    a, b = GPT(plain).transformer.h[0].attn.eval(), GPT(gated).transformer.h[0].attn.eval()
    missing = b.load_state_dict(a.state_dict(), strict=False).missing_keys
    assert missing == ["gate.proj.weight"]
    x, pos = torch.randn(2, 10, 48), torch.arange(10)
    b.gate.proj.weight.zero_()
    torch.testing.assert_close(b(x, pos), a(x, pos) / 2)
    b.gate.proj.weight.normal_()
    assert (b(x, pos) - a(x, pos) / 2).abs().max() > 1e-3
