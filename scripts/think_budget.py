"""`python scripts/think_budget.py RUN_DIR [RUN_DIR ...] [--task SPEC] [--budgets 0,4,8,...] [--limit N] [--step N] [--plot PNG]`

Accuracy against a thinking budget: budget forcing (Muennighoff et al. 2025, "s1: Simple test-time
scaling", arXiv:2501.19393) on a task whose answers come after worked steps and an answer mark
(arithmetic with `steps`: "3+5=8, 2+4=6 #### 68"). With a budget of N tokens the model writes at most
N tokens of its own (greedy); if it has not reached the answer mark by then, " #### " is appended
and the model gives its answer from there. Budget 0 asks for the answer at once. Prints a Markdown
table per run: budget, pass@1, and how many answers were forced. A chat run is prompted in its chat
format, a base run with the few-shot text (`train.eval`'s prompts). --plot also draws pass@1
against the budget, one line per run.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.cli import argument_parser, run_cli  # noqa: E402
from train.errors import ConfigError  # noqa: E402
from train.evals.arithmetic import ANSWER_MARK  # noqa: E402
from train.evals.generative import completion, prompt_ids  # noqa: E402
from train.evals.tasks import TaskEnv, build_task  # noqa: E402
from train.hardware import on_device, pick_device  # noqa: E402
from train.post.chat_format import ChatTokenizer  # noqa: E402
from train.post.rollouts import sample  # noqa: E402
from train.run import load_run  # noqa: E402
from train.tokenizer import for_run  # noqa: E402

ANSWER_TOKENS = 6  # room for the answer after a forced mark


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser("python scripts/think_budget.py", __doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--plot", default="", help="also draw pass@1 against the budget into this image")
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


def greedy(model, tok, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Up to n greedy tokens after each prompt, each ending at its first end-of-text token (the
    rollouts' sampler, train/post/rollouts.py, at temperature 0)."""
    return sample(model, prompts, 1, n, 0.0, 0, None, tok.eot, "fp32")


def answer_within(tok, ids: list[int], budget: int) -> list[int] | None:
    """The reasoning the model wrote within `budget` tokens, cut at its end of answer; None when it
    reached the answer mark within the budget (then its own answer stands)."""
    mine = ids[:ids.index(tok.eot)] if tok.eot in ids else ids
    return None if ANSWER_MARK in tok.decode(mine[:budget]) else mine[:budget]


def scores(model, tok, task, items, budgets: list[int]) -> list[tuple[int, float, int]]:
    """(budget, pass@1, forced answers) per budget."""
    prompts = [prompt_ids(tok, item, []) for item in items]
    mark = tok.encode(f" {ANSWER_MARK} ")
    longest = max(len(p) for p in prompts) + max(budgets) + len(mark) + ANSWER_TOKENS
    if longest > model.config.block_size:
        raise ConfigError(f"the largest budget needs {longest} positions; model.block_size is {model.config.block_size}")
    free = greedy(model, tok, prompts, max(budgets) + ANSWER_TOKENS + 8)  # the model's own, unforced answers
    rows = []
    for budget in budgets:
        cut = [answer_within(tok, ids, budget) for ids in free]
        forced = [i for i, c in enumerate(cut) if c is not None]
        tails = greedy(model, tok, [prompts[i] + cut[i] + mark for i in forced], ANSWER_TOKENS)
        texts = [completion(tok, ids) for ids in free]  # up to the end of the answer, its first line
        for i, tail in zip(forced, tails):
            texts[i] = completion(tok, cut[i] + mark + tail)
        right = sum(task.extract(text) == item.answer for text, item in zip(texts, items))
        rows.append((budget, right / len(items), len(forced)))
    return rows


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.plot:
        from train.plot import check_image_path

        check_image_path(Path(args.plot), "--plot")  # before any scoring
    curves = {}
    for run_dir in args.run_dirs:
        run = load_run(run_dir, args.step)
        tok = for_run(run.run_dir)
        tok = ChatTokenizer(tok) if run.cfg.post.chat else tok
        model = on_device(run.model, pick_device(args.device, "--device"), "fp32")
        task = build_task(args.task, TaskEnv(tok, model.config.block_size, run.cfg.data))
        if not getattr(task, "options", {}).get("steps"):
            raise ConfigError(f"--task {args.task}: a budget needs worked steps before the answer (add ,steps)")
        items = task.items(task.split, args.limit, 1234)
        print(f"# {run.checkpoint.name} of {run.run_dir}, {args.task}, {len(items)} {task.split} items, greedy")
        print("| budget (tokens) | pass@1 | answers forced |\n|--:|--:|--:|")
        curves[run_dir] = scores(model, tok, task, items, args.budgets)
        for budget, acc, forced in curves[run_dir]:
            print(f"| {budget} | {acc:.3f} | {forced} |")
    if args.plot:
        plot(curves, Path(args.plot), args.task)
    return 0


def plot(curves: dict[str, list[tuple[int, float, int]]], path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in curves.items():
        ax.plot([b for b, _, _ in rows], [100 * a for _, a, _ in rows], marker=".", label=name)
    ax.set_xlabel("thinking budget (tokens of its own before the answer is forced)")
    ax.set_ylabel("greedy pass@1 (%)")
    ax.set_title(f"budget forcing on {task}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
