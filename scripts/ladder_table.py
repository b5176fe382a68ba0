"""Print the cost of every rung of configs/ladder/ as a markdown table (pasted into docs/ladder.md).

    python scripts/ladder_table.py [--seq_len N] [CONFIG ...]

Per config: parameters from the formula in model/accounting.py and as measured on the built model
(on the meta device, so nothing is allocated), active parameters (those one token uses: an MoE
layer's top_k experts, not all of them), training FLOPs per token at seq_len (default: the
config's), and KV-cache bytes per token in bf16: what the cache holds (`kv_bytes_per_token`), its
ratio to multi-head attention at the same width (`mha_kv_bytes_per_token`), and what a
sliding-window model needs at seq_len when local layers keep only their last `window` keys (and
linear-attention layers their fixed state, spread over the seq_len tokens).
"""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import GPT  # noqa: E402
from model.accounting import (  # noqa: E402
    KV_ELEMENTS, flops_per_token, kv_bytes_per_token, mha_kv_bytes_per_token, param_count,
    recurrent_state_bytes,
)
from train.cli import run_cli  # noqa: E402
from train.config import ConfigError, load_config  # noqa: E402

USAGE = "usage: python scripts/ladder_table.py [--seq_len N] [CONFIG ...]"


def kv_bytes_needed(cfg, seq_len: int, bytes_per_elem: int = 2) -> float:
    """KV bytes per token of a seq_len-token sequence when local layers keep only `window` keys."""
    per_key = KV_ELEMENTS[cfg.attention](cfg) * bytes_per_elem  # one token, one layer
    kept = sum(min(cfg.window, seq_len) if cfg.is_local(i) else seq_len
               for i in range(cfg.n_layer) if not cfg.is_linear(i))
    state = sum(recurrent_state_bytes(cfg, bytes_per_elem) for i in range(cfg.n_layer) if cfg.is_linear(i))
    return (per_key * kept + state) / seq_len  # a linear layer's fixed state, spread over the sequence


def table(paths: list[Path], seq_len: int | None) -> str:
    rows = [
        "| rung | params (formula) | params (measured) | vs previous | active params | FLOPs/token (train) "
        "| KV bytes/token (cache) | vs MHA | KV bytes/token (needed) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    prev = None
    for path in paths:
        run = load_config(path)
        cfg, T = run.model, seq_len or run.seq_len
        with torch.device("meta"):  # built, but nothing allocated
            measured = GPT(cfg).num_params()
        n = param_count(cfg)
        delta = "" if prev is None else f"{n - prev:+,}"
        rows.append(
            f"| {path.stem} | {n:,} | {measured:,} | {delta} | {param_count(cfg, active=True):,} "
            f"| {flops_per_token(cfg, T) / 1e6:.1f} M "
            f"| {kv_bytes_per_token(cfg):,} | {kv_bytes_per_token(cfg) / mha_kv_bytes_per_token(cfg):.3f} "
            f"| {kv_bytes_needed(cfg, T):,.0f} |"
        )
        prev = n
    T = seq_len or load_config(paths[0]).seq_len
    rows += ["", f"FLOPs/token: forward + backward at sequence length {T}; KV bytes in bf16."]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    seq_len = None
    if argv[:1] == ["--seq_len"]:
        if len(argv) < 2 or not argv[1].isdigit() or int(argv[1]) < 1:
            raise ConfigError(f"--seq_len takes a positive integer; {USAGE}")
        seq_len, argv = int(argv[1]), argv[2:]
    for arg in argv:
        if arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; {USAGE}")
    paths = [Path(a) for a in argv] or sorted((ROOT / "configs" / "ladder").glob("*.toml"))
    print(table(paths, seq_len))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
