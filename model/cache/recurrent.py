"""The generation cache of a linear-attention layer: a constant-size state, whatever the context.

A Gated DeltaNet layer (model/mixer/deltanet.py) needs two things from its past, and no more:
the last conv_size - 1 inputs of its causal convolution (in the compute dtype) and the recurrent
memory S, (n_v_head, head_dim, v_head_dim) per sequence (fp32: it accumulates over the whole
context). Neither grows with the context: `bytes_per_token()` is 0, which is the whole point of the
hybrid rung (docs/ladder.md). HF keeps the same two tensors in `conv_states` / `recurrent_states`.

Not a key/value cache: `update` is not called; the layer reads `conv` and `state` and writes them
back with `write`. A state that has absorbed a token cannot forget it. Speculative decoding rolls
rejected guesses back (`ModelCache.rollback`), which a cache built with `CacheSpec.rollback = R`
allows: the layer then also hands `write` the state after each of the last R + 1 positions of its
forward and the conv inputs around them (`History`), and `rollback(n)` takes the state after
position n - 1 from there. A rollback never reaches before the last forward's positions (a round of
speculative decoding keeps at least the tokens it was given), so nothing older is kept. Without a
margin (R = 0) nothing is kept and the cache cannot roll back.

A static cache (`CacheSpec.static`, for `generate(compile=True)`, model/decoder.py) keeps both
tensors at fixed addresses and writes them in place, so a compiled decode step can capture them;
`reset()` zeroes them for the next sequence, as a static KV cache reuses its buffers.
"""

from dataclasses import dataclass

import torch


@dataclass
class History:
    """What a rollback into the last forward needs: `end`, the position after its last token;
    `states[i]`, the state after position end - len(states) + i; `before`, the state before the
    first of those; `conv_in`, the conv's inputs from conv_size - 1 positions before the first of
    them to the end (B, conv_dim, conv_size - 1 + len(states))."""

    end: int
    states: list[torch.Tensor]
    before: torch.Tensor
    conv_in: torch.Tensor


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
        self.history: History | None = None

    def write(self, conv: torch.Tensor, state: torch.Tensor, history: History | None = None) -> None:
        if self.static:  # in place: the buffers a compiled step captured
            self.conv.copy_(conv)
            self.state.copy_(state)
        else:
            self.conv, self.state, self.history = conv.to(self.conv.dtype), state, history

    def reset(self) -> None:
        """An empty past again, in the same buffers (a static cache starting a new sequence)."""
        self.conv.zero_()
        self.state.zero_()
        self.history = None

    def rollback(self, length: int) -> None:
        """Forget the positions from `length` on (within the last forward's kept ones)."""
        h = self.history
        if h is None or length >= h.end:
            return
        i = length - (h.end - len(h.states))  # how many kept positions stay
        if i < 0:
            raise ValueError(f"the recurrent state keeps the last {len(h.states)} positions; "
                             f"cannot roll back to {length}")
        self.state = h.states[i - 1] if i else h.before
        width = self.conv.shape[-1]
        self.conv = h.conv_in[..., i:i + width].to(self.conv.dtype)
        self.history = History(length, h.states[:i], h.before, h.conv_in[..., :i + width])

    def bytes_per_token(self) -> int:
        return 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.conv, self.state))
