"""Throughput of one mixer layer: Gated DeltaNet against full causal attention, CPU or CUDA.

    python scripts/bench_mixers.py [--seq_lens 256,2048] [--threads N] [--repeats R]
                                   [--device cpu|cuda] [--dtype fp32|bf16] [--batch B] [--forward_only]

One layer at rung 14's sizes (configs/ladder/14-hybrid-deltanet.toml: 256 wide, 4 heads of 64, the
same for Gated DeltaNet's q/k and value heads), forward + backward (--forward_only: the forward with no
gradient, as in prefill), best of R timed repeats after one warm-up (on CUDA each timed between
synchronisations). Attention is plain causal GQA through SDPA (no window, no sinks: the full-attention
cost that linear attention replaces); Gated DeltaNet runs its PyTorch chunked form
(model/mixer/delta_rule.py, 64-token chunks) and, on CUDA with flash-linear-attention installed, that
package's Triton kernel. A kernel that raises (fla 0.6.0 refuses its backward on Hopper GPUs with Triton
< 3.7.1) gets "refused" and its reason below the table. Prints tokens per second per layer and the peak
memory of each. A benchmark, not a test: nothing here asserts a speed.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import ModelConfig  # noqa: E402
from model.config import DeltaNetConfig  # noqa: E402
from model.block import build_mixer  # noqa: E402
from model.mixer.delta_rule import fla_available  # noqa: E402
from train.cli import run_cli, split_args  # noqa: E402
from train.config import ConfigError  # noqa: E402
from train.hardware import autocast, peak_memory_bytes, pick_device, sync  # noqa: E402

USAGE = ("usage: python scripts/bench_mixers.py [--seq_lens 256,2048] [--threads N] [--repeats R] "
         "[--device cpu|cuda] [--dtype fp32|bf16] [--batch B] [--forward_only]")


def layer_config(seq_len: int) -> ModelConfig:
    return ModelConfig(vocab_size=256, block_size=seq_len, n_layer=4, n_head=4, n_embd=256, pos="rope",
                       norm="rmsnorm", mlp="swiglu", bias=False, linear_attention="gated_deltanet",
                       deltanet=DeltaNetConfig(full_every=4))


def tokens_per_second(layer: torch.nn.Module, shape: tuple[int, int], repeats: int, dtype: str,
                      backward: bool = True) -> tuple[float, int]:
    """(tokens per second, peak memory in bytes) of forward + backward (or the forward alone, with no
    gradient) on (batch, T) tokens."""
    B, T = shape
    device = next(layer.parameters()).device
    x = torch.randn(B, T, 256, device=device, requires_grad=backward)
    positions = torch.arange(T, device=device)
    best = float("inf")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(repeats + 1):  # the first is a warm-up
        sync(device)
        start = time.perf_counter()
        with autocast(device, dtype), torch.set_grad_enabled(backward):
            out = layer(x, positions)
        if backward:
            out.float().sum().backward()
        sync(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return B * T / best, peak_memory_bytes(device)


def kernels_on(device: torch.device) -> list[str]:
    """The Gated DeltaNet kernels to time: the chunked form, and fla's on CUDA when it is installed."""
    return ["torch"] + (["fla"] if device.type == "cuda" and fla_available() else [])


def main(argv: list[str]) -> int:
    opts = {"--seq_lens": "256,2048", "--threads": "0", "--repeats": "3", "--device": "cpu", "--dtype": "fp32",
            "--batch": "1"}
    forward_only = "--forward_only" in argv
    positional, rest = split_args([a for a in argv if a != "--forward_only"], opts)
    if positional or rest:
        raise ConfigError(f"unexpected arguments {positional + rest}; {USAGE}")
    try:
        seq_lens = [int(s) for s in opts["--seq_lens"].split(",")]
        threads, repeats, batch = int(opts["--threads"]), int(opts["--repeats"]), int(opts["--batch"])
    except ValueError:
        raise ConfigError(f"--seq_lens, --threads, --repeats and --batch take integers; {USAGE}") from None
    if min(seq_lens) < 1 or threads < 0 or repeats < 1 or batch < 1:
        raise ConfigError(f"--seq_lens, --repeats and --batch must be >= 1 and --threads >= 0; {USAGE}")
    if opts["--dtype"] not in ("fp32", "bf16"):
        raise ConfigError(f"--dtype must be fp32 or bf16, got {opts['--dtype']!r}; {USAGE}")
    device, dtype = pick_device(opts["--device"], "--device"), opts["--dtype"]
    if threads:
        torch.set_num_threads(threads)
    kernels = kernels_on(device)
    torch.manual_seed(0)
    where = f"{torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"{torch.get_num_threads()} thread(s)"
    print(f"one layer, batch {batch}, {dtype}, {'forward' if forward_only else 'forward + backward'}, {where}; "
          "tok/s (peak MiB: the allocator's on CUDA, on CPU the process's largest RSS so far)")
    names = ["Gated DeltaNet, chunked" if k == "torch" else "Gated DeltaNet, fla" for k in kernels]
    print("| T | full attention | " + " | ".join(names) + " | " + " | ".join(f"{n} / attention" for n in names) + " |")
    print("|--:|--:|" + "--:|" * 2 * len(kernels))
    refusals = {}
    for T in seq_lens:
        cfg = layer_config(T)
        attention = build_mixer(cfg, 3).to(device)  # layer 3 full, layer 0 linear
        a, a_mem = tokens_per_second(attention, (batch, T), repeats, dtype, not forward_only)
        cells, ratios = [], []
        for kernel in kernels:
            deltanet = build_mixer(cfg, 0).to(device)
            deltanet.use_kernel(kernel)
            try:
                d, d_mem = tokens_per_second(deltanet, (batch, T), repeats, dtype, not forward_only)
            except RuntimeError as error:  # the package's kernel, not ours: say why, time the rest
                if kernel == "torch":
                    raise
                refusals[kernel] = str(error).splitlines()[0]
                cells.append("refused")
                ratios.append("-")
                continue
            cells.append(f"{d:,.0f} ({d_mem / 2**20:,.0f})")
            ratios.append(f"{d / a:.2f}")
        print(f"| {T} | {a:,.0f} ({a_mem / 2**20:,.0f}) | " + " | ".join(cells + ratios) + " |")
    for kernel, reason in refusals.items():
        print(f"{kernel}: {reason}")
    return 0

if __name__ == "__main__":
    sys.exit(run_cli(main))
