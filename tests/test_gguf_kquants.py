"""llama.cpp's k-quants and i-quants (train/gguf_kquants*.py, train/gguf_iquants.py): the bytes
llama-quantize writes without an importance matrix, checked against digests of llama.cpp's own
output on rows built to trip a quantizer's search, decoded by the `gguf` package's independent
dequantizer, and, where llama-cpp-python is installed, against ggml's quantize_q2_K, ...,
quantize_iq4_xs themselves on random rows (tests/test_gguf_llama_cpp.py compares whole files).
Then the files: which matrices take a k-quant, its fallback or llama-quantize's mix."""

import ctypes
import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from test_gguf import (K_FALLBACK, MODELS, assert_same_function, load_gguf, random_model, rounded_as_stored,
                       tensor_types, wide)
from train.gguf_export import K_QUANTIZERS, write_gguf
from train.gguf_iquants import quantize_iq
from train.gguf_kquants import QK_K, blockwise
from train.tokenizer import get_tokenizer

gguf = pytest.importorskip("gguf")
KINDS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]

# sha256 of the bytes llama.cpp 0.3.36's quantizers (ggml-base's quantize_q2_K, ..., quantize_iq4_xs,
# what llama-quantize runs without an importance matrix) wrote for hard_rows()
LLAMA_CPP_DIGESTS = {
    "Q2_K": "e4b604b78127740397c61c3ef3ab35e175cd6b396f85f56644420ff567c517e4",
    "Q3_K": "2277331b2dbabd35437ef3e8b237dde000a5d2134bbac00d786896f5d9f619e6",
    "Q4_K": "3f3dae83c894c37c9434cd9f0967f279ed68081bf6991622480c4a26c006355b",
    "Q5_K": "aec153b677350e0a61122480f6bd2e2fd43d44a095e91a943fa003bb96fd4356",
    "Q6_K": "32fb62a393f440a397ce15acc3902bc80d83aeefd563db40b140689760e2bc12",
    "IQ4_NL": "9699700c9c451b784d162842b5e2960a35f783337f05421f52acd498bf7046a8",
    "IQ4_XS": "e952f302b933fc22cf007b58983f7c7723b78c44dca28dead2d0d56a65d3e9e5",
}


def ours(x: np.ndarray, kind: str) -> np.ndarray:
    return blockwise(x, K_QUANTIZERS[kind], QK_K) if kind in K_QUANTIZERS else quantize_iq(x, kind)


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
def test_each_type_writes_the_bytes_llama_cpp_wrote(kind):
    out = ours(hard_rows(), kind)
    per_block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    assert out.dtype == np.uint8 and out.shape == (563, 512 // per_block * block_bytes)
    assert hashlib.sha256(out.tobytes()).hexdigest() == LLAMA_CPP_DIGESTS[kind]


@pytest.mark.parametrize("kind, rms", [("Q2_K", 0.31), ("Q3_K", 0.16), ("Q4_K", 0.075), ("Q5_K", 0.038),
                                       ("Q6_K", 0.019), ("IQ4_NL", 0.08), ("IQ4_XS", 0.08)])
def test_gguf_decodes_each_type_to_its_rows_within_its_step(kind, rms):
    """Decoded by gguf's dequantizer (written apart from ours). Each row lands within 2**(2 - bits)
    of its sub-blocks' largest (at most half of that was seen), but for what these types lose, in
    llama.cpp too: weights of 1e-6 decode to 0 (the fp16 scale underflows; not Q2_K's, whose min
    keeps them), and a sparse row's lone small value beside large ones can. Zeros stay zeros; on
    N(0, 1) rows the error of 2, 3, 4, 5 and 6 bits is about 0.296, 0.151, 0.071, 0.036 and 0.018 for
    the k-quants, 0.076 and 0.077 for the i-quants."""
    x = hard_rows()[:48]  # the finite ones
    back = gguf.quants.dequantize(ours(x, kind), gguf.GGMLQuantizationType[kind])
    span = np.abs(x).reshape(48, -1, 32).max(axis=-1, keepdims=True)
    worst = (np.abs(back - x).reshape(48, -1, 32) / np.where(span > 0, span, 1)).max(axis=(1, 2))
    kept = [row for row in range(48) if not 18 <= row < 30]  # not sparse, not tiny
    assert worst[kept].max() <= 2.0 ** (2 - int(kind.lstrip("IQ")[0]))
    assert (kind == "Q2_K" or not back[24:30].any()) and not back[47].any()
    y = np.random.default_rng(0).standard_normal((64, 4 * QK_K)).astype(np.float32)
    y_back = gguf.quants.dequantize(ours(y, kind), gguf.GGMLQuantizationType[kind])
    assert rms * 0.8 < np.sqrt(np.mean((y_back - y) ** 2)) < rms


def test_q3_k_refines_five_times_and_stores_a_sub_block_under_1e_15_as_zeros():
    """Uniform rows where ggml's make_q3_quants still moves a weight in its fifth pass (rows 3, 17,
    33, ...: four passes give other bytes), against the digest of llama.cpp 0.3.36's bytes; and
    weights of 1e-16, below its GROUP_MAX_EPS, all stored as 0 bytes, as llama.cpp stores them."""
    i = np.arange(64 * 256, dtype=np.int64).reshape(64, 256)
    x = (i * 2246822519 % 2**32 / 2**32 - 0.5).astype(np.float32)
    digest = "69dc70e01986a308292dc32a532f64d4bf39ba8de761dc7bb8a3ba91413fd110"
    assert hashlib.sha256(ours(x, "Q3_K").tobytes()).hexdigest() == digest
    tiny = np.where(i[:1] % 3 == 0, -1e-16, 1e-16).astype(np.float32)
    assert not ours(tiny, "Q3_K").any()


def test_a_3d_expert_tensor_is_quantized_row_by_row():
    x = hard_rows()[:560].reshape(7, 80, 512)
    assert np.array_equal(ours(x, "Q4_K"), ours(hard_rows()[:560], "Q4_K").reshape(7, 80, -1))


def ggml_reference():
    """ggml's quantize_q4_K, ..., quantize_iq4_xs (no importance matrix) from llama-cpp-python's
    libggml-base, or None."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None:
        return None
    lib = ctypes.CDLL(str(next((Path(spec.origin).parent / "lib").glob("libggml-base.*"))))

    def quantize(x: np.ndarray, kind: str) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        per_block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
        out = np.zeros(x.size // per_block * block_bytes, np.uint8)
        rows = getattr(lib, f"quantize_{kind.lower()}" if kind.startswith("IQ") else f"quantize_{kind.lower()[:2]}_K")
        rows(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(len(x)),
             ctypes.c_int64(x.shape[-1]), None)
        return out.reshape(len(x), -1)
    return quantize


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("kind", KINDS)
def test_each_type_equals_ggml_on_random_rows(kind):
    """Rows of every scale from 1e-5 to 100, a random share of zeros, some all positive, some cubed."""
    theirs = ggml_reference()
    assert np.array_equal(ours(hard_rows(), kind), theirs(hard_rows(), kind))
    rng = np.random.default_rng(0)
    for _ in range(3):
        y = rng.standard_normal((256, 1024)).astype(np.float32) * rng.choice([1e-5, 1, 100], size=(256, 1))
        y = np.where(rng.random(y.shape) < rng.random((256, 1)) * 0.3, 0, y).astype(np.float32)
        y[::7], y[1::11] = np.abs(y[::7]), y[1::11] ** 3
        assert np.array_equal(ours(y, kind), theirs(y, kind))


@pytest.mark.parametrize("gguf_type", list(K_FALLBACK))
@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3_moe"])
def test_k_quants_hold_rows_of_256_and_keep_the_others_in_llama_cpps_fallback(family, gguf_type, tmp_path):
    """q6_k, q5_k, q4_k, q3_k, q2_k and iq4_xs on models 256 wide: each matrix whose rows are a multiple
    of 256 in the type, the others in q8_0, q5_1, q5_0, q4_0 or iq4_nl (gpt2's ffn_down, rows of 72, in f16),
    named as such; the file's general.file_type is llama.cpp's for the type, and transformers reads
    our weights rounded as stored."""
    from gguf import GGUFReader, LlamaFileType

    ours = random_model(family, cfg=wide(MODELS[family]))
    done = write_gguf(ours, get_tokenizer("byte"), tmp_path / "out", gguf_type=gguf_type)
    reader = GGUFReader(done.path)
    expected = {}
    for t in reader.tensors:
        if t.tensor_type.name != "F32":
            rows = int(t.shape[0])  # ggml's ne[0]: a row's length
            expected[t.name] = gguf_type if rows % 256 == 0 else K_FALLBACK[gguf_type] if rows % 32 == 0 else "f16"
    assert {t.name: t.tensor_type.name.lower() for t in reader.tensors if t.name in expected} == expected
    assert done.fallback == {n: kind for n, kind in expected.items() if kind != gguf_type}
    assert {"token_embd.weight", "blk.0.attn_output.weight"} <= {n for n, kind in expected.items() if kind == gguf_type}
    assert "blk.0.ffn_down" in " ".join(done.fallback)
    file_type = reader.fields["general.file_type"]
    name = {"q6_k": "MOSTLY_Q6_K", "q5_k": "MOSTLY_Q5_K_S", "q4_k": "MOSTLY_Q4_K_S", "q3_k": "MOSTLY_Q3_K_S",
            "q2_k": "MOSTLY_Q2_K", "iq4_xs": "MOSTLY_IQ4_XS"}[gguf_type]
    assert LlamaFileType(int(file_type.parts[file_type.data[0]][0])).name == name
    # the two implementations add in different orders: 1.7e-5 on logits of 5 was seen at 3 bits
    assert_same_function(rounded_as_stored(ours, gguf_type), load_gguf(tmp_path / "out", family), atol=5e-5)


def mixed_file(family: str, gguf_type: str, tmp_path: Path):
    """A random `family` model 256 wide with 12 layers (8 experts where it has experts) written as the
    mix `gguf_type`: (the export, {tensor: its type} for the tensors not kept in fp32)."""
    cfg = MODELS[family]
    if cfg.moe.n_expert:
        cfg = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, n_expert=8))
    done = write_gguf(random_model(family, cfg=wide(cfg, n_layer=12)), get_tokenizer("byte"), tmp_path / "out",
                      gguf_type=gguf_type)
    return done, {name: kind.lower() for name, kind in tensor_types(done.path).items() if kind != "F32"}


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen3_moe"])
@pytest.mark.parametrize("gguf_type", ["q4_k_m", "q5_k_m"])
def test_a_k_mix_gives_more_bits_where_llama_quantize_does(family, gguf_type, tmp_path):
    """The types llama-quantize 0.3.36 chose for q4_k_m and q5_k_m (test_gguf_llama_cpp compares
    the bytes), on 12 layers 256 wide: the output matrix (gpt2's tied token embeddings) in q6_k, and
    in layers 0, 3, 6, 9, 10 and 11 (counted in layer order, not by name) the value matrix (gpt2's
    fused qkv) and ffn_down in q6_k, or q8_0
    where q6_k's rows do not fit (llama's ffn_down of 96; gpt2's of 72 fit nothing but f16). With 8
    experts the key and value matrices take q8_0 in every layer, and q4_k_m's attn_output q5_k."""
    base = gguf_type[:4]
    done, types = mixed_file(family, gguf_type, tmp_path)
    more = {0, 3, 6, 9, 10, 11}
    expected = dict.fromkeys(types, base) | {"output.weight" if family == "llama" else "token_embd.weight": "q6_k"}
    for i in range(12):
        down = "ffn_down_exps" if family == "qwen3_moe" else "ffn_down"
        short = "f16" if family == "gpt2" else "q8_0" if i in more else K_FALLBACK[base]
        expected[f"blk.{i}.{down}.weight"] = short
        if family == "qwen3_moe":
            expected |= {f"blk.{i}.attn_k.weight": "q8_0", f"blk.{i}.attn_v.weight": "q8_0"}
            expected[f"blk.{i}.attn_output.weight"] = "q5_k" if gguf_type == "q4_k_m" else base
        else:
            expected[f"blk.{i}.attn_{'qkv' if family == 'gpt2' else 'v'}.weight"] = "q6_k" if i in more else base
    assert types == expected
    assert done.fallback == {name: kind for name, kind in expected.items() if ".ffn_down" in name}


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen3_moe"])
@pytest.mark.parametrize("gguf_type", ["q3_k_m", "q3_k_l"])
def test_a_3_bit_mix_gives_4_and_5_bits_where_llama_quantize_does(family, gguf_type, tmp_path):
    """The types llama-quantize 0.3.36 chose for q3_k_m and q3_k_l on 12 layers 256 wide: the output
    matrix in q6_k; q3_k_m's first two value matrices in q5_k and the rest, attn_output and ffn_down in
    q4_k (ffn_down of the first 12 / 16 = 0 layers in q5_k); q3_k_l's three in q5_k; the other
    matrices q3_k. With 8 experts the key and value matrices take q8_0, and attn_output q5_k in
    q3_k_m, q3_k in q3_k_l. Rows no multiple of 256 fall back: q4_k to q5_0, q5_k to q5_1 (gpt2's
    ffn_down, rows of 72, to f16)."""
    done, types = mixed_file(family, gguf_type, tmp_path)
    large = gguf_type == "q3_k_l"
    expected = dict.fromkeys(types, "q3_k") | {"output.weight" if family == "llama" else "token_embd.weight": "q6_k"}
    for i in range(12):
        down = "ffn_down_exps" if family == "qwen3_moe" else "ffn_down"
        expected[f"blk.{i}.{down}.weight"] = "f16" if family == "gpt2" else "q5_1" if large else "q5_0"
        if family == "qwen3_moe":
            expected |= {f"blk.{i}.attn_k.weight": "q8_0", f"blk.{i}.attn_v.weight": "q8_0",
                         f"blk.{i}.attn_output.weight": "q3_k" if large else "q5_k"}
        else:
            value = "q5_k" if large or i < 2 else "q4_k"
            expected |= {f"blk.{i}.attn_{'qkv' if family == 'gpt2' else 'v'}.weight": value,
                         f"blk.{i}.attn_output.weight": "q5_k" if large else "q4_k"}
    assert types == expected
    assert done.fallback == {name: kind for name, kind in expected.items() if ".ffn_down" in name}
