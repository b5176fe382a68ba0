"""The generation cache of a linear-attention layer: a constant-size state, whatever the context.

A Gated DeltaNet layer (model/mixer/deltanet.py) needs two things from its past, and no more:
the last conv_size - 1 inputs of its causal convolution (in the compute dtype) and the recurrent
memory S, (n_v_head, head_dim, v_head_dim) per sequence (fp32: it accumulates over the whole
context). Neither grows with the context: `bytes_per_token()` is 0, which is the whole point of the
hybrid rung (docs/ladder.md). HF keeps the same two tensors in `conv_states` / `recurrent_states`.

Not a key/value cache: `update` is not called; the layer reads `conv` and `state` and writes them
back with `write`. A state that has absorbed a token cannot forget it. Speculative decoding rolls
rejected guesses back (`ModelCache.rollback`), which a cache built with `CacheSpec.rollback = R`
allows: the layer then also hands `write` a `Snapshot` (state and conv past) after each position
of its forward that may be needed (the last R + 1), the cache keeps the newest R + 1 over all
forwards, one token or many, and `rollback(n)` restores the one after position n - 1. Without a
margin (R = 0) nothing is kept and the cache cannot roll back.

A static cache (`CacheSpec.static`, for `generate(compile=True)`, model/inference/decoder.py) keeps both
tensors at fixed addresses and writes them in place, so a compiled decode step can capture them;
`reset()` zeroes them for the next sequence, as a static KV cache reuses its buffers.
"""

from dataclasses import dataclass

import torch

from .kv import tensor_bytes


@dataclass
class Snapshot:
    """The state and the conv's past right after position `pos`."""

    pos: int
    state: torch.Tensor
    conv: torch.Tensor


class RecurrentState:
    """conv: (B, conv_dim, conv_size - 1) in the compute dtype; state: (B, n_v_head, head_dim,
    v_head_dim) in fp32. Both start at zero, which is what an empty past means for both."""

    def __init__(self, spec, conv_dim: int, conv_size: int, state_shape: tuple[int, int, int]):
        self.conv = torch.zeros(spec.batch_size, conv_dim, conv_size - 1, dtype=spec.dtype, device=spec.device)
        self.state = torch.zeros(spec.batch_size, *state_shape, dtype=torch.float32, device=spec.device)
        self.static = spec.static
        if self.static:
            for t in (self.conv, self.state):
                torch._dynamo.mark_static_address(t)
        self.max_rollback = spec.rollback  # positions a rollback may undo (0: none)
        self.kept: list[Snapshot] = []  # the newest max_rollback + 1, oldest first

    def write(self, conv: torch.Tensor, state: torch.Tensor, kept: list[Snapshot] = ()) -> None:
        if self.static:  # in place: the buffers a compiled step captured
            self.conv.copy_(conv)
            self.state.copy_(state)
            return
        self.conv, self.state = conv.to(self.conv.dtype), state
        if self.max_rollback:
            self.kept = (self.kept + list(kept))[-(self.max_rollback + 1):]

    def reset(self) -> None:
        """An empty past again, in the same buffers (a static cache starting a new sequence)."""
        self.conv.zero_()
        self.state.zero_()
        self.kept = []

    def rollback(self, length: int) -> None:
        """Forget the positions from `length` on: take back the state after position length - 1."""
        if not self.kept or length > self.kept[-1].pos:
            return
        if length == 0:
            self.state, self.conv, self.kept = torch.zeros_like(self.state), torch.zeros_like(self.conv), []
            return
        at = next((s for s in self.kept if s.pos == length - 1), None)
        if at is None:
            raise ValueError(f"the recurrent state keeps positions {self.kept[0].pos} .. {self.kept[-1].pos}; "
                             f"cannot roll back to {length}")
        self.state, self.conv = at.state, at.conv.to(self.conv.dtype)
        self.kept = [s for s in self.kept if s.pos < length]

    def bytes_per_token(self) -> int:
        return 0

    def nbytes(self) -> int:
        return tensor_bytes((self.conv, self.state))
