"""`python -m train.export RUN OUT --format gguf` writes OUT/model.gguf with the `gguf` package; transformers'
GGUF reader loads it back into the HF family's model, which computes our logits; bad input writes nothing."""

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from model import GPT
from model.hf import to_hf
from model.config import DeltaNetConfig, ModelConfig, MoEConfig, RopeConfig
from tiny_run import GPT2_RANKS, ROOT, TINY, cli, error_line, needs_gpt2_ranks, randomize_, snapshot
from train import export
from train.config import ConfigError, load_config
from train.gguf_archs import ARCHS, _sections
from train.gguf_export import FILE_NAME, K_QUANTIZERS, choose_gguf_family, write_gguf
from train.gguf_iquants import QUANTIZERS as I_QUANTIZERS
from train.gguf_iquants import quantize_iq
from train.gguf_kquants import QK_K, blockwise
from train.run import load_run
from train.sample import sample
from train.tokenizer import get_tokenizer
from train.trainer import Trainer

pytest.importorskip("gguf")

ALL_ARCHS = ("gpt2, gpt_neox, llama, qwen3, qwen3_moe, mixtral, qwen3_5_text, deepseek_v3, deepseek_v32, gpt_oss, "
             "gemma2, gemma3_text, olmo2, olmo3, qwen3_5_moe_text, qwen3_next")
SIZES = dict(vocab_size=257, block_size=32, n_layer=2, n_head=4, n_embd=64)
LLAMA = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2, mlp_hidden=96)
MODELS = {  # one tiny model per GGUF architecture, each with a setting transformers' reader must get right
    # mlp_hidden 72: a row length that is not a multiple of 32 (q8_0 keeps ffn_down in f16), and an n_inner
    # and n_positions transformers' gpt2 reader does not read
    "gpt2": ModelConfig(**SIZES, mlp_hidden=72),
    # GQA, an untied head, a RoPE base of 5000, and 300 ids for 257 tokens ([PAD] tokens)
    "llama": ModelConfig(**SIZES | dict(vocab_size=300), **LLAMA, tie_embeddings=False, rope=RopeConfig(theta=5000.0)),
    "qwen3": ModelConfig(**SIZES, **LLAMA, qk_norm="head", head_dim=32),  # head_dim != n_embd / n_head
    "qwen3_moe": ModelConfig(**SIZES, **LLAMA, qk_norm="head", moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=64)),
    # 3 Gated DeltaNet layers : 1 attention layer; 2 value heads per key head, so a wrong order of
    # value heads shows; a quarter of the head rotary (8 of 32: llama.cpp's sections need 3 pairs)
    "qwen3_5_text": ModelConfig(**SIZES | dict(n_layer=4), **LLAMA, head_dim=32, qk_norm="head", norm_unit_offset=True,
                                attn_gate=True, rope=RopeConfig(fraction=0.25), linear_attention="gated_deltanet",
                                deltanet=DeltaNetConfig(n_head=2, n_v_head=4, head_dim=16, v_head_dim=16)),
}
GEMMA = dict(pos="rope", norm="rmsnorm", norm_unit_offset=True, norm_placement="sandwich", mlp="geglu", bias=False,
             n_kv_head=2, mlp_hidden=96, embed_scale=True, window=6)
MODELS |= {  # Gemma: norms stored as 1 + w; softcaps, a query scale and layer types the reader must be given
    "gemma2": ModelConfig(**SIZES, **GEMMA, head_dim=32, global_every=2, attn_softcap=20.0, final_softcap=10.0),
    # two sliding layers with plain RoPE at 1000, then a global one, linearly scaled from 100k
    "gemma3_text": ModelConfig(**SIZES | dict(n_layer=3), **GEMMA, qk_norm="head", global_every=3,
                               rope=RopeConfig(theta=100000.0, scaling="linear", factor=4.0, local_theta=1000.0)),
}
MODELS["qwen3_5_moe_text"] = dataclasses.replace(  # and with experts, a shared one behind its gate
    MODELS["qwen3_5_text"], mlp_hidden=32, moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=32, n_shared=1,
                                                         shared_gate=True))


# checked at f32 only (f16 moves these random models too far to bound): value heads twice as wide as
# the key heads, so the q/k/v split and the tiling of value rows show; two shared experts
WIDE_DELTANET = DeltaNetConfig(n_head=2, n_v_head=4, head_dim=16, v_head_dim=32)
TWO_SHARED = dataclasses.replace(MODELS["qwen3_5_moe_text"].moe, n_shared=2)
F32_ALSO = [("qwen3_5_text", dataclasses.replace(MODELS["qwen3_5_text"], deltanet=WIDE_DELTANET)),
            ("qwen3_5_moe_text",
             dataclasses.replace(MODELS["qwen3_5_moe_text"], deltanet=WIDE_DELTANET, moe=TWO_SHARED))]


K_FALLBACK = {"q6_k": "q8_0", "q5_k": "q5_1", "q4_k": "q5_0", "q3_k": "q4_0", "q2_k": "q4_0",  # llama.cpp's, for rows
              "iq4_xs": "iq4_nl"}
# no multiple of 256


def wide(cfg: ModelConfig, **changes) -> ModelConfig:
    """`cfg` 256 wide: rows of 256 for a k-quant, the narrower ones (MODELS' ffn_down: 72, 96, 64 per
    expert) for its fallback. Heads that tiled n_embd still do."""
    head_dim = 256 // cfg.n_head if cfg.head_dim * cfg.n_head == cfg.n_embd else cfg.head_dim
    return dataclasses.replace(cfg, n_embd=256, head_dim=head_dim, **changes)


def random_model(family: str, seed: int = 1, cfg: ModelConfig | None = None) -> GPT:
    """Every weight random, norms included (a norm left at 1 would hide a missing copy)."""
    return randomize_(GPT(cfg or MODELS[family]), seed, ones="vectors")


def load_gguf(out: Path, family: str, cfg: ModelConfig | None = None):
    from transformers import AutoModelForCausalLM

    cfg = cfg or MODELS[family]
    kwargs = ARCHS[family].unread(cfg)  # what the CLI prints in its load line
    if cfg.attn_softcap:  # 5.19 and 5.20 run Gemma 2 through SDPA by default, which drops the softcap
        kwargs["attn_implementation"] = "eager"
    return AutoModelForCausalLM.from_pretrained(out, gguf_file=FILE_NAME, dtype=torch.float32, **kwargs).eval()


def tensor_types(path: Path) -> dict[str, str]:
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


def assert_same_function(ours: GPT, hf, atol: float = 1e-5) -> float:
    """Logits within `atol` on a random batch, and the same greedy continuation (to <|endoftext|>).
    Qwen3.5: HF's Gated DeltaNet differs from ours by up to 2e-4 on these weights whatever the
    file (test_hf_qwen3_5's tolerance), so the file's model is held to HF's own (`to_hf`) instead."""
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), hf(x).logits
        if hf.config.model_type.startswith("qwen3_5"):
            a = to_hf(ours, hf.config.model_type)(x).logits
    assert a.std() > 1.0  # far from constant logits, so a missing copy cannot hide under atol
    torch.testing.assert_close(b, a, atol=atol, rtol=0)
    prompt = x[:1, :8]
    expected = sample(ours, prompt, 16, dict(temperature=0.0), stop=256)[0]
    assert hf.generate(prompt, max_new_tokens=16, do_sample=False)[0].tolist() == expected
    return (a - b).abs().max().item()


@torch.no_grad()
def rounded_as_stored(model: GPT, gguf_type: str) -> GPT:
    """`model` with each matrix rounded as the file stores it, by gguf's own quantize and dequantize:
    f16 or bf16; a quantized type (q8_0, q4_0, ...) for rows a multiple of 32 long, else f16; a
    k-quant or iq4_xs for rows a multiple of 256, else llama.cpp's fallback (K_FALLBACK). The k- and
    i-quants are ours, which test_gguf_kquants checks against llama.cpp's. 1-D tensors, the position
    table, the routers (the shared expert's gate too) and Gated DeltaNet's convolution stay fp32. The DeltaNet's
    out_proj is rounded in blocks of 32 of llama.cpp's column order: the value heads of one key head
    apart (k0v0 k1v0 k0v1 k1v1), not together."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize, quantize

    d = model.config.deltanet
    out = copy.deepcopy(model)
    for name, p in out.named_parameters():
        if p.ndim >= 2 and not name.endswith(("wpe.weight", "router.weight", "conv1d.weight", "shared.gate.weight")):
            kind = K_FALLBACK[gguf_type] if gguf_type in K_FALLBACK and p.shape[-1] % 256 else gguf_type
            qtype = Q.F16 if kind.startswith(("q", "iq")) and p.shape[-1] % 32 else Q[kind.upper()]
            order = torch.arange(p.shape[-1])
            if name.endswith("attn.out_proj.weight") and model.config.linear_attention != "none":  # DeltaNet's
                order = order.view(d.n_head, -1, d.v_head_dim).transpose(0, 1).reshape(-1)
            values = p[..., order].numpy()
            data = (blockwise(values, K_QUANTIZERS[qtype.name], QK_K) if qtype.name in K_QUANTIZERS else
                    quantize_iq(values, qtype.name) if qtype.name in I_QUANTIZERS else quantize(values, qtype))
            stored = torch.from_numpy(dequantize(data, qtype)).view(p.shape)
            p[..., order] = stored
    return out


@pytest.mark.parametrize("family, cfg", [*MODELS.items(), *F32_ALSO])
def test_f32_gguf_loads_in_transformers_with_our_logits(family, cfg, tmp_path):
    ours = random_model(family, cfg=cfg)
    done = write_gguf(ours, get_tokenizer("byte"), tmp_path / "out", gguf_type="f32")
    assert done.family == family and done.path == tmp_path / "out" / FILE_NAME
    types = tensor_types(done.path)
    assert set(types.values()) == {"F32"}
    assert ("output.weight" in types) == (not cfg.tie_embeddings)  # no output matrix means tied
    assert_same_function(ours, load_gguf(tmp_path / "out", family, cfg))


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
@pytest.mark.parametrize("family", list(MODELS))
def test_f16_and_q8_0_hold_our_weights_rounded_to_their_type(family, gguf_type, tmp_path):
    """Exact against our model with the same rounding: the file holds nothing else. Against the
    unrounded model, f16 moved the logits by at most 0.085 over 5 seeds of these models (weights
    N(0, 0.3), logit std ~2.5), hence the bound 0.15; q8_0 by 0.29 (gpt2) to 1.8 (llama), and 5.6 for
    qwen3_moe, whose routing flips: random models this chaotic say little about q8_0's accuracy,
    which the trained run below bounds."""
    ours = random_model(family)
    done = write_gguf(ours, get_tokenizer("byte"), tmp_path / "out", gguf_type=gguf_type)
    types = tensor_types(done.path)
    for name, kind in types.items():  # norms, biases, GPT-2's position table and the router stay fp32
        keep_f32 = name.endswith((".bias", ".ssm_a")) or any(key in name for key in ("norm", "position_embd",
                                                                                     "ffn_gate_inp", "ssm_conv1d"))
        assert (kind == "F32") if keep_f32 else (kind in ("F16", "Q8_0")), name
    quantized = {n for n, kind in types.items() if kind == "Q8_0"}
    if gguf_type == "f16":
        assert not quantized and not done.fallback
    else:  # only gpt2's ffn_down rows (72) are not a multiple of 32
        kept = ["blk.0.ffn_down.weight", "blk.1.ffn_down.weight"] if family == "gpt2" else []
        assert done.fallback == dict.fromkeys(kept, "f16")
        assert quantized and all(types[n] == "F16" for n in done.fallback)
    hf = load_gguf(tmp_path / "out", family)
    assert_same_function(rounded_as_stored(ours, gguf_type), hf)
    if gguf_type == "f16":  # Qwen3.5's DeltaNet moves more: 0.17, and 0.31 with experts, on this seed;
        # Gemma 2 (logit std 4) 0.05 to 0.41 over 5 seeds, 0.22 on this one
        x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            bound = {"qwen3_5_text": 0.3, "qwen3_5_moe_text": 0.5, "gemma2": 0.5}.get(family, 0.15)
            assert (ours(x) - hf(x).logits).abs().max() < bound


SHARED_KEYS = {"context_length": 32, "embedding_length": 64, "feed_forward_length": 96, "block_count": 2,
               "attention.head_count": 4, "attention.head_count_kv": 2, "rope.freq_base": 10000.0}
GGUF_KEYS = {  # the hparams llama.cpp reads from the file (transformers' reader skips several), by hand
    "qwen3": {**SHARED_KEYS, "rope.dimension_count": 32, "attention.key_length": 32, "attention.value_length": 32},
    "qwen3_moe": {**SHARED_KEYS, "rope.dimension_count": 16, "attention.key_length": 16, "attention.value_length": 16,
                 "expert_count": 4, "expert_used_count": 2, "expert_feed_forward_length": 64},
}


@pytest.mark.parametrize("family, arch", [("qwen3", "qwen3"), ("qwen3_moe", "qwen3moe")])
def test_the_file_holds_the_hparams_and_token_ids_llama_cpp_reads(family, arch, tmp_path):
    """Read back with gguf's own reader: sizes, head counts and widths (qwen3's head_dim 32 is not
    n_embd / n_head; qwen3_moe's experts are narrower than mlp_hidden), the RMSNorm epsilon, and a
    chat run's bos (<|endoftext|>, 256), eos and pad (<|end|>, 260)."""
    from gguf import GGUFReader

    model = GPT(dataclasses.replace(MODELS[family], vocab_size=261))
    fields = GGUFReader(write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32", chat=True).path).fields
    read = {key: fields[f"{arch}.{key}"].contents() for key in GGUF_KEYS[family]}
    assert read == GGUF_KEYS[family]
    assert fields[f"{arch}.attention.layer_norm_rms_epsilon"].contents() == pytest.approx(1e-5)
    assert [fields[f"tokenizer.ggml.{key}_token_id"].contents() for key in ("bos", "eos", "padding")] == [256, 260, 260]
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False


def test_ids_past_the_tokenizer_are_unused_pad_tokens(tmp_path):
    """The llama model has 300 ids for 257 tokens: 256 bytes, <|endoftext|> (control), 43 [PAD<id>]."""
    from gguf import GGUFReader, TokenType

    fields = GGUFReader(write_gguf(GPT(MODELS["llama"]), get_tokenizer("byte"), tmp_path, gguf_type="f32").path).fields
    types, tokens = fields["tokenizer.ggml.token_type"].contents(), fields["tokenizer.ggml.tokens"].contents()
    assert types == [TokenType.NORMAL] * 256 + [TokenType.CONTROL] + [TokenType.UNUSED] * 43
    assert tokens[256:258] + tokens[-1:] == ["<|endoftext|>", "[PAD257]", "[PAD299]"]


def test_qwen3_5s_rotary_pairs_are_split_over_three_axes_as_its_mrope_sections():
    """Qwen3.5's 64-dimension rotary (32 pairs) is mrope_section [11, 11, 10] in its HF config."""
    assert _sections(32) == [11, 11, 10, 0] and _sections(4) == [2, 1, 1, 0]


def test_a_gemma_file_holds_its_softcaps_layer_flags_and_both_rope_bases(tmp_path):
    """llama.cpp's Gemma reads the window with a flag per layer (its own default pattern would not
    be ours), the sliding layers' RoPE base, the global layers' scaling, and the softcaps."""
    from gguf import GGUFReader

    def keys(family: str, arch: str, names: tuple[str, ...]) -> list:
        fields = GGUFReader(write_gguf(GPT(MODELS[family]), get_tokenizer("byte"), tmp_path / family,
                                       gguf_type="f32").path).fields
        return [fields[f"{arch}.{name}"].contents() for name in names]

    names = ("attention.sliding_window", "attention.sliding_window_pattern", "rope.freq_base", "rope.freq_base_swa")
    assert keys("gemma2", "gemma2", (*names, "attn_logit_softcapping", "final_logit_softcapping")) == \
        [6, [True, False], 10000.0, 10000.0, 20.0, 10.0]
    assert keys("gemma3_text", "gemma3", (*names, "rope.scaling.type", "rope.scaling.factor")) == \
        [6, [True, True, False], 100000.0, 1000.0, "linear", 4.0]


BLOCKED = [  # (family, the setting named, the change): what llama.cpp computes otherwise, though HF holds it
    ("gemma2", "model.attn_softcap=0.0", dict(attn_softcap=0.0)),  # llama.cpp's defaults: 50 and 30
    ("gemma2", "model.final_softcap=0.0", dict(final_softcap=0.0)),
    ("gemma2", "model.tie_embeddings=False", dict(tie_embeddings=False)),  # no output matrix
    ("gemma2", "model.window=0", dict(window=0, global_every=0)),  # always sliding layers
    ("gemma2", "model.attn_scale=0.1", dict(attn_scale=0.1)),  # queries scaled by 1/sqrt(head_dim),
    ("gemma2", "model.attn_scale=0.0", dict(n_layer=46)),  # in the 27B (46 layers) by 1/sqrt(n_embd / n_head)
    ("gemma3_text", "model.attn_softcap=30.0", dict(attn_softcap=30.0)),
    # the sliding layers linearly scaled too: llama.cpp's Gemma 3 scales only the global ones
    ("gemma3_text", "model.rope.local_theta=0.0", dict(rope=RopeConfig(theta=1e5, scaling="linear", factor=4.0))),
    # llama.cpp's qwen3moe always renormalises the top-k weights
    ("qwen3_moe", "model.moe.norm_topk=False", dict(moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=64,
                                                                  norm_topk=False))),
    # an architecture that extends another: the missing extension is named
    ("qwen3_5_moe_text", "model.moe.n_expert=0", dict(moe=MoEConfig())),
    ("qwen3_5_text", "model.linear_attention='none'", dict(linear_attention="none", deltanet=DeltaNetConfig())),
]


@pytest.mark.parametrize("family, setting, change", BLOCKED)
def test_a_setting_llama_cpp_computes_otherwise_is_refused(family, setting, change):
    with pytest.raises(ConfigError, match=f"cannot export as GGUF {family}: .*{re.escape(setting)}"):
        choose_gguf_family(dataclasses.replace(MODELS[family], **change), family)


def test_llama3_rope_scaling_travels_as_rope_freqs(tmp_path):
    """llama.cpp holds Llama 3's RoPE scaling as `rope_freqs`, each frequency's divisor (its
    converter's formula, written out here); transformers' reader skips that tensor, so the export's
    load line passes rope_parameters, and the model it builds computes our logits."""
    import math

    from transformers import AutoModelForCausalLM

    rope = RopeConfig(theta=5000.0, scaling="llama3", factor=8.0, original_max_pos=28)  # all three bands
    ours = randomize_(GPT(dataclasses.replace(MODELS["llama"], rope=rope)), 1, ones="vectors")
    done = write_gguf(ours, get_tokenizer("byte"), tmp_path / "out", gguf_type="f32")
    divisors = []
    for i in range(0, ours.config.head_dim, 2):
        wavelen = 2 * math.pi * 5000.0 ** (i / ours.config.head_dim)
        smooth = (28 / wavelen - 1.0) / (4.0 - 1.0)
        divisors.append(1.0 if wavelen < 28 / 4 else 8.0 if wavelen > 28 else 1 / ((1 - smooth) / 8 + smooth))
    from gguf import GGUFReader

    stored = {t.name: t.data for t in GGUFReader(done.path).tensors}["rope_freqs.weight"]
    assert min(divisors) == 1.0 and max(divisors) == 8.0 and len(set(divisors)) == 3
    torch.testing.assert_close(torch.from_numpy(stored.copy()), torch.tensor(divisors), atol=0, rtol=1e-6)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out", gguf_file=FILE_NAME, dtype=torch.float32,
                                              **done.load_kwargs).eval()
    assert_same_function(ours, hf)


def test_byte_tokenizer_from_the_gguf_encodes_our_ids(tmp_path):
    from transformers import AutoTokenizer

    write_gguf(random_model("gpt2"), get_tokenizer("byte"), tmp_path, gguf_type="f32")
    hf = AutoTokenizer.from_pretrained(tmp_path, gguf_file=FILE_NAME)
    text = "tab\t é 日本 🤖 \x00 end  two  spaces\n"
    assert hf.encode(text, add_special_tokens=False) == list(text.encode())
    assert hf.decode(list(text.encode())) == text
    assert len(hf) == 257 and hf.eos_token_id == hf.bos_token_id == hf.pad_token_id == 256


@pytest.mark.slow  # transformers' GGUF reader takes ~15 s over GPT-2's 50,257 tokens and 50,000 merges
@needs_gpt2_ranks
def test_gpt2_tokenizer_from_the_gguf_encodes_like_tiktoken(tmp_path):
    from transformers import AutoTokenizer

    ours = get_tokenizer("gpt2", GPT2_RANKS)
    cfg = ModelConfig(**SIZES | dict(vocab_size=50257, n_embd=32, n_head=2, n_layer=1))
    write_gguf(GPT(cfg), ours, tmp_path, gguf_type="f16")
    hf = AutoTokenizer.from_pretrained(tmp_path, gguf_file=FILE_NAME)
    assert len(hf) == 50257 and hf.eos_token_id == hf.bos_token_id == 50256
    for text in ["def f(x):\n    return x * 2  # é", "It's  two   spaces\n\n\ttabs 🤖 日本語", " lead"]:
        ids = ours.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == text


@pytest.mark.parametrize("gguf_type", ["bf16", "q5_1", "q5_0", "q4_1", "q4_0"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_bf16_and_the_4_and_5_bit_types_hold_our_weights_rounded_to_their_type(family, gguf_type, tmp_path):
    """Each matrix in the type, token embeddings and output included (llama-quantize --pure), but
    gpt2's ffn_down, whose rows of 72 are no multiple of 32 (kept in f16 and named); the file's
    general.file_type says the type."""
    from gguf import GGUFReader, LlamaFileType

    ours = random_model(family)
    done = write_gguf(ours, get_tokenizer("byte"), tmp_path / "out", gguf_type=gguf_type)
    types = tensor_types(done.path)
    kept = ["blk.0.ffn_down.weight", "blk.1.ffn_down.weight"] if family == "gpt2" and gguf_type != "bf16" else []
    assert done.fallback == dict.fromkeys(kept, "f16")
    matrices = {n for n, kind in types.items() if kind != "F32"}
    assert {"token_embd.weight", "blk.0.attn_output.weight"} <= matrices
    assert {types[n] for n in matrices - set(kept)} == {gguf_type.upper()}
    file_type = GGUFReader(done.path).fields["general.file_type"]
    assert LlamaFileType(int(file_type.parts[file_type.data[0]][0])).name == f"MOSTLY_{gguf_type.upper()}"
    assert_same_function(rounded_as_stored(ours, gguf_type), load_gguf(tmp_path / "out", family))


@pytest.mark.parametrize("gguf_type, bound", [("q8_0", 1e-2), ("q4_0", 0.2), ("q4_k", 0.2)])
def test_a_quantized_export_of_a_trained_run_stays_near_our_logits(base, tmp_path, capsys, gguf_type, bound):
    """q8_0 stores each block of 32 weights as int8 times one fp16 scale: a weight moves by at most
    1/254 of its block's largest. On this run that moved the logits by 2.2e-3 (their std: 0.19), and
    greedy decoding gives our tokens. q4_0's 4 bits (a step of 1/8 of the block's largest) moved
    them by 0.047. Each bound leaves a margin of over 4x. Its rows (n_embd = 32, mlp 128) are all
    quantized; q4_k's want 256, so every matrix takes llama.cpp's fallback, q5_0, and is named."""
    out = tmp_path / "gguf"
    out.mkdir()  # an empty directory is taken
    code, stdout, err = cli(capsys, base, out, "--format", "gguf", "--gguf_type", gguf_type, entry=export.main)
    assert code == 0, err
    kept = ("; kept in q5_0, rows not a multiple of 256: blk.*.attn_output.weight, blk.*.attn_qkv.weight, "
            "blk.*.ffn_down.weight, blk.*.ffn_up.weight, token_embd.weight") if gguf_type == "q4_k" else ""
    assert f"wrote {out / FILE_NAME} (GGUF gpt2, {gguf_type}{kept})" in stdout
    assert f"from_pretrained({str(out)!r}, gguf_file='model.gguf', n_positions=32)" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gguf"]  # no staging directory left
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out, gguf_file=FILE_NAME, n_positions=32).eval()
    ours = load_run(base).model
    x = torch.tensor([list("def f1_2(x):\n    return".encode())])
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() < bound
    if gguf_type == "q8_0":
        n_new = ours.config.block_size - x.shape[1]
        expected = sample(ours, x, n_new, dict(temperature=0.0), stop=256)[0]
        assert hf.generate(x, max_new_tokens=n_new, do_sample=False)[0].tolist() == expected


@pytest.fixture(scope="module")
def mla_run(tmp_path_factory, corpus):
    """A one-step run of a model no GGUF architecture here can hold (Multi-head Latent Attention)."""
    out = tmp_path_factory.mktemp("mla") / "run"
    Trainer(load_config(None, [*TINY, *corpus, "--model.attention=mla", f"--train.out_dir={out}",
                               "--train.max_steps=1", "--train.eval_interval=0"])).fit()
    return out


def test_bad_input_exits_2_in_one_line_and_writes_nothing(base, mla_run, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "file.gguf").write_text("not a directory")
    cases = [
        ([base, tmp_path / "o", "--gguf_type", "f16"], "--gguf_type does not apply to --format hf"),
        ([base, tmp_path / "o", "--format", "gguf", "--dtype", "fp16"], "--dtype does not apply to --format gguf"),
        ([base, tmp_path / "o", "--format", "gguf", "--gguf_type", "q2_k_s"], "invalid choice: 'q2_k_s'"),
        ([base, tmp_path / "full", "--format", "gguf"], "exists and is not an empty directory"),
        ([base, tmp_path / "file.gguf", "--format", "gguf"], "exists and is not an empty directory"),
        ([base, tmp_path / "new.gguf", "--format", "gguf"], "is the directory to hold model.gguf"),
        ([base, tmp_path / "o", "--format", "gguf", "--family", "mistral"],
         f"--family for --format gguf must be auto or one of {ALL_ARCHS}"),
        ([base, tmp_path / "o", "--format", "gguf", "--family", "llama"],
         "cannot export as GGUF llama: model.pos='learned', model.norm='layernorm'"),
        ([mla_run, tmp_path / "o", "--format", "gguf"],
         "none of the 16 GGUF architectures can hold this model; the closest, gpt2, "
         "is blocked by model.attention='mla'"),
    ]
    before = {path: snapshot(path) for path in (base, mla_run, tmp_path)}
    for args, message in cases:
        code, _, err = cli(capsys, *args, entry=export.main)
        line = error_line(err)
        assert code == 2 and message in line and len(line) < 300, (args, line)
    assert {path: snapshot(path) for path in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.gguf", "full"]


def test_a_write_that_fails_halfway_leaves_nothing(base, tmp_path, capsys, monkeypatch):
    import gguf

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    code, _, err = cli(capsys, base, tmp_path / "o", "--format", "gguf", entry=export.main)
    assert code == 1 and "No space left on device" in error_line(err)
    assert list(tmp_path.iterdir()) == []


PRESET_ARCH = {"qwen3": "qwen3", "qwen3-moe": "qwen3_moe", "mixtral": "mixtral", "qwen3.5": "qwen3_5_text",
               "qwen3.5-moe": "qwen3_5_moe_text", "deepseek-v3": "deepseek_v3",
               "gpt-oss": "gpt_oss", "llama3": "llama", "gemma2": "gemma2", "gemma3": "gemma3_text",
               "olmo2": "olmo2", "olmo3": "olmo3", "qwen3-next": "qwen3_next"}  # the presets a GGUF architecture holds
CLOSEST = {  # presets refused, each with the architecture and setting the refusal must name
    "mistral": ("llama", "model.window=128"),
    "deepseek-v3.2": ("deepseek_v32", "model.mla.index_head_dim=32"),  # llama.cpp's Hadamard needs 64, 128, ...
    "gpt-oss-dense": ("llama", "model.window=32"),  # gpt_oss's HF refusal (no experts) names one setting
}


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs" / "presets").glob("*.toml")))
def test_each_preset_exports_or_is_refused_in_one_line_naming_the_closest(name):
    cfg = load_config(ROOT / "configs" / "presets" / f"{name}.toml").model
    if name in PRESET_ARCH:
        assert choose_gguf_family(cfg) == PRESET_ARCH[name]
        return
    with pytest.raises(ConfigError) as e:
        choose_gguf_family(cfg)
    message = str(e.value)
    assert "\n" not in message and len(message) < 300 and "; the closest, " in message
    if name in CLOSEST:
        family, setting = CLOSEST[name]
        assert f"the closest, {family}, is blocked by " in message and setting in message


def test_a_chat_runs_gguf_holds_its_chat_tokens_template_and_eos(tmp_path):
    from transformers import AutoTokenizer

    from train.post.chat_format import ChatFormat, Message

    model = GPT(ModelConfig(**{**SIZES, "vocab_size": 261}))  # the byte vocabulary and the chat tokens
    write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32", chat=True)
    hf = AutoTokenizer.from_pretrained(tmp_path, gguf_file=FILE_NAME)
    messages = [Message("system", "Add."), Message("user", "2+3= é"), Message("assistant", "5"), Message("user", "4+4=")]
    ids = hf.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                 add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == ChatFormat(get_tokenizer("byte")).prompt(messages)
    assert len(hf) == 261 and hf.eos_token_id == 260 and hf.bos_token_id == 256
    assert hf.convert_ids_to_tokens([257, 258, 259, 260]) == ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
