"""Decoding with a static cache, optionally through torch.compile and CUDA graphs (gpt-fast style).

Eager decoding of a small model is bound by Python and kernel launches, not arithmetic: each token
runs a few hundred small kernels. With a static cache (model/inference/cache/static.py) a decode step has the
same shapes and buffer addresses at every token, so `torch.compile(mode="reduce-overhead")` can
record it once as a CUDA graph and replay it per token. Only the decode step (one token) is
compiled: the prefill runs once per request over many tokens, where launch overhead is small next
to its arithmetic, and compiling it too (with dynamic shapes, so that a new prompt length does not
recompile) was most of the compile time: a 2-layer model's first compiled `generate` took 197 s
with it and 31 s without on a busy 2-core CPU, and on an H200 the 124M model's never finished in 150 s.

Shapes are kept few so that a changed request does not recompile at every call: the cache length is
rounded up to a power of two (at least 64, at most block_size), and one cache per (batch, length,
dtype) is kept and reused. A new batch size or length bucket compiles once (each is a new static
shape); every later call with it replays. On a CPU the same code runs without CUDA graphs.
"""

import torch

MIN_BUCKET = 64


def bucket(length: int, block_size: int) -> int:
    """The cache length for a request of `length` positions: the next power of two >= 64, capped."""
    return min(block_size, max(MIN_BUCKET, 1 << (length - 1).bit_length()))


class StaticDecoder:
    """Next-token logits through a static cache; compiled (`compile=True`) or eager."""

    def __init__(self, model, compile: bool):
        self.model = model
        self.caches = {}
        self.prefill = self.decode_one = self.forward
        if compile:
            cuda = next(model.parameters()).is_cuda
            self.decode_one = torch.compile(self.forward, mode="reduce-overhead" if cuda else None)

    def forward(self, idx: torch.Tensor, cache) -> torch.Tensor:
        return self.model(idx, cache=cache)[:, -1, :]

    def step(self, batch_size: int, length: int):
        """A `step(tokens) -> logits` function (model/inference/generate.py's protocol) for one request of at
        most `length` positions, on a reused cache."""
        max_len = bucket(length, self.model.config.block_size)
        key = (batch_size, max_len, self.model.cache_dtype())
        if key not in self.caches:
            self.caches[key] = self.model.new_cache(*key, static=True)
        cache = self.caches[key]
        cache.restart()

        def step(tokens: torch.Tensor) -> torch.Tensor:
            T = tokens.shape[1]
            cache.prepare(T)
            logits = (self.prefill if T > 1 else self.decode_one)(tokens, cache)
            cache.written(T)
            return logits.clone()  # a CUDA graph's output is overwritten by its next replay

        return step
