"""Speculative decoding: a small draft model proposes tokens, the target checks them in one forward.

Leviathan et al. 2023 (arXiv:2211.17192), Chen et al. 2023 (arXiv:2302.01318); HF transformers calls
it assisted generation (`generate(..., assistant_model=...)`). Each round the draft proposes k tokens
one at a time through its own cache, from its distributions q_1..q_k. The target then runs ONE
forward over the last accepted token and the k proposals, which gives its distributions p_1..p_k+1.
Proposal d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection a token
is drawn from norm(max(0, p_i - q_i)) instead and the round ends; when all k are accepted, a bonus
token is drawn from p_k+1. Every token then has exactly the target's distribution, whatever the
draft; a good draft only makes rounds longer. Both caches are rolled back to the accepted prefix.

Greedy decoding (temperature 0) is the same rule with one-hot distributions: a proposal is accepted
iff it is the target's argmax, a rejection yields the target's argmax, so the output equals the
target's own greedy output token for token. temperature, top_k and top_p shape p and q alike
(model/inference/sampling.py).

Batch size 1 only: rows accept different numbers of tokens, and a ModelCache has one length.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..config import check_int
from .sampling import check_sampling, probabilities


@dataclass
class SpeculativeStats:
    """What a speculative run did. `target_forwards` counts the prompt's forward and one per round."""

    proposed: int = 0  # draft tokens offered to the target
    accepted: int = 0  # of which the target kept
    rounds: int = 0  # target verification forwards
    target_forwards: int = 0
    draft_forwards: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(..., V) logits -> (..., V) fp32 sampling distribution; temperature 0 gives the one-hot argmax."""
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    return probabilities(logits, temperature, top_k, top_p)


def verify(p: torch.Tensor, q: torch.Tensor, proposed: torch.Tensor,
           generator: torch.Generator | None = None) -> tuple[int, torch.Tensor]:
    """The accept/resample rule for one sequence.

    p: (k + 1, V) target distributions at the k proposals and after them; q: (k, V) the draft's;
    proposed: (k,) the draft's tokens. Returns (n accepted, (1,) the token that follows them).
    """
    k = proposed.shape[0]
    rows = torch.arange(k, device=p.device)
    p_d, q_d = p[rows, proposed], q[rows, proposed]  # (k,) each; q_d > 0, since d was drawn from q
    r = torch.rand(k, generator=generator, device=p.device)
    n = int((r * q_d < p_d).cumprod(dim=0).sum())  # accepted with probability min(1, p/q), in order
    if n == k:
        return n, torch.multinomial(p[k], 1, generator=generator)  # the bonus token
    residual = (p[n] - q[n]).clamp_min(0)
    residual = torch.where(residual.sum() > 0, residual, p[n])  # p == q up to rounding: never rejected
    return n, torch.multinomial(residual, 1, generator=generator)


def _check(target, draft, idx: torch.Tensor, max_new_tokens: int, n_draft: int) -> None:
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(f"the draft's vocab_size ({draft.config.vocab_size}) differs from the "
                         f"target's ({target.config.vocab_size}); they must share the tokenizer")
    check_int("n_draft", n_draft, 1)
    if idx.dim() != 2 or idx.shape[0] != 1 or idx.shape[1] < 1:
        raise ValueError(f"speculative decoding takes one prompt, idx of shape (1, T >= 1); got {tuple(idx.shape)}")
    total = idx.shape[1] + max_new_tokens
    for name, model in (("target", target), ("draft", draft)):
        if getattr(model.config, "attn_conv", 0):
            raise ValueError(f"the {name} has model.attn_conv={model.config.attn_conv} (Canon layers), whose "
                             "convolution state cannot be rolled back after a rejected guess; speculative "
                             "decoding needs models without it")
        if total > model.config.block_size:
            raise ValueError(f"prompt ({idx.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) "
                             f"exceeds the {name}'s model.block_size={model.config.block_size}")


@torch.no_grad()
def speculative_generate(target, draft, idx: torch.Tensor, max_new_tokens: int, n_draft: int = 4,
                         temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                         generator: torch.Generator | None = None,
                         stream=None) -> tuple[torch.Tensor, SpeculativeStats]:
    """Extend idx (1, T) by max_new_tokens tokens of the target's distribution -> ((1, T + N), stats).

    `draft` is any model with the target's vocabulary (`model(idx, cache=...)`, `new_cache`); a
    draft with an `observe(hidden, target_cache)` method (the MTP draft) is also handed the target's
    last hidden states after each of its forwards;
    `stream`, if given, is called with each round's accepted tokens (1, n + 1) as they are decided.
    """
    check_sampling(temperature, top_k, top_p)
    _check(target, draft, idx, max_new_tokens, n_draft)
    target.eval()
    draft.train(False)  # eval mode; a draft needs only nn.Module's train(mode) (model/inference/mtp_draft.py)
    total = idx.shape[1] + max_new_tokens
    # A round rolls a cache back by at most n_draft positions; ring buffers keep that many extra keys.
    t_cache, d_cache = (m.new_cache(1, total, rollback=n_draft) for m in (target, draft))
    stats = SpeculativeStats()
    seq = idx  # (1, n): every token so far; each cache holds all but the last (or the last two)
    observe = getattr(draft, "observe", None)

    def run_target(tokens: torch.Tensor) -> torch.Tensor:
        if observe is None:
            return target(tokens, cache=t_cache)
        logits, hidden = target(tokens, cache=t_cache, return_hidden=True)
        observe(hidden, t_cache)
        return logits

    if idx.shape[1] > 1 and max_new_tokens > 0:
        run_target(idx[:, :-1])
        draft(idx[:, :-1], cache=d_cache)
        stats.target_forwards += 1
        stats.draft_forwards += 1
    while seq.shape[1] < total:
        k = min(n_draft, total - seq.shape[1] - 1)  # a full round adds k + 1 tokens
        x = seq[:, d_cache.length:]  # the draft's unseen tokens: one, or two after a bonus
        proposed, q = [], []
        for _ in range(k):
            q_i = distribution(draft(x, cache=d_cache)[0, -1], temperature, top_k, top_p)
            x = torch.multinomial(q_i, 1, generator=generator).view(1, 1)
            proposed.append(x)
            q.append(q_i)
        proposed = torch.cat(proposed, dim=1) if k else seq[:, :0]  # (1, k)
        start = t_cache.length
        logits = run_target(torch.cat([seq[:, start:], proposed], dim=1))
        p = distribution(logits[0, -(k + 1):], temperature, top_k, top_p)  # (k + 1, V)
        n, nxt = verify(p, torch.stack(q) if k else p[:0], proposed[0], generator)
        seq = torch.cat([seq, proposed[:, :n], nxt.view(1, 1)], dim=1)
        if stream is not None:
            stream(seq[:, -(n + 1):])
        t_cache.rollback(seq.shape[1] - 1)
        d_cache.rollback(min(d_cache.length, seq.shape[1] - 1))
        stats.proposed += k
        stats.accepted += n
        stats.rounds += 1
        stats.target_forwards += 1
        stats.draft_forwards += k
    return seq, stats
