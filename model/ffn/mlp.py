"""Feed-forward (MLP) blocks, chosen by `model.mlp`.

The MLP is the component slot of a block that a Mixture-of-Experts layer will later fill, so every
MLP `build_mlp` returns takes only the config and maps (B, T, n_embd) -> (B, T, n_embd). Two shapes exist:
a plain two-layer MLP with an activation in between (GPT-2's GELU, Primer's squared ReLU), and a
gated linear unit (GLU) whose hidden activation is multiplied by a second, linear projection.
A GLU's activation takes both halves, `glu(gate, up)`, so that gpt-oss's clamped form fits the slot.
"""

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig

Activation = Callable[[torch.Tensor], torch.Tensor]
Glu = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (gate, up) -> hidden


# 0.5 x (1 + tanh(u)) = x sigmoid(2u), with 2u = x (_GELU_A + _GELU_B x^2)
_GELU_A = 2 * math.sqrt(2 / math.pi)
_GELU_B = _GELU_A * 0.044715


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (HF "gelu_new" / "gelu_pytorch_tanh"):
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).

    Under torch.compile it is written as the same function through a sigmoid, x sigmoid(2u):
    Inductor fuses either form into one kernel, and on a CPU its exp-based sigmoid is several times
    faster than its tanh (fwd + bwd of a 4096 x 1536 block: 22 ms against 49 ms, docs/LOG.md). Eager
    mode keeps ATen's one-kernel GELU, which saves only x for backward."""
    if torch.compiler.is_compiling():
        return x * torch.sigmoid(x * (_GELU_A + _GELU_B * x * x))
    return F.gelu(x, approximate="tanh")


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """relu(x)^2 (So et al. 2021, Primer, arXiv:2109.08668)."""
    return F.relu(x).square()


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up (Shazeer 2020, arXiv:2002.05202; HF `LlamaMLP`)."""
    return F.silu(gate) * up


def geglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(gate) * up (HF `Gemma2MLP` with gelu_pytorch_tanh)."""
    return gelu_tanh(gate) * up


class ClampedSwiGLU:
    """gpt-oss's expert activation (arXiv:2508.10925; HF `GptOssExperts._apply_gate`):

        g = min(gate, limit);  u = clamp(up, -limit, limit)
        out = (u + 1) * g * sigmoid(alpha * g)

    The clamp bounds the activations that reach the down projection; `u + 1` makes an up value of 0
    pass the gate through rather than zero it. Config: model.swiglu_alpha (1.702), swiglu_limit (7.0).
    """

    __name__ = "clamped_swiglu"

    def __init__(self, alpha: float, limit: float):
        self.alpha, self.limit = alpha, limit

    def __call__(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        gate = gate.clamp(max=self.limit)
        up = up.clamp(min=-self.limit, max=self.limit)
        return (up + 1) * gate * torch.sigmoid(self.alpha * gate)


class MLP(nn.Module):
    """Two-layer feed-forward: Linear -> activation -> Linear -> dropout.

    mlp = "gelu": GPT-2 (Radford et al. 2019; GELU, Hendrycks & Gimpel 2016, arXiv:1606.08415),
    matches HF `GPT2MLP`. mlp = "relu2": squared ReLU (Primer, arXiv:2109.08668), as in nanochat
    and Nemotron. Config: n_embd, mlp_hidden (default 4 * n_embd), bias, dropout.
    """

    def __init__(self, cfg: ModelConfig, act: Activation, hidden: int = 0):
        super().__init__()
        hidden = hidden or cfg.mlp_hidden
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.act = act
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, terms: dict | None = None) -> torch.Tensor:
        """x: (B, T, n_embd). terms: the training objective's extra terms, of which a dense MLP has none."""
        h = self.act(self.c_fc(x))  # (B, T, mlp_hidden)
        return self.dropout(self.c_proj(h))

    def extra_repr(self) -> str:
        return f"act={self.act.__name__}"


class GatedMLP(nn.Module):
    """Gated linear unit feed-forward: c_proj(act(gate) * up) (Shazeer 2020, arXiv:2002.05202).

    `c_fc` is one fused Linear whose output rows are [gate; up], mlp_hidden rows each, so one matmul
    computes both. mlp = "swiglu": SiLU gate, matches HF `LlamaMLP` (Llama, Qwen3, Mistral, OLMo 2).
    mlp = "geglu": tanh-GELU gate, matches HF `Gemma2MLP` with gelu_pytorch_tanh.
    mlp = "swiglu_clamped": gpt-oss's `ClampedSwiGLU` (its experts; as a dense MLP it has no HF twin).
    Config: n_embd, mlp_hidden (size of gate and of up), bias, dropout.
    """

    def __init__(self, cfg: ModelConfig, act: Glu, hidden: int = 0):
        super().__init__()
        hidden = hidden or cfg.mlp_hidden
        self.c_fc = nn.Linear(cfg.n_embd, 2 * hidden, bias=cfg.bias)
        self.act = act
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, terms: dict | None = None) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)  # (B, T, mlp_hidden) each
        return self.dropout(self.c_proj(self.act(gate, up)))

    def extra_repr(self) -> str:
        return f"act={self.act.__name__}"


# `model.mlp` -> (activation for this config, gated?). A gated activation takes (gate, up); the MLPs
# below and the experts of model/ffn/moe.py read it.
ACTIVATIONS: dict[str, tuple[Callable[[ModelConfig], Activation | Glu], bool]] = {
    "gelu": (lambda cfg: gelu_tanh, False),
    "relu2": (lambda cfg: relu_squared, False),
    "swiglu": (lambda cfg: swiglu, True),
    "geglu": (lambda cfg: geglu, True),
    "swiglu_clamped": (lambda cfg: ClampedSwiGLU(cfg.swiglu_alpha, cfg.swiglu_limit), True),
}


def activation(cfg: ModelConfig) -> tuple[Activation | Glu, bool]:
    """`model.mlp`'s activation, built for `cfg`, and whether it is gated (takes gate and up)."""
    make, gated = ACTIVATIONS[cfg.mlp]
    return make(cfg), gated


def build_mlp(cfg: ModelConfig, hidden: int = 0) -> nn.Module:
    """The dense MLP of `model.mlp`, with `hidden` units (0 = model.mlp_hidden)."""
    act, gated = activation(cfg)
    return (GatedMLP if gated else MLP)(cfg, act=act, hidden=hidden)
