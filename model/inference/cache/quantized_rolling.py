"""The quantized cache of a sliding-window layer: KIVI's groups (quantized.py) in a ring of whole groups.

A window layer's full-precision cache is a ring of its last `window` positions (rolling.py), one slot
per position. A quantized one cannot overwrite one position at a time: its keys share a scale per
channel over a group of `kv_group` positions, so a slot of the ring is a whole group. Group g lives
in slot g % slots, and a new group evicts the one `slots` groups before it, with
    slots = ceil((window + rollback) / kv_group)
enough that every position a query (or one after a rollback) can still see is kept: the stored
groups end at a group boundary, the newest kv_residual or more positions are in the full-precision
tail, and the ring is read before a chunk's new groups evict anything. What each group
holds is what `QuantizedKV` stores for it, quantized once from the same full-precision tensors, and
the newest kv_residual .. kv_residual + kv_group - 1 positions stay in the same full-precision ring,
so a window layer's attention reads exactly the keys and values it would read from a `QuantizedKV`
of the whole sequence; the positions it returns (`k_pos`) let the mask hide the rest.
The memory is fixed by the window, not the context: slots * kv_group positions of codes and scales,
and the full-precision tail, so it is kept only where that is less than the full-precision ring
(`window_cache`). Config: model.window, and CacheSpec's kv_dtype, kv_group, kv_residual.
"""

from dataclasses import replace

import torch

from .kv import tensor_bytes
from .quantized import QuantizedKV
from .rolling import FREE


class QuantizedRollingKV(QuantizedKV):
    """`QuantizedKV` whose quantized store is a ring of `slots` groups; `group_of[s]` is the group
    slot s holds (-1: none yet)."""

    def __init__(self, spec, heads: int, layouts: tuple, bits: int, window: int):
        self.slots = ring_groups(window, spec.rollback, spec.kv_group)
        super().__init__(replace(spec, max_len=self.slots * spec.kv_group), heads, layouts, bits)
        self.group_of = torch.full((self.slots,), -1, dtype=torch.long, device=spec.device)

    def update(self, start: int, *new: torch.Tensor) -> tuple:
        T, G = new[0].shape[2], self.group
        q_old, q_new = self.quantized_len(start), self.quantized_len(start + T)
        device = new[0].device
        # the ring's groups as they are, before this chunk evicts any (a long chunk's first queries
        # may need them); a group a rollback left at or after q_old is stale, so hidden
        first = self.group_of[:, None] * G + torch.arange(G, device=device)
        kept_pos = torch.where((self.group_of[:, None] >= 0) & (first < q_old), first, FREE).flatten()
        kept = self._dequantize(0, self.slots * G)
        pending = self._pending(start, new)
        fresh = [[] for _ in pending]
        for g in range(q_old // G, q_new // G):  # each new group into its slot, read back at once
            at = g % self.slots * G
            self._quantize(at, [p[:, :, g * G - q_old : (g + 1) * G - q_old] for p in pending])
            self.group_of[g % self.slots] = g
            for parts, x in zip(fresh, self._dequantize(at, G)):
                parts.append(x)
        stored = [torch.cat([k, *f, p[:, :, q_new - q_old :]], dim=2) for k, f, p in zip(kept, fresh, pending)]
        return (*stored, torch.cat([kept_pos, torch.arange(q_old, start + T, device=device)]))

    def bytes_per_token(self) -> float:
        return 0  # a fixed-size ring: a longer context costs nothing more

    def nbytes(self) -> int:
        return super().nbytes() + tensor_bytes([self.group_of])


def ring_groups(window: int, rollback: int, group: int) -> int:
    """Groups of `group` positions a quantized ring keeps for a layer of `window` (+ `rollback`)."""
    return -(-(window + rollback) // group)


def window_cache(window: int, max_len: int, rollback: int, group: int, residual: int, full: float,
                 quantized: float | None) -> str:
    """The cache a sliding-window layer keeps: "every" position (QuantizedKV, or LayerKV without
    kv_dtype) while the window is no shorter than the sequence, else a ring, the one of fewer bytes
    (positions and group indices aside): "ring" (rolling.py, the last window + rollback positions
    at `full` bytes each) or, under kv_dtype, "quantized ring" (this file; `quantized`: bytes per
    quantized position, None without kv_dtype). A quantized ring pays once the window is long
    against kv_group and kv_residual: its groups of codes and scales plus a full-precision tail of
    kv_residual + kv_group + rollback positions, against window + rollback full-precision ones."""
    if window + rollback >= max_len:
        return "every"
    sizes = {"ring": (window + rollback) * full}
    slots = ring_groups(window, rollback, group)
    if quantized is not None and slots * group < max_len:
        sizes["quantized ring"] = slots * group * quantized + (residual + group + rollback) * full
    return min(sizes, key=sizes.get)
