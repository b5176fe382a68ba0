"""`python scripts/think_budget.py RUN_DIR [--task SPEC] [--budgets 0,4,8,...] [--limit N] [--step N]`

Accuracy against a thinking budget: budget forcing (Muennighoff et al. 2025, "s1: Simple test-time
scaling", arXiv:2501.19393) on a task whose answers come after worked steps and an answer mark
(arithmetic with `steps`: "3+5=8, 2+4=6 #### 68"). With a budget of N tokens the model writes at most
N tokens of its own (greedy); if it has not reached the answer mark by then, " #### " is appended
and the model gives its answer from there. Budget 0 asks for the answer at once. Prints a Markdown
table: budget, pass@1, and how many answers were forced. A chat run is prompted in its chat format,
a base run with the few-shot text (`train.eval`'s prompts).
"""

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.cli import argument_parser, run_cli  # noqa: E402
from train.errors import ConfigError  # noqa: E402
from train.evals.arithmetic import ANSWER_MARK  # noqa: E402
from train.evals.generative import completion, prompt_ids  # noqa: E402
from train.evals.tasks import TaskEnv, build_task  # noqa: E402
from train.hardware import on_device, pick_device  # noqa: E402
from train.post.chat_format import ChatTokenizer  # noqa: E402
from train.run import load_run  # noqa: E402
from train.tokenizer import for_run  # noqa: E402

ANSWER_TOKENS = 6  # room for the answer after a forced mark


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser("python scripts/think_budget.py", __doc__)
    p.add_argument("run_dir")
    p.add_argument("--task", default="arithmetic:op=add,digits=2,steps")
    p.add_argument("--budgets", default="0,4,8,12,14,16,18,20,24")
    p.add_argument("--limit", type=int, default=200, help="test items (default 200)")
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    args = p.parse_args(argv)
    try:
        args.budgets = sorted({int(b) for b in args.budgets.split(",")})
    except ValueError:
        raise ConfigError(f"--budgets must be integers separated by commas; got {args.budgets!r}") from None
    if args.budgets[0] < 0 or args.limit < 1:
        raise ConfigError("--budgets must be >= 0 and --limit >= 1")
    return args


@torch.no_grad()
def greedy(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    """n greedy tokens after each prompt, prompts of one length batched together."""
    out = [None] * len(prompts)
    device = model.transformer.ln_f.weight.device
    for length in sorted({len(p) for p in prompts}):
        rows = [i for i, p in enumerate(prompts) if len(p) == length]
        idx = torch.tensor([prompts[i] for i in rows], device=device)
        new = model.generate(idx, n, temperature=0.0)[:, length:].tolist()
        for i, ids in zip(rows, new):
            out[i] = ids
    return out


def answer_within(tok, ids: list[int], budget: int) -> list[int] | None:
    """The reasoning the model wrote within `budget` tokens, cut at its end of answer; None when it
    reached the answer mark within the budget (then its own answer stands)."""
    mine = ids[:ids.index(tok.eot)] if tok.eot in ids else ids
    return None if ANSWER_MARK in tok.decode(mine[:budget]) else mine[:budget]


def scores(model, tok, task, items, budgets: list[int]) -> list[tuple[int, float, int]]:
    """(budget, pass@1, forced answers) per budget."""
    prompts = [prompt_ids(tok, item, []) for item in items]
    longest = max(len(p) for p in prompts) + max(budgets) + len(tok.encode(f" {ANSWER_MARK} ")) + ANSWER_TOKENS
    if longest > model.config.block_size:
        raise ConfigError(f"the largest budget needs {longest} positions; model.block_size is {model.config.block_size}")
    free = greedy(model, prompts, max(budgets) + ANSWER_TOKENS + 8)  # the model's own, unforced answers
    rows = []
    for budget in budgets:
        cut = [answer_within(tok, ids, budget) for ids in free]
        forced = [i for i, c in enumerate(cut) if c is not None]
        mark = tok.encode(f" {ANSWER_MARK} ")
        tails = greedy(model, [prompts[i] + cut[i] + mark for i in forced], ANSWER_TOKENS)
        texts = [completion(tok, ids) for ids in free]  # up to the end of the answer, its first line
        for i, tail in zip(forced, tails):
            texts[i] = completion(tok, cut[i] + mark + tail)
        right = sum(task.extract(text) == item.answer for text, item in zip(texts, items))
        rows.append((budget, right / len(items), len(forced)))
    return rows


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = load_run(args.run_dir, args.step)
    tok = for_run(run.run_dir)
    tok = ChatTokenizer(tok) if run.cfg.post.chat else tok
    model = on_device(run.model, pick_device(args.device, "--device"), "fp32")
    task = build_task(args.task, TaskEnv(tok, model.config.block_size, run.cfg.data))
    if not getattr(task, "options", {}).get("steps"):
        raise ConfigError(f"--task {args.task}: a budget needs worked steps before the answer (add ,steps)")
    items = task.items(task.split, args.limit, 1234)
    print(f"# {run.checkpoint.name} of {run.run_dir}, {args.task}, {len(items)} {task.split} items, greedy")
    print("| budget (tokens) | pass@1 | answers forced |\n|--:|--:|--:|")
    for budget, acc, forced in scores(model, tok, task, items, args.budgets):
        print(f"| {budget} | {acc:.3f} | {forced} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
