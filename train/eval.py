"""`python -m train.eval RUN_DIR [--data.KEY=VALUE ...] [--train.eval_batches=N] [--step N]`

Prints the validation loss and bits per byte of a run's checkpoint (the newest, or --step N) on
its own validation split, or on any corpus the data layer reads (`--data.source=...`), with the
same fixed batches the trainer evaluates on. Nothing is written into the run; a new corpus is
tokenized into data.cache_dir as for training.

Options: --step N, --tokenizer_path PATH (gpt2 runs whose ranks file moved), --device, --dtype, and
overrides of [data] keys and of train.eval_batches, train.batch_size, train.seq_len, train.seed.
"""

import argparse
import sys

from .cli import run_cli
from .data import prepare
from .errors import ConfigError
from .hardware import pick_device, pick_dtype
from .run import load_run, run_config
from .tokenizer import for_run
from .trainer import evaluate

OVERRIDABLE = ("data.", "train.eval_batches", "train.batch_size", "train.seq_len", "train.seed")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m train.eval", description=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = _usage_error
    p.add_argument("run_dir", help="a training run's directory (train.out_dir)")
    p.add_argument("--step", type=int, default=None, help="evaluate this checkpoint (default: the newest)")
    p.add_argument("--tokenizer_path", default="", help="gpt2 runs: the ranks file, if the run's is elsewhere now")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    args, rest = p.parse_known_args(argv)
    for item in rest:
        key = item.lstrip("-").partition("=")[0]
        if not item.startswith("--") or not key.startswith(OVERRIDABLE):
            raise ConfigError(f"unexpected argument {item!r}: eval takes --data.KEY=VALUE and "
                              f"--train.eval_batches/batch_size/seq_len/seed=N overrides")
    return args, rest


def _usage_error(message: str):
    raise ConfigError(f"{message} (see python -m train.eval --help)")


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    if "--data.tokenizer" in {o.partition("=")[0] for o in overrides}:
        raise ConfigError("data.tokenizer is the run's; the model only reads its own tokens")
    cfg = run_config(args.run_dir, overrides)
    tok = for_run(args.run_dir, args.tokenizer_path)
    cfg.data.tokenizer_path = tok.path  # the checked ranks, wherever the run's config points
    run = load_run(args.run_dir, args.step)
    data = prepare(cfg.data)
    data.check_batch(cfg.train.batch_size, cfg.seq_len, cfg.model.vocab_size)
    device = pick_device(args.device, "--device")
    dtype = pick_dtype(args.dtype, device)
    result = evaluate(run.model.to(device), data, cfg, device, dtype)
    print(f"{run.checkpoint.name} of {run.run_dir} on {data.meta['source']} "
          f"({cfg.train.eval_batches} batches of {cfg.train.batch_size} x {cfg.seq_len} tokens): "
          f"val loss {result['val_loss']:.4f}, val {result['val_bpb']:.4f} bits/byte")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
