"""llama.cpp's 3- and 2-bit k-quants, Q3_K and Q2_K, written byte for byte as llama-quantize writes them.

Both store a row in super-blocks of 256 weights with 16 sub-blocks of 16 (train/gguf_kquants.py has
the larger k-quants and the shared helpers):
- Q3_K: w ~ d*sc*(q - 4) with q in 0..7 and a 6-bit code sc (3.4375 bits a weight). A sub-block's
  scale starts at -4/max and is refined a weight at a time for up to 5 passes, each weight moving
  to the code that best raises the weighted (x^2) fit (ggml's `make_q3_quants`).
- Q2_K: w ~ d*sc*q - dmin*m with q in 0..3 and 4-bit codes sc and m (2.625 bits a weight); a
  sub-block's scale and min come from make_qkx2_quants's search, weighted by |x| and minimising the
  absolute error.
As for the other k-quants, this repeats ggml's reference quantizer (`quantize_row_q3_K_ref`,
`quantize_row_q2_K_ref`: llama-quantize without an importance matrix) operation by operation in
float32; tests/test_gguf_kquants.py compares with ggml's bytes.
"""

import numpy as np

from .gguf_kquants import F, QK_K, first_largest, fp16_bytes, in_order, largest, nearest, scale_and_min


def refined_scale(x: np.ndarray, nmax: int = 4):
    """ggml's make_q3_quants with do_rmse on x (16, n), a sub-block per column: (scale, codes in
    0..2*nmax-1; 0 for an all-zero sub-block). Each pass visits the weights in order and moves one
    to nearest(x * sum(w l^2) / sum(w x l)) over the others when that raises (sum w x l)^2 / sum w l^2;
    a pass that moves none leaves the state as it found it, so running all 5 gives C's early stop."""
    big = first_largest(x, axis=0)
    zero = np.abs(big) < F(1e-15)
    w = x * x
    q = np.clip(nearest((F(-nmax) / big) * x), -nmax, nmax - 1)
    qf = q.astype(F)
    sum_lx, sum_l2 = in_order(w * x * qf), in_order(w * qf * qf)
    for _ in range(5):
        for i in range(len(x)):
            qi = q[i].astype(F)
            slx = sum_lx - w[i] * x[i] * qi  # the sums without weight i
            sl2 = sum_l2 - w[i] * qi * qi
            new = np.clip(nearest(x[i] * sl2 / slx), -nmax, nmax - 1)
            take = (slx > 0) & (new != q[i])
            newf = new.astype(F)
            slx, sl2 = slx + w[i] * x[i] * newf, sl2 + w[i] * newf * newf
            take &= (sl2 > 0) & (slx * slx * sum_l2 > sum_lx * sum_lx * sl2)
            q[i] = np.where(take, new, q[i])
            sum_lx, sum_l2 = np.where(take, slx, sum_lx), np.where(take, sl2, sum_l2)
    scale = np.where(sum_l2 > 0, sum_lx / sum_l2, F(0))
    return np.where(zero, F(0), scale), np.where(zero, 0, q + nmax)


def q3_k(x: np.ndarray) -> np.ndarray:
    n = len(x)
    scales, q = refined_scale(np.ascontiguousarray(x.reshape(n * 16, 16).T))
    scales, q = scales.reshape(n, 16), q.T.reshape(n, 16, 16)
    top = first_largest(scales, axis=1)
    some = top != 0
    iscale = F(-32) / top
    # C keeps the code in an int8_t; |iscale * scale| <= 32 (NaN rounds to 0), so it never wraps
    codes = np.where(some[:, None], np.clip(nearest(iscale[:, None] * scales), -32, 31) + 32, 0)
    d = np.where(some, F(1) / iscale, F(0)).astype(np.float16)
    step = d.astype(F)[:, None] * (codes - 32).astype(F)
    requant = np.clip(nearest(x.reshape(n, 16, 16) / step[..., None]), -4, 3) + 4
    q = np.where((step != 0)[..., None], requant, q).reshape(n, QK_K)
    hmask = ((q > 3).reshape(n, 8, 32) << np.arange(8)[None, :, None]).sum(axis=1)  # j: bit j // 32 of byte j % 32
    low = (q & 3).reshape(n, 2, 4, 32) << (2 * np.arange(4))[None, None, :, None]
    # bytes 0-7: sub-block j's low 4 bits (j < 8) and j + 8's; byte 8 + r: the top 2 of r, r + 4, r + 8, r + 12
    top_bits = ((codes >> 4).reshape(n, 4, 4).transpose(0, 2, 1) << (2 * np.arange(4))).sum(axis=2)
    parts = [hmask, low.sum(axis=2).reshape(n, 64), codes[:, :8] & 0xF | (codes[:, 8:] & 0xF) << 4, top_bits]
    return np.concatenate([p.astype(np.uint8) for p in parts] + [fp16_bytes(d)], axis=1)


def q2_k(x: np.ndarray) -> np.ndarray:
    n = len(x)
    sub = np.ascontiguousarray(x.reshape(n * 16, 16).T)
    scales, mins, q = scale_and_min(sub, np.abs(sub), 3, -0.5, 15, mad=True)
    scales, mins, q = scales.reshape(n, 16), mins.reshape(n, 16), q.T.reshape(n, 16, 16)
    max_scale, max_min = largest(scales), largest(mins)
    ls = np.where((max_scale > 0)[:, None], nearest((F(15) / max_scale)[:, None] * scales), 0) & 0xFF
    lm = np.where((max_min > 0)[:, None], nearest((F(15) / max_min)[:, None] * mins), 0)
    packed = (ls | lm << 4) & 0xFF  # C ors the min's code into the uint8 that holds the scale's
    d = np.where(max_scale > 0, max_scale / F(15), F(0)).astype(np.float16)
    dmin = np.where(max_min > 0, max_min / F(15), F(0)).astype(np.float16)
    step = d.astype(F)[:, None] * (packed & 0xF).astype(F)
    offset = dmin.astype(F)[:, None] * (packed >> 4).astype(F)
    requant = np.clip(nearest((x.reshape(n, 16, 16) + offset[..., None]) / step[..., None]), 0, 3)
    q = np.where((step != 0)[..., None], requant, q).reshape(n, 2, 4, 32)
    qs = (q << (2 * np.arange(4))[None, None, :, None]).sum(axis=2).reshape(n, 64)
    return np.concatenate([packed.astype(np.uint8), qs.astype(np.uint8), fp16_bytes(d), fp16_bytes(dmin)], axis=1)


QUANTIZERS = {"Q3_K": q3_k, "Q2_K": q2_k}  # train/gguf_export.py quantizes with them, block by block
