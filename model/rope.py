"""Rotary position embeddings, chosen by `model.pos = "rope"` and configured in `[model.rope]`.

RoPE (Su et al., RoFormer, arXiv:2104.09864) encodes a token's position by rotating pairs of
query/key dimensions through angles position * inv_freq[i]; the dot product of a rotated query and
key then depends only on their distance. Pairs are (i, i + rot_dim / 2) -- the "rotate-half" layout
of HF `LlamaRotaryEmbedding` / `apply_rotary_pos_emb`, which is what HF checkpoints expect.

Context-extension variants change only the inverse frequencies (`ROPE_SCALINGS`), computed exactly
as HF `transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS` does, so tables match it bit for bit.
"""

import math

import torch
from torch import nn

from .config import ModelConfig, RopeConfig

# On the CPU, torch's cos, sin, exp, tanh, log call MKL's vector math, which sets itself up on its
# first call. When that first call is split over two threads, the second thread's half can come out
# different: with torch 2.13's CPU build on an AVX-512 Xeon, cos off by up to 1.5e-4 in 2 of 12 and
# 4 of 16 processes, so a model's RoPE table (the process's first such call) and its logits differed
# between processes. One call on one element first, here, makes every later call exact (docs/LOG.md).
torch.zeros(1).cos()


def _base_inv_freq(theta: float, rot_dim: int) -> torch.Tensor:
    """theta^(-2i / rot_dim) for i < rot_dim / 2: wavelengths from 2*pi up to ~2*pi*theta tokens."""
    return 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.int64).float() / rot_dim))


def no_scaling(rope: RopeConfig, theta: float, rot_dim: int, original_max_pos: int):
    """Plain RoPE (HF rope_type "default")."""
    return _base_inv_freq(theta, rot_dim), 1.0


def linear_scaling(rope: RopeConfig, theta: float, rot_dim: int, original_max_pos: int):
    """Position interpolation (Chen et al., arXiv:2306.15595): every frequency divided by `factor`."""
    return _base_inv_freq(theta, rot_dim) / rope.factor, 1.0


def llama3_scaling(rope: RopeConfig, theta: float, rot_dim: int, original_max_pos: int):
    """Llama 3.1 (arXiv:2407.21783): interpolate only the low frequencies.

    Wavelengths shorter than original_max_pos / high_freq_factor are kept, those longer than
    original_max_pos / low_freq_factor are divided by `factor`, and the band between is blended.
    """
    inv_freq = _base_inv_freq(theta, rot_dim)
    low_freq_wavelen = original_max_pos / rope.low_freq_factor
    high_freq_wavelen = original_max_pos / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (original_max_pos / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


def yarn_scaling(rope: RopeConfig, theta: float, rot_dim: int, original_max_pos: int):
    """YaRN (Peng et al., arXiv:2309.00071): NTK-by-parts interpolation plus an attention factor.

    Dimensions that complete more than beta_fast rotations over original_max_pos keep their
    frequency, those with fewer than beta_slow are interpolated by `factor`, with a linear ramp
    between. cos/sin are multiplied by 0.1 * ln(factor) + 1, which sharpens the softmax back to its
    pre-extension temperature (the paper's sqrt(1/t)).
    """

    def correction_dim(n_rotations: float) -> float:  # the dimension that turns n times over the context
        return rot_dim * math.log(original_max_pos / (n_rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:  # HF's default; gpt-oss keeps the fractional ends
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rot_dim - 1)
    high = high + 0.001 if low == high else high  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(rot_dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = theta ** (torch.arange(0, rot_dim, 2).float() / rot_dim)
    extrapolation = 1 - ramp  # 1: keep the original frequency, 0: interpolate
    inv_freq = (1.0 / (rope.factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    attention_factor = 0.1 * math.log(rope.factor) + 1.0 if rope.factor > 1 else 1.0
    return inv_freq, attention_factor


ROPE_SCALINGS = {"none": no_scaling, "linear": linear_scaling, "llama3": llama3_scaling, "yarn": yarn_scaling}


class Rotary(nn.Module):
    """Rotates the first `rot_dim` dimensions of each query and key head by its absolute position.

    RoFormer (arXiv:2104.09864); matches HF `LlamaRotaryEmbedding` + `apply_rotary_pos_emb`, and
    for rope.fraction < 1 the partial rotary of HF `GPTNeoXRotaryEmbedding` (`partial_rotary_factor`).
    Config: head_dim, block_size, rope.theta / scaling / factor / original_max_pos / fraction.

    cos/sin for every position < block_size are computed once, in fp32, as HF computes them per
    step, and kept as non-persistent buffers (rebuilt from the config, not saved). Each layer holds
    its own table: block_size * rot_dim * 4 bytes per layer (2 MiB at 4096 x 128 in fp32).
    """

    def __init__(self, rope: RopeConfig, theta: float, scaling: str, head_dim: int, block_size: int):
        super().__init__()
        self.rot_dim = int(head_dim * rope.fraction)  # as HF: int(head_dim * partial_rotary_factor)
        original_max_pos = rope.original_max_pos or block_size
        inv_freq, attention_factor = ROPE_SCALINGS[scaling](rope, theta, self.rot_dim, original_max_pos)
        freqs = torch.arange(block_size).float()[:, None] * inv_freq[None, :]  # (block_size, rot_dim / 2)
        self.register_buffer("cos", freqs.cos() * attention_factor, persistent=False)
        self.register_buffer("sin", freqs.sin() * attention_factor, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, n_head, T, head_dim), k: (B, n_kv_head, T, head_dim); positions: (T,) absolute."""
        cos, sin = self.cos[positions], self.sin[positions]  # (T, rot_dim / 2)
        return apply_rotary(q, cos, sin, self.rot_dim), apply_rotary(k, cos, sin, self.rot_dim)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot_dim: int) -> torch.Tensor:
    """Rotate pairs (x1[i], x2[i]) = (x[i], x[i + rot_dim/2]) by the angle whose cos/sin are given.

    Equal, bit for bit, to HF's `x * cat(cos, cos) + rotate_half(x) * cat(sin, sin)` on x[..., :rot_dim];
    dimensions from rot_dim on pass through unrotated.
    """
    half = rot_dim // 2
    x1, x2, rest = x[..., :half], x[..., half:rot_dim], x[..., rot_dim:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)


class NoRotary(nn.Module):
    """Identity stand-in for learned or no (NoPE) position encodings in MLA, whose indexer (DSA)
    takes the layer's rotary as an argument; CausalSelfAttention holds None instead."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        return q, k


def build_rotary(cfg: ModelConfig, local: bool, head_dim: int = 0) -> nn.Module:
    """The rotary for one layer. With rope.local_theta set, sliding-window (`local`) layers use plain
    RoPE at that base and only global layers use rope.scaling (Gemma 3: 10k local, 1M global).
    head_dim: the size of the rotated heads, when not model.head_dim (MLA's qk_rope_head_dim)."""
    if cfg.pos != "rope":
        return NoRotary()
    rope = cfg.rope
    own_local = local and rope.local_theta > 0
    theta = rope.local_theta if own_local else rope.theta
    scaling = "none" if own_local else rope.scaling
    return Rotary(rope, theta, scaling, head_dim or cfg.head_dim, cfg.block_size)
