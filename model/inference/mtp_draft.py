"""Self-speculative decoding: the model's own MTP modules (model/mtp.py) as the draft.

DeepSeek-V3 (arXiv:2412.19437, sec. 2.2 and 5.4.3) drafts with its MTP module: the main model's
last hidden state at position i and the token t_{i+1} give a guess for t_{i+2}, one token beyond
what the main model has seen. With D modules a round proposes up to D tokens, depth k guessing the
k-th token past the verified prefix. The draft costs D small blocks per round instead of a second
model, and reuses the target's hidden states instead of recomputing them.

`MTPDraft` implements the draft protocol of model/inference/speculative.py (`config`, `train(mode)`,
`new_cache`, `draft(tokens, cache=...)` -> logits), so it goes wherever a separate draft model goes:
`model.generate(idx, n, draft="mtp")`. It also has `observe(hidden, target_cache)`: speculative
decoding runs the target with `return_hidden=True` and hands it the states before the final norm
that the forward returns. Greedy output equals plain greedy decoding whatever the draft proposes
(the target verifies every token).
"""

import torch

from .cache import CacheSpec, ModelCache
from ..softcap import softcap


class MTPDraftCache:
    """What the draft keeps for one generation.

    length/tokens: the tokens it was given (draft protocol); target_h: the target's states before its
    final norm, as observed, of which the first `target_cache.length` are verified (the
    target's cache is rolled back past the rejected ones); per depth k: a block cache and the states
    h^k at the positions it has processed (position i of depth k uses t_{i+k})."""

    def __init__(self, model, spec: CacheSpec):
        self.length = 0
        self.tokens = torch.empty(1, 0, dtype=torch.long, device=spec.device)
        self.target_h = torch.empty(1, 0, model.config.n_embd, device=spec.device, dtype=spec.dtype)
        self.target_cache = None
        # one cache per MTP block, which its mixer addresses by its own layer index (past the stack)
        self.blocks = [ModelCache([m.block.attn.new_cache(spec)], spec, first=m.block.attn.layer_idx)
                       for m in model.mtp.layers]
        self.states = [self.target_h[:, :0] for _ in model.mtp.layers]

    def observe(self, h: torch.Tensor, target_cache) -> None:
        """The target ran its last T positions through `target_cache` and produced states h (1, T, n_embd)."""
        self.target_cache = target_cache
        self.target_h = torch.cat([self.target_h[:, :target_cache.length - h.shape[1]], h], dim=1)

    def target_positions(self) -> int:
        """P: the positions whose target states are verified."""
        return 0 if self.target_cache is None else min(self.target_h.shape[1], self.target_cache.length)

    def rollback(self, n: int) -> None:
        """Keep the first n tokens; depth k keeps the positions i whose token t_{i+k} is still kept."""
        self.length, self.tokens = n, self.tokens[:, :n]
        for k, (cache, states) in enumerate(zip(self.blocks, self.states), start=1):
            keep = max(0, min(cache.length, n - k))
            cache.rollback(keep)
            self.states[k - 1] = states[:, :keep]


class MTPDraft:
    """The MTP modules of `model` as a speculative-decoding draft (module docstring)."""

    def __init__(self, model):
        if model.mtp is None:
            raise ValueError("draft='mtp' needs MTP modules: model.mtp_depth is 0 for this model")
        self.model, self.config, self.depth = model, model.config, len(model.mtp.layers)
        self.cache: MTPDraftCache | None = None

    def observe(self, hidden: torch.Tensor, target_cache) -> None:
        """The target ran its last T positions through `target_cache`, ending in `hidden` (1, T, n_embd)."""
        if self.cache is not None:
            self.cache.observe(hidden, target_cache)

    def train(self, mode: bool = True) -> "MTPDraft":
        """As nn.Module.train: the modes of the model whose modules draft."""
        self.model.train(mode)
        return self

    def new_cache(self, batch_size: int, max_len: int, rollback: int = 0, **options) -> MTPDraftCache:
        spec = CacheSpec(batch_size, max_len, self.model.cache_dtype(), self.model.transformer.ln_f.weight.device,
                         rollback=rollback + self.depth, **options)
        self.cache = MTPDraftCache(self.model, spec)
        return self.cache

    def __call__(self, idx: torch.Tensor, cache: MTPDraftCache) -> torch.Tensor:
        """Take the next tokens idx (1, T); return (1, 1, vocab_size) logits for the token after them:
        depth k = (tokens given) - (positions the target has run), from position P - 1; depth 0 (the
        target has seen everything but the last token, as after the prompt) is the main head."""
        cache.tokens = torch.cat([cache.tokens, idx], dim=1)
        cache.length += idx.shape[1]
        P = cache.target_positions()
        if P == 0:  # a one-token prompt: no target state to start from yet; a uniform guess
            return torch.zeros(1, 1, self.config.vocab_size, device=idx.device)
        depth = cache.length - P
        if not 0 <= depth <= self.depth:
            raise ValueError(f"the MTP draft can guess 1 .. {self.depth} tokens past the target's "
                             f"{P} positions; asked for token {cache.length}")
        h = cache.target_h[:, P - 1:]
        for k in range(1, depth + 1):
            h = self._run_depth(cache, k, P)[:, -1:]
        norm = self.model.mtp.layers[depth - 1].norm if depth else self.model.transformer.ln_f
        logits = self.model.lm_head(norm(h))[..., : self.config.vocab_size]
        return softcap(logits, self.config.final_softcap) if self.config.final_softcap else logits

    def _run_depth(self, cache: MTPDraftCache, k: int, P: int) -> torch.Tensor:
        """Depth k's states at positions 0 .. P - 1, running the block on those it has not seen."""
        module, block_cache = self.model.mtp.layers[k - 1], cache.blocks[k - 1]
        start = block_cache.length
        if start < P:
            prev = cache.target_h if k == 1 else cache.states[k - 2]
            emb = self.model.transformer.wte(cache.tokens[:, start + k: P + k])
            positions = torch.arange(start, P, device=emb.device)
            new = module(prev[:, start:P], emb, positions, block_cache)
            block_cache.advance(P - start)
            cache.states[k - 1] = torch.cat([cache.states[k - 1], new], dim=1)
        return cache.states[k - 1]
