"""The generation cache of a linear-attention layer: a constant-size state, whatever the context.

A Gated DeltaNet layer (model/mixer/deltanet.py) needs two things from its past, and no more:
the last conv_size - 1 inputs of its causal convolution (in the compute dtype) and the recurrent
memory S, (n_v_head, head_dim, v_head_dim) per sequence (fp32: it accumulates over the whole
context). Neither grows with the context: `bytes_per_token()` is 0, which is the whole point of the
hybrid rung (docs/ladder.md). HF keeps the same two tensors in `conv_states` / `recurrent_states`.

Not a key/value cache: `update` is not called; the layer reads `conv` and `state` and writes them
back with `write`. A state that has absorbed a token cannot forget it, so `max_rollback` is 0:
speculative decoding, which rolls rejected drafts back, refuses it (`ModelCache.rollback`).
"""

import torch


class RecurrentState:
    """conv: (B, conv_dim, conv_size - 1) in the compute dtype; state: (B, n_v_head, head_dim,
    v_head_dim) in fp32. Both start at zero, which is what an empty past means for both."""

    max_rollback = 0

    def __init__(self, spec, conv_dim: int, conv_size: int, state_shape: tuple[int, int, int]):
        if spec.static:
            raise ValueError("compile=True (a static cache) is not supported for linear-attention layers "
                             "(model.linear_attention); decode with compile=False")
        self.conv = torch.zeros(spec.batch_size, conv_dim, conv_size - 1, dtype=spec.dtype, device=spec.device)
        self.state = torch.zeros(spec.batch_size, *state_shape, dtype=torch.float32, device=spec.device)

    def write(self, conv: torch.Tensor, state: torch.Tensor) -> None:
        self.conv, self.state = conv.to(self.conv.dtype), state

    def bytes_per_token(self) -> int:
        return 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.conv, self.state))
