"""The rolling key/value cache of a sliding-window layer: a ring buffer of the last positions.

A layer that attends to the last `window` positions never needs older keys, so its cache is a ring
of `window + rollback` slots: position p lives in slot p % size, and `k_pos` records which position
each slot holds (FREE for slots never written, which the causal mask then hides). Memory is bounded
by the window, not the context (Mistral's rolling buffer cache, arXiv:2310.06825; HF
`StaticSlidingWindowLayer`, `DynamicSlidingWindowLayer`). The `rollback` margin (CacheSpec.rollback)
keeps the keys that `ModelCache.rollback` by up to that many positions would need again, so
speculative decoding stays exact. Config: model.window, model.global_every (which layers are local).
"""

import torch

from .kv import buffers, tensor_bytes

FREE = 2**62  # the position of a slot that holds nothing: after every query, so always masked


class RollingKV:
    """(B, heads, window + rollback, dim) ring buffers, one per stored tensor, and their positions."""

    def __init__(self, spec, heads: int, dims: tuple[int, ...], window: int):
        self.window = window
        self.size = window + spec.rollback
        self.max_rollback = spec.rollback
        self.buffers = buffers(spec, heads, dims, self.size)
        self.k_pos = torch.full((self.size,), FREE, dtype=torch.long, device=spec.device)

    def update(self, start: int, *new: torch.Tensor) -> tuple:
        T = new[0].shape[2]
        pos = torch.arange(start, start + T, device=self.k_pos.device)
        if T + self.window - 1 <= self.size:  # the ring keeps every key these queries need
            self._write(pos, new)
            return (*self.buffers, self.k_pos)
        # A long chunk (a prefill): its first queries need ring entries its own writes would evict, so
        # attention gets the ring (without entries a rollback left at positions >= start) and the chunk.
        old_pos = torch.where(self.k_pos < start, self.k_pos, FREE)
        stored = [torch.cat([buf, x], dim=2) for buf, x in zip(self.buffers, new, strict=True)]
        self._write(pos[-self.size:], [x[:, :, -self.size:] for x in new])
        return (*stored, torch.cat([old_pos, pos]))

    def _write(self, pos: torch.Tensor, new) -> None:
        slots = pos % self.size
        for buf, x in zip(self.buffers, new, strict=True):
            buf.index_copy_(2, slots, x)
        self.k_pos.index_copy_(0, slots, pos)

    def bytes_per_token(self) -> int:
        return 0  # a fixed-size ring: a longer context costs nothing more

    def nbytes(self) -> int:
        return tensor_bytes([*self.buffers, self.k_pos])
