"""`python scripts/eval_kv_cache.py RUN_DIR [--step N] [--batches N] [--chunk C] [--kv_residual R] [--kv_group G]`

Validation loss and bits per byte of a trained run's newest checkpoint (or --step N) through each generation cache
format (none = compute dtype, int8, int4), on the validation batches the trainer evaluates on
(keys (train.eval_seed, or train.seed, 1, i)), fed C tokens at a time. Prints a Markdown table:
loss, bpb, the change against the full-precision cache, and the cache's bytes per token against the
same cache in bf16. A format the model's layers do not take gets a row "n/a: the reason".
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.accounting import kv_cache_bytes_per_token  # noqa: E402
from model.inference.cache.evaluate import cached_loss  # noqa: E402
from train.cli import argument_parser, run_cli  # noqa: E402
from train.config import ConfigError  # noqa: E402
from train.decoding import refusing_layer  # noqa: E402
from train.data import bits_per_byte, get_batch, prepare  # noqa: E402
from train.hardware import DTYPES, autocast, on_device, pick_device, pick_dtype  # noqa: E402
from train.run import load_run  # noqa: E402

FORMATS = (None, "int8", "int4")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser("python scripts/eval_kv_cache.py", description=__doc__.splitlines()[2])
    p.add_argument("run_dir")
    p.add_argument("--step", type=int, default=None, help="evaluate this checkpoint (default: the newest)")
    p.add_argument("--batches", type=int, default=0, help="validation batches (0 = the run's eval_batches)")
    p.add_argument("--chunk", type=int, default=16, help="tokens fed to the cache per forward")
    p.add_argument("--kv_residual", type=int, default=32, help="newest tokens kept in full precision")
    p.add_argument("--kv_group", type=int, default=128, help="KIVI's group: tokens sharing a key scale, channels sharing a value's")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="compute dtype (auto: the run's training dtype)")
    args = p.parse_args(argv)
    for name, minimum in (("batches", 0), ("chunk", 1), ("kv_residual", 0), ("kv_group", 1)):
        if getattr(args, name) < minimum:
            raise ConfigError(f"--{name} must be >= {minimum}")
    pick_device(args.device, "--device")  # a bad name fails here, before any work
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = load_run(args.run_dir, args.step)
    cfg, model = run.cfg, run.model
    device = pick_device(args.device, "--device")
    dtype = pick_dtype(cfg.train.dtype if args.dtype == "auto" else args.dtype, device)
    on_device(model, device, dtype).eval()
    data = prepare(cfg.data, progress=False)
    batches = [get_batch(data.val, cfg.train.batch_size, cfg.seq_len, (cfg.train.val_seed, 1, i))
               for i in range(args.batches or cfg.train.eval_batches)]
    options = dict(kv_residual=args.kv_residual, kv_group=args.kv_group)
    refused = {kv: refusing_layer(model, kv_dtype=kv, **options) for kv in FORMATS}  # None where it applies
    with autocast(device, dtype), torch.no_grad():
        plain = sum(model(x.to(device), y.to(device))[1]["loss"].item() for x, y in batches) / len(batches)
        losses = {kv: sum(cached_loss(model, x.to(device), y.to(device), args.chunk, kv_dtype=kv, **options)
                          for x, y in batches) / len(batches) for kv in FORMATS if not refused[kv]}
    bpt = data.bytes_per_token("val")
    print(f"# {run.checkpoint.name} of {run.run_dir}: {len(batches)} val batches of {cfg.train.batch_size} x "
          f"{cfg.seq_len}, {dtype}, chunks of {args.chunk}, kv_residual {args.kv_residual}, kv_group {args.kv_group}; "
          f"plain forward: val loss {plain:.4f}")
    print("| kv_dtype | val loss | val bpb | vs none | bytes/token vs bf16 |")
    print("|---|---|---|---|---|")
    bf16 = kv_cache_bytes_per_token(model.config)  # 0 when every layer keeps a fixed-size cache
    for kv in FORMATS:
        if refused[kv]:
            print(f"| {kv} | n/a: {kv} does not apply to {refused[kv]} | | | |")
            continue
        loss, size = losses[kv], kv_cache_bytes_per_token(model.config, kv, 2, args.kv_group)
        print(f"| {kv or 'none'} | {loss:.5f} | {bits_per_byte(loss, bpt):.5f} | "
              f"{100 * (loss / losses[None] - 1):+.3f} % | {f'{size / bf16:.3f}' if bf16 else 'fixed size'} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
