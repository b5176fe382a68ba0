"""Multiple choice by log-likelihood, scored as lm-evaluation-harness 0.4 scores it.

Each choice is scored as a continuation of the item's context: the harness builds the pair
(context, delimiter + choice), moves any whitespace that ends the context to the front of the
continuation, tokenizes context + continuation as one string and takes as the continuation's
tokens whatever follows the context's own tokens (`HFLM._encode_pair`); an empty context is
replaced by the end-of-text token. The log-likelihood is the sum of the continuation tokens'
log-probabilities, from one forward of the model over context + continuation, cut from the left
to the last block_size + 1 tokens when longer (the last token is never an input).

From the log-likelihoods ll_i of choices c_i (`Task.process_results` of lm-eval 0.4.13):
    acc        = [argmax_i ll_i == label]
    acc_norm   = [argmax_i ll_i / len(c_i) == label]  len in characters, delimiter excluded
    acc_bytes  = [argmax_i ll_i / len(c_i.encode()) == label]
and, from the number T_i of continuation tokens (delimiter included), not a harness metric:
    acc_tokens = [argmax_i ll_i / T_i == label]  the lowest mean loss per token, which CORE and
                 llm.c's HellaSwag (dev/data/hellaswag.py) call acc_norm
argmax takes the first of equal values, as numpy's does. Few-shot examples are written as the
harness writes them: context + delimiter + right choice + "\n\n", then the item's context.
HellaSwag: Zellers et al. 2019, arXiv:1905.07830 (acc_norm is the number usually quoted).
"""

import math

import torch

from ..hardware import autocast
from .items import ChoiceItem

FEWSHOT_SEPARATOR = "\n\n"  # the harness's default fewshot_delimiter


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as the harness splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not context:
        return [tok.eot], tok.encode(continuation)
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    return ctx, whole[len(ctx):]


def encode_apart(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens), each string encoded on its own, as llm.c's HellaSwag
    does. With GPT-2's BPE and a continuation that starts with a space (HellaSwag's " " + ending), this
    equals `encode_pair` unless the context ends in whitespace: no pre-tokenizer piece spans a
    non-space character and the space after it. An empty context is
    the end-of-text token, as there."""
    return (tok.encode(context) if context else [tok.eot]), tok.encode(continuation)


def fewshot_context(item: ChoiceItem, shots: list[ChoiceItem], delimiter: str) -> str:
    """The item's context after `shots`, each answered with its right choice."""
    return "".join(s.context + delimiter + s.choices[s.label] + FEWSHOT_SEPARATOR for s in shots) + item.context


def fits(continuation: list[int], block_size: int) -> bool:
    """A continuation can be scored when at least one context token precedes it in the window."""
    return 0 < len(continuation) <= block_size


def is_truncated(context: list[int], continuation: list[int], block_size: int) -> bool:
    return len(context) + len(continuation) > block_size + 1


@torch.no_grad()
def loglikelihoods(model, pairs: list[tuple[list[int], list[int]]], device: torch.device, dtype: str,
                   max_batch_tokens: int = 16384) -> list[float]:
    """Sum of log p(continuation | context) for each (context ids, continuation ids) pair.

    Inputs are the last block_size + 1 tokens of context + continuation without the last, longest
    first, right-padded into batches of at most `max_batch_tokens` tokens (and 2**25 logits):
    padding after a row's end cannot change its causal logits. Every continuation must `fit`."""
    block_size, vocab = model.config.block_size, model.config.vocab_size
    rows = [(ctx + cont)[-(block_size + 1):][:-1] for ctx, cont in pairs]
    budget = max(block_size, min(max_batch_tokens, 2**25 // vocab))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out = [0.0] * len(rows)
    start = 0
    while start < len(order):
        width = len(rows[order[start]])
        batch = order[start:start + max(1, budget // width)]
        x = torch.zeros(len(batch), width, dtype=torch.long)
        for r, i in enumerate(batch):
            x[r, :len(rows[i])] = torch.tensor(rows[i])
        with autocast(device, dtype):
            logits = model(x.to(device))  # (B, width, vocab_size)
        logp = torch.log_softmax(logits.float(), dim=-1)  # gathered where it is: a GPT-2 batch is ~200 MB
        sums = []
        for r, i in enumerate(batch):
            cont, end = pairs[i][1], len(rows[i])
            target = torch.tensor(cont, device=logp.device)[:, None]
            sums.append(logp[r, end - len(cont):end].gather(-1, target).sum())
        for i, value in zip(batch, torch.stack(sums).tolist()):
            out[i] = value
        start += len(batch)
    return out


def choice_metrics(items: list[ChoiceItem], lls: list[list[float]],
                   n_tokens: list[list[int]] | None = None) -> dict[str, float]:
    """acc, acc_norm and acc_bytes (the harness's definitions, above), averaged over items; and
    acc_tokens when each choice's number of continuation tokens is given."""
    hits = {"acc": 0, "acc_norm": 0, "acc_bytes": 0, **({"acc_tokens": 0} if n_tokens is not None else {})}
    for k, (item, ll) in enumerate(zip(items, lls)):
        lengths = {"acc": [1] * len(ll), "acc_norm": [len(c) for c in item.choices],
                   "acc_bytes": [len(c.encode("utf-8")) for c in item.choices]}
        if n_tokens is not None:
            lengths["acc_tokens"] = n_tokens[k]
        for name, length in lengths.items():  # an empty choice (HellaSwag's preprocessing can make one)
            # scores -inf, as the harness's numpy division gives its negative log-likelihood
            scores = [v / n if n else -math.inf for v, n in zip(ll, length)]
            hits[name] += max(range(len(scores)), key=scores.__getitem__) == item.label
    return {name: count / len(items) for name, count in hits.items()}


def predictions(item: ChoiceItem, ll: list[float], n_tokens: list[int]) -> dict:
    """The per-item record of the JSON report: `tokens` counts each choice's continuation tokens."""
    return {"label": item.label, "loglikelihoods": ll, "tokens": n_tokens,
            "pred": max(range(len(ll)), key=ll.__getitem__)}
