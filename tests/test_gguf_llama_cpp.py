"""A GGUF export in llama.cpp: the file holds what llama.cpp's loader requires, and, where
llama-cpp-python is installed, llama.cpp computes our logits and tokens (scripts/gguf_llama_cpp.py)."""

import argparse
import dataclasses
import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model import GPT
from model.hf import to_hf
from model.config import MLAConfig, ModelConfig, MoEConfig, RopeConfig
from test_gguf import LLAMA, MODELS, SIZES, mla_run, wide  # noqa: F401 (a fixture)
from tiny_run import GPT2_RANKS, TINY, error_line, load_script, needs_gpt2_ranks, randomize_
from train import export
from train.cli import run_cli
from train.config import ConfigError, load_config
from train.gguf_export import FILE_TYPES, choose_gguf_family, write_gguf
from train.gguf_kquants import MIXES
from train.tokenizer import get_tokenizer
from train.trainer import Trainer

pytest.importorskip("gguf")
check = load_script("gguf_llama_cpp")
needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed")
TEXT = Path(argparse.__file__).read_text(encoding="utf-8")
LLAMA_RUN = ["--model.pos=rope", "--model.norm=rmsnorm", "--model.mlp=swiglu", "--model.bias=false",
             "--model.n_kv_head=1", "--model.dropout=0.0"]  # a run an HF llama (or mixtral) holds


def test_a_byte_vocabulary_has_the_empty_merges_list_llama_cpp_requires(tmp_path):
    """llama.cpp's BPE loader refuses a file without tokenizer.ggml.merges, and requires an array of
    strings; a byte vocabulary has no merges, so the list is there and empty."""
    from gguf import GGUFReader, GGUFValueType

    field = GGUFReader(write_gguf(random_model("gpt2"), get_tokenizer("byte"), tmp_path, gguf_type="f32").path) \
        .fields["tokenizer.ggml.merges"]
    value_type, item_type, length = (int(part[0]) for part in field.parts[2:5])  # after the key's length and text
    assert (value_type, item_type, length) == (GGUFValueType.ARRAY, GGUFValueType.STRING, 0)


def test_the_script_refuses_bad_input_in_one_line(base, mla_run, tmp_path, capsys, monkeypatch):
    main = check.main
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "convert_hf_to_gguf.py").touch()  # a llama.cpp tree, as far as the check looks
    for argv, message in (([str(base), "--new", "0"], "--new must be >= 1"),
                          ([str(base), "--windows", "0"], "--windows must be >= 1"),
                          ([str(mla_run)], "GGUF architectures can hold"),
                          ([str(base), "--text", str(tmp_path / "no.txt")], "no such file"),
                          ([str(base), "--new", "17"], "at most 16 fit after 16 prompt tokens"),
                          ([str(base), "--convert", str(tmp_path)], "no convert_hf_to_gguf.py there"),
                          ([str(base), "--convert", str(tmp_path / "tree"), "--gguf_type", "q4_0"],
                           "--gguf_type q4_0 with --convert: llama.cpp's converter writes f32, f16, bf16, q8_0")):
        assert run_cli(main, argv) == 2 and message in error_line(capsys.readouterr().err)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # an import of it fails
    assert run_cli(main, [str(base)]) == 2
    assert "needs llama-cpp-python" in error_line(capsys.readouterr().err)


class OurModelAsLlama:
    """llama-cpp-python's Llama as the script uses it, computed by our own model."""

    def __init__(self, model: GPT, tok):
        self.model, self.tok, self.ids = model, tok, []

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        return self.tok.encode(text.decode())

    def reset(self):
        self.ids = []

    def eval(self, tokens: list[int]):
        self.ids += list(tokens)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def scores(self) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.tensor([self.ids]))[0].numpy()


def test_windows_score_the_texts_windows_one_after_another():
    """--windows N: both losses over the text's first N windows of block_size, each window's first
    token unscored, written out here window by window; as many as the text holds when it holds
    fewer."""
    model, tok = randomize_(GPT(ModelConfig(**SIZES)), 1).eval(), get_tokenizer("byte")
    ids = tok.encode(TEXT)
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(model(torch.tensor([ids[i:i + 32]]))[0, :-1],
                                                    torch.tensor(ids[i + 1:i + 32])).item() for i in (0, 32, 64)]
    found = check.compare(model, tok, OurModelAsLlama(model, tok), TEXT, 8, windows=3)
    assert found["windows"] == 3 and found["max_diff"] == 0 and found["same_greedy"] and found["same_ids"]
    assert found["loss"][0] == found["loss"][1] == pytest.approx(sum(losses) / 3, rel=1e-6)
    short = TEXT[:100]  # 3 windows of 32
    assert check.compare(model, tok, OurModelAsLlama(model, tok), short, 8, windows=10)["windows"] == 3


OLMO = dict(pos="rope", norm="rmsnorm", norm_placement="post", qk_norm="full", mlp="swiglu", bias=False, n_kv_head=2,
            mlp_hidden=96, tie_embeddings=False)


def deepseek(**indexer) -> ModelConfig:
    """DeepSeek-V3 (MLA with a q LoRA, a dense first layer, then a group-limited sigmoid MoE); with
    `indexer` (mla.index_*), DeepSeek-V3.2's DSA."""
    mla = MLAConfig(q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, **indexer)
    return ModelConfig(**SIZES, **LLAMA | dict(n_kv_head=0), head_dim=12, attention="mla", mla=mla,
                       moe=MoEConfig(n_expert=8, top_k=2, expert_hidden=32, n_shared=1, router="sigmoid",
                                     n_group=4, topk_group=2, first_dense=1, routed_scale=2.5))


DSA = dict(index_topk=4, index_n_head=4, index_head_dim=64)  # each query keeps its best 4 keys of up to 32
# test_gguf's models, and those transformers' GGUF reader cannot build: Mixtral's experts on llama,
# DeepSeek-V3 and V3.2
ALL = MODELS | {
    "mixtral": ModelConfig(**SIZES, **LLAMA, moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=96)),
    "deepseek_v3": deepseek(),
    "deepseek_v32": deepseek(**DSA),
    # Llama 3's RoPE scaling, which llama.cpp reads from a tensor of its own
    "llama3-scaled": dataclasses.replace(MODELS["llama"], rope=RopeConfig(theta=5000.0, scaling="llama3", factor=8.0,
                                                                          original_max_pos=28)),
    # gpt-oss: sinks, a 6-token window on every other layer, YaRN, the clamped SwiGLU, biases everywhere;
    # the YaRN ramp ends at dimension 1.08, which llama.cpp rounds to 2 (as rope.truncate does)
    "gpt_oss": ModelConfig(**SIZES, **LLAMA | dict(mlp="swiglu_clamped", bias=True, mlp_hidden=32), head_dim=16,
                           attn_sinks=True, window=6, global_every=2, tie_embeddings=False,
                           rope=RopeConfig(theta=1000.0, scaling="yarn", factor=4.0, original_max_pos=16),
                           moe=MoEConfig(n_expert=8, top_k=2, expert_hidden=32, router_bias=True)),
    # biases on every projection, which llama.cpp's llama reads (transformers' reader does not)
    "llama-biased": dataclasses.replace(MODELS["llama"], bias=True),
    # rung 01 as GPT-NeoX: GPT-2 with RoPE, here on half of each head, tied (llama.cpp reads `output`)
    "gpt_neox": ModelConfig(**SIZES, pos="rope", norm="layernorm", bias=True, rope=RopeConfig(fraction=0.5)),
    # Qwen3-Next: Qwen3.5-MoE's model with a dense width of its own, which Qwen3.5-MoE's HF config lacks
    "qwen3_next": dataclasses.replace(MODELS["qwen3_5_moe_text"], mlp_hidden=48),
    # OLMo 2: norms after each branch, QK-norm over the whole projections, GQA, an untied head
    "olmo2": ModelConfig(**SIZES, **OLMO),
    # OLMo 3: 3 sliding layers : 1 global with YaRN, the sliding ones plain RoPE at the same base
    "olmo3": ModelConfig(**SIZES | dict(n_layer=4), **OLMO, window=6, global_every=4,
                         rope=RopeConfig(theta=1000.0, scaling="yarn", factor=4.0, original_max_pos=16,
                                         local_theta=1000.0)),
}
# f32 logits: the decoders agree to about 4e-5; gpt2 to about 2e-3 and Gemma to 8e-3, because ggml's
# CPU GELU reads a table indexed by its input rounded to fp16 (docs/LOG.md). With that table in our
# model, 4e-4 to 2e-3; a wrong softcap, window, query scale or RoPE base moves them by 0.28 to 23.
# The Gated DeltaNet MoEs' experts: 3e-4 on one Xeon, 6.8e-4 (Qwen3.5-MoE) on one AMD EPYC.
ATOL = {"gpt2": 5e-3, "llama": 2e-4, "qwen3": 2e-4, "qwen3_moe": 2e-4, "mixtral": 2e-4, "qwen3_5_text": 5e-4,
        "qwen3_5_moe_text": 1e-3, "deepseek_v3": 2e-4, "deepseek_v32": 2e-4, "gpt_oss": 2e-4, "llama3-scaled": 2e-4,
        "llama-biased": 2e-4, "qwen3_next": 1e-3, "gpt_neox": 5e-3, "olmo2": 2e-4, "olmo3": 2e-4, "gemma2": 2e-2,
        "gemma3_text": 2e-2}


def file_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A GGUF file's tensors by name, as stored."""
    from gguf import GGUFReader

    return {t.name: torch.from_numpy(t.data.copy()) for t in GGUFReader(path).tensors}


def random_model(family: str, cfg: ModelConfig | None = None) -> GPT:
    return randomize_(GPT(cfg or ALL[family]), 1, ones="vectors")


@needs_llama_cpp
@pytest.mark.parametrize("family", list(ALL))
def test_llama_cpp_computes_our_logits_and_greedy_tokens(family, tmp_path):
    model = random_model(family).eval()
    path = write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32").path
    found = check.compare(model, get_tokenizer("byte"), check.load_llama(path, 32, no_repack=True), TEXT, 16)
    assert found["same_ids"] and found["same_greedy"] and found["same_argmax"] == 1.0
    assert found["max_diff"] < ATOL[family] and found["logit_std"] > 1.0


@needs_llama_cpp
@pytest.mark.parametrize("family, gguf_type", [*((f, t) for f in ("gpt2", "llama", "qwen3_moe") for t in FILE_TYPES
                                                   if t != "f32" and t not in MIXES),
                                                 *((f, t) for f in ALL for t in MIXES)])
def test_each_type_holds_the_bytes_llama_quantize_writes(family, gguf_type, tmp_path):
    """Our file of a type against llama.cpp's own quantizer run on our f32 file (llama-quantize
    --pure, or its own mix for q4_k_m and q5_k_m): every tensor has the same type and the same bytes,
    gpt2's ffn_down kept in f16 (rows of 72) and the router in f32 included. The k-quants' and
    iq4_xs's models are 256 wide, so that their rows of 256 take the type and the narrower ones
    llama.cpp's fallback;
    the mixes' have 12 layers, of which llama.cpp gives 6 more bits, and 8 experts where they have
    experts, which moves attention too."""
    import llama_cpp
    from gguf import GGUFReader

    cfg = ALL[family]
    if gguf_type in MIXES and cfg.moe.n_expert:
        cfg = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, n_expert=8))
    model = random_model(family, cfg=wide(cfg, n_layer=12 if gguf_type in MIXES else cfg.n_layer)
                         if "_k" in gguf_type or gguf_type == "iq4_xs" else None)
    source = write_gguf(model, get_tokenizer("byte"), tmp_path / "f32", gguf_type="f32").path
    ours = write_gguf(model, get_tokenizer("byte"), tmp_path / "ours", gguf_type=gguf_type).path
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{FILE_TYPES[gguf_type][0]}")
    params.pure = gguf_type not in MIXES
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(tmp_path / "theirs.gguf").encode(), params) == 0
    theirs = {t.name: t for t in GGUFReader(tmp_path / "theirs.gguf").tensors}
    mine = GGUFReader(ours).tensors
    assert sorted(t.name for t in mine) == sorted(theirs)
    for t in mine:
        assert t.tensor_type == theirs[t.name].tensor_type and np.array_equal(t.data, theirs[t.name].data), t.name
    assert {t.tensor_type.name for t in mine} >= {FILE_TYPES[gguf_type][1]}


@needs_llama_cpp
@needs_gpt2_ranks
def test_llama_cpp_tokenizes_like_tiktoken(tmp_path):
    tok = get_tokenizer("gpt2", GPT2_RANKS)
    model = randomize_(GPT(ModelConfig(vocab_size=50304, block_size=32, n_layer=1, n_head=2, n_embd=32)), 1)
    llm = check.load_llama(write_gguf(model.eval(), tok, tmp_path, gguf_type="f32").path, 32)
    for text in [TEXT, "It's  two   spaces\n\n\ttabs 🤖 日本語 <|endoftext|>", " lead"]:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)
    with torch.no_grad():
        assert check.compare(model, tok, llm, TEXT, 8)["same_greedy"]


def test_exporting_a_mixtral_run_says_the_file_is_for_llama_cpp(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    Trainer(load_config(None, [*TINY, *corpus, *LLAMA_RUN, f"--train.out_dir={run}", "--train.max_steps=1",
                               "--train.eval_interval=0", "--model.moe.n_expert=4", "--model.moe.top_k=2",
                               "--model.mlp_hidden=64", "--model.moe.expert_hidden=64"])).fit()
    capsys.readouterr()
    assert run_cli(export.main, [str(run), str(tmp_path / "gguf"), "--format", "gguf"]) == 0
    out = capsys.readouterr().out
    assert "(GGUF mixtral, f16); run it with llama.cpp" in out and "from_pretrained" not in out


@needs_llama_cpp
@needs_gpt2_ranks
@pytest.mark.skipif("LLAMA_CPP_DIR" not in os.environ, reason="LLAMA_CPP_DIR (a llama.cpp source tree) is not set")
def test_llama_cpps_converter_takes_our_hf_export(tmp_path, corpus, capsys):
    """A llama-family run with GPT-2's tokenizer (the converter knows no byte tokenizer), exported
    by train.export and converted by llama.cpp's convert_hf_to_gguf.py: our ids, logits, tokens."""
    run = tmp_path / "run"
    Trainer(load_config(None, [*TINY, *corpus, f"--train.out_dir={run}", "--train.max_steps=1",
                               "--train.eval_interval=0", "--data.tokenizer=gpt2", f"--data.tokenizer_path={GPT2_RANKS}",
                               *LLAMA_RUN])).fit()
    capsys.readouterr()
    assert run_cli(check.main, [str(run), "--convert", os.environ["LLAMA_CPP_DIR"]]) == 0
    out = capsys.readouterr().out
    assert "GGUF of HF llama (llama.cpp's converter)" in out and "the same ids: True" in out
    assert "the same tokens: True" in out and "argmax at 100.0%" in out


@pytest.mark.parametrize("family, arch", [("mixtral", "llama"), ("gpt_oss", "gpt-oss")])
def test_an_experts_file_holds_our_experts_and_router_as_llama_cpp_reads_them(family, arch, tmp_path):
    """Without llama.cpp: the expert tensors are our stacked [gate; up] and down weights, (out, in),
    the router as is; gpt-oss's biases split the same way, and its sinks (HF stores its experts
    (in, out) with gate and up interleaved). transformers cannot build either (no load line)."""
    from gguf import GGUFReader

    model, cfg = random_model(family), ALL[family]
    done = write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32")
    assert done.load_kwargs is None
    reader = GGUFReader(done.path)
    assert reader.fields["general.architecture"].contents() == arch
    counts = [reader.fields[f"{arch}.expert_{k}"].contents() for k in ("count", "used_count")]
    assert counts == [cfg.moe.n_expert, cfg.moe.top_k]
    tensors = file_tensors(done.path)
    hidden = cfg.moe.expert_hidden
    for i, block in enumerate(model.transformer.h):
        experts, router = block.mlp.experts, block.mlp.router
        expected = {"ffn_gate_exps.weight": experts.c_fc[:, :hidden], "ffn_up_exps.weight": experts.c_fc[:, hidden:],
                    "ffn_down_exps.weight": experts.c_proj, "ffn_gate_inp.weight": router.weight}
        if family == "gpt_oss":
            expected |= {"ffn_gate_exps.bias": experts.c_fc_bias[:, :hidden],
                         "ffn_up_exps.bias": experts.c_fc_bias[:, hidden:], "ffn_down_exps.bias": experts.c_proj_bias,
                         "ffn_gate_inp.bias": router.bias, "attn_sinks.weight": block.attn.sinks}
        for name, weight in expected.items():
            torch.testing.assert_close(tensors[f"blk.{i}.{name}"], weight.detach(), atol=0, rtol=0)


def test_a_deepseek_file_holds_mla_as_llama_cpps_absorbed_decode_reads_it(tmp_path):
    """Without llama.cpp: MLA is one KV head over [latent; rotary key], and kv_b_proj (rows per head
    [k_nope; v], columns the latent) is split into k_b, each head transposed to (latent, k_nope),
    and v_b (v, latent); the correction bias is exp_probs_b."""
    model, cfg = random_model("deepseek_v3"), ALL["deepseek_v3"]
    done = write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32")
    assert done.load_kwargs is None
    tensors = file_tensors(done.path)
    nope, same = cfg.mla.qk_nope_head_dim, dict(atol=0, rtol=0)
    for i, block in enumerate(model.transformer.h):
        rows = block.attn.kv_b_proj.weight.detach().view(cfg.n_head, nope + cfg.mla.v_head_dim, -1)
        for h in range(cfg.n_head):
            torch.testing.assert_close(tensors[f"blk.{i}.attn_k_b.weight"][h], rows[h, :nope].T, **same)
            torch.testing.assert_close(tensors[f"blk.{i}.attn_v_b.weight"][h], rows[h, nope:], **same)
    torch.testing.assert_close(tensors["blk.1.exp_probs_b.bias"], model.transformer.h[1].mlp.router.expert_bias, **same)


@needs_llama_cpp
def test_llama_cpp_keeps_the_keys_our_indexer_keeps(tmp_path):
    """DSA's selection is at work in both: the same model attending to every key (index_topk 32) is
    far from llama.cpp's logits, which are within ATOL of ours."""
    model, tok = random_model("deepseek_v32").eval(), get_tokenizer("byte")
    llm = check.load_llama(write_gguf(model, tok, tmp_path, gguf_type="f32").path, 32, no_repack=True)
    cfg = ALL["deepseek_v32"]
    dense = GPT(dataclasses.replace(cfg, mla=dataclasses.replace(cfg.mla, index_topk=32))).eval()
    dense.load_state_dict(model.state_dict())
    window = tok.encode(TEXT)[:32]
    llm.reset()
    llm.eval(window)
    theirs = torch.from_numpy(llm.scores[:32].copy())
    with torch.no_grad():
        ours, everything = model(torch.tensor([window]))[0], dense(torch.tensor([window]))[0]
    assert (theirs - ours).abs().max() < ATOL["deepseek_v32"] < 1.0 < (theirs - everything).abs().max()
    assert (ours[:4] - everything[:4]).abs().max() < 1e-4  # up to 4 keys: each query keeps them all


def test_a_deepseek32_file_holds_the_indexer_as_llama_cpp_reads_it(tmp_path):
    """Without llama.cpp: the architecture llama.cpp knows as deepseek32, the indexer's sizes, and its
    four tensors as our model holds them (its RoPE is rotate-half in both)."""
    from gguf import GGUFReader

    model = random_model("deepseek_v32")
    path = write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32").path
    fields = GGUFReader(path).fields
    assert fields["general.architecture"].contents() == "deepseek32"
    indexer = {"head_count": 4, "key_length": 64, "top_k": 4}
    assert {key: fields[f"deepseek32.attention.indexer.{key}"].contents() for key in indexer} == indexer
    assert fields["deepseek32.attention.key_length_mla"].contents() == 24  # deepseek2's keys too
    tensors = file_tensors(path)
    for i, block in enumerate(model.transformer.h):
        index = block.attn.indexer
        expected = {"attn_q_b.weight": index.q_up.weight, "attn_k.weight": index.k_proj.weight,
                    "k_norm.weight": index.k_norm.weight, "k_norm.bias": index.k_norm.bias,
                    "proj.weight": index.head_weights.weight}
        for name, weight in expected.items():
            torch.testing.assert_close(tensors[f"blk.{i}.indexer.{name}"], weight.detach(), atol=0, rtol=0)


KEYS = {  # the hparams llama.cpp reads from the file, by hand
    # MLA as one KV head over [latent 16; rotary 8], heads of 16 + 8 and 12 for the absorbed decode
    "deepseek_v3": {"attention.head_count_kv": 1, "attention.key_length": 24, "attention.value_length": 16,
                    "attention.key_length_mla": 24, "attention.value_length_mla": 12, "rope.dimension_count": 8,
                    "leading_dense_block_count": 1, "expert_shared_count": 1, "expert_weights_scale": 2.5,
                    "expert_weights_norm": True, "expert_gating_func": 2,  # sigmoid
                    "expert_group_count": 4, "expert_group_used_count": 2},
    "gpt-oss": {"attention.sliding_window": 6, "rope.scaling.type": "yarn", "rope.scaling.factor": 4.0,
                "rope.scaling.original_context_length": 16, "rope.scaling.yarn_beta_fast": 32.0,
                "rope.scaling.yarn_beta_slow": 1.0},
    # the DeltaNet's sizes and the partial rotary (8 of 32), without Qwen3.5's M-RoPE sections
    "qwen3_next": {"full_attention_interval": 4, "ssm.state_size": 16, "ssm.group_count": 2,
                   "ssm.time_step_rank": 4, "ssm.inner_size": 64, "rope.dimension_count": 8,
                   "expert_shared_feed_forward_length": 32, "expert_count": 4, "expert_used_count": 2},
    "gpt_neox": {"use_parallel_residual": False, "rope.dimension_count": 8, "rope.freq_base": 10000.0},
    "olmo3": {"attention.sliding_window": 6, "attention.sliding_window_pattern": [True, True, True, False],
              "rope.freq_base": 1000.0, "rope.scaling.type": "yarn", "rope.scaling.factor": 4.0,
              "rope.scaling.original_context_length": 16},
}


@pytest.mark.parametrize("family", KEYS)
def test_the_file_holds_the_keys_llama_cpp_reads(family, tmp_path):
    from gguf import GGUFReader

    name = family.replace("-", "_")
    fields = GGUFReader(write_gguf(random_model(name), get_tokenizer("byte"), tmp_path, gguf_type="f32").path).fields
    arch = fields["general.architecture"].contents()
    assert {key: fields[f"{arch}.{key}"].contents() for key in KEYS[family]} == KEYS[family]
    assert f"{arch}.rope.dimension_sections" not in fields


def test_a_biased_llama_file_keeps_each_q_and_k_bias_with_its_reordered_row(tmp_path):
    """Without llama.cpp: the rows of q and k are reordered for llama.cpp's RoPE layout (not the
    identity), and each bias goes with its row; the command says the file is for llama.cpp."""
    model, cfg = random_model("llama-biased"), ALL["llama-biased"]
    done = write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32")
    assert done.load_kwargs is None and done.unreadable == "transformers' GGUF reader builds llama without biases"
    tensors = file_tensors(done.path)
    weight, bias = model.transformer.h[0].attn.c_attn.weight.detach(), model.transformer.h[0].attn.c_attn.bias.detach()
    q_rows = cfg.n_head * cfg.head_dim
    for name, rows in (("attn_q", slice(0, q_rows)), ("attn_k", slice(q_rows, q_rows + cfg.n_kv_head * cfg.head_dim))):
        ours_w, ours_b = weight[rows], bias[rows]
        order = [int((ours_w == row).all(dim=1).nonzero()) for row in tensors[f"blk.0.{name}.weight"]]
        assert order != sorted(order) and sorted(order) == list(range(len(order)))
        assert torch.equal(tensors[f"blk.0.{name}.bias"], ours_b[order])


def test_a_qwen3_next_file_keeps_hfs_grouped_value_heads(tmp_path):
    """Without llama.cpp: its qwen3next reads HF's fused in_proj_qkvz and in_proj_ba as they are, value
    heads grouped by key head (Qwen3.5's files tile them); A as -exp(A_log), the convolution 2-D,
    norms as 1 + w except the DeltaNet's own; transformers has no reader for it."""
    model = random_model("qwen3_next")
    done = write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32")
    assert done.family == "qwen3_next" and done.load_kwargs is None
    hf = {k: v.detach() for k, v in to_hf(model, "qwen3_next").state_dict().items()}
    tensors = file_tensors(done.path)
    layer = "model.layers.0."
    expected = {"ssm_in.weight": hf[layer + "linear_attn.in_proj_qkvz.weight"],
                "ssm_ba.weight": hf[layer + "linear_attn.in_proj_ba.weight"],
                "ssm_a": -hf[layer + "linear_attn.A_log"].exp(), "ssm_dt.bias": hf[layer + "linear_attn.dt_bias"],
                "ssm_conv1d.weight": hf[layer + "linear_attn.conv1d.weight"][:, 0],
                "ssm_norm.weight": hf[layer + "linear_attn.norm.weight"],
                "attn_norm.weight": hf[layer + "input_layernorm.weight"] + 1}
    for name, value in expected.items():
        assert torch.equal(tensors[f"blk.0.{name}"], value), name


def test_a_gpt_neox_file_holds_our_qkv_rows_and_an_output_matrix_though_tied(tmp_path):
    """Without llama.cpp: its gptneox reads [q; k; v] over all heads (HF's rows go per head), and
    requires `output`, so a tied model's embedding is written twice."""
    model = random_model("gpt_neox")
    done = write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32")
    assert done.family == "gpt_neox" and done.load_kwargs is None
    tensors = file_tensors(done.path)
    attn = model.transformer.h[1].attn.c_attn
    assert torch.equal(tensors["blk.1.attn_qkv.weight"], attn.weight.detach())
    assert torch.equal(tensors["blk.1.attn_qkv.bias"], attn.bias.detach())
    assert torch.equal(tensors["output.weight"], tensors["token_embd.weight"])


def test_an_olmo_file_holds_its_norms_where_llama_cpp_reads_them(tmp_path):
    """Without llama.cpp: the norms after each branch as attn_post_norm and post_ffw_norm, QK-norm
    over all query heads (64) and all KV heads (2 x 16), the untied head; no transformers reader."""
    model = random_model("olmo3")
    done = write_gguf(model, get_tokenizer("byte"), tmp_path, gguf_type="f32")
    assert done.load_kwargs is None
    tensors = file_tensors(done.path)
    for i, block in enumerate(model.transformer.h):
        ours = {"attn_q_norm": block.attn.q_norm, "attn_k_norm": block.attn.k_norm,
                "post_attention_norm": block.ln_1, "post_ffw_norm": block.ln_2}
        for name, norm in ours.items():
            assert torch.equal(tensors[f"blk.{i}.{name}.weight"], norm.weight.detach()), name
    assert tensors["blk.0.attn_k_norm.weight"].shape == (32,)
    assert torch.equal(tensors["output.weight"], model.lm_head.weight.detach()[:257])


def rope(family: str, **change) -> ModelConfig:
    return dataclasses.replace(ALL[family], rope=dataclasses.replace(ALL[family].rope, **change))


@pytest.mark.parametrize("family, setting, cfg", [
    # a YaRN ramp ending at dimension 1.08 that stays fractional: llama.cpp rounds it to 2
    ("gpt_oss", "model.rope.truncate=False", rope("gpt_oss", truncate=False)),
    # llama.cpp's sliding OLMo layers take the global base, unscaled
    ("olmo3", "model.rope.local_theta=500.0", rope("olmo3", local_theta=500.0)),
    ("olmo2", "model.tie_embeddings=True", dataclasses.replace(ALL["olmo2"], tie_embeddings=True)),  # needs `output`
    # llama.cpp turns the indexer's q and k by a Hadamard matrix of 64, 128, ... rows; 32 and 96 abort it
    *[("deepseek_v32", f"model.mla.index_head_dim={size}", deepseek(**DSA | dict(index_head_dim=size)))
      for size in (32, 96)],
    ("qwen3_next", "model.moe.norm_topk=False",  # llama.cpp's qwen3next always renormalises
     dataclasses.replace(ALL["qwen3_next"], moe=dataclasses.replace(ALL["qwen3_next"].moe, norm_topk=False))),
])
def test_a_model_llama_cpp_computes_otherwise_is_refused(family, setting, cfg):
    with pytest.raises(ConfigError, match=f"cannot export as GGUF {family}: .*{re.escape(setting)}"):
        choose_gguf_family(cfg, family)


def test_deepseek32_refuses_a_model_without_an_indexer_for_that_alone():
    with pytest.raises(ConfigError) as e:
        choose_gguf_family(ALL["deepseek_v3"], "deepseek_v32")
    assert str(e.value) == "cannot export as GGUF deepseek_v32: HF deepseek_v32 config index_topk=0 is not supported"


def test_a_fractional_yarn_ramp_that_rounding_leaves_unchanged_is_held():
    """Its end at dimension 0.16 (a context of 8): rounded to 1, no frequency changes."""
    assert choose_gguf_family(rope("gpt_oss", truncate=False, original_max_pos=8), "gpt_oss") == "gpt_oss"


def test_qwen3_next_holds_a_rotary_too_narrow_for_qwen3_5s_sections():
    """4 of 32 dimensions: two pairs, which Qwen3.5's three M-RoPE axes cannot share; qwen3next's plain
    partial RoPE takes them (llama.cpp: within 4.9e-4 on the preset so narrowed, docs/LOG.md)."""
    cfg = rope("qwen3_next", fraction=0.125)
    assert choose_gguf_family(cfg) == "qwen3_next"
    with pytest.raises(ConfigError, match=re.escape("model.rope.fraction=0.125")):
        choose_gguf_family(dataclasses.replace(cfg, mlp_hidden=32), "qwen3_5_moe_text")
