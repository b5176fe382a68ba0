"""Quantization, measured: `python scripts/bench_quantize.py CONFIG_OR_RUN_DIR [options]`

Builds the model (a run's newest checkpoint, or a config with random weights) four times: in the
compute dtype, int8, int4 and w8a8 (model/inference/quantize.py), and prints for each
  weight bytes        model/accounting.py `weight_bytes`, and the ratio to the compute dtype
  val bpb             a run only: on the run's own validation batches (as `python -m train.eval`)
  decode tok/s        greedy cached decoding at batch 1 and 8 after a `--context`-token prompt, and
                      with `--kv_dtype int8` the same through an int8 KV cache
Decode rates are timed interleaved: each round times every variant once, so load that comes and
goes hits them alike; the speed-up is the median over rounds of (variant rate / full-precision
rate) in the same round. Rates are differences, (t(1 + N new) - t(1 new)), as in bench_decode.py.

Options: --context N (128), --new_tokens N (16), --rounds N (3), --group_size N (int4, 128),
--kv_dtype int8, --step N, --threads N (default: torch's), --batches 1,8, --device and --dtype as
for training (auto: cuda/bf16 when available), and a config's --section.key=value overrides.
"""

import argparse
import copy
import statistics
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import torch  # noqa: E402

from bench_decode import load_model, our_generate, timed  # noqa: E402
from model.accounting import weight_bytes  # noqa: E402
from model.inference.quantize import KINDS as QUANTIZED  # noqa: E402
from train.cli import argument_parser, parse_overrides, quantized, run_cli  # noqa: E402
from train.config import ConfigError  # noqa: E402
from train.errors import at_least  # noqa: E402
from train.hardware import DTYPES, autocast, on_device, pick_device, pick_dtype  # noqa: E402

KINDS = (None, *QUANTIZED)  # the compute dtype first: the anchor of every ratio


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser("scripts/bench_quantize.py", __doc__,
                        usage="%(prog)s CONFIG_OR_RUN_DIR [options] [--section.key=value ...]")
    p.add_argument("target")
    for name, default in (("--context", 128), ("--new_tokens", 16), ("--rounds", 3), ("--group_size", 128)):
        p.add_argument(name, type=int, default=default)
    p.add_argument("--kv_dtype", choices=["int8"], default=None)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    args, args.overrides = parse_overrides(p, argv)
    pick_device(args.device, "--device")  # a bad name fails here, before any work
    for name in ("context", "new_tokens", "rounds"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1")
    at_least(args.threads, "--threads", 0, " (0: torch's default)")
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise ConfigError(f"--batches takes sizes separated by commas, e.g. 1,8; got {args.batches!r}") from None
    for batch in args.batches:
        at_least(batch, "--batches", 1)
    return args


def val_bpb(run_dir: str, model, device, dtype: str) -> float:
    """The run's own validation bits per byte (the batches `python -m train.eval` uses)."""
    from train.data import prepare
    from train.run import run_config
    from train.trainer import evaluate

    cfg = run_config(run_dir, [])
    return evaluate(model, prepare(cfg.data), cfg, device, dtype)["val_bpb"]


def decode_seconds(model, idx: torch.Tensor, n: int, kv_dtype) -> float:
    """Seconds for n greedy new tokens after the prompt, the prompt's forward excluded."""
    generate = our_generate(model, True, kv_dtype, False)
    device = idx.device
    return timed(lambda: generate(idx, 1 + n), device) - timed(lambda: generate(idx, 1), device)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device, "--device")
    dtype = pick_dtype(args.dtype, device)
    base, kind_of = load_model(args.target, args.overrides, args.context + 1 + args.new_tokens, args.step)
    on_device(base, device, dtype)
    models = {kind: quantized(copy.deepcopy(base).eval(), kind, args.group_size, args.target) for kind in KINDS}
    cfg = base.config
    print(f"# {args.target} ({kind_of}): {cfg.n_layer}L {cfg.n_embd}d, {base.num_params() / 1e6:.2f}M params, "
          f"int4 group {args.group_size}, {device.type} {dtype}, {torch.get_num_threads()} threads")
    rows = {}  # kind -> row label -> cell
    for k in KINDS:
        size = weight_bytes(cfg, k, args.group_size)
        rows[k] = {"weight bytes": f"{size / 2**20:,.1f} MiB (x{size / weight_bytes(cfg):.3f})"}
    if Path(args.target).is_dir():
        with torch.no_grad():
            bpb = {k: val_bpb(args.target, models[k], device, dtype) for k in KINDS}
        for k in KINDS:
            rows[k]["val bpb"] = f"{bpb[k]:.4f} ({100 * (bpb[k] / bpb[None] - 1):+.2f} %)"
    gen = torch.Generator().manual_seed(0)
    for kv in (None, args.kv_dtype) if args.kv_dtype else (None,):
        for B in args.batches:
            idx = torch.randint(0, cfg.vocab_size, (B, args.context), generator=gen).to(device)
            times = {k: [] for k in KINDS}
            with autocast(device, dtype):
                for model in models.values():  # warm-up at the timed lengths: a first pass over new
                    # KV-cache sizes can pay allocations, and a cold first round weighs half a median of 2
                    our_generate(model, True, kv, False)(idx, 1 + args.new_tokens)
                for _ in range(args.rounds):
                    for k in KINDS:
                        times[k].append(decode_seconds(models[k], idx, args.new_tokens, kv))
            label = f"decode tok/s b={B}" + (f", {kv} KV" if kv else "")
            for k in KINDS:
                if min(times[None] + times[k]) <= 0:  # t(1 + N) <= t(1): N tokens took less than the noise
                    rows[k][label] = "below timer noise: raise --new_tokens"
                    continue
                rate = B * args.new_tokens / statistics.median(times[k])
                ratio = statistics.median(a / b for a, b in zip(times[None], times[k]))
                rows[k][label] = f"{rate:,.1f} (x{ratio:.2f})"
    labels = list(dict.fromkeys(label for r in rows.values() for label in r))
    width = max(map(len, labels))
    anchor = "fp32" if dtype == "fp32" else f"fp32 weights, {dtype}"  # None: the compute dtype
    print(f"{'':<{width}}  " + "  ".join(f"{k or anchor:<26}" for k in rows))
    for label in labels:
        print(f"{label:<{width}}  " + "  ".join(f"{rows[k].get(label, '-'):<26}" for k in rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
