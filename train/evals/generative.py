"""Generative tasks with a checkable answer: greedy pass@1, and pass@k and maj@k over samples.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", arXiv:2107.03374):
the probability that at least one of k completions is right, estimated without bias from n >= k
samples of which c are right as 1 - C(n - c, k) / C(n, k), computed as a product (their Fig. 3).
maj@k (self-consistency, Wang et al. 2022, arXiv:2203.11171): the most common answer extracted
from the first k samples, right or not; ties go to the answer seen first, and a completion from
which nothing could be extracted casts no vote.

Completions come from `GPT.generate` (KV cache), prompts of one length batched together; a
completion ends at the first newline or end-of-text token. A prompt that leaves too little room
in the context is cut from the left, and counted.
"""

from collections import Counter
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter

import torch

from ..hardware import autocast
from ..post.chat_format import Message
from .items import GenItem

FEWSHOT_SEPARATOR = "\n"  # completions stop at a newline, so each shot is one line's answer
MAX_BATCH_ROWS = 64


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c right: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
        miss *= 1.0 - k / i
    return 1.0 - miss


def majority(answers: list[str]) -> str:
    """The most common non-empty answer, the earliest among equals; "" when there is none."""
    counts = Counter(a for a in answers if a)  # in the order first seen; max keeps the first of equals
    return max(counts, key=counts.get) if counts else ""


def ks_up_to(n: int) -> list[int]:
    """1, 2, 4, ... up to n: the k reported for n samples."""
    return [2**i for i in range(n.bit_length())]


def prompt_ids(tok, item: GenItem, shots: list[GenItem]) -> list[int]:
    """The prompt's ids: a base model continues the few-shot text; a chat model (a tokenizer with
    a `chat` format, train/post/chat_format.py) gets each shot as an earlier user/assistant turn
    and answers after <|assistant|>, its answer ending at <|end|> (its `eot`)."""
    chat = getattr(tok, "chat", None)
    if chat is None:
        return tok.encode("".join(s.prompt + s.target + FEWSHOT_SEPARATOR for s in shots)
                          + item.prompt)
    turns = [Message(role, text) for s in shots for role, text in (("user", s.prompt), ("assistant", s.target))]
    return chat.prompt([*turns, Message("user", item.prompt)])


def generative_metrics(answers: list[str], greedy: list[str], samples: list[list[str]] | None) -> dict[str, float]:
    """pass@1 from the greedy answers; pass@k and maj@k (k = 1, 2, 4, ...) from `samples`."""
    metrics = {"pass@1": sum(g == a for g, a in zip(greedy, answers)) / len(answers)}
    if samples:
        n = len(samples[0])
        for k in ks_up_to(n):
            metrics[f"pass@{k} sampled"] = sum(pass_at_k(n, sum(s == a for s in got), k)
                                               for got, a in zip(samples, answers)) / len(answers)
        for k in ks_up_to(n):
            metrics[f"maj@{k}"] = sum(majority(got[:k]) == a for got, a in zip(samples, answers)) / len(answers)
    return metrics


Sampler = Callable[[list[list[int]], list[int], int, float], list[list[str]]]


def model_sampler(model, tok, device: torch.device, dtype: str, top_k: int, seed: int) -> Sampler:
    """sampler(prompts, max_new, n, temperature) -> n completions (text up to the first newline or
    end-of-text) per prompt; each prompt with its max_new must fit the model's context."""
    generator = torch.Generator(device).manual_seed(seed)

    @torch.no_grad()
    def sample(prompts: list[list[int]], max_new: list[int], n: int, temperature: float) -> list[list[str]]:
        rows = sorted((len(p), i) for i, p in enumerate(prompts) for _ in range(n))
        out: list[list[str]] = [[] for _ in prompts]
        for length, group in groupby(rows, key=itemgetter(0)):
            members = [i for _, i in group]
            for start in range(0, len(members), MAX_BATCH_ROWS):
                batch = members[start:start + MAX_BATCH_ROWS]
                idx = torch.tensor([prompts[i] for i in batch], device=device)
                with autocast(device, dtype):
                    new = model.generate(idx, max(max_new[i] for i in batch),
                                         temperature=temperature, top_k=top_k, generator=generator)
                for i, ids in zip(batch, new[:, length:].tolist()):  # each cut to its own max_new
                    out[i].append(completion(tok, ids[:max_new[i]]))
        return out

    return sample


def completion(tok, ids: list[int]) -> str:
    """The text of new tokens up to the first end-of-text token, then up to the first newline."""
    if tok.eot in ids:
        ids = ids[:ids.index(tok.eot)]
    return tok.decode(ids).split("\n", 1)[0]


def answer_room(tok, target: str) -> int:
    """New tokens a generated answer gets: the target's, a newline and one token of slack."""
    return len(tok.encode(target)) + 2


def fit_prompt(prompt: list[int], needed: int, block_size: int) -> tuple[list[int], int, bool]:
    """(prompt, new tokens, whether the prompt was cut): `needed` new tokens (at most
    block_size - 1) after the prompt's last tokens, as many as fit."""
    new = min(needed, block_size - 1)
    keep = block_size - new
    return prompt[-keep:], new, len(prompt) > keep
