"""Normalization layers, chosen by `model.norm` and `model.norm_unit_offset`.

GPT-2 uses LayerNorm (Ba et al. 2016, arXiv:1607.06450) with a learned scale and, when
`model.bias`, a learned shift. Llama-style models use RMSNorm, which drops the mean subtraction and
the shift. Gemma stores each scale as an offset from one, `(1 + weight)` with `weight` starting at
zero. Each norm is built by name from `NORMS`, so a new norm is one class and one registry entry.

Every norm has `reset_parameters()`, which `GPT.init_weights` calls to put the scale back at
"identity": ones, or zeros for the unit-offset variants.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig


class UnitOffsetLayerNorm(nn.LayerNorm):
    """LayerNorm whose scale is `(1 + weight)`, with `weight` initialised to 0.

    The unit-offset idea of Gemma's RMSNorm applied to LayerNorm, so `model.norm_unit_offset`
    composes with either norm; no reference model uses this exact pairing.
    Config: norm = "layernorm", norm_unit_offset, norm_eps, bias.
    """

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, 1.0 + self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """Root-mean-square norm, x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich, arXiv:1910.07467).

    No mean subtraction and no shift (so no bias, whatever `model.bias` says). The statistics are
    computed in fp32; the result is cast back to the input dtype *before* the scale is applied, as
    HF `LlamaRMSNorm` does (also Qwen3, Mistral). Config: norm = "rmsnorm", norm_eps.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x / rms(x), in fp32."""
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * self.normalize(x).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


class UnitOffsetRMSNorm(RMSNorm):
    """RMSNorm scaled by `(1 + weight)`, `weight` initialised to 0 (Gemma, arXiv:2403.08295).

    Weight decay then pulls the scale towards one rather than zero. Unlike Llama, the scale is
    applied in fp32 and only the product is cast back to the input dtype, as HF `Gemma2RMSNorm`
    (and Gemma 3) does. Config: norm = "rmsnorm", norm_unit_offset = true, norm_eps.
    """

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.normalize(x) * (1.0 + self.weight.float())).to(x.dtype)


# (model.norm, model.norm_unit_offset) -> class
NORMS = {
    ("layernorm", False): nn.LayerNorm,
    ("layernorm", True): UnitOffsetLayerNorm,
    ("rmsnorm", False): RMSNorm,
    ("rmsnorm", True): UnitOffsetRMSNorm,
}


def build_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The norm `cfg` asks for over the last dimension, of size `dim` (default n_embd)."""
    norm, dim = NORMS[cfg.norm, cfg.norm_unit_offset], dim or cfg.n_embd
    if cfg.norm == "rmsnorm":  # no shift, whatever model.bias says
        return norm(dim, eps=cfg.norm_eps)
    return norm(dim, eps=cfg.norm_eps, bias=cfg.bias)
