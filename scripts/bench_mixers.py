"""CPU throughput of one mixer layer: chunked Gated DeltaNet against full causal attention.

    python scripts/bench_mixers.py [--seq_lens 256,2048] [--threads N] [--repeats R]

One layer at rung 14's sizes (configs/ladder/14-hybrid-deltanet.toml: 256 wide, 4 heads of 64, the
same for Gated DeltaNet's q/k and value heads), batch 1, fp32, forward + backward, best of R timed
repeats after one warm-up. Attention is plain causal GQA through SDPA (no window, no sinks: the
full-attention cost that linear attention replaces); Gated DeltaNet runs its PyTorch chunked form
(model/mixer/delta_rule.py, 64-token chunks). Prints tokens per second per layer. A benchmark, not a
test: nothing here asserts a speed.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import ModelConfig  # noqa: E402
from model.config import DeltaNetConfig  # noqa: E402
from model.block import build_mixer  # noqa: E402
from train.cli import run_cli, split_args  # noqa: E402
from train.config import ConfigError  # noqa: E402

USAGE = "usage: python scripts/bench_mixers.py [--seq_lens 256,2048] [--threads N] [--repeats R]"


def layer_config(seq_len: int) -> ModelConfig:
    return ModelConfig(vocab_size=256, block_size=seq_len, n_layer=4, n_head=4, n_embd=256, pos="rope",
                       norm="rmsnorm", mlp="swiglu", bias=False, linear_attention="gated_deltanet",
                       deltanet=DeltaNetConfig(full_every=4))


def tokens_per_second(layer: torch.nn.Module, seq_len: int, repeats: int) -> float:
    x = torch.randn(1, seq_len, 256, requires_grad=True)
    positions = torch.arange(seq_len)
    best = float("inf")
    for i in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        layer(x, positions).sum().backward()
        if i:
            best = min(best, time.perf_counter() - start)
    return seq_len / best


def main(argv: list[str]) -> int:
    opts = {"--seq_lens": "256,2048", "--threads": "0", "--repeats": "3"}
    positional, rest = split_args(argv, opts)
    if positional or rest:
        raise ConfigError(f"unexpected arguments {positional + rest}; {USAGE}")
    try:
        seq_lens = [int(s) for s in opts["--seq_lens"].split(",")]
        threads, repeats = int(opts["--threads"]), int(opts["--repeats"])
    except ValueError:
        raise ConfigError(f"--seq_lens, --threads and --repeats take integers; {USAGE}") from None
    if min(seq_lens) < 1 or threads < 0 or repeats < 1:
        raise ConfigError(f"--seq_lens and --repeats must be >= 1 and --threads >= 0; {USAGE}")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"one layer, batch 1, fp32, forward + backward, {torch.get_num_threads()} thread(s)")
    print("| T | full attention (tok/s) | Gated DeltaNet, chunked (tok/s) | DeltaNet / attention |")
    print("|--:|--:|--:|--:|")
    for T in seq_lens:
        cfg = layer_config(T)
        attention, deltanet = build_mixer(cfg, 3), build_mixer(cfg, 0)  # layer 3 full, layer 0 linear
        a, d = tokens_per_second(attention, T, repeats), tokens_per_second(deltanet, T, repeats)
        print(f"| {T} | {a:,.0f} | {d:,.0f} | {d / a:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
