"""Rollouts: the model's sampled answers to a PromptSet's prompts (train/post/prompts.py).

A rollout samples `post.samples` answers per prompt with `GPT.generate` (KV cache) and the run's
generator; each answer ends at the first <|end|> (kept: the model learns to stop) or after
`post.max_new_tokens`. The prompt set's checker turns each answer into a reward. Which prompts a
step draws and the generator's seed are pure functions of the step's batch key, so a resumed run
samples what the uninterrupted one did.
"""

from dataclasses import dataclass

import torch

from ..hardware import autocast
from .prompts import PromptSet


@dataclass
class Rollouts:
    """Sequences prompt + answer, right-padded with <|end|>: ids (B, L); mask (B, L-1) is 1.0 where
    the target token (t+1) is an answer token; rewards (B,); `group` answers per prompt, in a row;
    the prompts and answers (B lists of ids each) as sampled."""

    ids: torch.Tensor
    mask: torch.Tensor
    rewards: torch.Tensor
    group: int
    prompts: list[list[int]]
    answers: list[list[int]]


@torch.no_grad()
def sample(model, prompts: list[list[int]], n: int, max_new: int, temperature: float, top_k: int,
           generator: torch.Generator | None, eot: int, dtype: str) -> list[list[int]]:
    """n answers per prompt, prompt after prompt: each cut after its first <|end|>. Prompts of one
    length are decoded together, as one batch."""
    device = next(model.parameters()).device
    out: list[list[int]] = [[] for _ in range(len(prompts) * n)]
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, members in by_length.items():
        rows = [i for i in members for _ in range(n)]
        idx = torch.tensor([prompts[i] for i in rows], device=device)
        with autocast(device, dtype):
            new = model.generate(idx, max_new, temperature=temperature, top_k=top_k, generator=generator,
                                 stop_token=eot)[:, length:].tolist()
        for r, ids in enumerate(new):  # row r: answer r % n of prompt members[r // n]
            out[members[r // n] * n + r % n] = ids[:ids.index(eot) + 1] if eot in ids else ids
    return out


def pack(prompts: list[list[int]], answers: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, L) of prompt + answer, right-padded with `pad`, and the answer mask (B, L-1)."""
    length = max(len(p) + len(a) for p, a in zip(prompts, answers))
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), length - 1)
    for r, (p, a) in enumerate(zip(prompts, answers)):
        ids[r, :len(p) + len(a)] = torch.tensor(p + a)
        mask[r, len(p) - 1:len(p) + len(a) - 1] = 1.0
    return ids.to(device), mask.to(device)


def held_out_pass(model, prompts: PromptSet, dtype: str, batch: int = 64) -> float:
    """Greedy pass@1 on the validation prompts (the curve a run's evaluations log)."""
    ids = prompts.ids["val"]
    right = 0.0
    for s in range(0, len(ids), batch):
        chunk = ids[s:s + batch]
        answers = sample(model, chunk, 1, prompts.max_new, 0.0, 0, None, prompts.tok.eot, dtype)
        right += sum(prompts.reward("val", s + i, a) for i, a in enumerate(answers))
    return right / len(ids)
