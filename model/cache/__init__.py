"""Generation caches: what each layer keeps of the tokens it has already seen.

`GPT.new_cache` builds a `ModelCache` that holds one layer cache per block. Each block's mixer builds
its own (`mixer.new_cache(spec)`), so the mixer decides what to keep: keys and values for attention
(model/cache/kv.py), a compressed latent for MLA, a recurrent state for linear attention.

Protocol of a layer cache (duck-typed; a new cache kind is a new class, never a branch in forward):
    update(start, *new) -> (*stored, k_pos)
        `new` are the tensors of the T new tokens, (B, heads, T, dim) each, at absolute positions
        start .. start + T - 1. Returns what attention needs over every visible position, new tokens
        included, and `k_pos`: None when the stored tensors cover positions 0 .. start + T - 1 in
        order (masks are then relative, model/mixer/masks.py), else a (S,) tensor of each stored
        entry's absolute position (a ring buffer, a static buffer with unwritten slots).
    bytes_per_token() -> int       bytes one more token of context costs (0 for a fixed-size state)
    nbytes() -> int                bytes allocated right now
"""

from dataclasses import dataclass

import torch

from .kv import LayerKV


@dataclass(frozen=True)
class CacheSpec:
    """What every layer cache is built for: batch, longest sequence, where and in which dtype."""

    batch_size: int
    max_len: int
    dtype: torch.dtype
    device: torch.device


class ModelCache:
    """One layer cache per block, plus `length`: the tokens already cached (the next position).

    Every layer of one forward writes at the same `start`; `GPT.forward` calls `advance(T)` after
    the last layer. `rollback(n)` forgets everything from position n on (speculative decoding).
    """

    def __init__(self, layers: list, spec: CacheSpec):
        self.layers = layers
        self.spec = spec
        self.max_len = spec.max_len
        self.length = 0

    def update(self, layer_idx: int, *new: torch.Tensor) -> tuple:
        end = self.length + new[0].shape[2]
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} positions; {end} requested")
        return self.layers[layer_idx].update(self.length, *new)

    def advance(self, n: int) -> None:
        self.length += n

    def rollback(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll the cache back to {length}; it holds {self.length}")
        self.length = length

    def bytes_per_token(self) -> int:
        return sum(layer.bytes_per_token() for layer in self.layers)

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)


__all__ = ["CacheSpec", "LayerKV", "ModelCache"]
