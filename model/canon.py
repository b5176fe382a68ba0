"""Canon layers: a short causal convolution, with a residual, on attention's q, k and v.

Allen-Zhu 2025, "Physics of Language Models: Part 4.1, Architecture Design and the Magic of Canon
Layers" (arXiv:2512.17351): adding to each position a learned mix of the few positions before it,

    h_t <- h_t + sum_{j < K} w_j * h_{t-j}        (depthwise: one w per channel; K = model.attn_conv)

lets a layer see its neighbours without spending an attention head on them. This is Canon-B, on
the fused [q; k; v] projection, the place where the Gated DeltaNet already has its 4-tap
convolution (there with a SiLU and no residual). On this project's byte-level corpus that
convolution was the DeltaNet rung's whole gain (docs/results/deltanet-conv), which is what this
rung brings to attention layers. The same short mixing is modded-nanogpt's "smear" at one place.

Decoding keeps the last K - 1 projections of each attention layer (`ConvKV`); like the DeltaNet's
state they cannot be rolled back, so speculative decoding and static caches refuse them.
Config: attn_conv (0 = off).
"""

import torch
from torch import nn
from torch.nn import functional as F


class Canon(nn.Module):
    """x + causal depthwise conv(x) over time; x: (B, T, dim). Weight init: PyTorch's Conv1d default."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.conv1d = nn.Conv1d(dim, dim, width, groups=dim, bias=False)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """past: (B, dim, width - 1), the inputs before x (None: zeros). Returns the output and the new past."""
        y, h = causal_conv(x, self.conv1d, past)
        return x + y, h[..., h.shape[-1] - (self.conv1d.kernel_size[0] - 1):]


def causal_conv(x: torch.Tensor, conv1d: nn.Conv1d, past: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """conv1d's depthwise weight over time, causally: x (B, T, dim); past (B, dim, width - 1), the
    inputs before x (None: zeros). Returns y (B, T, dim) and the conv's inputs, past and x
    (B, dim, width - 1 + T), whose last width - 1 are the next past."""
    width = conv1d.kernel_size[0] - 1
    h = x.transpose(1, 2)  # (B, dim, T)
    h = F.pad(h, (width, 0)) if past is None else torch.cat([past.to(h.dtype), h], dim=-1)
    return F.conv1d(h, conv1d.weight, groups=h.shape[1]).transpose(1, 2), h


class ConvKV:
    """An attention layer's cache with Canon: its key/value cache (`kv`, whose `update` this
    forwards) and the last width - 1 inputs of the convolution (`past`, zero at the start)."""

    max_rollback = 0  # the conv's past moves on with every token, and cannot move back

    def __init__(self, kv, spec, dim: int, width: int):
        if spec.static:
            raise ValueError("compile=True (a static cache) is not supported with model.attn_conv "
                             "(Canon layers); decode with compile=False")
        self.kv = kv
        self.past = torch.zeros(spec.batch_size, dim, width - 1, dtype=spec.dtype, device=spec.device)

    def update(self, start: int, *new: torch.Tensor) -> tuple:
        return self.kv.update(start, *new)

    def write(self, past: torch.Tensor) -> None:
        """The conv's inputs after this step's tokens (what `Canon.forward` returned)."""
        self.past = past.to(self.past.dtype)

    def bytes_per_token(self) -> int:
        return self.kv.bytes_per_token()

    def nbytes(self) -> int:
        return self.kv.nbytes() + self.past.numel() * self.past.element_size()
