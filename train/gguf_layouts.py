"""The tensors of an HF state dict in llama.cpp's layout, per architecture (train/gguf_archs.py
names each architecture's). `to_hf` (model/hf/) gives the HF state dict; `gguf.get_tensor_name_map`
turns its names into GGUF's (`token_embd`, `blk.{i}.attn_q`, ...). Where llama.cpp's layout differs
from HF's, a table below applies what llama.cpp's converter does, which transformers' GGUF reader
undoes:
  * gpt2: HF's `Conv1D` weights are stored (in, out); GGUF stores every matrix (out, in) (`CONV1D`);
  * gpt_neox: HF's per-head [q_h; k_h; v_h] rows as [q; k; v] (`NEOX_QKV`);
  * llama, mixtral: GGUF's llama rotates adjacent pairs of a head's dimensions, HF its two halves
    (`rotate_half`), so the rows of q_proj and k_proj are interleaved per head (`LLAMA_ROPE`);
  * experts (qwen3_moe, mixtral, Qwen3.5-MoE, DeepSeek-V3/V3.2, gpt-oss): HF's stacked `gate_up_proj`
    is two tensors, `ffn_gate_exps` and `ffn_up_exps` (`SPLITS`);
  * qwen3_5_text and qwen3_5_moe_text (Qwen3.5: Gated DeltaNet layers and gated attention): the
    value heads of one key head are tiled, not grouped (`tiled`), norms are stored as 1 + w, A as
    -exp(A_log), the convolution as 2-D and the shared expert's gate as 1-D (`QWEN35`);
  * deepseek_v3 and deepseek_v32 (llama.cpp's deepseek2 and deepseek32): kv_b_proj split into k_b
    (each head transposed) and v_b for the absorbed MLA decode (`SPLITS`); the lightning indexer's
    tensors as they are;
  * gpt_oss: its experts de-interleaved and transposed (`GPT_OSS`);
  * gemma2, gemma3_text: norms stored as 1 + w (`GEMMA`);
  * olmo2, olmo3 (llama.cpp's olmo2): HF's layout;
  * qwen3_next (llama.cpp's qwen3next): HF's fused in_proj_qkvz and in_proj_ba as they are, value heads
    grouped by key head; Qwen3.5's norms, A and convolution (`QWEN3_NEXT`).
A table maps an HF-name regex to (tensor, cfg) -> the GGUF layout; `*_NAMES` rename HF names the
gguf package's map does not know.
"""

from typing import Callable

import torch

from model.config import ModelConfig
from model.hf.gpt_neox import qkv_from_heads

CONV1D = {r"\.(c_attn|c_proj|c_fc)\.weight$": lambda t, cfg: t.t()}  # HF's Conv1D stores (in, out)
# llama.cpp's gptneox reads [q; k; v] over all heads, as ours; HF holds each head's [q_h; k_h; v_h]
NEOX_QKV = {r"\.query_key_value\.(weight|bias)$": qkv_from_heads}


def rope_pairs(n_heads: Callable[[ModelConfig], int]):
    """Reorder each head's rows from HF's halves (d_0..d_h-1 | d_h..d_2h-1) to GGUF llama's
    adjacent pairs (d_0, d_h, d_1, d_h+1, ...): the rotation pairs the same dimensions."""
    def permute(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
        n = n_heads(cfg)
        return t.reshape(n, 2, t.shape[0] // n // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)
    return permute


LLAMA_ROPE = {r"\.q_proj\.(weight|bias)$": rope_pairs(lambda cfg: cfg.n_head),
              r"\.k_proj\.(weight|bias)$": rope_pairs(lambda cfg: cfg.n_kv_head)}
GEMMA = {r"norm\.weight$": lambda t, cfg: t + 1}  # every Gemma norm is stored as 1 + w
DEEPSEEK_NAMES = {r"\.e_score_correction_bias$": ".e_score_correction.bias"}


def split_gate_up(name: str, t: torch.Tensor, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Stacked experts' (n_expert, [gate; up], ...) weight or bias as GGUF's two tensors."""
    gate, up = t.chunk(2, dim=1)
    return {name.replace("gate_up_proj", "gate_proj"): gate, name.replace("gate_up_proj", "up_proj"): up}


def split_kv_b(name: str, t: torch.Tensor, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """MLA's kv_b_proj (rows per head [k_nope; v], columns the latent) as llama.cpp's absorbed decode
    reads it: k_b, each head transposed to (latent, k_nope), and v_b (v, latent)."""
    m = cfg.mla
    k, v = t.view(cfg.n_head, -1, m.kv_lora_rank).split([m.qk_nope_head_dim, m.v_head_dim], dim=1)
    return {name.replace("kv_b", "k_b"): k.transpose(1, 2), name.replace("kv_b", "v_b"): v}


SPLITS = {  # HF-name regex (after `renames`) -> one HF tensor as several GGUF ones, in every architecture
    r"\.experts\.gate_up_proj(\.bias)?$": split_gate_up,
    r"\.kv_b_proj\.weight$": split_kv_b,
}


def stacked(t: torch.Tensor) -> torch.Tensor:
    """gpt-oss's gate_up rows interleaved (g0 u0 g1 u1 ...) as [gate; up] along dim 1."""
    return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1)


GPT_OSS = {  # HF stores its experts (in, out) with gate and up interleaved; GGUF (out, in), [gate; up]
    r"\.experts\.gate_up_proj$": lambda t, cfg: stacked(t.transpose(1, 2)),
    r"\.experts\.gate_up_proj_bias$": lambda t, cfg: stacked(t),
    r"\.experts\.down_proj$": lambda t, cfg: t.transpose(1, 2),
}


def tiled(cfg: ModelConfig, size: int = 1) -> torch.Tensor:
    """Index of the value heads (each `size` rows) in llama.cpp's order: HF groups the value heads of
    one key head together (k0v0 k0v1 k1v0 k1v1), llama.cpp tiles them (k0v0 k1v0 k0v1 k1v1)."""
    d = cfg.deltanet
    return torch.arange(d.n_v_head * size).reshape(d.n_head, d.n_v_head // d.n_head, size).transpose(0, 1).reshape(-1)


def value_rows(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Rows past q and k (in_proj_qkv, conv1d), or all rows, reordered per value element."""
    d = cfg.deltanet
    qk = t.shape[0] - d.n_v_head * d.v_head_dim
    return torch.cat([t[:qk], t[qk:][tiled(cfg, d.v_head_dim)]])


QWEN_HYBRID = {  # both hybrids: norms stored as 1 + w (not linear_attn.norm), the shared expert's gate
    r"(layernorm|_norm|^model\.norm)\.weight$": lambda t, cfg: t + 1,
    r"\.shared_expert_gate\.weight$": lambda t, cfg: t.squeeze(0),  # MoE: one row, stored 1-D
}
QWEN35 = {  # HF -> llama.cpp's layout: value heads tiled, A as -exp(A_log)
    r"\.(in_proj_qkv|in_proj_z)\.weight$": value_rows,
    r"\.conv1d\.weight$": lambda t, cfg: value_rows(t, cfg).squeeze(1),
    r"\.(in_proj_a\.weight|in_proj_b\.weight|dt_bias)$": lambda t, cfg: t[tiled(cfg)],
    r"\.A_log$": lambda t, cfg: -t.exp()[tiled(cfg)],
    r"\.out_proj\.weight$": lambda t, cfg: t[:, tiled(cfg, cfg.deltanet.v_head_dim)],
} | QWEN_HYBRID
QWEN3_NEXT = {  # llama.cpp reads HF's fused, key-head-grouped in_proj_qkvz and in_proj_ba as they are
    r"\.conv1d\.weight$": lambda t, cfg: t.squeeze(1),  # (ssm_in, ssm_ba): value heads stay grouped
    r"\.A_log$": lambda t, cfg: -t.exp(),
} | QWEN_HYBRID
QWEN35_NAMES = {r"\.dt_bias$": ".dt_proj.bias", r"\.A_log$": ".A_log.bare"}  # ssm_a has no suffix
