"""llama.cpp's k-quants, Q4_K, Q5_K and Q6_K, written byte for byte as llama-quantize writes them.

A k-quant stores a row in super-blocks of 256 weights, each with one fp16 scale `d`, and gives every
sub-block a small integer code of that scale, so a scale costs a few bits, not 16:
- Q4_K and Q5_K: 8 sub-blocks of 32, w ~ d*sc*q - dmin*m with q in 0..15 (0..31) and 6-bit codes
  sc and m (4.5 and 5.5 bits a weight). A sub-block's scale and min come from a search over 21 (16)
  steps around max-min that minimises the squared error weighted by rms(x) + |x| (ggml's
  `make_qkx2_quants`).
- Q6_K: 16 sub-blocks of 16, w ~ d*sc*(q - 32) with q in 0..63 and an int8 code sc (6.5625 bits a
  weight). A sub-block's scale is the best of 19 steps around -32/max, weighted by x^2
  (`make_qx_quants`).
The `gguf` package reads these types but cannot write them. This module repeats ggml's reference
quantizer (`quantize_row_q*_K_ref`, what llama-quantize runs without an importance matrix): every
operation in float32, in the C code's order, each sum taken one term at a time, so that the bytes
are the same. tests/test_gguf_llama_cpp.py compares them with llama.cpp's.
Everything runs under np.errstate(all="ignore") (`blockwise`): C's `c ? a / b : 0` is
`np.where(c, a / b, 0)`, whose untaken branch may divide by zero.
"""

import numpy as np

F = np.float32
QK_K = 256  # weights per super-block
CHUNK = 1 << 14  # blocks quantized at once, to bound the temporaries (~16 MB each for super-blocks)


def nearest(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int, by its own trick: adding 1.5 * 2**23 leaves the rounded (half to even)
    integer in the low mantissa bits. Beyond 2**22, and for inf and NaN, it gives what C gives."""
    return ((v.astype(F) + F(12582912)).view(np.int32) & 0x7FFFFF) - 0x400000


def in_order(terms: np.ndarray) -> np.ndarray:
    """The sum over the first axis, one term after another, as a C loop adds them (numpy's sum
    would pair them)."""
    total = terms[0].copy()
    for term in terms[1:]:
        total += term
    return total


# Both searches take a sub-block per column, x (values, n), so that numpy's row-wise steps are long.
def scale_and_min(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, nstep: int, mad: bool = False):
    """ggml's make_qkx2_quants on x (sub-block size, n) with weights w: (scale, -min, codes in
    0..nmax). The error is weighted squared, or with `mad` weighted absolute (Q2_K's use_mad)."""
    lo, hi = np.minimum(x.min(axis=0), 0), x.max(axis=0)
    flat = hi == lo
    sum_w, sum_x = in_order(w), in_order(w * x)

    def codes(iscale, low):
        return np.clip(nearest(iscale * (x - low)), 0, nmax)

    def error(scale, low, q):
        diff = scale * q + low - x
        return in_order(w * (np.abs(diff) if mad else diff * diff))

    iscale = F(nmax) / (hi - lo)
    scale, low, best_q = F(1) / iscale, lo, codes(iscale, lo)
    best = error(scale, low, best_q.astype(F))
    for step in range(nstep + 1):  # the min found so far moves each later step's grid, as in C
        q = codes((F(rmin) + F(0.1) * F(step) + F(nmax)) / (hi - low), low).astype(F)
        sum_l, sum_l2, sum_xl = in_order(w * q), in_order(w * q * q), in_order(w * q * x)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        positive = this_min > 0
        this_min = np.where(positive, F(0), this_min)
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        cur = error(this_scale, this_min, q)
        better = ok & (cur < best)
        best = np.where(better, cur, best)
        scale, low = np.where(better, this_scale, scale), np.where(better, this_min, low)
        best_q = np.where(better, q.astype(np.int32), best_q)
    return np.where(flat, F(0), scale), -np.where(flat, lo, low), np.where(flat, 0, best_q)


def symmetric_scale(x: np.ndarray, nmax: int):
    """ggml's make_qx_quants with rmse_type 1 on x (16, n): (scale, codes in 0..2*nmax-1)."""
    big = first_largest(x, axis=0)
    zero = np.abs(big) < F(1e-15)
    w = x * x

    def fit(iscale):
        q = np.clip(nearest(iscale * x), -nmax, nmax - 1)
        qf = q.astype(F)
        return q, in_order(w * x * qf), in_order(w * qf * qf)

    q, sum_lx, sum_l2 = fit(F(-nmax) / big)
    scale = np.where(sum_l2 != 0, sum_lx / sum_l2, F(0))
    best = scale * sum_lx
    for step in (*range(-9, 0), *range(1, 10)):
        q_new, sum_lx, sum_l2 = fit(-(F(nmax) + F(0.1) * F(step)) / big)
        better = (sum_l2 > 0) & (sum_lx * sum_lx > best * sum_l2)
        scale = np.where(better, sum_lx / sum_l2, scale)
        best = np.where(better, scale * sum_lx, best)
        q = np.where(better, q_new, q)
    return np.where(zero, F(0), scale), np.where(zero, 0, q + nmax)


def largest(v: np.ndarray) -> np.ndarray:
    """Each row's largest value, or 0 if none is larger: C's `if (v > m) m = v` from m = 0, which
    passes over NaN (numpy's max would return it)."""
    return np.where(np.isnan(v), F(0), v).max(axis=1).clip(min=0)


def first_largest(v: np.ndarray, axis: int) -> np.ndarray:
    """Along `axis`, the first value of largest magnitude, sign kept, or 0 if none is above 0: C's
    `if (fabsf(v) > m) { m = fabsf(v); max = v; }` from m = 0, which passes over NaN."""
    size = np.where(np.isnan(v), F(-1), np.abs(v))
    first = np.expand_dims(size.argmax(axis=axis), axis)
    found = np.take_along_axis(size, first, axis=axis).squeeze(axis) > 0
    return np.where(found, np.take_along_axis(v, first, axis=axis).squeeze(axis), F(0))


def fp16_bytes(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16)[:, None].view(np.uint8)


def _q45_k(x: np.ndarray, nmax: int, rmin: float, nstep: int) -> tuple[np.ndarray, ...]:
    """Q4_K and Q5_K's shared part on super-blocks x (n, 256): (d, dmin, 12 scale bytes, codes)."""
    n = len(x)
    sub = np.ascontiguousarray(x.reshape(n * 8, 32).T)
    weights = np.sqrt(in_order(sub * sub) / F(32)) + np.abs(sub)
    scales, mins, q = scale_and_min(sub, weights, nmax, rmin, nstep)
    scales, mins, q = scales.reshape(n, 8), mins.reshape(n, 8), q.T.reshape(n, 8, 32)
    max_scale, max_min = largest(scales), largest(mins)
    inv_scale = np.where(max_scale > 0, F(63) / max_scale, F(0))
    inv_min = np.where(max_min > 0, F(63) / max_min, F(0))
    ls = np.minimum(63, nearest(inv_scale[:, None] * scales) & 0xFF)  # C stores it in a uint8 first
    lm = np.minimum(63, nearest(inv_min[:, None] * mins) & 0xFF)
    packed = np.concatenate([ls[:, :4] | (ls[:, 4:] >> 4) << 6, lm[:, :4] | (lm[:, 4:] >> 4) << 6,
                             (ls[:, 4:] & 0xF) | (lm[:, 4:] & 0xF) << 4], axis=1).astype(np.uint8)
    d, dmin = (max_scale / F(63)).astype(np.float16), (max_min / F(63)).astype(np.float16)
    step = d.astype(F)[:, None] * ls.astype(F)
    offset = dmin.astype(F)[:, None] * lm.astype(F)
    requant = np.clip(nearest((x.reshape(n, 8, 32) + offset[..., None]) / step[..., None]), 0, nmax)
    q = np.where((step != 0)[..., None], requant, q).reshape(n, 4, 2, 32)  # a zero step keeps the search's
    return d, dmin, packed, q


def q4_k(x: np.ndarray) -> np.ndarray:
    d, dmin, packed, q = _q45_k(x, 15, -1.0, 20)
    qs = (q[:, :, 0] | q[:, :, 1] << 4).reshape(len(x), 128).astype(np.uint8)
    return np.concatenate([fp16_bytes(d), fp16_bytes(dmin), packed, qs], axis=1)


def q5_k(x: np.ndarray) -> np.ndarray:
    d, dmin, packed, q = _q45_k(x, 31, -0.5, 15)
    qs = ((q[:, :, 0] & 0xF) | (q[:, :, 1] & 0xF) << 4).reshape(len(x), 128).astype(np.uint8)
    bits = (q >> 4).reshape(len(x), 8, 32) << np.arange(8)[None, :, None]  # bit 2i, 2i+1: pair i's high bits
    return np.concatenate([fp16_bytes(d), fp16_bytes(dmin), packed, bits.sum(axis=1).astype(np.uint8), qs], axis=1)


def q6_k(x: np.ndarray) -> np.ndarray:
    n = len(x)
    scales, q = symmetric_scale(np.ascontiguousarray(x.reshape(n * 16, 16).T), 32)
    scales, q = scales.reshape(n, 16), q.T.reshape(n, 16, 16)
    top = first_largest(scales, axis=1)
    empty = np.abs(top) < F(1e-15)
    iscale = F(-128) / top
    d = np.where(empty, F(0), F(1) / iscale).astype(np.float16)
    codes = np.where(empty[:, None], 0, np.minimum(127, nearest(iscale[:, None] * scales)))
    step = d.astype(F)[:, None] * codes.astype(F)
    requant = np.clip(nearest(x.reshape(n, 16, 16) / step[..., None]), -32, 31) + 32
    q = np.where((step != 0)[..., None], requant, q).reshape(n, 2, 4, 32)  # (half, quarter, l)
    ql = np.stack([q[:, :, 0] & 0xF | (q[:, :, 2] & 0xF) << 4, q[:, :, 1] & 0xF | (q[:, :, 3] & 0xF) << 4], 1)
    qh = (q >> 4 << (2 * np.arange(4))[None, None, :, None]).sum(axis=2)
    parts = [ql.transpose(0, 2, 1, 3).reshape(n, 128), qh.reshape(n, 64), codes.astype(np.int8).view(np.uint8)]
    out = np.concatenate([p.astype(np.uint8) for p in parts] + [fp16_bytes(d)], axis=1)
    return np.where(empty[:, None], 0, out).astype(np.uint8)


QUANTIZERS = {"Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}
# llama.cpp's mixes -> their k-quant for the other matrices
MIXES = {"q5_k_m": "Q5_K", "q4_k_m": "Q4_K", "q3_k_l": "Q3_K", "q3_k_m": "Q3_K"}


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of n layers, and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mixed(names: list[str], mix: str, n_layer: int, n_expert: int) -> dict[str, str]:
    """llama-quantize's q5_k_m, q4_k_m, q3_k_l or q3_k_m (llama_tensor_get_type) for the matrices
    `names` it quantizes: the output matrix (the token embeddings if tied) in Q6_K; the value-like
    matrices (attn_v, attn_qkv, attn_kv_b), ffn_down and attn_output by the mix's rules below (with 8
    experts, value and key matrices in Q8_0); the rest in the mix's k-quant. Counted in llama.cpp's
    order, by layer, then by name. Its rules for 70B llamas (80 layers) and Falcon are not repeated."""
    def layer(name: str) -> int:
        return int(name.split(".")[1]) if name.startswith("blk.") else -1

    base = MIXES[mix]
    value = {"q3_k_m": lambda i, n: "Q5_K" if i < 2 else "Q4_K", "q3_k_l": lambda i, n: "Q5_K"}.get(
        mix, lambda i, n: "Q6_K" if more_bits(i, n) else base)  # the i-th value-like matrix of n
    down = {"q3_k_m": lambda i, n: "Q5_K" if i < n // 16 else "Q4_K", "q3_k_l": lambda i, n: "Q5_K"}.get(
        mix, lambda i, n: "Q6_K" if more_bits(i, n) else base)  # ffn_down of layer i of n
    if n_expert == 8:
        attn_output = "Q5_K" if mix in ("q4_k_m", "q3_k_m") else base
    else:
        attn_output = {"q3_k_m": "Q4_K", "q3_k_l": "Q5_K"}.get(mix, base)
    order = sorted(names, key=lambda name: (layer(name), name))
    value_like = [n for n in order if any(f"attn_{k}.weight" in n for k in ("qkv", "kv_b", "v"))]
    out, i_value, i_down = {}, 0, 0
    for name in order:
        kind = base
        if name == "output.weight" or (name == "token_embd.weight" and "output.weight" not in names):
            kind = "Q6_K"
        elif name in value_like:
            kind = "Q8_0" if n_expert == 8 else value(i_value, len(value_like))
            i_value += 1
        elif "attn_k.weight" in name:
            kind = "Q8_0" if n_expert == 8 else kind
        elif "ffn_down" in name:
            kind = down(layer(name) if n_expert > 1 else i_down, n_layer)
            i_down += 1
        elif "attn_output.weight" in name:
            kind = attn_output
        out[name] = kind
    return out


def blockwise(array: np.ndarray, quantizer, per_block: int) -> np.ndarray:
    """`array` (..., cols), cols a multiple of `per_block`, as `quantizer`'s bytes, block by block."""
    blocks = np.ascontiguousarray(array, dtype=F).reshape(-1, per_block)
    with np.errstate(all="ignore"):  # IEEE's inf and NaN, as in C: huge weights overflow fp16 scales
        out = np.concatenate([quantizer(blocks[i:i + CHUNK]) for i in range(0, len(blocks), CHUNK)])
    return out.reshape(*array.shape[:-1], -1)
