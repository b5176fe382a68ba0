"""A quantized key/value cache (KIVI, Liu et al. 2024, arXiv:2402.02750): int8 or int4 (two per byte).

KIVI groups each cached tensor along the axis its outliers do not share. Keys have outlier
channels, so they are quantized per channel (`PerChannel`): each channel of a group of `kv_group`
consecutive tokens shares one scale and zero-point. Values are quantized per token (`PerToken`):
each token's channels, in groups of at most `kv_group`, share one (KIVI's one group size G for both).
Quantization is asymmetric min-max,
    q = round((x - min) / scale),  scale = (max - min) / (2^bits - 1),  x ~ q * scale + min,
with scales and zero-points (the min) stored in the compute dtype and counted in the bytes. A
per-token layout may store them as uint8 codes instead (`double`): QLoRA's double quantization.
Each mixer says how its tensors are grouped (GQA: a per-channel key and a per-token value per head;
MLA: one row of a per-token latent beside per-channel rotary and indexer keys, model/mixer/mla.py).
The newest `kv_residual` tokens (at least; up to kv_residual + kv_group - 1) stay in the compute
dtype, in a ring that also keeps `rollback` more positions, so that `ModelCache.rollback` can undo
them and re-quantize exactly. Position group g is quantized once the sequence reaches
(g + 1) * kv_group + kv_residual tokens, always from the same full-precision tensors, so what is
stored depends only on the tokens, not on how they were chunked. Attention reads the dequantized
past (no fused kernel: the saving is memory, not time). HF counterpart: `QuantizedCache`
(quanto/HQQ backends). Config (CacheSpec): kv_dtype, kv_residual, kv_group, rollback.
"""

import math

import torch

from .kv import tensor_bytes

BITS = {"int8": 8, "int4": 4}


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes (..., D) -> bytes: as they are for 8 bits, two per byte (low nibble first) for 4."""
    return q if bits == 8 else q[..., 0::2] | (q[..., 1::2] << 4)


def unpack(p: torch.Tensor, bits: int) -> torch.Tensor:
    return p if bits == 8 else torch.stack([p & 15, p >> 4], dim=-1).flatten(-2)


def quantize(x: torch.Tensor, dim: int, bits: int, dtype: torch.dtype) -> tuple:
    """Min-max quantization of x over `dim` -> (packed codes, scale, zero), scale and zero in
    `dtype` with size 1 along `dim`. Codes are computed with the stored (rounded) scale and zero."""
    x = x.float()
    zero = x.amin(dim, keepdim=True).to(dtype)
    levels = 2**bits - 1
    scale = ((x.amax(dim, keepdim=True) - zero.float()) / levels).to(dtype)
    safe = scale.float().clamp_min(torch.finfo(dtype).tiny)  # a constant group has scale 0
    q = ((x - zero.float()) / safe).round_().clamp_(0, levels).to(torch.uint8)
    return pack(q, bits), scale, zero


def dequantize(p: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    return unpack(p, bits).float() * scale.float() + zero.float()


def double_quantize(x: torch.Tensor, G: int, bits: int, dtype: torch.dtype) -> tuple:
    """Min-max per token over the last dim, as `quantize(x, 3, ...)`, but each token's zero and scale
    are stored as uint8 codes on a grid (base, step) shared by G consecutive tokens (QLoRA's double
    quantization, arXiv:2305.14314): 2 bytes a token instead of two values in the compute dtype.
    The zero is rounded down and the scale up, so the token's range stays covered (exactly in fp32;
    in bf16 up to the grid's own rounding, which the codes' clamp absorbs). x (B, H, n, w), n
    a multiple of G -> packed codes, scale codes, zero codes (B, H, n, 1), scale grid, zero grid
    (B, H, n / G, 2)."""
    x = x.float()
    levels = 2**bits - 1
    zero_codes, zero_grid, zero = _on_grid(x.amin(-1, keepdim=True), G, dtype, torch.floor)
    scale_codes, scale_grid, scale = _on_grid((x.amax(-1, keepdim=True) - zero) / levels, G, dtype, torch.ceil)
    q = ((x - zero) / scale.clamp_min(torch.finfo(dtype).tiny)).round_().clamp_(0, levels).to(torch.uint8)
    return pack(q, bits), scale_codes, zero_codes, scale_grid, zero_grid


def _on_grid(v: torch.Tensor, G: int, dtype: torch.dtype, to_int) -> tuple:
    """v (B, H, n, 1) -> uint8 codes (B, H, n, 1), the grid of each G tokens, base and step in
    `dtype` (B, H, n / G, 2), and the values the codes stand for (`grid_values`)."""
    B, H, n, _ = v.shape
    blocks = v.reshape(B, H, n // G, G)
    base = blocks.amin(-1, keepdim=True).to(dtype).float()
    step = ((blocks.amax(-1, keepdim=True) - base) / 255).to(dtype).float()
    codes = to_int((blocks - base) / step.clamp_min(torch.finfo(dtype).tiny)).clamp_(0, 255)
    grid = torch.cat([base, step], dim=-1).to(dtype)
    return codes.to(torch.uint8).reshape(B, H, n, 1), grid, grid_values(codes.reshape(B, H, n, 1), grid, G)


def grid_values(codes: torch.Tensor, grid: torch.Tensor, G: int) -> torch.Tensor:
    """codes (B, H, n, 1) on the grids (B, H, n / G, 2) of each G tokens -> values (B, H, n, 1), fp32."""
    base, step = grid.float().repeat_interleave(G, dim=2).unbind(-1)
    return (base + codes[..., 0].float() * step)[..., None]


class PerChannel:
    """KIVI's keys: each channel of `kv_group` consecutive tokens shares a scale and zero, so an
    outlier channel widens only its own range. Scales per head: (L / kv_group, dim). min_bits: the
    fewest bits its codes take whatever kv_dtype asks (DSA's indexer keys: 8)."""

    def __init__(self, dim: int, min_bits: int = 0):
        self.dim, self.min_bits = dim, min_bits
        self.columns = (self,)

    def channel_groups(self, G: int) -> tuple[int, ...]:
        return (self.dim,)  # one scale per channel: the codes of a token are one group

    def params(self, L: int, G: int) -> list[tuple]:
        """What is stored beside the codes of L positions, per head: (shape, dtype or None for the
        compute dtype, "token" for a row per position or "group" for a row per G): a scale and a zero."""
        return [((L // G, self.dim), None, "group")] * 2

    def quantize(self, x: torch.Tensor, G: int, bits: int, dtype: torch.dtype) -> tuple:
        """x (B, H, n, dim), n a multiple of G -> codes (B, H, n, dim * bits / 8), scale, zero (B, H, n / G, dim)."""
        B, H, n, D = x.shape
        codes, scale, zero = quantize(x.reshape(B, H, n // G, G, D), 3, bits, dtype)
        return codes.reshape(B, H, n, -1), scale.squeeze(3), zero.squeeze(3)

    def dequantize(self, codes, scale, zero, G: int, bits: int) -> torch.Tensor:
        B, H, n, C = codes.shape
        x = dequantize(codes.reshape(B, H, n // G, G, C), scale[:, :, :, None], zero[:, :, :, None], bits)
        return x.reshape(B, H, n, self.dim)


class PerToken:
    """KIVI's values (and MLA's latent): each token's channels share a scale and zero, in groups of
    at most `kv_group` channels that never straddle two `parts`. Scales per head: (L, groups); with
    `double`, uint8 codes (L, groups) on grids of (base, step) per kv_group tokens (L / G, 2 groups)."""

    min_bits = 0

    def __init__(self, *parts: int, double: bool = False):
        self.parts = tuple(p for p in parts if p)
        self.dim, self.double = sum(self.parts), double
        self.columns = (self,)

    def channel_groups(self, G: int) -> tuple[int, ...]:
        return tuple(min(G, part - i) for part in self.parts for i in range(0, part, G))

    def params(self, L: int, G: int) -> list[tuple]:
        """A scale and a zero per token and group (PerChannel.params says the format); with `double`,
        their codes, then their grids."""
        groups = len(self.channel_groups(G))
        if not self.double:
            return [((L, groups), None, "token")] * 2
        return [((L, groups), torch.uint8, "token")] * 2 + [((L // G, 2 * groups), None, "group")] * 2

    def quantize(self, x: torch.Tensor, G: int, bits: int, dtype: torch.dtype) -> tuple:
        """x (B, H, n, dim) -> codes (B, H, n, dim * bits / 8), then what `params` lists."""
        parts = x.split(self.channel_groups(G), dim=-1)
        if self.double:
            groups = [double_quantize(p, G, bits, dtype) for p in parts]
        else:
            groups = [quantize(p, 3, bits, dtype) for p in parts]
        return tuple(torch.cat(t, dim=-1) for t in zip(*groups))

    def dequantize(self, codes, *params, G: int, bits: int) -> torch.Tensor:
        widths = [w * bits // 8 for w in self.channel_groups(G)]
        if self.double:  # codes of scale and zero, one column per group; grids, two columns per group
            scale_codes, zero_codes, scale_grid, zero_grid = (p.split(1 if i < 2 else 2, dim=-1)
                                                              for i, p in enumerate(params))
            scales = [grid_values(c, g, G) for c, g in zip(scale_codes, scale_grid)]
            zeros = [grid_values(c, g, G) for c, g in zip(zero_codes, zero_grid)]
        else:
            scales, zeros = (p.split(1, dim=-1) for p in params)
        groups = zip(codes.split(widths, dim=-1), scales, zeros)
        return torch.cat([dequantize(c, s, z, bits) for c, s, z in groups], dim=-1)


class Columns:
    """One stored tensor whose channels are laid out side by side in different ways, e.g. MLA's row:
    Columns(PerToken(latent), PerChannel(rotary key), PerChannel(indexer key, min_bits=8)). One
    code buffer, each column's codes in its own bits side by side, scales per column block."""

    def __init__(self, *columns):
        self.columns = tuple(c for c in columns if c.dim)
        self.dim = sum(c.dim for c in self.columns)

    def channel_groups(self, G: int) -> tuple[int, ...]:
        return tuple(w for c in self.columns for w in c.channel_groups(G))


def position_bytes(layouts: tuple, bits: int, group: int, dtype_bytes: int) -> float:
    """Bytes a QuantizedKV stores per position and head: the codes, and the scales and zeros (a
    per-channel column's shared by `group` positions)."""
    codes = sum(c.dim * max(bits, c.min_bits) / 8 for t in layouts for c in t.columns)
    params = sum(math.prod(shape) * (dtype_bytes if dtype is None else dtype.itemsize)
                 for t in layouts for c in t.columns for shape, dtype, _ in c.params(group, group))
    return codes + params / group


class QuantizedKV:
    """The stored tensors of every position (`layouts`: each one's width and grouping), quantized in
    groups of kv_group tokens, the newest kept in a full-precision ring. Buffers per tensor: codes
    (B, heads, L, dim * bits / 8) uint8 with L = max_len rounded up to kv_group (per column, bits =
    max(bits, its min_bits)); scales and zeros as its layout's `params` say; ring (B, heads, kv_residual +
    kv_group + rollback, dim)."""

    def __init__(self, spec, heads: int, layouts: tuple, bits: int):
        G = spec.kv_group
        widths = [w for t in layouts for c in t.columns if max(bits, c.min_bits) == 4 for w in c.channel_groups(G)]
        if any(w % 2 for w in widths):
            raise ValueError(f"a quantized cache packs codes in pairs, so every channel group must be even; "
                             f"got groups of {widths} channels (kv_group={G})")
        self.layouts, self.bits, self.dtype = layouts, bits, spec.dtype
        self.group, self.residual = G, spec.kv_residual
        self.max_rollback = spec.rollback
        B = spec.batch_size
        L = -(-spec.max_len // G) * G
        self.ring_size = spec.kv_residual + G + spec.rollback

        def zeros(*shape, dtype=spec.dtype):
            return torch.zeros(*shape, dtype=dtype, device=spec.device)

        self.ring = [zeros(B, heads, self.ring_size, t.dim) for t in layouts]
        # column blocks: (stored tensor, first channel, its codes' first byte, layout, bits), each
        # with its own scales and zeros
        self.blocks, widths = [], []
        for i, t in enumerate(layouts):
            first = byte = 0
            for column in t.columns:
                b = max(bits, column.min_bits)
                self.blocks.append((i, first, byte, column, b))
                first, byte = first + column.dim, byte + column.dim * b // 8
            widths.append(byte)
        self.codes = [zeros(B, heads, L, w, dtype=torch.uint8) for w in widths]
        # per column block: its scales and zeros (or their codes and grids), as `params` lists them,
        # and whether each has a row per position ("token") or per kv_group positions ("group")
        listed = [c.params(L, G) for _, _, _, c, _ in self.blocks]
        self.params = [[zeros(B, heads, *shape, dtype=dtype or spec.dtype) for shape, dtype, _ in p]
                       for p in listed]
        self.per = [[per for _, _, per in p] for p in listed]

    def quantized_len(self, length: int) -> int:
        """Positions stored quantized once the sequence has `length` tokens: whole groups that
        leave at least kv_residual newest tokens in full precision."""
        return max(0, (length - self.residual) // self.group) * self.group

    def update(self, start: int, *new: torch.Tensor) -> tuple:
        T = new[0].shape[2]
        q_old, q_new = self.quantized_len(start), self.quantized_len(start + T)
        pending = self._pending(start, new)
        if q_new > q_old:
            self._quantize(q_old, [p[:, :, : q_new - q_old] for p in pending])
        past = self._dequantize(0, q_new)
        return (*(torch.cat([d, p[:, :, q_new - q_old :]], dim=2) for d, p in zip(past, pending)), None)

    def _pending(self, start: int, new: tuple) -> list[torch.Tensor]:
        """Full precision, positions quantized_len(start) .. start + T - 1: the ring's unquantized
        tail, then the new tokens, which then join the ring (it only ever needs the newest)."""
        T, device = new[0].shape[2], new[0].device
        slots = torch.arange(self.quantized_len(start), start, device=device) % self.ring_size
        pending = [torch.cat([ring.index_select(2, slots), x.to(self.dtype)], dim=2)
                   for ring, x in zip(self.ring, new, strict=True)]
        keep = min(T, self.ring_size)
        new_slots = torch.arange(start + T - keep, start + T, device=device) % self.ring_size
        for ring, x in zip(self.ring, new):
            ring.index_copy_(2, new_slots, x[:, :, T - keep :].to(self.dtype))
        return pending

    def _quantize(self, start: int, new: list[torch.Tensor]) -> None:
        """Quantize whole groups of positions start .. start + n - 1 (start, n multiples of kv_group)."""
        n, G = new[0].shape[2], self.group
        for b, (i, first, byte, column, bits) in enumerate(self.blocks):
            codes, *params = column.quantize(new[i][..., first : first + column.dim], G, bits, self.dtype)
            self.codes[i][:, :, start : start + n, byte : byte + codes.shape[-1]] = codes
            for stored, rows, value in zip(self.params[b], self._rows(b, start, n), params, strict=True):
                stored[:, :, rows] = value

    def _dequantize(self, start: int, n: int) -> list[torch.Tensor]:
        """Every stored tensor at storage positions start .. start + n - 1 (whole groups), in the
        compute dtype."""
        out = [[] for _ in self.codes]
        for b, ((i, _, byte, column, bits), params) in enumerate(zip(self.blocks, self.params)):
            codes = self.codes[i][:, :, start : start + n, byte : byte + column.dim * bits // 8]
            stored = [p[:, :, rows] for p, rows in zip(params, self._rows(b, start, n))]
            out[i].append(column.dequantize(codes, *stored, G=self.group, bits=bits))
        return [torch.cat(parts, dim=-1).to(self.dtype) for parts in out]

    def _rows(self, b: int, start: int, n: int) -> list[slice]:
        """The rows of each of column block b's params that hold positions start .. start + n - 1."""
        G = self.group
        return [slice(start, start + n) if per == "token" else slice(start // G, (start + n) // G)
                for per in self.per[b]]

    def bytes_per_token(self) -> float:
        """Per token of one sequence: the codes, and the scales and zeros (per token, or 1/kv_group
        of a per-channel tensor's). The ring is a fixed cost."""
        B, _, L, _ = self.codes[0].shape
        return tensor_bytes([*self.codes, *(p for params in self.params for p in params)]) / (B * L)

    def nbytes(self) -> int:
        return tensor_bytes([*self.codes, *(p for ps in self.params for p in ps), *self.ring])
