"""The chunked LM loss (model/loss.py) against the plain one: logits, slice, softcap, fp32 cross-entropy."""

import pytest
import torch
from torch.nn import functional as F

from model import GPT
from model.config import ModelConfig
from model.loss import lm_loss
from model.softcap import softcap

V, VP, D, N = 50, 64, 16, 37  # vocab, padded vocab, width, tokens (not a multiple of any chunk)


def plain_loss(h, weight, targets, cap, ignore_index=-100):
    logits = F.linear(h, weight)[..., :V]
    if cap:
        logits = softcap(logits, cap)
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)


def inputs(seed=0, ignore=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g, requires_grad=True)
    weight = (torch.randn(VP, D, generator=g) * 0.5).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    if ignore:
        targets[::3] = -100
    return h, weight, targets


@pytest.mark.parametrize("cap", [0.0, 3.0])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("chunk_elements", [10**6, 8 * V, V])  # one chunk, 8 tokens, 1 token
@pytest.mark.parametrize("form", ["in place", "fused"])  # eager's form, and the one torch.compile traces
def test_equals_plain_loss_and_gradients(cap, ignore, chunk_elements, form, monkeypatch):
    if form == "fused":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    h, weight, targets = inputs(ignore=ignore)
    ref = plain_loss(h, weight, targets, cap)
    ref_h, ref_w = torch.autograd.grad(ref, (h, weight))
    loss = lm_loss(h, weight, targets, V, cap, chunk_elements=chunk_elements)
    grad_h, grad_w = torch.autograd.grad(loss * 2.5, (h, weight))  # backward scales by its input
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_h, 2.5 * ref_h, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_w, 2.5 * ref_w, rtol=1e-5, atol=1e-7)
    assert grad_w[V:].abs().max() == 0  # padding rows get no probability, hence no gradient


def test_without_grad_and_under_bf16_autocast():
    h, weight, targets = inputs(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(lm_loss(h, weight, targets, V), plain_loss(h, weight, targets, 0.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = plain_loss(h, weight, targets, 0.0)
        loss = lm_loss(h, weight, targets, V, chunk_elements=8 * V)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)
    grad_w = torch.autograd.grad(loss, weight)[0]
    assert grad_w.dtype == weight.dtype and grad_w[V:].abs().max() == 0


@pytest.mark.parametrize("final_softcap", [0.0, 5.0])
def test_model_loss_equals_cross_entropy_of_its_logits(final_softcap):
    cfg = ModelConfig(block_size=16, n_layer=1, n_head=2, n_embd=16, vocab_size=V, final_softcap=final_softcap)
    model = GPT(cfg)
    idx = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(0))
    targets = idx.roll(-1, dims=1)
    targets[:, -1] = -100
    logits = model(idx)
    assert logits.shape == (2, 16, V)
    ref = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    none, terms = model(idx, targets)
    assert none is None and set(terms) == {"loss"}  # no layer with a term of its own
    loss = terms["loss"]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)
