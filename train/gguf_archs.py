"""How each HF family is written as a GGUF architecture (train/gguf_export.py writes the file).

An entry names the architecture, its tensor layout (train/gguf_layouts.py: what differs from HF's,
as llama.cpp's converter writes it) and what is written beside the tensors: gpt_neox's `output` for a
tied model too, Llama 3's RoPE scaling as a tensor of its own, `rope_freqs` (`_rope_freqs`), Qwen3.5's
partial RoPE as M-RoPE sections (`_sections`).
An entry's `hparams` writes the metadata llama.cpp reads for the architecture (context, embedding
and feed-forward lengths, block and head counts, norm epsilon, RoPE, experts, windows, softcaps,
...), and `limits` names our settings it cannot hold or computes otherwise (llama.cpp rounds every
YaRN ramp's ends, fixes Gemma's query scale, gives OLMo's sliding layers the global RoPE base).

gpt2, llama, qwen3, qwen3_moe, qwen3_5_text, qwen3_5_moe_text, gemma2 and gemma3_text are checked
by loading the file back with transformers' GGUF reader (tests/test_gguf.py); mixtral (as
llama.cpp writes it: llama with experts, which transformers' reader builds without them),
gpt_neox, deepseek_v3, deepseek_v32, olmo2/olmo3 and qwen3_next (no transformers reader) and gpt_oss
(transformers' reader fails on its YaRN keys) are for llama.cpp. All sixteen are checked in llama.cpp
where llama-cpp-python is installed (tests/test_gguf_llama_cpp.py). Not Mistral: llama.cpp's llama
ignores its window (docs/LOG.md).

transformers' GGUF reader (5.x) does not read every key it is given: for gpt2 the context and
feed-forward lengths (it assumes n_positions 1024, n_inner 4 * n_embd), for qwen3 the head size,
for qwen3_moe the expert width, for llama the RoPE scaling, for Gemma the softcaps, query scale,
layer types and (Gemma 3) the RoPE per layer type. An entry's `unread` names those the run differs
on; the export prints them for `from_pretrained(..., gguf_file=...)`.
"""

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from model.config import ModelConfig
from model.rope import ROPE_SCALINGS

from .gguf_layouts import (
    CONV1D, DEEPSEEK_NAMES, GEMMA, GPT_OSS, LLAMA_ROPE, NEOX_QKV, QWEN3_NEXT, QWEN35, QWEN35_NAMES,
)


@dataclass(frozen=True)
class GGUFArch:
    """How one HF family is written as a GGUF architecture."""

    arch: str  # the gguf.MODEL_ARCH member whose tensor names and architecture name the file takes
    hparams: Callable[[object, ModelConfig], None]  # writes the architecture's metadata keys
    limits: Callable[[ModelConfig], dict[str, object]]  # our settings the GGUF architecture cannot hold
    reshape: dict[str, Callable] = field(default_factory=dict)  # HF-name regex -> (tensor, cfg) -> GGUF layout
    unread: Callable[[ModelConfig], dict[str, object]] = lambda cfg: {}  # HF fields the reader skips
    unreadable: Callable[[ModelConfig], str] = lambda cfg: ""  # why transformers' GGUF reader cannot build
    # the model; "" when it can
    # (family, field) for an architecture that extends another: a model with `field` off (0, "none")
    # is blocked as by that family, and by `field` (HF's refusal would name the field alone)
    extends: tuple[str, str] = ("", "")
    renames: dict[str, str] = field(default_factory=dict)  # HF-name regex -> the name gguf's map knows
    extra: Callable[[ModelConfig], dict[str, torch.Tensor]] = lambda cfg: {}  # GGUF tensors HF has none of
    name: str = ""  # the architecture name written instead, where the gguf package lacks the member
    tied_output: bool = False  # a tied model's `output` written out too (its loader requires the tensor)


def _always(reason: str) -> Callable[[ModelConfig], str]:
    return lambda cfg: reason


def _no_reader(arch: str) -> Callable[[ModelConfig], str]:
    return _always(f"transformers has no GGUF reader for {arch}")


def _gpt2_hparams(w, cfg: ModelConfig) -> None:
    _sizes(w, cfg)
    w.add_layer_norm_eps(cfg.norm_eps)


def _gpt_neox_hparams(w, cfg: ModelConfig) -> None:
    """GPT-NeoX: GPT-2's sizes, a sequential block (Pythia's is parallel), RoPE on `fraction` of a head."""
    _gpt2_hparams(w, cfg)
    w.add_parallel_residual(False)
    w.add_rope_freq_base(cfg.rope.theta)
    w.add_rope_dimension_count(_rotary(cfg))


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


def _decoder_limits(cfg: ModelConfig, scalings: tuple[str, ...] = ("none",), bias: bool = False) -> dict[str, object]:
    """llama.cpp's llama and qwen3 compute SwiGLU with no sliding window; biases: llama.cpp's llama
    reads them, its qwen3 and transformers' reader do not (`_llama_biases`); RoPE scaling: llama's
    Llama 3 (read by transformers when passed to it, `_llama_unread`)."""
    return _refused(("model.mlp", cfg.mlp, cfg.mlp == "swiglu"),
                    ("model.rope.scaling", cfg.rope.scaling, cfg.rope.scaling in scalings),
                    ("model.window", cfg.window, cfg.window == 0),
                    ("model.bias", cfg.bias, bias or not cfg.bias))


def _llama_biases(cfg: ModelConfig) -> str:
    return "transformers' GGUF reader builds llama without biases" if cfg.bias else ""


def _rope_freqs(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Llama 3's RoPE scaling as llama.cpp holds it: `rope_freqs`, each frequency's divisor."""
    if cfg.rope.scaling != "llama3":
        return {}
    args = cfg.rope, cfg.rope.theta, cfg.head_dim, cfg.rope.original_max_pos or cfg.block_size  # as Rotary
    return {"rope_freqs.weight": ROPE_SCALINGS["none"](*args)[0] / ROPE_SCALINGS["llama3"](*args)[0]}


def _ramp_as_rounded(cfg: ModelConfig) -> bool:
    """Whether llama.cpp computes our YaRN: it rounds the ramp's ends to whole dimensions, which a run
    that keeps them fractional (rope.truncate = false, gpt-oss) matches only where rounding changes
    no frequency (the gpt-oss preset; not gpt-oss's own 4096-token context)."""
    rope = cfg.rope
    if rope.scaling != "yarn" or rope.truncate:
        return True
    args = cfg.head_dim, rope.original_max_pos or cfg.block_size
    return torch.equal(ROPE_SCALINGS["yarn"](rope, rope.theta, *args)[0],
                       ROPE_SCALINGS["yarn"](replace(rope, truncate=True), rope.theta, *args)[0])


def _rope_limits(cfg: ModelConfig, scalings: tuple[str, ...]) -> dict[str, object]:
    """The RoPE scalings the architecture's keys hold (`_rope_scaling` writes them), YaRN as llama.cpp
    rounds it."""
    held = cfg.rope.scaling in scalings
    return _refused(("model.rope.scaling", cfg.rope.scaling, held),
                    ("model.rope.truncate", cfg.rope.truncate, not held or _ramp_as_rounded(cfg)))


def _llama_unread(cfg: ModelConfig) -> dict[str, object]:
    """transformers' reader skips `rope_freqs`: a scaled model's rope_parameters go to from_pretrained."""
    from model.hf import config_to_hf

    return {"rope_parameters": config_to_hf(cfg, "llama").rope_parameters} if cfg.rope.scaling != "none" else {}


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
    _deltanet_hparams(w, cfg)
    w.add_rope_dimension_sections(_sections(_rotary(cfg) // 2))


def _deltanet_hparams(w, cfg: ModelConfig) -> None:
    """Qwen3.5's and Qwen3-Next's keys: the DeltaNet sizes under ssm.*, the partial rotary's width."""
    d = cfg.deltanet
    _decoder_hparams(w, cfg)
    w.add_full_attention_interval(d.full_every)
    w.add_ssm_conv_kernel(d.conv_size)
    w.add_ssm_state_size(d.head_dim)
    w.add_ssm_group_count(d.n_head)
    w.add_ssm_time_step_rank(d.n_v_head)
    w.add_ssm_inner_size(d.n_v_head * d.v_head_dim)
    w.add_rope_dimension_count(_rotary(cfg))  # overrides _decoder_hparams' full head


def _rotary(cfg: ModelConfig) -> int:
    return int(cfg.head_dim * cfg.rope.fraction)


def _sections(pairs: int) -> list[int]:
    """Rotary pairs per M-RoPE axis (time, height, width, -), split as Qwen3.5's 32 into 11, 11, 10;
    transformers needs all three axes, and text sets them to the same position."""
    last = pairs // 3
    return [pairs - last - (pairs - last) // 2, (pairs - last) // 2, last, 0]


def _qwen35_moe_hparams(w, cfg: ModelConfig, base: Callable = _qwen35_hparams) -> None:
    base(w, cfg)
    w.add_expert_shared_feed_forward_length(cfg.moe.n_shared * cfg.moe.expert_hidden)


def _qwen35_limits(cfg: ModelConfig, sections: bool = True) -> dict[str, object]:
    """sections: M-RoPE's three axes need a rotary pair each (Qwen3.5; Qwen3-Next has plain RoPE)."""
    return _refused(("model.rope.fraction", cfg.rope.fraction, not sections or _rotary(cfg) >= 6),
                    ("model.rope.scaling", cfg.rope.scaling, cfg.rope.scaling == "none"),
                    ("model.window", cfg.window, cfg.window == 0),
                    ("model.mtp_depth", cfg.mtp_depth, cfg.mtp_depth == 0))


def _qwen35_moe_limits(cfg: ModelConfig, sections: bool = True) -> dict[str, object]:
    return _qwen35_limits(cfg, sections) | _refused(("model.moe.first_dense", cfg.moe.first_dense,
                                                     cfg.moe.first_dense == 0))


def _qwen3_next_limits(cfg: ModelConfig) -> dict[str, object]:
    """llama.cpp's qwen3next: every layer MoE, the top-k weights renormalised, plain partial RoPE."""
    return _qwen35_moe_limits(cfg, sections=False) | _refused(("model.moe.norm_topk", cfg.moe.norm_topk,
                                                               cfg.moe.norm_topk))


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


def _deepseek32_hparams(w, cfg: ModelConfig) -> None:
    """DeepSeek-V3.2 as llama.cpp's deepseek32: deepseek2's keys and the lightning indexer's sizes."""
    m = cfg.mla
    _deepseek2_hparams(w, cfg)
    w.add_indexer_head_count(m.index_n_head)
    w.add_indexer_key_length(m.index_head_dim)
    w.add_indexer_top_k(m.index_topk)


def _deepseek32_limits(cfg: ModelConfig) -> dict[str, object]:
    """llama.cpp turns the indexer's queries and keys by one Hadamard matrix of 64, 128, 256, ... rows
    (it leaves the scores as they are): the indexer's head, where there is one, must be that long."""
    size = cfg.mla.index_head_dim
    hadamard = not cfg.mla.index_topk or size >= 64 and not size & (size - 1)
    return _deepseek2_limits(cfg) | _refused(("model.mla.index_head_dim", size, hadamard))


def _rope_scaling(w, cfg: ModelConfig) -> None:
    """Linear or YaRN RoPE scaling as llama.cpp reads it (the global layers', where a family has both)."""
    import gguf

    rope = cfg.rope
    if rope.scaling in ("linear", "yarn"):
        w.add_rope_scaling_type(gguf.RopeScalingType[rope.scaling.upper()])
        w.add_rope_scaling_factor(rope.factor)
    if rope.scaling == "yarn":
        w.add_rope_scaling_orig_ctx_len(rope.original_max_pos)
        w.add_rope_scaling_yarn_beta_fast(rope.beta_fast)
        w.add_rope_scaling_yarn_beta_slow(rope.beta_slow)


def _gpt_oss_hparams(w, cfg: ModelConfig) -> None:
    """gpt-oss: its window and YaRN keys; llama.cpp fixes the rest (sinks, every other layer sliding
    from the first, the clamped SwiGLU's 1.702 and 7, top-k then softmax routing)."""
    _decoder_hparams(w, cfg)
    w.add_sliding_window(cfg.window)
    _rope_scaling(w, cfg)


def _gpt_oss_limits(cfg: ModelConfig) -> dict[str, object]:
    return _refused(("model.window", cfg.window, cfg.window > 0),
                    ("model.global_every", cfg.global_every, cfg.global_every == 2),
                    ("model.swiglu_alpha", cfg.swiglu_alpha, cfg.swiglu_alpha == 1.702),
                    ("model.swiglu_limit", cfg.swiglu_limit, cfg.swiglu_limit == 7.0)) | \
        _rope_limits(cfg, ("none", "yarn"))


def _windowed_hparams(w, cfg: ModelConfig) -> None:
    """Gemma 2/3 and OLMo 2/3: the window with one flag per layer (llama.cpp's default patterns are
    Gemma's and OLMo 3's; the flags say which of ours are local), the sliding layers' RoPE base, the
    global layers' scaling, and the softcaps."""
    _decoder_hparams(w, cfg)
    if _local_layers(cfg):  # llama.cpp asserts that a model with these keys has a sliding layer
        w.add_sliding_window(cfg.window)
        w.add_sliding_window_pattern([cfg.is_local(i) for i in range(cfg.n_layer)])
        w.add_rope_freq_base_swa(cfg.rope.local_theta or cfg.rope.theta)
    _rope_scaling(w, cfg)
    if cfg.attn_softcap:
        w.add_attn_logit_softcapping(cfg.attn_softcap)
    if cfg.final_softcap:
        w.add_final_logit_softcapping(cfg.final_softcap)


def _local_layers(cfg: ModelConfig) -> bool:
    return any(cfg.is_local(i) for i in range(cfg.n_layer))


def _gemma_limits(cfg: ModelConfig, layers_27b: int, local_scaled: bool) -> dict[str, object]:
    """llama.cpp's Gemma scales queries by 1/sqrt(head_dim), by 1/sqrt(n_embd / n_head) in the 27B
    model (known by its layer count), and scales the sliding layers' RoPE as the global ones'
    (Gemma 2: `local_scaled`) or not at all (Gemma 3)."""
    rope, head = cfg.rope, cfg.n_embd // cfg.n_head if cfg.n_layer == layers_27b else cfg.head_dim
    local_rope = not cfg.window or rope.scaling == "none" or (rope.local_theta == 0) == local_scaled
    return _refused(("model.attn_scale", cfg.attn_scale, math.isclose(cfg.attn_scale or cfg.head_dim**-0.5,
                                                                      head**-0.5, rel_tol=1e-6))) | \
        _rope_limits(cfg, ("none", "linear")) | _refused(("model.rope.local_theta", rope.local_theta, local_rope))


def _gemma2_limits(cfg: ModelConfig) -> dict[str, object]:
    """llama.cpp's Gemma 2 has sliding layers and no output matrix, and takes a softcap left out of
    the file as 50 or 30."""
    return _gemma_limits(cfg, 46, local_scaled=True) | _refused(
        ("model.window", cfg.window, _local_layers(cfg)),
        ("model.tie_embeddings", cfg.tie_embeddings, cfg.tie_embeddings),
        ("model.attn_softcap", cfg.attn_softcap, cfg.attn_softcap > 0),
        ("model.final_softcap", cfg.final_softcap, cfg.final_softcap > 0))


def _gemma3_limits(cfg: ModelConfig) -> dict[str, object]:
    return _gemma_limits(cfg, 62, local_scaled=False) | _refused(
        ("model.attn_softcap", cfg.attn_softcap, cfg.attn_softcap == 0))  # llama.cpp's Gemma 3 has none


def _olmo2_limits(cfg: ModelConfig) -> dict[str, object]:
    """llama.cpp's OLMo 2/3 needs an output matrix; its sliding layers take plain RoPE at the global base."""
    rope = cfg.rope
    plain = rope.local_theta == rope.theta or (rope.local_theta == 0 and rope.scaling == "none")
    return _refused(("model.tie_embeddings", cfg.tie_embeddings, not cfg.tie_embeddings)) | \
        _rope_limits(cfg, ("none", "linear", "yarn")) | \
        _refused(("model.rope.local_theta", rope.local_theta, not cfg.window or plain))


def _hf_fields(family: str, names: tuple[str, ...]) -> Callable[[ModelConfig], dict[str, object]]:
    """`unread` for fields the reader skips: `names` of the run's HF config, where not the default."""
    def unread(cfg: ModelConfig) -> dict[str, object]:
        from model.hf import config_to_hf

        hf = config_to_hf(cfg, family)
        return _unread(hf.model_type, {name: getattr(hf, name) for name in names})
    return unread


GPT_OSS_UNREAD = "transformers 5.24's gpt-oss GGUF reader fails on the YaRN keys, on llama.cpp's own files too"
GEMMA_UNREAD = ("query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping", "layer_types")
ARCHS: dict[str, GGUFArch] = {  # HF model_type -> GGUF architecture, in the order --family auto tries them
    "gpt2": GGUFArch("GPT2", _gpt2_hparams, lambda cfg: {}, CONV1D, lambda cfg: _unread("gpt2", {
        "n_positions": cfg.block_size, "n_inner": None if cfg.mlp_hidden == 4 * cfg.n_embd else cfg.mlp_hidden})),
    "gpt_neox": GGUFArch("GPTNEOX", _gpt_neox_hparams, lambda cfg: _rope_limits(cfg, ("none",)), NEOX_QKV,
                         unreadable=_no_reader("gptneox"), tied_output=True),
    "llama": GGUFArch("LLAMA", _decoder_hparams, lambda cfg: _decoder_limits(cfg, ("none", "llama3"), bias=True),
                      LLAMA_ROPE, _llama_unread, unreadable=_llama_biases, extra=_rope_freqs),
    "qwen3": GGUFArch("QWEN3", _decoder_hparams, _decoder_limits, {},
                      lambda cfg: _unread("qwen3", {"head_dim": cfg.head_dim})),
    "qwen3_moe": GGUFArch("QWEN3MOE", _decoder_hparams, _qwen3_moe_limits, {},
                          lambda cfg: _unread("qwen3_moe", {"moe_intermediate_size": cfg.moe.expert_hidden})),
    # llama.cpp's llama with experts: softmax, top-k, renormalised, as HF Mixtral (which refuses the rest)
    "mixtral": GGUFArch("LLAMA", _decoder_hparams, _decoder_limits, LLAMA_ROPE,
                        unreadable=_always("transformers' GGUF reader builds it without its experts"),
                        extends=("llama", "moe.n_expert")),
    "qwen3_5_text": GGUFArch("QWEN35", _qwen35_hparams, _qwen35_limits, QWEN35, renames=QWEN35_NAMES,
                             extends=("qwen3", "linear_attention")),
    # MLA as llama.cpp's absorbed decode reads it (kv_b_proj: `SPLITS`)
    "deepseek_v3": GGUFArch("DEEPSEEK2", _deepseek2_hparams, _deepseek2_limits, renames=DEEPSEEK_NAMES,
                            unreadable=_no_reader("deepseek2")),
    # the indexer's tensors named as glm-dsa's (the gguf package on PyPI has no deepseek32 member)
    "deepseek_v32": GGUFArch("GLM_DSA", _deepseek32_hparams, _deepseek32_limits, renames=DEEPSEEK_NAMES,
                             unreadable=_no_reader("deepseek32"), name="deepseek32"),
    "gpt_oss": GGUFArch("GPT_OSS", _gpt_oss_hparams, _gpt_oss_limits, GPT_OSS,
                        renames={r"_proj_bias$": "_proj.bias"}, unreadable=_always(GPT_OSS_UNREAD)),
    # (the reader takes neither the softcaps, the query scale nor the layer types from the file)
    "gemma2": GGUFArch("GEMMA2", _windowed_hparams, _gemma2_limits, GEMMA, _hf_fields("gemma2", GEMMA_UNREAD)),
    "gemma3_text": GGUFArch("GEMMA3", _windowed_hparams, _gemma3_limits, GEMMA,
                            _hf_fields("gemma3_text", GEMMA_UNREAD + ("rope_parameters",))),
    "olmo2": GGUFArch("OLMO2", _windowed_hparams, _olmo2_limits, unreadable=_no_reader("olmo2")),
    "olmo3": GGUFArch("OLMO2", _windowed_hparams, _olmo2_limits, unreadable=_no_reader("olmo2")),
    "qwen3_5_moe_text": GGUFArch("QWEN35MOE", _qwen35_moe_hparams, _qwen35_moe_limits, QWEN35, renames=QWEN35_NAMES,
                                 extends=("qwen3_5_text", "moe.n_expert")),
    # after Qwen3.5-MoE, which llama.cpp and transformers both read
    "qwen3_next": GGUFArch("QWEN3NEXT", lambda w, cfg: _qwen35_moe_hparams(w, cfg, _deltanet_hparams),
                           _qwen3_next_limits, QWEN3_NEXT, renames=QWEN35_NAMES,
                           unreadable=_no_reader("qwen3next")),
}
