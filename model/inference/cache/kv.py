"""The full key/value cache of one attention layer: every position, in preallocated buffers.

Keys and values of new tokens are written at their positions; attention then reads all positions up
to the newest. Buffers are allocated once for `max_len` positions, in the compute dtype (`CacheSpec`),
so decoding never reallocates and never casts. Protocol: model/inference/cache/__init__.py.
"""

import torch


def buffers(spec, heads: int, dims: tuple[int, ...], length: int) -> list[torch.Tensor]:
    """(B, heads, length, dim) zeros in the compute dtype, one per stored tensor."""
    return [torch.zeros(spec.batch_size, heads, length, d, dtype=spec.dtype, device=spec.device)
            for d in dims]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class LayerKV:
    """Preallocated (B, heads, max_len, dim) buffers, one per stored tensor (keys and values: two)."""

    def __init__(self, spec, heads: int, dims: tuple[int, ...]):
        self.buffers = buffers(spec, heads, dims, spec.max_len)

    def update(self, start: int, *new: torch.Tensor) -> tuple:
        end = start + new[0].shape[2]
        for buf, x in zip(self.buffers, new, strict=True):
            buf[:, :, start:end] = x
        return (*(buf[:, :, :end] for buf in self.buffers), None)

    def bytes_per_token(self) -> int:
        return sum(b.shape[1] * b.shape[3] * b.element_size() for b in self.buffers)

    def nbytes(self) -> int:
        return tensor_bytes(self.buffers)
