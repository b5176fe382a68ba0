"""A run's model as one GGUF file (llama.cpp's format), written with the `gguf` package's GGUFWriter.

The route is the HF export's: our GPT -> `to_hf` (model/hf/, exact) -> the HF state dict, whose
tensor names `gguf.get_tensor_name_map` turns into GGUF's (`token_embd`, `blk.{i}.attn_q`, ...).
Four layouts differ from HF's, each undone by transformers' GGUF reader:
  * gpt2: HF's `Conv1D` weights are stored (in, out); GGUF stores every matrix (out, in);
  * llama: GGUF's llama rotates adjacent pairs of a head's dimensions, HF its two halves
    (`rotate_half`), so the rows of q_proj and k_proj are interleaved per head;
  * qwen3_moe: HF's stacked `gate_up_proj` is two tensors, `ffn_gate_exps` and `ffn_up_exps`;
  * qwen3_5_text and qwen3_5_moe_text (Qwen3.5: Gated DeltaNet layers and gated attention): the
    value heads of one key head are tiled, not grouped (`_tiled`), norms are stored as 1 + w, A as
    -exp(A_log), the convolution as 2-D, the shared expert's gate as 1-D, and the partial RoPE as
    M-RoPE sections (`_sections`).
The metadata is what llama.cpp's reader needs for the architecture (context, embedding and
feed-forward lengths, block and head counts, norm epsilon, RoPE base and width, experts), then
the tokenizer: GPT-2's BPE (tokens and merges), or the byte tokenizer as the 256 byte tokens in
GPT-2's byte-to-unicode alphabet plus <|endoftext|>, with an empty merge list (llama.cpp's BPE
loader requires the key; GGUFWriter refuses an empty array, so `_writer_class` writes it).
<|endoftext|> is the bos, eos and pad token. scripts/gguf_llama_cpp.py runs a run's file in
llama.cpp beside our model.

--gguf_type: f32 keeps every tensor in fp32; f16 stores matrices in fp16 and keeps 1-D tensors
(norms, biases) in fp32, as llama.cpp's converter does; q8_0 quantizes matrices whose rows are a
multiple of 32 long (`gguf.quants.quantize`), stores the others in fp16 and says which. Like
llama.cpp, the router (`ffn_gate_inp`), GPT-2's position table and Gated DeltaNet's convolution stay
fp32 in every type.

Architectures: gpt2, llama, qwen3, qwen3_moe, qwen3_5_text and qwen3_5_moe_text, each checked by
loading the file back with transformers' GGUF reader (tests/test_gguf.py); mixtral (as llama.cpp
writes it: llama with experts, which transformers' reader builds without them), deepseek_v3
(llama.cpp's deepseek2: MLA with kv_b_proj split for its absorbed decode, which transformers has
no reader for) and gpt_oss (sinks, windows, YaRN; its experts de-interleaved and transposed,
`GPT_OSS`); all nine checked in llama.cpp where llama-cpp-python is installed
(tests/test_gguf_llama_cpp.py). Not yet the others: llama.cpp's llama ignores Mistral's window
(docs/LOG.md); transformers' gemma2 reader takes neither the softcaps nor the query scale from the
file; OLMo 2/3, Qwen3-Next and DeepSeek-V3.2 (DSA) have no mapping here. A model none
can hold is refused, naming the closest architecture and the settings that block it
(`choose_gguf_family`).

transformers' GGUF reader (5.x) does not read every key it is given: for gpt2 the context and
feed-forward lengths (it assumes n_positions 1024, n_inner 4 * n_embd), for qwen3 the head size,
for qwen3_moe the expert width. `GGUFExport.load_kwargs` holds those the run differs on; pass them
to `from_pretrained(..., gguf_file=...)`.
"""

import functools
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from model.config import ModelConfig
from model.hf import Unrepresentable, config_to_hf, to_hf

from .errors import ConfigError, make_dir
from .hf_tokenizer import CHAT_TEMPLATE, bytes_to_unicode, gpt2_vocab_and_merges
from .post.chat_format import SPECIAL, ChatFormat
from .tokenizer import EOT_TEXT

FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}  # --gguf_type -> general.file_type
FILE_NAME = "model.gguf"
Q8_0_BLOCK = 32  # values per q8_0 block: a row must be a multiple of it
ALWAYS_F32 = ("ffn_gate_inp", "position_embd", "ssm_conv1d")  # kept in fp32 whatever the type, as llama.cpp does


def _rope_pairs(n_heads: Callable[[ModelConfig], int]):
    """Reorder each head's rows from HF's halves (d_0..d_h-1 | d_h..d_2h-1) to GGUF llama's
    adjacent pairs (d_0, d_h, d_1, d_h+1, ...): the rotation pairs the same dimensions."""
    def permute(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
        n = n_heads(cfg)
        return t.reshape(n, 2, t.shape[0] // n // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)
    return permute


@dataclass(frozen=True)
class GGUFArch:
    """How one HF family is written as a GGUF architecture."""

    arch: str  # gguf.MODEL_ARCH member name
    hparams: Callable[[object, ModelConfig], None]  # writes the architecture's metadata keys
    limits: Callable[[ModelConfig], dict[str, object]]  # our settings the GGUF architecture cannot hold
    reshape: dict[str, Callable] = field(default_factory=dict)  # HF-name regex -> (tensor, cfg) -> GGUF layout
    unread: Callable[[ModelConfig], dict[str, object]] = lambda cfg: {}  # HF fields the reader skips
    unreadable: str = ""  # why transformers' GGUF reader cannot build it; "" when it can
    # (family, field) for an architecture that extends another: a model with `field` off (0, "none")
    # is blocked as by that family, and by `field` (HF's refusal would name the field alone)
    extends: tuple[str, str] = ("", "")
    renames: dict[str, str] = field(default_factory=dict)  # HF-name regex -> the name gguf's map knows


def _gpt2_hparams(w, cfg: ModelConfig) -> None:
    _sizes(w, cfg)
    w.add_layer_norm_eps(cfg.norm_eps)


def _decoder_hparams(w, cfg: ModelConfig) -> None:
    _sizes(w, cfg)
    w.add_head_count_kv(cfg.n_kv_head)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope.theta)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    _experts(w, cfg)


def _experts(w, cfg: ModelConfig) -> None:
    if cfg.moe.n_expert:
        w.add_expert_count(cfg.moe.n_expert)
        w.add_expert_used_count(cfg.moe.top_k)
        w.add_expert_feed_forward_length(cfg.moe.expert_hidden)


def _sizes(w, cfg: ModelConfig) -> None:
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(cfg.mlp_hidden)
    w.add_block_count(cfg.n_layer)
    w.add_head_count(cfg.n_head)


def _refused(*checks: tuple[str, object, bool]) -> dict[str, object]:
    """{field: value} for each (field, value, holds) check that does not hold."""
    return {name: value for name, value, holds in checks if not holds}


def _decoder_limits(cfg: ModelConfig) -> dict[str, object]:
    """llama.cpp's llama and qwen3 compute SwiGLU with no sliding window; transformers' reader takes
    no RoPE scaling (llama.cpp's llama3 scaling is a `rope_freqs` tensor) and builds bias-free layers."""
    return _refused(("model.mlp", cfg.mlp, cfg.mlp == "swiglu"),
                    ("model.rope.scaling", cfg.rope.scaling, cfg.rope.scaling == "none"),
                    ("model.window", cfg.window, cfg.window == 0),
                    ("model.bias", cfg.bias, not cfg.bias))


def _qwen3_moe_limits(cfg: ModelConfig) -> dict[str, object]:
    """llama.cpp's qwen3moe makes every layer MoE and always renormalises the top-k weights."""
    return _decoder_limits(cfg) | _refused(("model.moe.first_dense", cfg.moe.first_dense, cfg.moe.first_dense == 0),
                                           ("model.moe.norm_topk", cfg.moe.norm_topk, cfg.moe.norm_topk))


def _unread(model_type: str, wanted: dict[str, object]) -> dict[str, object]:
    """Of `wanted`, the HF fields where the config class's default (what the reader leaves) is not ours."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    return {k: v for k, v in wanted.items() if getattr(default, k) != v}


def _qwen35_hparams(w, cfg: ModelConfig) -> None:
    """Qwen3.5's keys (transformers' qwen35 reader names each): the DeltaNet sizes under ssm.*, the
    attention's partial RoPE as llama.cpp's interleaved M-RoPE with every rotary pair on the text axis
    (text positions are one axis, so the sections only label pairs)."""
    d = cfg.deltanet
    _decoder_hparams(w, cfg)
    w.add_full_attention_interval(d.full_every)
    w.add_ssm_conv_kernel(d.conv_size)
    w.add_ssm_state_size(d.head_dim)
    w.add_ssm_group_count(d.n_head)
    w.add_ssm_time_step_rank(d.n_v_head)
    w.add_ssm_inner_size(d.n_v_head * d.v_head_dim)
    w.add_rope_dimension_count(_rotary(cfg))  # overrides _decoder_hparams' full head
    w.add_rope_dimension_sections(_sections(_rotary(cfg) // 2))


def _rotary(cfg: ModelConfig) -> int:
    return int(cfg.head_dim * cfg.rope.fraction)


def _sections(pairs: int) -> list[int]:
    """Rotary pairs per M-RoPE axis (time, height, width, -), split as Qwen3.5's 32 into 11, 11, 10;
    transformers needs all three axes, and text sets them to the same position."""
    last = pairs // 3
    return [pairs - last - (pairs - last) // 2, (pairs - last) // 2, last, 0]


def _qwen35_moe_hparams(w, cfg: ModelConfig) -> None:
    _qwen35_hparams(w, cfg)
    w.add_expert_shared_feed_forward_length(cfg.moe.n_shared * cfg.moe.expert_hidden)


def _tiled(cfg: ModelConfig, size: int = 1) -> torch.Tensor:
    """Index of the value heads (each `size` rows) in llama.cpp's order: HF groups the value heads of
    one key head together (k0v0 k0v1 k1v0 k1v1), llama.cpp tiles them (k0v0 k1v0 k0v1 k1v1)."""
    d = cfg.deltanet
    return torch.arange(d.n_v_head * size).reshape(d.n_head, d.n_v_head // d.n_head, size).transpose(0, 1).reshape(-1)


def _value_rows(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Rows past q and k (in_proj_qkv, conv1d), or all rows, reordered per value element."""
    d = cfg.deltanet
    qk = t.shape[0] - d.n_v_head * d.v_head_dim
    return torch.cat([t[:qk], t[qk:][_tiled(cfg, d.v_head_dim)]])


QWEN35 = {  # HF -> llama.cpp's layout: value heads tiled, norms stored as 1 + w, A as -exp(A_log)
    r"\.(in_proj_qkv|in_proj_z)\.weight$": _value_rows,
    r"\.conv1d\.weight$": lambda t, cfg: _value_rows(t, cfg).squeeze(1),
    r"\.(in_proj_a\.weight|in_proj_b\.weight|dt_bias)$": lambda t, cfg: t[_tiled(cfg)],
    r"\.A_log$": lambda t, cfg: -t.exp()[_tiled(cfg)],
    r"\.out_proj\.weight$": lambda t, cfg: t[:, _tiled(cfg, cfg.deltanet.v_head_dim)],
    r"(layernorm|_norm|^model\.norm)\.weight$": lambda t, cfg: t + 1,  # not linear_attn.norm
    r"\.shared_expert_gate\.weight$": lambda t, cfg: t.squeeze(0),  # MoE: one row, stored 1-D
}


QWEN35_NAMES = {r"\.dt_bias$": ".dt_proj.bias", r"\.A_log$": ".A_log.bare"}  # ssm_a has no suffix


def _qwen35_limits(cfg: ModelConfig) -> dict[str, object]:
    return _refused(("model.rope.fraction", cfg.rope.fraction, _rotary(cfg) >= 6),  # a pair per axis
                    ("model.rope.scaling", cfg.rope.scaling, cfg.rope.scaling == "none"),
                    ("model.window", cfg.window, cfg.window == 0),
                    ("model.mtp_depth", cfg.mtp_depth, cfg.mtp_depth == 0))


def _qwen35_moe_limits(cfg: ModelConfig) -> dict[str, object]:
    return _qwen35_limits(cfg) | _refused(("model.moe.first_dense", cfg.moe.first_dense, cfg.moe.first_dense == 0))


def _deepseek2_hparams(w, cfg: ModelConfig) -> None:
    """DeepSeek-V3 as llama.cpp's deepseek2: MLA written as MQA over the latent (one KV head whose key
    is [latent; rotary key]), the absorbed form's per-head sizes, and a sigmoid-routed, group-limited
    MoE after the leading dense layers."""
    import gguf

    m, moe = cfg.mla, cfg.moe
    _sizes(w, cfg)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope.theta)
    w.add_rope_dimension_count(m.qk_rope_head_dim)
    if m.q_lora_rank:
        w.add_q_lora_rank(m.q_lora_rank)
    w.add_kv_lora_rank(m.kv_lora_rank)
    w.add_key_length(m.kv_lora_rank + m.qk_rope_head_dim)
    w.add_value_length(m.kv_lora_rank)
    w.add_key_length_mla(m.qk_nope_head_dim + m.qk_rope_head_dim)
    w.add_value_length_mla(m.v_head_dim)
    w.add_leading_dense_block_count(moe.first_dense)
    _experts(w, cfg)
    w.add_expert_shared_count(moe.n_shared)
    w.add_expert_weights_scale(moe.routed_scale)
    w.add_expert_weights_norm(moe.norm_topk)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_expert_group_count(moe.n_group)
    w.add_expert_group_used_count(moe.topk_group)


def _deepseek2_limits(cfg: ModelConfig) -> dict[str, object]:
    return _refused(("model.rope.scaling", cfg.rope.scaling, cfg.rope.scaling == "none"),
                    ("model.window", cfg.window, cfg.window == 0),
                    ("model.moe.n_expert", cfg.moe.n_expert, cfg.moe.n_expert > 0))  # its MoE keys are required


def _gpt_oss_hparams(w, cfg: ModelConfig) -> None:
    """gpt-oss: its window and YaRN keys; llama.cpp fixes the rest (sinks, every other layer sliding
    from the first, the clamped SwiGLU's 1.702 and 7, top-k then softmax routing)."""
    import gguf

    _decoder_hparams(w, cfg)
    w.add_sliding_window(cfg.window)
    if cfg.rope.scaling == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(cfg.rope.factor)
        w.add_rope_scaling_orig_ctx_len(cfg.rope.original_max_pos)
        w.add_rope_scaling_yarn_beta_fast(cfg.rope.beta_fast)
        w.add_rope_scaling_yarn_beta_slow(cfg.rope.beta_slow)


def _gpt_oss_limits(cfg: ModelConfig) -> dict[str, object]:
    return _refused(("model.window", cfg.window, cfg.window > 0),
                    ("model.global_every", cfg.global_every, cfg.global_every == 2),
                    ("model.swiglu_alpha", cfg.swiglu_alpha, cfg.swiglu_alpha == 1.702),
                    ("model.swiglu_limit", cfg.swiglu_limit, cfg.swiglu_limit == 7.0),
                    ("model.rope.scaling", cfg.rope.scaling, cfg.rope.scaling in ("none", "yarn")),
                    ("model.rope.truncate", cfg.rope.truncate, not cfg.rope.truncate))


def _stacked(t: torch.Tensor) -> torch.Tensor:
    """gpt-oss's gate_up rows interleaved (g0 u0 g1 u1 ...) as [gate; up] along dim 1."""
    return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1)


GPT_OSS = {  # HF stores its experts (in, out) with gate and up interleaved; GGUF (out, in), [gate; up]
    r"\.experts\.gate_up_proj$": lambda t, cfg: _stacked(t.transpose(1, 2)),
    r"\.experts\.gate_up_proj_bias$": lambda t, cfg: _stacked(t),
    r"\.experts\.down_proj$": lambda t, cfg: t.transpose(1, 2),
}


GPT_OSS_UNREAD = "transformers 5.24's gpt-oss GGUF reader fails on the YaRN keys, on llama.cpp's own files too"
LLAMA_ROPE = {r"\.q_proj\.weight$": _rope_pairs(lambda cfg: cfg.n_head),
              r"\.k_proj\.weight$": _rope_pairs(lambda cfg: cfg.n_kv_head)}
CONV1D = {r"\.(c_attn|c_proj|c_fc)\.weight$": lambda t, cfg: t.t()}  # HF's Conv1D stores (in, out)
ARCHS: dict[str, GGUFArch] = {  # HF model_type -> GGUF architecture, in the order --family auto tries them
    "gpt2": GGUFArch("GPT2", _gpt2_hparams, lambda cfg: {}, CONV1D, lambda cfg: _unread("gpt2", {
        "n_positions": cfg.block_size, "n_inner": None if cfg.mlp_hidden == 4 * cfg.n_embd else cfg.mlp_hidden})),
    "llama": GGUFArch("LLAMA", _decoder_hparams, _decoder_limits, LLAMA_ROPE),
    "qwen3": GGUFArch("QWEN3", _decoder_hparams, _decoder_limits, {},
                      lambda cfg: _unread("qwen3", {"head_dim": cfg.head_dim})),
    "qwen3_moe": GGUFArch("QWEN3MOE", _decoder_hparams, _qwen3_moe_limits, {},
                          lambda cfg: _unread("qwen3_moe", {"moe_intermediate_size": cfg.moe.expert_hidden})),
    # llama.cpp's llama with experts: softmax, top-k, renormalised, as HF Mixtral (which refuses the rest)
    "mixtral": GGUFArch("LLAMA", _decoder_hparams, _decoder_limits, LLAMA_ROPE,
                        unreadable="transformers' GGUF reader builds it without its experts",
                        extends=("llama", "moe.n_expert")),
    "qwen3_5_text": GGUFArch("QWEN35", _qwen35_hparams, _qwen35_limits, QWEN35, renames=QWEN35_NAMES,
                             extends=("qwen3", "linear_attention")),
    # MLA as llama.cpp's absorbed decode reads it: kv_b_proj split into k_b (transposed) and v_b
    "deepseek_v3": GGUFArch("DEEPSEEK2", _deepseek2_hparams, _deepseek2_limits,
                            renames={r"\.e_score_correction_bias$": ".e_score_correction.bias"},
                            unreadable="transformers has no GGUF reader for deepseek2"),
    "gpt_oss": GGUFArch("GPT_OSS", _gpt_oss_hparams, _gpt_oss_limits, GPT_OSS,
                        renames={r"_proj_bias$": "_proj.bias"}, unreadable=GPT_OSS_UNREAD),
    "qwen3_5_moe_text": GGUFArch("QWEN35MOE", _qwen35_moe_hparams, _qwen35_moe_limits, QWEN35, renames=QWEN35_NAMES,
                                 extends=("qwen3_5_text", "moe.n_expert")),
}


# ----------------------------------------------------------------------------- choosing the architecture
def blockers(cfg: ModelConfig, family: str) -> tuple[list[str], bool]:
    """`field=value` for each of our settings that `family`'s GGUF architecture cannot hold, and
    whether the list is whole: a family-specific HF refusal gives its first reason only."""
    base, key = ARCHS[family].extends
    if base and (value := functools.reduce(getattr, key.split("."), cfg)) in (0, "none"):
        found, whole = blockers(cfg, base)
        return found + [f"model.{key}={value!r}"], whole
    whole = True
    try:
        config_to_hf(cfg, family)
        found = []
    except Unrepresentable as e:
        found = list(e.settings)
    except ValueError as e:  # a family-specific refusal, which gives its reason
        found, whole = [str(e).removeprefix(f"HF {family} cannot represent ")], False
    found += [f"{name}={value!r}" for name, value in ARCHS[family].limits(cfg).items()]
    return list(dict.fromkeys(found)), whole  # a setting both HF and GGUF refuse, once


def choose_gguf_family(cfg: ModelConfig, family: str = "auto") -> str:
    """`family` if its GGUF architecture holds `cfg`; for "auto" the first of ARCHS that does. The
    refusal names the closest architecture (fewest blocking settings, below) and what blocks it."""
    if family != "auto" and family not in ARCHS:
        raise ConfigError(f"--family for --format gguf must be auto or one of {', '.join(ARCHS)}; got {family!r}")
    blocked = {}
    for name in [family] if family != "auto" else ARCHS:
        blocked[name] = blockers(cfg, name)
        if not blocked[name][0]:
            return name
    # a list cut short by an HF refusal says little of how far its family is: whole lists come first
    closest = min(blocked, key=lambda n: (not blocked[n][1], len(blocked[n][0])))
    why = blocked[closest][0]
    listed = ", ".join(item if len(item) <= 80 else item[:77] + "..." for item in why[:4])
    more = f" and {len(why) - 4} more" if len(why) > 4 else ""
    if family != "auto":
        raise ConfigError(f"cannot export as GGUF {family}: {listed}{more}")
    raise ConfigError(f"no GGUF architecture ({', '.join(ARCHS)}) can hold this model; the closest, "
                      f"{closest}, is blocked by {listed}{more}")


# ----------------------------------------------------------------------------- tensors
def gguf_tensors(hf_model, family: str, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The HF model's tensors under GGUF names, in GGUF's layout, as fp32 arrays."""
    import gguf

    arch = ARCHS[family]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.arch], cfg.n_layer)
    state = hf_model.state_dict()
    if hf_model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # GGUF: no `output` tensor means tied
    out = {}
    for hf_name, tensor in state.items():
        for pattern, reshape in arch.reshape.items():
            if re.search(pattern, hf_name):
                tensor = reshape(tensor, cfg)
        for pattern, replacement in arch.renames.items():
            hf_name = re.sub(pattern, replacement, hf_name)
        if re.search(r"\.experts\.gate_up_proj(\.bias)?$", hf_name):  # (n_expert, [gate; up], ...)
            gate, up = tensor.chunk(2, dim=1)
            parts = {hf_name.replace("gate_up_proj", "gate_proj"): gate, hf_name.replace("gate_up_proj", "up_proj"): up}
        elif hf_name.endswith(".kv_b_proj.weight"):  # MLA: rows per head [k_nope; v], columns the latent
            k, v = tensor.view(cfg.n_head, -1, cfg.mla.kv_lora_rank).split(
                [cfg.mla.qk_nope_head_dim, cfg.mla.v_head_dim], dim=1)
            parts = {hf_name.replace("kv_b", "k_b"): k.transpose(1, 2), hf_name.replace("kv_b", "v_b"): v}
        else:
            parts = {hf_name: tensor}
        for name, t in parts.items():
            # stacked experts are HF parameters without a suffix; in GGUF every matrix is `.weight`
            # (".bare": a tensor llama.cpp names without a suffix, as Qwen3.5's ssm_a)
            base, suffix = name.rsplit(".", 1) if name.endswith((".weight", ".bias", ".bare")) else (name, "weight")
            gguf_name = names.get_name(base)
            assert gguf_name is not None, f"no GGUF name for {name} in {arch.arch}"
            out[gguf_name if suffix == "bare" else f"{gguf_name}.{suffix}"] = t.detach().float().contiguous().numpy()
    return out


def stored(name: str, array: np.ndarray, gguf_type: str):
    """(data, ggml type) of one tensor, as --gguf_type says (the module docstring)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    if gguf_type == "f32" or array.ndim < 2 or any(key in name for key in ALWAYS_F32):
        return array, Q.F32
    if gguf_type == "q8_0" and array.shape[-1] % Q8_0_BLOCK == 0:
        return quantize(array, Q.Q8_0), Q.Q8_0
    return quantize(array, Q.F16), Q.F16


# ----------------------------------------------------------------------------- tokenizer
def tokenizer_metadata(w, tok, n_vocab: int, chat: bool = False) -> None:
    """Our tokenizer as GGUF's "gpt2" (byte-level BPE) tokenizer keys; ids past the tokenizer's
    (a model.vocab_size padded beyond it) are unused [PAD<id>] tokens, as llama.cpp writes them.
    chat: a chat run's four tokens follow as control tokens, <|end|> is the eos and the chat
    template is HF's (train/hf_tokenizer.py), so a GGUF runtime prompts it as train.chat does."""
    import gguf
    from gguf import TokenType

    if tok.name == "gpt2":
        vocab, merges = gpt2_vocab_and_merges(tok.ranks())
        tokens = sorted(vocab, key=vocab.get)
    else:
        to_char = bytes_to_unicode()
        tokens, merges = [to_char[b] for b in range(256)] + [EOT_TEXT], []
    assert tokens.index(EOT_TEXT) == tok.eot == len(tokens) - 1
    types = [TokenType.NORMAL] * (len(tokens) - 1) + [TokenType.CONTROL]
    eos = tok.eot
    if chat:
        eos = ChatFormat(tok).end  # the specials follow the tokenizer's ids, in SPECIAL's order
        tokens, types = tokens + list(SPECIAL), types + [TokenType.CONTROL] * len(SPECIAL)
        w.add_chat_template(CHAT_TEMPLATE)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types += [TokenType.UNUSED] * (n_vocab - len(types))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_key_value(gguf.Keys.Tokenizer.MERGES, [f"{a} {b}" for a, b in merges], gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.STRING)  # a byte vocabulary's is empty
    w.add_bos_token_id(tok.eot)
    w.add_eos_token_id(eos)
    w.add_pad_token_id(eos)
    w.add_add_bos_token(False)


# ----------------------------------------------------------------------------- export
def _writer_class():
    import gguf

    class Writer(gguf.GGUFWriter):
        """GGUFWriter that also writes an empty array, which the format and llama.cpp's reader allow."""

        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if vtype == gguf.GGUFValueType.ARRAY and len(val) == 0:
                return (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)
    return Writer


@dataclass
class GGUFExport:
    path: Path  # OUT/model.gguf
    family: str  # HF model_type; the GGUF architecture is ARCHS[family].arch
    gguf_type: str
    not_quantized: list[str]  # q8_0: matrices kept in f16 (rows not a multiple of 32)
    load_kwargs: dict[str, object] | None  # HF config fields transformers' reader does not take from
    # the file; None: the reader cannot build it (ARCHS[family].unreadable says why)


def write_gguf(model, tok, out_dir: str | Path, family: str = "auto", gguf_type: str = "f16",
               chat: bool = False) -> GGUFExport:
    """Write `model` (our GPT) and `tok` as OUT_DIR/model.gguf. Everything is checked and converted
    first; the file is written in a temporary directory beside OUT_DIR, renamed to OUT_DIR once complete."""
    try:
        import gguf
    except ImportError:
        raise ValueError("--format gguf needs the gguf package: pip install 'gguf>=0.19,<0.20'") from None
    cfg = model.config
    family = choose_gguf_family(cfg, family)
    tensors = gguf_tensors(to_hf(model, family, bos_token_id=tok.eot, eos_token_id=tok.eot), family, cfg)
    encoded = {name: stored(name, array, gguf_type) for name, array in tensors.items()}
    not_quantized = [n for n, (_, q) in encoded.items() if gguf_type == "q8_0" and q == gguf.GGMLQuantizationType.F16]

    out = Path(out_dir)
    parent = make_dir(out.absolute().parent, f"OUT_DIR {out}")
    staging = parent / f".{out.name}.{secrets.token_hex(4)}.partial"
    try:
        staging.mkdir()
        w = _writer_class()(staging / FILE_NAME, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[ARCHS[family].arch]])
        w.add_name("gpt-ladder")
        w.add_file_type(gguf.LlamaFileType[FILE_TYPES[gguf_type]])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        ARCHS[family].hparams(w, cfg)
        tokenizer_metadata(w, tok, cfg.vocab_size, chat)
        for name, (data, qtype) in encoded.items():
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(staging, out)  # also onto an empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    arch = ARCHS[family]
    return GGUFExport(out / FILE_NAME, family, gguf_type, not_quantized, None if arch.unreadable else arch.unread(cfg))
