"""Run tasks on a model; report a table, a JSON record and a CORE-style aggregate.

The aggregate follows CORE (DCLM, Li et al. 2024, arXiv:2406.11794): each task's accuracy is
centred on its chance level, (acc - chance) / (1 - chance), so 0 is guessing and 1 is perfect,
and the centred values are averaged. A multiple-choice task enters with acc_norm (chance: the
mean of 1 / number of choices over its items), a generative task with greedy pass@1 (chance 0).
acc_norm, not acc: CORE picks the choice of lowest mean loss per token, a length normalisation
too, and unnormalised acc mostly measures which choice is shortest (a 200-step default run
picked the shortest of four stdlib-cloze lines in 152 of 200 items, the right one being shortest
in 44, and scored acc 0.185, acc_norm 0.28).
"""

import random
import time
from dataclasses import dataclass
from itertools import chain

import torch

from ..errors import ConfigError
from . import generative as gen
from . import multiple_choice as mc

SHOT_POOL = 512  # train items drawn once per task, from which each item's shots are sampled


@dataclass
class Settings:
    shots: int = 0
    limit: int = 200
    seed: int = 1234  # lm-evaluation-harness's few-shot seed
    samples: int = 0  # 0: greedy only
    temperature: float = 0.8
    top_k: int = 0


def run_task(task, model, tok, settings: Settings, device: torch.device, dtype: str, sampler=None) -> dict:
    """The task's result: metrics, chance, counts, seconds and a record per item."""
    start = time.perf_counter()
    items = task.items(task.split, settings.limit, settings.seed)
    if not items:
        raise ConfigError(f"--task {task.name}: its {task.split} split has no items")
    shots = _shots(task, items, settings)
    if task.kind == "choice":
        result = _choice(task, items, shots, model, tok, device, dtype)
    else:
        sampler = sampler or gen.model_sampler(model, tok, device, dtype, settings.top_k, settings.seed)
        result = _generate(task, items, shots, model.config.block_size, tok, settings, sampler)
    return {"task": task.name, "kind": task.kind, "split": task.split, "shots": settings.shots,
            "source": getattr(task, "source", ""), **result, "seconds": round(time.perf_counter() - start, 3)}


def _shots(task, items: list, settings: Settings) -> list[list]:
    """Each item's few-shot examples: `shots` train items drawn with a seed of its own."""
    if not settings.shots:
        return [[] for _ in items]
    pool = task.items("train", SHOT_POOL, settings.seed)
    out = []
    for i, item in enumerate(items):
        others = [s for s in pool if s != item]
        if len(others) < settings.shots:
            raise ConfigError(f"--shots {settings.shots}: task {task.name} has only {len(others)} "
                              f"examples to draw them from")
        out.append(random.Random(f"shots:{settings.seed}:{i}").sample(others, settings.shots))
    return out


def _choice(task, items: list, shots: list, model, tok, device, dtype) -> dict:
    """A task may split context and continuation into tokens its own way (`encode_pair`, e.g.
    mc.encode_apart); the default is the harness's."""
    block_size = model.config.block_size
    encode = getattr(task, "encode_pair", mc.encode_pair)
    kept, pairs, truncated = [], [], 0  # pairs: each kept item's (context, choice) token pairs
    for item, its_shots in zip(items, shots):
        context = mc.fewshot_context(item, its_shots, task.delimiter)
        encoded = [encode(tok, context, task.delimiter + c) for c in item.choices]
        if all(mc.fits(cont, block_size) for _, cont in encoded):
            kept.append(item)
            pairs.append(encoded)
            truncated += any(mc.is_truncated(ctx, cont, block_size) for ctx, cont in encoded)
    if not kept:
        raise ConfigError(f"--task {task.name}: no item can be scored: each has a choice longer than "
                          f"the model's context (model.block_size={block_size} tokens)")
    flat = iter(mc.loglikelihoods(model, list(chain.from_iterable(pairs)), device, dtype))
    lls = [[next(flat) for _ in encoded] for encoded in pairs]  # the flat values, item by item
    n_tokens = [[len(cont) for _, cont in encoded] for encoded in pairs]
    return {"n": len(kept), "metrics": mc.choice_metrics(kept, lls, n_tokens), "headline": "acc_norm",
            "chance": sum(1 / len(item.choices) for item in kept) / len(kept),
            "truncated": truncated, "skipped": len(items) - len(kept),
            "items": [mc.predictions(item, ll, n) for item, ll, n in zip(kept, lls, n_tokens)]}


def _generate(task, items: list, shots: list, block_size: int, tok, settings: Settings, sampler) -> dict:
    prompts, max_new, truncated = [], [], 0
    for item, its_shots in zip(items, shots):
        prompt, new, cut = gen.fit_prompt(gen.prompt_ids(tok, item, its_shots), gen.answer_room(tok, item.target),
                                          block_size)
        prompts.append(prompt)
        max_new.append(new)
        truncated += cut
    greedy = [task.extract(texts[0]) for texts in sampler(prompts, max_new, 1, 0.0)]
    samples = None
    if settings.samples:
        texts = sampler(prompts, max_new, settings.samples, settings.temperature)
        samples = [[task.extract(t) for t in got] for got in texts]
    answers = [item.answer for item in items]
    records = [{"answer": a, "greedy": g, **({"samples": s} if samples else {})}
               for a, g, s in zip(answers, greedy, samples or [None] * len(items))]
    return {"n": len(items), "metrics": gen.generative_metrics(answers, greedy, samples),
            "headline": "pass@1", "chance": task.chance, "truncated": truncated, "skipped": 0,
            "items": records}


def aggregate(results: list[dict]) -> dict:
    """The mean of the centred headline accuracies, and which tasks and metrics entered it."""
    centred = {r["task"]: (r["metrics"][r["headline"]] - r["chance"]) / (1 - r["chance"]) for r in results}
    return {"value": sum(centred.values()) / len(centred), "centred": centred,
            "entered": {r["task"]: r["headline"] for r in results}}


def table(results: list[dict], agg: dict) -> str:
    """One row per task and metric, then the notes and the aggregate."""
    rows = [("task", "split", "n", "metric", "value", "chance")]
    for r in results:
        for metric, value in r["metrics"].items():
            rows.append((r["task"], r["split"], str(r["n"]), metric, f"{value:.4f}", f"{r['chance']:.4f}"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if c < 4 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    for r in results:
        notes = [f"{r['shots']}-shot", f"{r['seconds']:.1f} s"]
        if r["truncated"]:
            notes.append(f"{r['truncated']} of {r['n']} cut from the left to fit the context")
        if r["skipped"]:
            notes.append(f"{r['skipped']} skipped (a choice longer than the context)")
        if r["source"]:
            notes.append(r["source"])
        lines.append(f"# {r['task']}: " + ", ".join(notes))
    entered = ", ".join(f"{task} {metric}" for task, metric in agg["entered"].items())
    lines.append(f"aggregate (CORE-style: (score - chance) / (1 - chance), averaged over {entered}): "
                 f"{agg['value']:.4f}")
    return "\n".join(lines)
