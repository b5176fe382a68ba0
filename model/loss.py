"""The language-model loss: cross-entropy of the LM head, computed chunk by chunk of tokens, so the
(B, T, vocab) logits never exist at once, in fp32 or any other dtype.

For each chunk of rows h (tokens) of the final hidden states:

    z    = softcap(h W^T), z[:, vocab_size:] = -inf   the padding rows of W get no probability
    loss = logsumexp(z) - z[target]             in fp32, summed; the mean is over non-ignored targets
    dz   = (softmax(z) - onehot(target)) / n    times 1 - (z / cap)^2 when a final softcap is on
    dh   = dz W,  dW += dz^T h                  the gradients, computed right away (0 for padding rows)

The matmuls use all rows of W, padding included: a (chunk, 50,257) slice of logits has rows that
are not 16-byte aligned in bf16, which sends cuBLAS to much slower kernels than (chunk, 50,304).

The gradients are computed in the forward pass, while the chunk's logits exist; backward only
scales them by the incoming gradient. Nothing of size (tokens, vocab) is kept for backward, and the
slice-and-upcast copies of the logits that `F.cross_entropy(logits[..., :V].float())` needs are gone.
This is the fused linear cross-entropy of Liger Kernel (arXiv:2410.10989), in plain PyTorch ops.
Matmuls run in the ambient autocast dtype, like the LM head's; the softmax runs in fp32.
"""

import math

import torch
from torch.nn import functional as F

from .softcap import softcap

# Logits per chunk (256 MiB in fp32). Fewer chunks mean larger matmuls and fewer passes over the
# fp32 LM-head gradient that each chunk adds to; more chunks, less memory. Read at each call, so a
# benchmark can sweep it (scripts/bench.py --loss_chunk).
CHUNK_ELEMENTS = 2**26


def lm_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
            cap: float = 0.0, ignore_index: int = -100,
            chunk_elements: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of softcap(h W[:vocab_size]^T) against targets, as
    `F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)` with
    logits = final_softcap(lm_head(h)[..., :vocab_size]).

    h: (N, n_embd) final hidden states; weight: (padded_vocab_size, n_embd), the LM head's;
    targets: (N,) token ids or ignore_index; cap: the final softcap (0 = off).
    """
    chunk = max(1, (chunk_elements or CHUNK_ELEMENTS) // weight.shape[0])
    chunk -= chunk % 128 if chunk > 128 else 0  # whole tiles of rows
    with_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _ChunkedCrossEntropy.apply(h, weight, targets, vocab_size, cap, ignore_index, chunk, with_grad)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, vocab_size, cap, ignore_index, chunk, with_grad):
        valid = targets != ignore_index  # (N,)
        picked = torch.where(valid, targets, 0)  # ignored rows pick class 0, then count for nothing
        n = valid.sum().clamp(min=1)  # the mean's denominator (all ignored: 0, where F.cross_entropy gives nan)
        total = torch.zeros((), device=h.device)
        grad_h = torch.empty_like(h) if with_grad else None
        grad_w = torch.zeros(weight.shape, device=weight.device) if with_grad else None  # fp32
        for start in range(0, h.shape[0], chunk):
            rows = slice(start, start + chunk)
            hc, tc, vc = h[rows], picked[rows, None], valid[rows]
            logits = F.linear(hc, weight)  # (chunk, padded vocab), in the autocast dtype if any
            chunk_fn = _chunk_fused if torch.compiler.is_compiling() else _chunk_in_place
            loss, dz = chunk_fn(logits, tc, vc, vocab_size, cap, with_grad)
            total += loss
            if with_grad:
                grad_h[rows] = (dz @ weight).float() / n
                grad_w += dz.t() @ hc
        if with_grad:
            ctx.save_for_backward(grad_h, (grad_w / n).to(weight.dtype))
        return total / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, grad_w * grad_loss, None, None, None, None, None, None


def _chunk_fused(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, vocab_size: int,
                 cap: float, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk's summed loss and, with_grad, its logit gradient dz in the logits' dtype (not yet
    divided by the token count: in fp16, dz / n would underflow before the matmuls). For
    torch.compile: one reduction (logsumexp) and one out-of-place pointwise expression over the
    (chunk, padded vocab) block, which Inductor fuses into kernels that read the logits once each."""
    cols = torch.arange(logits.shape[1], device=logits.device)
    z = softcap(logits.float(), cap) if cap else logits.float()
    z = torch.where(cols < vocab_size, z, -math.inf)  # padding: exp(-inf) = 0, no probability or gradient
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (chunk, 1)
    loss = ((lse - z.gather(1, targets)).squeeze(1) * valid).sum()
    if not with_grad:
        return loss, None
    dz = (torch.exp(z - lse) - (cols == targets).float()) * valid.unsqueeze(1)  # softmax - onehot
    if cap:  # d(cap tanh(x / cap))/dx from the capped value; -inf (padding) clamps to 0
        dz = dz * (1 - (z.clamp(min=-cap) / cap).square())
    return loss, dz.to(logits.dtype)


def _chunk_in_place(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, vocab_size: int,
                    cap: float, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same in eager mode, where each out-of-place step above would allocate and fill another
    (chunk, vocab) fp32 block: the mask, the one-hot and the scaling are done in place (on a CPU with
    GPT-2's vocabulary the fused form ran at half this speed in eager mode)."""
    z = softcap(logits.float(), cap) if cap else logits.float()
    z[:, vocab_size:] = -math.inf
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    loss = ((lse - z.gather(1, targets)).squeeze(1) * valid).sum()
    if not with_grad:
        return loss, None
    dz = torch.exp(z - lse)
    dz.scatter_add_(1, targets, torch.full_like(lse, -1.0))
    dz *= valid.unsqueeze(1)
    if cap:
        dz *= 1 - (z.clamp(min=-cap) / cap).square()
    return loss, dz.to(logits.dtype)
