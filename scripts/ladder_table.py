"""Print the cost of every rung of configs/ladder/ as a markdown table (pasted into docs/ladder.md).

    python scripts/ladder_table.py [--seq_len N] [CONFIG ...]

Per config: parameters from the formula in model/accounting.py and as measured on the built model
(on the meta device, so nothing is allocated), active parameters (those one token uses: an MoE
layer's top_k experts, not all of them), training FLOPs per token at seq_len (default: the
config's), and KV-cache bytes per token in bf16: what the cache holds (`kv_bytes_per_token`), and
what a sliding-window model needs at seq_len when local layers keep only their last `window` keys.
"""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import GPT  # noqa: E402
from model.accounting import flops_per_token, kv_bytes_per_token, param_count  # noqa: E402
from train.config import load_config  # noqa: E402


def measured_params(cfg) -> int:
    with torch.device("meta"):
        return GPT(cfg).num_params()


def kv_bytes_needed(cfg, seq_len: int, bytes_per_elem: int = 2) -> float:
    """KV bytes per token of a seq_len-token sequence when local layers keep only `window` keys."""
    per_key = 2 * cfg.n_kv_head * cfg.head_dim * bytes_per_elem  # a key and a value, one layer
    kept = sum(min(cfg.window, seq_len) if cfg.is_local(i) else seq_len for i in range(cfg.n_layer))
    return per_key * kept / seq_len


def table(paths: list[Path], seq_len: int | None) -> str:
    rows = [
        "| rung | params (formula) | params (measured) | vs previous | active params | FLOPs/token (train) "
        "| KV bytes/token (cache) | KV bytes/token (needed) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    prev = None
    for path in paths:
        run = load_config(path)
        cfg, T = run.model, seq_len or run.seq_len
        n, measured = param_count(cfg), measured_params(cfg)
        delta = "" if prev is None else f"{n - prev:+,}"
        rows.append(
            f"| {path.stem} | {n:,} | {measured:,} | {delta} | {param_count(cfg, active=True):,} "
            f"| {flops_per_token(cfg, T) / 1e6:.1f} M "
            f"| {kv_bytes_per_token(cfg):,} | {kv_bytes_needed(cfg, T):,.0f} |"
        )
        prev = n
    T = seq_len or load_config(paths[0]).seq_len
    rows.append("")
    rows.append(f"FLOPs/token: forward + backward at sequence length {T}; KV bytes in bf16.")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    seq_len = None
    if argv[:1] == ["--seq_len"]:
        seq_len, argv = int(argv[1]), argv[2:]
    paths = [Path(a) for a in argv] or sorted((ROOT / "configs" / "ladder").glob("*.toml"))
    print(table(paths, seq_len))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
