"""Device kernels (model/mixer/flex.py, the grouped-GEMM experts): the CUDA paths' forward, run on
CPU where the op allows it, equals the path the CPU trains with; and kernel selection per device."""

import pytest
import torch

from model import GPT, ModelConfig
from model.mixer import flex
from model.mixer.attention import CausalSelfAttention, device_kernel, use_device_kernels

needs_flex = pytest.mark.skipif(not flex.available(), reason="this PyTorch has no FlexAttention")


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
        attn.attend = lambda q, k, v: attn.flex_attention(q, k, v, compiled=False)  # eager on CPU
        got = attn(x, torch.arange(T))
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-5)


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
    assert use_device_kernels(model, cpu) == {"transformer.h.0.attn": "sdpa", "transformer.h.1.attn": "sdpa"}
    if flex.available():
        chosen = use_device_kernels(model, cuda)  # layer 1 is global: plain causal
        assert chosen == {"transformer.h.0.attn": "flex", "transformer.h.1.attn": "sdpa"}
