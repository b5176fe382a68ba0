"""llama.cpp's k-quants (train/gguf_kquants.py): the bytes ggml's reference quantizer writes, checked
against digests of llama.cpp's own output on rows built to trip a quantizer's search, decoded by the
`gguf` package's independent dequantizer, and, where llama-cpp-python is installed, against ggml's
quantize_row_q*_K_ref itself on random rows (tests/test_gguf_llama_cpp.py compares whole files)."""

import ctypes
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from train.gguf_kquants import BLOCK_BYTES, QK_K, quantize_k

gguf = pytest.importorskip("gguf")
KINDS = ["Q4_K", "Q5_K", "Q6_K"]

# sha256 of the bytes llama.cpp 0.3.36's quantize_row_q*_K_ref (ggml-base, the quantizer llama-quantize
# runs without an importance matrix) wrote for hard_rows()
LLAMA_CPP_DIGESTS = {
    "Q4_K": "3f3dae83c894c37c9434cd9f0967f279ed68081bf6991622480c4a26c006355b",
    "Q5_K": "aec153b677350e0a61122480f6bd2e2fd43d44a095e91a943fa003bb96fd4356",
    "Q6_K": "32fb62a393f440a397ce15acc3902bc80d83aeefd563db40b140689760e2bc12",
}


def hard_rows() -> np.ndarray:
    """563 rows of 512 (two super-blocks each), by integer arithmetic and exact float steps only
    (no libm), so that every platform builds the same values: uniform, cubed (long tails), all
    positive, sparse (whole sub-blocks of zeros), tiny (1e-6), large (3e3), on a grid of 1/8 (ties
    for the rounding), a constant with negatives, a row of one constant and one of zeros; 1e9 with
    sub-blocks of zeros (Q6_K's fp16 scale overflows to inf, and inf * 0 is NaN), 1e20 (squares
    overflow too, so the C code's NaN comparisons decide) and 1e-40 (subnormal); then 512 rows of
    long-tailed values at scales from 1e-3 to 7, where rare roundings show."""
    i = np.arange(563 * 512, dtype=np.int64).reshape(563, 512)
    u = i * 2654435761 % 2**32 / 2**32 - 0.5
    other = i * 40503 % 65521 / 65521
    scales = (1 + i[:512, :1] % 7) ** 3 * 1e-3 * (1 + i[:512, :1] % 3 * 10)
    x = np.concatenate([u[:6], 40 * u[6:12] * u[6:12] * u[6:12], np.abs(u[12:18]) + 0.25,
                        np.where(other[18:24] < 0.05, 8 * u[18:24], 0), 1e-6 * u[24:30], 3e3 * u[30:36],
                        np.round(8 * u[36:42]) / 8, np.where(i[42:46] % 3 == 0, 0.125, -np.abs(u[42:46])),
                        np.full((1, 512), 0.5), np.zeros((1, 512)),
                        np.where(i[48:49] // 16 % 4 == 0, 0, 1e9 * u[48:49]), 1e20 * u[49:50], 1e-40 * u[50:51],
                        scales * (u[51:] + 0.3 * u[51:] * u[51:] * u[51:])])
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_each_k_quant_writes_the_bytes_llama_cpp_wrote(kind):
    out = quantize_k(hard_rows(), kind)
    assert out.dtype == np.uint8 and out.shape == (563, 2 * BLOCK_BYTES[kind])
    assert hashlib.sha256(out.tobytes()).hexdigest() == LLAMA_CPP_DIGESTS[kind]


@pytest.mark.parametrize("kind, rms", [("Q4_K", 0.075), ("Q5_K", 0.038), ("Q6_K", 0.019)])
def test_gguf_decodes_each_k_quant_to_its_rows_within_its_step(kind, rms):
    """Decoded by gguf's dequantizer (written apart from ours). Each row lands within 2**(2 - bits)
    of its sub-blocks' largest (at most half of that was seen), but for what k-quants lose, in
    llama.cpp too: weights of 1e-6 decode to 0 (the super-block scale, max / 63, underflows fp16),
    and a sparse row's lone small value beside large ones can. Zeros stay zeros; on N(0, 1) rows the
    error of 4, 5 and 6 bits is about 0.071, 0.036 and 0.018, halving with each bit."""
    x = hard_rows()[:48]  # the finite ones
    back = gguf.quants.dequantize(quantize_k(x, kind), gguf.GGMLQuantizationType[kind])
    span = np.abs(x).reshape(48, -1, 32).max(axis=-1, keepdims=True)
    worst = (np.abs(back - x).reshape(48, -1, 32) / np.where(span > 0, span, 1)).max(axis=(1, 2))
    kept = [row for row in range(48) if not 18 <= row < 30]  # not sparse, not tiny
    assert worst[kept].max() <= 2.0 ** (2 - int(kind[1]))
    assert not back[24:30].any() and not back[47].any()
    y = np.random.default_rng(0).standard_normal((64, 4 * QK_K)).astype(np.float32)
    y_back = gguf.quants.dequantize(quantize_k(y, kind), gguf.GGMLQuantizationType[kind])
    assert rms * 0.8 < np.sqrt(np.mean((y_back - y) ** 2)) < rms


def test_a_3d_expert_tensor_is_quantized_row_by_row():
    x = hard_rows()[:560].reshape(7, 80, 512)
    assert np.array_equal(quantize_k(x, "Q4_K"), quantize_k(hard_rows()[:560], "Q4_K").reshape(7, 80, -1))


def ggml_reference():
    """ggml's quantize_row_q*_K_ref from llama-cpp-python's libggml-base, or None."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None:
        return None
    lib = ctypes.CDLL(str(next((Path(spec.origin).parent / "lib").glob("libggml-base.*"))))

    def quantize(x: np.ndarray, kind: str) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(x.size // QK_K * BLOCK_BYTES[kind], np.uint8)
        row = getattr(lib, f"quantize_row_{kind[:2].lower()}_K_ref")
        row(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
        return out.reshape(*x.shape[:-1], -1)
    return quantize


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("kind", KINDS)
def test_each_k_quant_equals_ggml_on_random_rows(kind):
    """Rows of every scale from 1e-5 to 100, a random share of zeros, some all positive, some cubed."""
    theirs = ggml_reference()
    assert np.array_equal(quantize_k(hard_rows(), kind), theirs(hard_rows(), kind))
    rng = np.random.default_rng(0)
    for _ in range(3):
        y = rng.standard_normal((256, 1024)).astype(np.float32) * rng.choice([1e-5, 1, 100], size=(256, 1))
        y = np.where(rng.random(y.shape) < rng.random((256, 1)) * 0.3, 0, y).astype(np.float32)
        y[::7], y[1::11] = np.abs(y[::7]), y[1::11] ** 3
        assert np.array_equal(quantize_k(y, kind), theirs(y, kind))
