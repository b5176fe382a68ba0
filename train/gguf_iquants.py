"""llama.cpp's non-linear 4-bit types, IQ4_NL and IQ4_XS, byte for byte as llama-quantize writes them.

Each weight is one of 16 fixed levels (`LEVELS`, spaced more finely near 0, where trained weights
sit) times its block's scale, instead of an evenly spaced 4-bit code:
- IQ4_NL: blocks of 32 weights, each with an fp16 scale (4.5 bits a weight, q4_0's size);
- IQ4_XS: super-blocks of 256, one fp16 scale and a 6-bit code of it per block of 32 (4.25 bits).
A block's scale is the best of 15 steps around max / -127, weighted by x^2 (ggml's
`quantize_row_iq4_nl_impl` without an importance matrix). As in train/gguf_kquants.py, every
operation runs in float32 in the C code's order, sums one term at a time, so that the bytes are
llama.cpp's; tests/test_gguf_kquants.py compares them. As there, `np.where(c, a / b, 0)` is C's
`c ? a / b : 0`, run under np.errstate(all="ignore").
"""

import numpy as np

from .gguf_kquants import F, blockwise, first_largest, fp16_bytes, in_order, nearest

LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=F)
VALUES = {"IQ4_NL": 32, "IQ4_XS": 256}  # weights per (super-)block


def nearest_level(v: np.ndarray) -> np.ndarray:
    """ggml's best_index_int8: the index of the level nearest v (ties to the upper), 0 or 15 beyond
    the ends, 15 for NaN (every comparison false)."""
    upper = np.clip(np.searchsorted(LEVELS, v, side="right"), 1, 15)  # the first level above v
    mid = np.where(v - LEVELS[upper - 1] < LEVELS[upper] - v, upper - 1, upper)
    return np.where(v <= LEVELS[0], 0, np.where(v >= LEVELS[15], 15, mid))


def block_scales(x: np.ndarray) -> np.ndarray:
    """The scale of each block of 32, x (32, n), one block per column: the best of 15 steps."""
    w = x * x
    big = first_largest(x, axis=0)
    zero = np.abs(big) < F(1e-15)

    def fit(inverse):
        level = LEVELS[nearest_level(inverse * x)]
        return in_order(w * level * x), in_order(w * level * level)

    sum_qx, sum_q2 = fit(F(1) / (-big / LEVELS[0]))
    d = np.where(sum_q2 > 0, sum_qx / sum_q2, F(0))
    best = d * sum_qx
    for step in range(-7, 8):
        sum_qx, sum_q2 = fit(F(step + LEVELS[0]) / big)
        better = (sum_q2 > 0) & (sum_qx * sum_qx > best * sum_q2)
        d = np.where(better, sum_qx / sum_q2, d)
        best = np.where(better, d * sum_qx, best)
    return np.where(zero, F(0), d)


def packed(codes: np.ndarray) -> np.ndarray:
    """Level indices (n, blocks, 32) as bytes: byte j of a block holds weights j and 16 + j."""
    return (codes[..., :16] | codes[..., 16:] << 4).reshape(len(codes), -1).astype(np.uint8)


def iq4_nl(x: np.ndarray) -> np.ndarray:
    d = block_scales(np.ascontiguousarray(x.T))
    inverse = np.where(d != 0, F(1) / d, F(0))  # of the unrounded scale, as in C
    codes = nearest_level(inverse[:, None] * x)
    return np.concatenate([fp16_bytes(d), packed(codes[:, None])], axis=1)


def iq4_xs(x: np.ndarray) -> np.ndarray:
    n = len(x)
    scales = block_scales(np.ascontiguousarray(x.reshape(n * 8, 32).T)).reshape(n, 8)
    d = -first_largest(scales, axis=1) / F(32)
    inverse = np.where(d != 0, F(1) / d, F(0))
    codes = np.clip(nearest(inverse[:, None] * scales), -32, 31)
    step = d[:, None] * codes.astype(F)
    inverse_step = np.where(step != 0, F(1) / step, F(0))
    levels = nearest_level(inverse_step[..., None] * x.reshape(n, 8, 32))
    high = ((codes + 32) >> 4) << (2 * np.arange(8))
    scales_h = high.sum(axis=1).astype(np.uint16)[:, None].view(np.uint8)
    low = (codes + 32) & 0xF
    scales_l = (low[:, 0::2] | low[:, 1::2] << 4).astype(np.uint8)
    return np.concatenate([fp16_bytes(d), scales_h, scales_l, packed(levels)], axis=1)


QUANTIZERS = {"IQ4_NL": iq4_nl, "IQ4_XS": iq4_xs}


def quantize_iq(array: np.ndarray, kind: str) -> np.ndarray:
    """`array` (..., cols), cols a multiple of `kind`'s block, as its bytes."""
    return blockwise(array, QUANTIZERS[kind], VALUES[kind])
