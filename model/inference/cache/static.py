"""The static cache: fixed buffers and tensor positions, so that decoding can be one CUDA graph.

Like gpt-fast's `KVCache` and HF's `StaticCache`, every layer owns (B, heads, max_len, dim) buffers
whose addresses never change (`mark_static_address`), new keys and values are written with
`index_copy_` at positions given as a tensor, and attention always reads all max_len slots with a
mask built from `k_pos = 0 .. max_len - 1`: slots not written yet sit after every query, so the
causal mask hides them. Nothing in a forward then depends on a Python int that changes from one
token to the next, and `torch.compile` can capture the decode step once (model/inference/decoder.py).
"""

import torch

from . import ModelCache
from .kv import LayerKV


class StaticKV(LayerKV):
    """LayerKV's buffers, at fixed addresses and written at tensor positions (index_copy_)."""

    def __init__(self, spec, heads: int, dims: tuple[int, ...]):
        super().__init__(spec, heads, dims)
        for buf in self.buffers:
            torch._dynamo.mark_static_address(buf)
        self.k_pos = torch.arange(spec.max_len, device=spec.device)

    def update(self, pos: torch.Tensor, *new: torch.Tensor) -> tuple:
        for buf, x in zip(self.buffers, new, strict=True):
            buf.index_copy_(2, pos, x)
        return (*self.buffers, self.k_pos)


class StaticCache(ModelCache):
    """A ModelCache whose positions are the tensor `input_pos`. A forward through it neither reads
    nor moves `length` (an int that changes every token would be a guard of the compiled graph):
    the caller (model/inference/decoder.py) calls `prepare(T)` before a forward of T tokens and `written(T)`
    after it, both outside the graph; `restart()` begins a new sequence on the same buffers."""

    def __init__(self, layers: list, spec):
        super().__init__(layers, spec)
        self.input_pos = torch.zeros(1, dtype=torch.long, device=spec.device)

    def restart(self) -> None:
        self.length = 0  # stale key/value slots need no clearing: positions not yet written are masked
        for layer in self.layers:
            if hasattr(layer, "reset"):  # a recurrent state does: it holds the whole past
                layer.reset()

    def prepare(self, T: int) -> None:
        self.input_pos = torch.arange(self.length, self.length + T, device=self.input_pos.device)

    def written(self, T: int) -> None:
        self.length += T

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        return self.input_pos

    def update(self, layer_idx: int, *new: torch.Tensor) -> tuple:
        return self.layer(layer_idx).update(self.input_pos, *new)

    def advance(self, n: int) -> None:
        pass  # inside a compiled forward an int attribute would be a guard, recompiling every token
