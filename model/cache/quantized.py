"""A quantized key/value cache (KIVI, Liu et al. 2024, arXiv:2402.02750): int8 or int4 (two per byte).

Keys have outlier channels, so they are quantized per channel: each channel of a group of
`kv_group` consecutive tokens shares one scale and zero-point. Values are quantized per token: each
token of each head has its own. Quantization is asymmetric min-max,
    q = round((x - min) / scale),  scale = (max - min) / (2^bits - 1),  x ~ q * scale + min,
with scales and zero-points (the min) stored in the compute dtype and counted in the bytes.
The newest `kv_residual` tokens (at least; up to kv_residual + kv_group - 1) stay in the compute
dtype, in a ring that also keeps `rollback` more positions, so that `ModelCache.rollback` can undo
them and re-quantize exactly. Position group g is quantized once the sequence reaches
(g + 1) * kv_group + kv_residual tokens, always from the same full-precision keys and values, so
what is stored depends only on the tokens, not on how they were chunked. Attention reads the
dequantized past (no fused kernel: the saving is memory, not time). HF counterpart:
`QuantizedCache` (quanto/HQQ backends). Config (CacheSpec): kv_dtype, kv_residual, kv_group, rollback.
"""

import torch

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


class QuantizedKV:
    """Keys and values of every position: quantized in groups of kv_group tokens, the newest kept in
    a full-precision ring. Buffers: codes (B, heads, L, dim * bits / 8) uint8 with L = max_len
    rounded up to kv_group; key scales and zeros (B, heads, L / kv_group, dim); value scales and
    zeros (B, heads, L, 1); ring (B, heads, kv_residual + kv_group + rollback, dim) per tensor."""

    def __init__(self, spec, heads: int, dims: tuple[int, ...], bits: int):
        if len(dims) != 2 or dims[0] % 2 or dims[1] % 2:
            raise ValueError(f"a quantized cache stores keys and values of even sizes; got dims {dims}")
        self.bits, self.dtype = bits, spec.dtype
        self.group, self.residual = spec.kv_group, spec.kv_residual
        self.max_rollback = spec.rollback
        B, G = spec.batch_size, spec.kv_group
        L = -(-spec.max_len // G) * G
        self.ring_size = spec.kv_residual + G + spec.rollback

        def zeros(*shape, dtype=spec.dtype):
            return torch.zeros(*shape, dtype=dtype, device=spec.device)

        dk, dv = dims
        self.codes = [zeros(B, heads, L, dk * bits // 8, dtype=torch.uint8),
                      zeros(B, heads, L, dv * bits // 8, dtype=torch.uint8)]
        self.k_scale, self.k_zero = zeros(B, heads, L // G, dk), zeros(B, heads, L // G, dk)
        self.v_scale, self.v_zero = zeros(B, heads, L, 1), zeros(B, heads, L, 1)
        self.ring = [zeros(B, heads, self.ring_size, dk), zeros(B, heads, self.ring_size, dv)]

    def quantized_len(self, length: int) -> int:
        """Positions stored quantized once the sequence has `length` tokens: whole groups that
        leave at least kv_residual newest tokens in full precision."""
        return max(0, (length - self.residual) // self.group) * self.group

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple:
        T = k.shape[2]
        q_old, q_new = self.quantized_len(start), self.quantized_len(start + T)
        # full precision, positions q_old .. start + T - 1: the ring's unquantized tail, then the new tokens
        slots = torch.arange(q_old, start, device=k.device) % self.ring_size
        pending = [torch.cat([ring.index_select(2, slots), x.to(self.dtype)], dim=2)
                   for ring, x in zip(self.ring, (k, v))]
        if q_new > q_old:
            self._quantize(q_old, [p[:, :, : q_new - q_old] for p in pending])
        keep = min(T, self.ring_size)  # the ring only ever needs the newest positions
        new_slots = torch.arange(start + T - keep, start + T, device=k.device) % self.ring_size
        for ring, x in zip(self.ring, (k, v)):
            ring.index_copy_(2, new_slots, x[:, :, T - keep :].to(self.dtype))
        past = self._dequantize(q_new)
        return (*(torch.cat([d, p[:, :, q_new - q_old :]], dim=2) for d, p in zip(past, pending)), None)

    def _quantize(self, start: int, new: list[torch.Tensor]) -> None:
        """Quantize whole groups of positions start .. start + n - 1 (start, n multiples of kv_group)."""
        k, v = new
        B, H, n, D = k.shape
        G, g0 = self.group, start // self.group
        codes, scale, zero = quantize(k.reshape(B, H, n // G, G, D), 3, self.bits, self.dtype)
        self.codes[0][:, :, start : start + n] = codes.reshape(B, H, n, -1)
        self.k_scale[:, :, g0 : g0 + n // G] = scale.squeeze(3)
        self.k_zero[:, :, g0 : g0 + n // G] = zero.squeeze(3)
        codes, scale, zero = quantize(v, 3, self.bits, self.dtype)
        self.codes[1][:, :, start : start + n] = codes
        self.v_scale[:, :, start : start + n], self.v_zero[:, :, start : start + n] = scale, zero

    def _dequantize(self, n: int) -> list[torch.Tensor]:
        """Keys and values of positions 0 .. n - 1, in the compute dtype."""
        B, H = self.codes[0].shape[:2]
        G = self.group
        k = dequantize(self.codes[0][:, :, :n].reshape(B, H, n // G, G, -1),
                       self.k_scale[:, :, : n // G, None], self.k_zero[:, :, : n // G, None], self.bits)
        v = dequantize(self.codes[1][:, :, :n], self.v_scale[:, :, :n], self.v_zero[:, :, :n], self.bits)
        return [k.reshape(B, H, n, -1).to(self.dtype), v.to(self.dtype)]

    def bytes_per_token(self) -> float:
        """Per token of one sequence: codes of a key and a value, the value's scale and zero, and
        1/kv_group of the keys' per-channel scales and zeros. The ring is a fixed cost."""
        B, _, L, _ = self.codes[0].shape
        grows = [*self.codes, self.k_scale, self.k_zero, self.v_scale, self.v_zero]
        return sum(t.numel() * t.element_size() for t in grows) / (B * L)

    def nbytes(self) -> int:
        tensors = [*self.codes, self.k_scale, self.k_zero, self.v_scale, self.v_zero, *self.ring]
        return sum(t.numel() * t.element_size() for t in tensors)
