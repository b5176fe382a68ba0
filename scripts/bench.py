"""Benchmark training throughput: `python scripts/bench.py CONFIG [CONFIG ...] [--section.key=value ...]`

Times optimizer steps of the real training step (batch fetch, forward, backward, clipping, AdamW)
after a warm-up, and prints tokens/s, achieved FLOP/s, MFU and peak memory per config. MFU is
measured against a data-sheet peak on known GPUs, and on CPU against the measured throughput of a
large matmul in the same dtype (the practical ceiling of the machine).

It also prints the kernel each attention and expert layer runs (model/kernels.py), as
`sdpa x4, flex x2` (CPU and CUDA differ: FlexAttention and grouped-GEMM experts are CUDA-only),
and, without compile, what one step asks of the device (scripts/device_reads.py): the operators it
runs (an eager GPU step of a small model waits on one launch each) and its host reads of device
values (each a sync on a GPU). At a tiny width the step time is then the host's alone, e.g.
`--model.n_embd=64 --model.mlp_hidden=168 --model.moe.expert_hidden=85 --train.batch_size=1
--model.block_size=32` for the ladder's rungs 10 and 11 (docs/LOG.md).

Options: --steps N (timed steps, default 10), --warmup N (default 3), --json PATH (append one record
per config: the figures above plus the machine, PyTorch version, commit and kernels, so that a run
elsewhere can be compared with it), --compare PATH (print each config's tok/s against the last
record of the same config and overrides in that file), --kernels device|build (build: keep every
layer on the kernel it was built with, the CPU's, to time the device kernels against it),
--loss_chunk N (logits per chunk of the fused LM loss, model/loss.py; default 2**26).
"""

import collections
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model import loss  # noqa: E402
from model.accounting import flops_per_token, param_count  # noqa: E402
from model.kernels import use_build_kernels  # noqa: E402
from scripts.device_reads import DeviceReads  # noqa: E402
from train.cli import int_option, run_cli, split_args  # noqa: E402
from train.config import ConfigError, load_config  # noqa: E402
from train.hardware import peak_memory_bytes  # noqa: E402
from train.trainer import Trainer  # noqa: E402


def bench(path: str, overrides: list[str], steps: int, warmup: int, kernels: str = "device") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(path, [*overrides, f"--train.out_dir={tmp}"])
        trainer = Trainer(cfg)
        if kernels == "build":  # before the first step, so that torch.compile traces these kernels
            trainer.kernels = use_build_kernels(trainer.model)
        for _ in range(warmup):
            trainer.train_step()
        times = []
        for _ in range(steps):  # no sync around a step: the next one's host work overlaps its tail
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
        seen = None
        if not cfg.train.compile:  # a compiled step would be traced again under the counter
            with DeviceReads() as seen:
                trainer.train_step()
    dt = statistics.median(times)
    tok_s = trainer.tokens_per_step / dt
    flops = flops_per_token(cfg.model, cfg.seq_len) * tok_s
    mfu = trainer.peak.mfu(flops)  # raises the peak to any rate seen (train/hardware.py Peak): read it after
    return {
        "config": path, "overrides": overrides, "device": str(trainer.device), "dtype": trainer.dtype,
        "compile": cfg.train.compile, "params": param_count(cfg.model),
        "active_params": param_count(cfg.model, active=True),
        "tokens_per_step": trainer.tokens_per_step, "step_s": dt, "tokens_per_s": tok_s,
        "flops_per_s": flops, "peak_flops_per_s": trainer.peak.flops_per_s, "mfu": mfu,
        "peak_mem_bytes": peak_memory_bytes(trainer.device), "kernels": trainer.kernels,
        "machine": machine(trainer.device), "torch": torch.__version__, "commit": commit(),
        "steps": steps, "warmup": warmup,
        "ops_per_step": seen and seen.ops, "reads_per_step": seen and seen.reads,
        "loss_chunk": loss.CHUNK_ELEMENTS,
    }


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def kernel_summary(kernels: dict[str, str]) -> str:
    """{'transformer.h.0.attn': 'flex', ...} -> 'attn: flex x2, sdpa x4' (per kind of layer)."""
    kinds = collections.defaultdict(collections.Counter)
    for name, kernel in kernels.items():
        kinds[name.rsplit(".", 1)[-1]][kernel] += 1
    return "; ".join(f"{kind}: " + ", ".join(f"{k} x{n}" for k, n in sorted(c.items()))
                     for kind, c in kinds.items())


COMPARED = ("config", "machine", "commit", "tokens_per_s")  # the fields a comparison reads


def read_records(path: str) -> list[dict]:
    """The records of a --json file, each checked to hold what a comparison reads."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--compare {path}: {getattr(e, 'strerror', None) or e}") from None
    return [check_record(line, f"--compare {path}: line {n}") for n, line in enumerate(lines, 1) if line.strip()]


def check_record(line: str, where: str) -> dict:
    """One line of a --json file as a record, or a ConfigError saying what is wrong with it."""
    try:
        r = json.loads(line)
    except ValueError:
        raise ConfigError(f"{where} is not JSON (expected the records bench.py --json writes)") from None
    if not isinstance(r, dict):
        raise ConfigError(f"{where} is a {type(r).__name__}, not a record of bench.py --json")
    missing = [k for k in COMPARED if k not in r]
    if missing:
        raise ConfigError(f"{where} has no {', '.join(map(repr, missing))}")
    tok_s = r["tokens_per_s"]
    if isinstance(tok_s, bool) or not isinstance(tok_s, (int, float)) or not 0 < tok_s < math.inf:
        raise ConfigError(f"{where}: tokens_per_s must be a number > 0, got {tok_s!r}")
    return r


def baseline(records: list[dict], record: dict) -> dict | None:
    """The last of `records` with the same config, overrides and loss chunk as `record`."""
    same = [r for r in records
            if r["config"] == record["config"] and r.get("overrides", []) == record["overrides"]
            and r.get("loss_chunk", 2**26) == record["loss_chunk"]]  # older records: the default then
    return same[-1] if same else None


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    opts = {"--steps": 10, "--warmup": 3, "--json": "", "--compare": "", "--kernels": "device", "--loss_chunk": ""}
    configs, overrides = split_args(argv, opts)
    if not configs:
        raise ConfigError("usage: python scripts/bench.py CONFIG [CONFIG ...] [--section.key=value ...] "
                          "[--steps N] (--help for more)")
    steps, warmup = int_option(opts, "--steps", 1), int_option(opts, "--warmup", 0)
    if opts["--kernels"] not in ("device", "build"):
        raise ConfigError(f"--kernels {opts['--kernels']!r}: expected device or build")
    if opts["--loss_chunk"]:
        loss.CHUNK_ELEMENTS = int_option(opts, "--loss_chunk", 1)
    records = read_records(opts["--compare"]) if opts["--compare"] else None  # before any benchmark runs
    out = Path(opts["--json"])
    if opts["--json"] and (out.is_dir() or not out.parent.is_dir()):
        problem = "is a directory" if out.is_dir() else f"no such directory {str(out.parent)!r}"
        raise ConfigError(f"--json {out}: {problem}; it names the file each config's record is appended to")
    print(f"{'config':34} {'params':>8} {'active':>8} {'tok/s':>9} {'TFLOP/s':>8} {'MFU':>6} {'peak mem':>9}  device")
    for path in configs:
        r = bench(path, overrides, steps, warmup, opts["--kernels"])
        print(f"{Path(path).stem:34} {r['params'] / 1e6:7.2f}M {r['active_params'] / 1e6:7.2f}M "
              f"{r['tokens_per_s']:9.0f} "
              f"{r['flops_per_s'] / 1e12:8.3f} {100 * r['mfu']:5.1f}% {r['peak_mem_bytes'] / 2**20:7.0f}MiB  "
              f"{r['device']} {r['dtype']} (peak {r['peak_flops_per_s'] / 1e12:.3f} TFLOP/s)")
        print(f"{'':34} kernels: {kernel_summary(r['kernels'])}")
        if r["ops_per_step"] is not None:
            print(f"{'':34} per step: {r['ops_per_step']} operators, {r['reads_per_step']} host read(s) "
                  f"of device values, {1e3 * r['step_s']:.2f} ms")
        if records is not None:
            ref = baseline(records, r)
            print(f"{'':34} " + (f"{r['tokens_per_s'] / ref['tokens_per_s']:.3f}x the {ref['tokens_per_s']:.0f} "
                                 f"tok/s of {ref['machine']} at {ref['commit']}" if ref else "no record to compare with"))
        if opts["--json"]:
            with open(opts["--json"], "a") as f:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
