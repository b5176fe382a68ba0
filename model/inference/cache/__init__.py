"""Generation caches: what each layer keeps of the tokens it has already seen.

`GPT.new_cache` builds a `ModelCache` that holds one layer cache per block. Each block's mixer builds
its own (`mixer.new_cache(spec)`), so the mixer decides what to keep: keys and values for attention
(`kv_layer_cache`), a compressed latent for MLA, a recurrent state for linear attention.

Key/value cache kinds, picked once when the cache is built (`kv_layer_cache`):
    LayerKV       every position, in the compute dtype (model/inference/cache/kv.py)
    RollingKV     sliding-window layers: a ring of the last `window` (+ rollback margin) positions
    QuantizedKV   `kv_dtype` "int8" / "int4" (KIVI, quantized.py): each stored tensor grouped as its
                  mixer says: `PerChannel` (keys), `PerToken` (values, MLA's latent), or `Columns` of both
    QuantizedRollingKV  sliding-window layers under `kv_dtype`: KIVI's groups in a ring of whole groups,
                  where that is smaller than the full-precision ring (quantized_rolling.py)
    StaticKV      `static`: fixed buffers written at tensor positions, for torch.compile (static.py)

Protocol of a layer cache (duck-typed; a new cache kind is a new class, never a branch in forward):
    update(start, *new) -> (*stored, k_pos)
        `new` are the tensors of the T new tokens, (B, heads, T, dim) each, at absolute positions
        start .. start + T - 1. Returns what attention needs over every visible position, new tokens
        included, and `k_pos`: None when the stored tensors cover positions 0 .. start + T - 1 in
        order (masks are then relative, model/mixer/masks.py), else a (S,) tensor of each stored
        entry's absolute position (a ring buffer, a static buffer with unwritten slots).
    bytes_per_token() -> int       bytes one more token of context costs (0 for a fixed-size state)
    nbytes() -> int                bytes allocated right now
    max_rollback                   positions `ModelCache.rollback` may undo (None: any; 0: a state)
"""

from dataclasses import dataclass
import torch

from ...config import check_int
from .kv import LayerKV
from .quantized import BITS, Columns, PerChannel, PerToken, QuantizedKV, position_bytes
from .quantized_rolling import QuantizedRollingKV, window_cache
from .rolling import RollingKV

KV_DTYPES = (None, *BITS)  # `kv_dtype`: the compute dtype (LayerKV), or a QuantizedKV's codes


@dataclass(frozen=True)
class CacheSpec:
    """What every layer cache is built for: batch, longest sequence, where and in which dtype.

    kv_dtype: None (the compute dtype `dtype`) or a key of KV_DTYPES ("int8", "int4").
    kv_residual: quantized caches keep at least this many newest tokens in `dtype` (KIVI's R).
    kv_group: KIVI's group size G: a per-channel tensor (keys) shares a scale over this many tokens,
        a per-token one (values, MLA's latent) over at most this many channels.
    rollback: how many positions `ModelCache.rollback` must be able to undo in caches that forget
        (ring buffers): speculative decoding's draft length.
    """

    batch_size: int
    max_len: int
    dtype: torch.dtype
    device: torch.device
    kv_dtype: str | None = None
    kv_residual: int = 32
    kv_group: int = 128
    rollback: int = 0
    static: bool = False  # fixed buffers and tensor positions, for torch.compile (static.py)

    def __post_init__(self) -> None:
        for name, minimum in (("batch_size", 1), ("max_len", 1), ("kv_residual", 0), ("kv_group", 2), ("rollback", 0)):
            check_int(name, getattr(self, name), minimum)
        if self.kv_dtype not in KV_DTYPES:
            allowed = ", ".join(repr(k) for k in KV_DTYPES)
            raise ValueError(f"kv_dtype must be one of {allowed}; got {self.kv_dtype!r}")


def kv_layer_cache(spec: CacheSpec, heads: int, layouts: tuple, window: int = 0):
    """The cache of one key/value layer, one stored tensor per entry of `layouts` (PerChannel /
    PerToken: its width, and how a quantized cache groups it): for a layer that sees only the last
    `window` positions of a longer sequence, the smaller of a ring of them and (under
    `spec.kv_dtype`) a ring of quantized groups (`window_cache`); else the `spec.kv_dtype` format.
    A static cache keeps every position (the mask applies the window)."""
    dims = tuple(t.dim for t in layouts)
    if spec.static:
        from .static import StaticKV

        return StaticKV(spec, heads, dims)
    bits = BITS.get(spec.kv_dtype)
    if window:
        itemsize = torch.empty((), dtype=spec.dtype).element_size()
        quantized = bits and position_bytes(layouts, bits, spec.kv_group, itemsize)
        kind = window_cache(window, spec.max_len, spec.rollback, spec.kv_group, spec.kv_residual,
                            sum(dims) * itemsize, quantized or None)
        if kind == "ring":
            return RollingKV(spec, heads, dims, window)
        if kind == "quantized ring":
            return QuantizedRollingKV(spec, heads, layouts, bits, window)
    if spec.kv_dtype is None:
        return LayerKV(spec, heads, dims)
    return QuantizedKV(spec, heads, layouts, bits)


class ModelCache:
    """One layer cache per block, plus `length`: the tokens already cached (the next position).

    Every layer of one forward writes at the same `start`; `GPT.forward` calls `advance(T)` after
    the last layer. `rollback(n)` forgets everything from position n on (speculative decoding).
    `first`: the layer index of layers[0] (an MTP block's own cache starts past the stack).
    """

    def __init__(self, layers: list, spec: CacheSpec, first: int = 0):
        self.layers = layers
        self.first = first
        self.spec = spec
        self.length = 0

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        """(T,) absolute positions of the next T tokens."""
        end = self.length + T
        if end > self.spec.max_len:
            raise ValueError(f"sequence of {end} tokens exceeds the cache's {self.spec.max_len} "
                             "positions (new_cache's max_len, at most model.block_size)")
        return torch.arange(self.length, end, device=device)

    def layer(self, layer_idx: int):
        """The cache of layer `layer_idx` (a recurrent layer reads and writes its state there)."""
        return self.layers[layer_idx - self.first]

    def update(self, layer_idx: int, *new: torch.Tensor) -> tuple:
        """Layer `layer_idx`'s cache at the next positions (`positions` checked they fit)."""
        return self.layer(layer_idx).update(self.length, *new)

    def advance(self, n: int) -> None:
        self.length += n

    def rollback(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll the cache back to {length}; it holds {self.length}")
        limits = [m for m in (getattr(layer, "max_rollback", None) for layer in self.layers) if m is not None]
        if limits and self.length - length > min(limits):
            why = ("a linear-attention layer's recurrent state cannot forget tokens" if min(limits) == 0
                   else f"it was built for at most {min(limits)} (CacheSpec.rollback)")
            raise ValueError(f"cannot roll the cache back by {self.length - length} positions; {why}")
        for layer in self.layers:
            if hasattr(layer, "rollback"):  # a recurrent state takes back what it absorbed
                layer.rollback(length)
        self.length = length

    def bytes_per_token(self) -> int:
        return sum(layer.bytes_per_token() for layer in self.layers)

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)


__all__ = ["CacheSpec", "Columns", "KV_DTYPES", "LayerKV", "ModelCache", "PerChannel", "PerToken", "QuantizedKV",
           "QuantizedRollingKV", "RollingKV", "kv_layer_cache"]
