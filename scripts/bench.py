"""Benchmark training throughput: `python scripts/bench.py CONFIG [CONFIG ...] [--section.key=value ...]`

Times optimizer steps of the real training step (batch fetch, forward, backward, clipping, AdamW)
after a warm-up, and prints tokens/s, achieved FLOP/s, MFU and peak memory per config. MFU is
measured against a data-sheet peak on known GPUs, and on CPU against the measured throughput of a
large matmul in the same dtype (the practical ceiling of the machine).

Options: --steps N (timed steps, default 10), --warmup N (default 3), --json PATH (append results).
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.accounting import flops_per_token, param_count  # noqa: E402
from train.cli import run_cli  # noqa: E402
from train.config import ConfigError, load_config  # noqa: E402
from train.hardware import peak_memory_bytes  # noqa: E402
from train.trainer import Trainer  # noqa: E402


def bench(path: str, overrides: list[str], steps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(path, [*overrides, f"--train.out_dir={tmp}"])
        trainer = Trainer(cfg)
        for _ in range(warmup):
            trainer.train_step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    tok_s = trainer.tokens_per_step / dt
    flops = flops_per_token(cfg.model, cfg.seq_len) * tok_s
    return {
        "config": path, "device": str(trainer.device), "dtype": trainer.dtype,
        "compile": cfg.train.compile, "params": param_count(cfg.model),
        "active_params": param_count(cfg.model, active=True),
        "tokens_per_step": trainer.tokens_per_step, "step_s": dt, "tokens_per_s": tok_s,
        "flops_per_s": flops, "peak_flops_per_s": trainer.peak, "mfu": flops / trainer.peak,
        "peak_mem_bytes": peak_memory_bytes(trainer.device),
    }


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    opts = {"--steps": 10, "--warmup": 3, "--json": ""}
    configs, overrides = [], []
    it = iter(argv)
    for arg in it:
        key, _, value = arg.partition("=")
        if key in opts:
            opts[key] = value or next(it, "")
        elif arg.startswith("--"):
            overrides.append(arg)
        else:
            configs.append(arg)
    if not configs:
        raise ConfigError("usage: python scripts/bench.py CONFIG [CONFIG ...] [--section.key=value ...] "
                          "[--steps N] (--help for more)")
    try:
        steps, warmup = int(opts["--steps"]), int(opts["--warmup"])
    except ValueError:
        raise ConfigError("--steps and --warmup take integers") from None
    print(f"{'config':34} {'params':>8} {'active':>8} {'tok/s':>9} {'TFLOP/s':>8} {'MFU':>6} {'peak mem':>9}  device")
    for path in configs:
        r = bench(path, overrides, steps, warmup)
        print(f"{Path(path).stem:34} {r['params'] / 1e6:7.2f}M {r['active_params'] / 1e6:7.2f}M "
              f"{r['tokens_per_s']:9.0f} "
              f"{r['flops_per_s'] / 1e12:8.3f} {100 * r['mfu']:5.1f}% {r['peak_mem_bytes'] / 2**20:7.0f}MiB  "
              f"{r['device']} {r['dtype']} (peak {r['peak_flops_per_s'] / 1e12:.3f} TFLOP/s)")
        if opts["--json"]:
            with open(opts["--json"], "a") as f:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
