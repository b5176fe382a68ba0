"""The pieces a family's conversion table is written with: transforms, rows, `Family`.

A row is (our parameter, HF tensor name(s), Transform); `{i}` stands for the layer index. A
`Transform` converts the HF tensors of a row into our one tensor (`load`) and back (`save`): a
transpose for GPT-2's `Conv1D` (stored (in, out), our `nn.Linear` is (out, in)), vocabulary
padding, or `concat` of several HF tensors (q/k/v -> our fused `c_attn`, gate/up -> `c_fc`).
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..config import ModelConfig

Tensors = list[torch.Tensor]


class Transform(NamedTuple):
    load: Callable[[Tensors, ModelConfig], torch.Tensor]  # HF tensors of one row -> our tensor (or list)
    save: Callable[[torch.Tensor, ModelConfig], Tensors]  # our tensor (or list) -> HF tensors of the row


IDENTITY = Transform(lambda ts, cfg: ts[0], lambda t, cfg: [t])
TRANSPOSE = Transform(lambda ts, cfg: ts[0].t(), lambda t, cfg: [t.t()])  # Conv1D (in, out)
# Our embedding/LM-head rows are padded to `padded_vocab_size`; the padding rows are never used
# (their logits are cut off), so zeros are as good as anything.
VOCAB = Transform(
    lambda ts, cfg: nn.functional.pad(ts[0], (0, 0, 0, cfg.padded_vocab_size - ts[0].shape[0])),
    lambda t, cfg: [t[: cfg.vocab_size]],
)


def concat(sizes: Callable[[ModelConfig], list[int]], dim: int = 0) -> Transform:
    """Several HF tensors stacked along `dim` into one of ours, e.g. q/k/v into `c_attn`."""
    return Transform(lambda ts, cfg: torch.cat(ts, dim=dim),
                     lambda t, cfg: list(t.split(sizes(cfg), dim=dim)))


Row = tuple[str | tuple[str, ...], str | tuple[str, ...], Transform]


def names(row_names: str | tuple[str, ...]) -> tuple[str, ...]:
    """One side of a row: a name, or a tuple of names."""
    return (row_names,) if isinstance(row_names, str) else tuple(row_names)


@dataclass(frozen=True)
class Family:
    config_from_hf: Callable[[object], ModelConfig]
    config_to_hf: Callable[..., object]
    weights: list[Row]
    hf_ignore: tuple[str, ...] = ()


def reject_unsupported(c, unsupported: dict[str, bool]) -> None:
    """ValueError naming the first HF config field whose value our model cannot reproduce."""
    for name, bad in unsupported.items():
        if bad:
            raise ValueError(f"HF {c.model_type} config {name}={getattr(c, name, None)!r} is not supported")
