"""Throughput and memory of the parallel layouts: no wrapper, DDP, FSDP2, each with and without
activation checkpointing, on synthetic tokens (no corpus needed).

    torchrun --nproc_per_node 1 scripts/bench_parallel.py configs/gpt2-124m.toml --out parallel.jsonl
    torchrun --nproc_per_node 1 scripts/bench_parallel.py --tiny --device cpu --out parallel.jsonl

Each variant builds the model afresh (same seed), wraps it (train/parallel.py), and times
optimizer steps (forward, backward, gradient all-reduce or reduce-scatter, clipping, AdamW) after a
warm-up. Rank 0 appends one JSON line per variant to --out: median tok/s over all ranks, peak memory
of rank 0 (CUDA: the allocator's peak for that variant; CPU: the process's max RSS so far, which only
grows - run one variant per process to compare it), and the bytes autograd saves for backward in
one micro-step (deterministic; what activation checkpointing lowers; the fp32 weights are not
counted, low-precision or all-gathered weight copies saved for backward are).

Options: --out PATH (required), --variants none,ddp,fsdp2,none+ac,ddp+ac,fsdp2+ac (default: the
first three and none+ac), --steps N (5), --warmup N (2), --device auto|cpu|cuda, --tiny (a 2-layer
model for a CPU check), and --section.key=value overrides. grad_accum defaults to 1 and compile to
false here, so that a GPU run takes well under two minutes; override them to measure those.
"""

import json
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model import GPT  # noqa: E402
from scripts.bench import machine  # noqa: E402
from scripts.bench_decode import timed  # noqa: E402
from train import parallel  # noqa: E402
from train.cli import int_option, run_cli, split_args  # noqa: E402
from train.config import ConfigError, RunConfig, load_config  # noqa: E402
from train.hardware import DTYPES, autocast, on_device, peak_memory_bytes  # noqa: E402
from train.hardware import pick_device, pick_dtype  # noqa: E402
from train.optim import build_optimizer  # noqa: E402

TINY = ["--model.n_layer=2", "--model.n_head=2", "--model.n_embd=64", "--model.block_size=64",
        "--data.tokenizer=byte", "--train.batch_size=4"]
DEFAULT_VARIANTS = "none,ddp,fsdp2,none+ac"


def main(argv: list[str]) -> int:
    tiny = "--tiny" in argv
    argv = [a for a in argv if a != "--tiny"]
    opts = {"--out": "", "--variants": DEFAULT_VARIANTS, "--steps": "5", "--warmup": "2", "--device": "auto"}
    positional, overrides = split_args(argv, opts)
    if not opts["--out"] or len(positional) > 1 or (not positional and not tiny):
        raise ConfigError("usage: torchrun --nproc_per_node N scripts/bench_parallel.py CONFIG|--tiny "
                          "--out PATH [--variants LIST] [--steps N] [--device cpu] [--section.key=value ...]")
    steps, warmup = int_option(opts, "--steps", 1), int_option(opts, "--warmup", 0)
    variants = opts["--variants"].split(",")
    for v in variants:
        if v.split("+")[0] not in ("none", "ddp", "fsdp2") or v.split("+")[1:] not in ([], ["ac"]):
            raise ConfigError(f"--variants: unknown variant {v!r}; use none, ddp, fsdp2, each optionally +ac")
    cfg = load_config(positional[0] if positional else None,
                      ["--train.grad_accum=1", "--train.compile=false", *(TINY if tiny else []),
                       f"--train.device={opts['--device']}", *overrides])
    device = pick_device(cfg.train.device)
    d = parallel.init("ddp", cfg.train.dist_backend, cfg.train.dist_timeout_s, device)
    if not d.active:
        raise ConfigError("run it under torchrun (--nproc_per_node 1 is enough): DDP and FSDP2 need a process group")
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    try:
        for v in variants:
            record = bench(cfg, v, d, device, steps, warmup)
            if d.rank == 0:
                print(json.dumps(record), flush=True)
                with open(opts["--out"], "a") as f:
                    f.write(json.dumps(record) + "\n")
    finally:
        parallel.shutdown()
    return 0


def bench(cfg: RunConfig, variant: str, d: parallel.Dist, device: torch.device, steps: int, warmup: int) -> dict:
    kind, ac = variant.split("+")[0], variant.endswith("+ac")
    dtype = pick_dtype(cfg.train.dtype, device)
    torch.manual_seed(cfg.train.seed)
    model = on_device(GPT(cfg.model), device, dtype)
    if ac:
        parallel.checkpoint_blocks(model)
    wrapped = model if kind == "none" else parallel.wrap(model, kind, d, device, DTYPES[dtype])
    optimizer = build_optimizer(model, cfg.optim, device.type)
    step_fn = torch.compile(wrapped) if cfg.train.compile else wrapped
    t = cfg.train
    gen = torch.Generator().manual_seed(d.rank)
    x, y = (torch.randint(0, cfg.model.vocab_size, (t.batch_size, cfg.seq_len), generator=gen).to(device)
            for _ in range(2))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        for micro in range(t.grad_accum):
            with parallel.grad_sync(wrapped, micro == t.grad_accum - 1):
                with autocast(device, dtype):
                    loss = sum(step_fn(x, y)[1].values())
                (loss / t.grad_accum).backward()
        parallel.clip_grad_norm(list(model.parameters()), cfg.optim.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    times = [timed(step, device) for _ in range(steps)]
    peak = peak_memory_bytes(device)
    with saved_activation_bytes(model) as saved, autocast(device, dtype):
        loss = sum(step_fn(x, y)[1].values())
    loss.backward()
    optimizer.zero_grad(set_to_none=True)
    tokens = t.batch_size * cfg.seq_len * t.grad_accum * d.world_size
    median = statistics.median(d.gather_objects(statistics.median(times)))
    return {"variant": variant, "world_size": d.world_size, "device": machine(device),
            "dtype": dtype, "n_layer": cfg.model.n_layer, "n_embd": cfg.model.n_embd,
            "batch_size": t.batch_size, "seq_len": cfg.seq_len, "grad_accum": t.grad_accum,
            "compile": t.compile, "tokens_per_step": tokens, "step_s": round(median, 5),
            "tok_s": round(tokens / median, 1), "peak_memory_bytes": peak,
            "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process max RSS",
            "saved_activation_bytes": saved[0], "torch": torch.__version__}


@contextmanager
def saved_activation_bytes(model: torch.nn.Module):
    """Count the bytes autograd keeps for backward inside the block, the model's own weights (this
    rank's shards) not counted: `with saved_activation_bytes(model) as n: loss = f()`, then `n[0]`.
    Activation checkpointing lowers exactly this; it is deterministic on any device."""
    weights = {(p.to_local() if hasattr(p, "to_local") else p).untyped_storage().data_ptr()
               for p in model.parameters()}
    seen: set[int] = set()
    total = [0]

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights and ptr not in seen:
            seen.add(ptr)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


if __name__ == "__main__":
    sys.exit(run_cli(main))
