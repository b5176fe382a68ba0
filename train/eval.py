"""`python -m train.eval RUN_DIR [--data.KEY=VALUE ...] [--train.eval_batches=N] [--step N]`
`python -m train.eval RUN_DIR --task NAME_OR_FILE [--task ...] [--shots K] [--limit N]
                      [--samples K --temperature T] [--json OUT] [--tensorboard]`

Without --task: prints the validation loss and bits per byte of a run's checkpoint (the newest,
or --step N) on its own validation split, or on any corpus the data layer reads
(`--data.source=...`), with the same fixed batches the trainer evaluates on. A new corpus is
tokenized into data.cache_dir as for training.

With --task: scores the checkpoint on tasks (train/evals/) and prints a table, one row per task
and metric, then a CORE-style aggregate. Built-in tasks: arithmetic, python-eval, passkey
(generative: greedy pass@1; with --samples K also pass@k and maj@k for k = 1, 2, 4, ... <= K)
and stdlib-cloze (multiple choice over the run's held-out files: acc, acc_norm as
lm-evaluation-harness computes them); or a JSONL file of multiple-choice items. Options follow a
colon: --task arithmetic:op=mul,digits=3,steps (each task's module documents its own). Items come
from the task's test split, --shots from its train split; --json also writes per-item records.
Nothing is written into the run, except with --tensorboard: the scores, at the checkpoint's step,
as task/<task>/<metric> and task/aggregate.

Besides the options below: overrides of [data] keys (the val loss; stdlib-cloze's corpus) and of
train.eval_batches, train.batch_size, train.seq_len, train.seed / train.eval_seed (the val loss).
"""

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path

from .cli import add_quantize_options, argument_parser, check_quantize_options, quantized, run_cli
from .data import prepare
from .errors import ConfigError
from .evals.suite import Settings, aggregate, run_task, table
from .evals.tasks import TaskEnv, build_task
from .hardware import on_device, pick_device, pick_dtype
from .metrics_log import add_scalars, summary_writer_class
from .post.chat_data import ChatData
from .post.chat_format import ChatTokenizer
from .run import LoadedRun, check_run_dir, load_run, run_config
from .tokenizer import for_run
from .trainer import evaluate

OVERRIDABLE = ("data.", "train.eval_batches", "train.batch_size", "train.seq_len", "train.seed", "train.eval_seed")
TASK_FLAGS = ("shots", "limit", "samples", "temperature", "top_k", "seed", "json", "tensorboard")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argument_parser("python -m train.eval", __doc__)
    p.add_argument("run_dir", help="a training run's directory (train.out_dir)")
    p.add_argument("--step", type=int, default=None, help="evaluate this checkpoint (default: the newest)")
    p.add_argument("--tokenizer_path", default="", help="gpt2 runs: the ranks file, if the run's is elsewhere now")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    add_quantize_options(p)
    p.add_argument("--task", action="append", default=[],
                   help="a built-in task (arithmetic, python-eval, passkey, stdlib-cloze), with :options, "
                        "or a JSONL file; repeat for several")
    p.add_argument("--shots", type=int, default=None, help="few-shot examples per item (default 0)")
    p.add_argument("--limit", type=int, default=None, help="items per task (default 200)")
    p.add_argument("--samples", type=int, default=None,
                   help="generative tasks: also draw K samples per item for pass@k and maj@k")
    p.add_argument("--temperature", type=float, default=None, help="of the --samples (default 0.8)")
    p.add_argument("--top_k", type=int, default=None, help="of the --samples; 0 = all tokens (default 0)")
    p.add_argument("--seed", type=int, default=None, help="draws the items, shots and samples (default 1234)")
    p.add_argument("--json", default=None, help="also write the results to this new file")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also add the scores to the run's TensorBoard scalars (<run>/tensorboard/)")
    args, rest = p.parse_known_args(argv)
    check_quantize_options(args)
    for item in rest:
        key = item.lstrip("-").partition("=")[0]
        if not item.startswith("--") or not key.startswith(OVERRIDABLE):
            raise ConfigError(f"unexpected argument {item!r}: eval takes --data.KEY=VALUE and "
                              f"--train.eval_batches/batch_size/seq_len/seed=N overrides")
        if args.task and not key.startswith("data."):
            raise ConfigError(f"{item} sets up the val loss, which --task does not compute")
    given = [f"--{name}" for name in TASK_FLAGS if getattr(args, name) is not None]
    if given and not args.task:
        raise ConfigError(f"{', '.join(given)} set(s) up task evaluation: add --task NAME")
    if args.task:
        twice = sorted({t for t in args.task if args.task.count(t) > 1})
        if twice:
            raise ConfigError(f"--task {twice[0]} is given twice; each task is reported once")
        args.settings = _settings(args)
        if args.json is not None:
            _check_json(args.json, args.run_dir)
        if args.tensorboard:
            summary_writer_class()  # installed, or a one-line error before any scoring
    return args, rest


def _settings(args: argparse.Namespace) -> Settings:
    """The task flags, checked, over the defaults."""
    for name, minimum in (("shots", 0), ("limit", 1), ("samples", 1), ("top_k", 0), ("seed", 0)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ConfigError(f"--{name} must be an integer >= {minimum}; got {value}")
    if args.seed is not None and args.seed >= 2**63:
        raise ConfigError(f"--seed must be < 2**63; got {args.seed}")
    if args.temperature is not None:
        if not args.samples:
            raise ConfigError("--temperature is the temperature of --samples K; greedy pass@1 takes none")
        if not (math.isfinite(args.temperature) and args.temperature > 0):
            raise ConfigError(f"--temperature must be a number > 0; got {args.temperature}")
    if args.top_k is not None and not args.samples:
        raise ConfigError("--top_k applies to --samples K; greedy pass@1 takes none")
    given = {f.name: getattr(args, f.name) for f in fields(Settings)}
    return Settings(**{name: value for name, value in given.items() if value is not None})


def _check_json(out: str, run_dir: str) -> None:
    path = Path(out)
    if path.exists() or path.is_symlink():
        raise ConfigError(f"--json {out} already exists; name a new file")
    if not path.parent.is_dir():
        raise ConfigError(f"--json {out}: no such directory {str(path.parent)!r}")
    run = check_run_dir(run_dir).resolve()
    if path.parent.resolve() == run or run in path.parent.resolve().parents:
        raise ConfigError(f"--json {out} is inside the run {run_dir}; eval writes nothing into a run")


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    if "--data.tokenizer" in {o.partition("=")[0] for o in overrides}:
        raise ConfigError("data.tokenizer is the run's; the model only reads its own tokens")
    device = pick_device(args.device, "--device")
    dtype = pick_dtype(args.dtype, device)  # the compute dtype of autocast: fp32, bf16 or fp16
    cfg = run_config(args.run_dir, overrides)
    tok = for_run(args.run_dir, args.tokenizer_path)
    run = load_run(args.run_dir, args.step)
    if run.cfg.post.chat:  # a chat run is prompted in its chat format (train/post/chat_format.py)
        tok = ChatTokenizer(tok)
    model = quantized(on_device(run.model, device, dtype), args.quantize, args.group_size, args.run_dir)
    cfg.data.tokenizer_path = tok.path  # the checked ranks, wherever the run's config points
    if args.task:
        return evaluate_tasks(args, cfg, run, tok, model, device, dtype)
    if cfg.post.chat and (keys := [o.partition("=")[0] for o in overrides if o.startswith("--data.")]):
        raise ConfigError(f"{keys[0]} does not apply: a chat run is scored on its own conversations "
                          f"(post.data={cfg.post.data!r}), not a corpus; --task scores it on a task")
    data = (ChatData(cfg.post, tok.base, cfg.model.block_size, cfg.data) if cfg.post.chat
            else prepare(cfg.data))
    data.check_batch(cfg.train.batch_size, cfg.seq_len, cfg.model.vocab_size)
    result = evaluate(model, data, cfg, device, dtype)
    print(f"{run.checkpoint.name} of {run.run_dir} on {data.meta.get('source', cfg.post.data)} "
          f"({cfg.train.eval_batches} batches of {cfg.train.batch_size} x {cfg.seq_len} tokens): "
          f"val loss {result['val_loss']:.4f}, val {result['val_bpb']:.4f} bits/byte")
    return 0


def evaluate_tasks(args: argparse.Namespace, cfg, run: LoadedRun, tok, model, device, dtype) -> int:
    """Every task built (its options and files checked) before any is run."""
    env = TaskEnv(tok, model.config.block_size, cfg.data)
    tasks = [build_task(spec, env) for spec in args.task]
    settings = args.settings
    results = [run_task(task, model, tok, settings, device, dtype) for task in tasks]
    agg = aggregate(results)
    print(f"{run.checkpoint.name} of {run.run_dir} ({device.type}, {dtype}), "
          f"seed {settings.seed}, up to {settings.limit} items per task")
    print(table(results, agg))
    if args.json is not None:
        record = {"run": str(run.run_dir), "checkpoint": run.checkpoint.name, "step": run.step,
                  "device": str(device), "dtype": dtype, "settings": asdict(settings),
                  "tasks": results, "aggregate": agg}
        with open(args.json, "x", encoding="utf-8") as f:
            try:
                f.write(json.dumps(record, indent=1) + "\n")
                f.flush()
            except OSError:  # a full disk: no half-written file to refuse the retry
                os.unlink(args.json)
                raise
    if args.tensorboard:
        scores = {f"task/{r['task']}/{metric}": value for r in results
                  for metric, value in r["metrics"].items()}
        add_scalars(run.run_dir, run.step, scores | {"task/aggregate": agg["value"]})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
