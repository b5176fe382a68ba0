"""Print the measured-effect table of docs/ladder.md from a ladder ablation's results.csv.

    python scripts/ladder_effect.py docs/results/ladder-cpu/results.csv [docs/results/ladder-cpu-long/results.csv]

Each row puts a rung's cost (active parameters, training FLOPs and cache bytes per token, tok/s)
next to its effect (val bits per byte, the step from the previous rung, in all and seed by seed, and
from GPT-2). With a second results.csv (the same ladder at another budget), three more columns give
that grid's val bpb and its step from the previous rung, so a reader sees whether each step holds
as training gets longer. When the first grid scored tasks (`tasks = [...]` in its ablation file), a
second table follows: each task's headline score and the CORE-style aggregate, mean ± std over
seeds, next to the val bpb. Every number comes from the CSVs, which train.ablate writes from the
run directories.
"""
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.cli import asked_for_help, run_cli  # noqa: E402
from train.errors import ConfigError  # noqa: E402

USAGE = "usage: python scripts/ladder_effect.py RESULTS.csv [RESULTS_2X_BUDGET.csv]"
# the columns of train/report.py's FIELDS read by name below (older reports lack the by-seed ones)
COLUMNS = ("variant", "active_params", "flops_per_token", "kv_bytes_per_token", "tok_per_s", "val_bpb_mean",
           "val_bpb_std", "delta_bpb", "delta_bpb_previous", "beyond_seed_spread")


def read_results(path: str) -> list[dict]:
    """The rows of an ablation's results.csv, or a one-line ConfigError (no such file, not one)."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file (the results.csv that python -m train.ablate writes)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise ConfigError(f"{path}: not an ablation's results.csv (no rows, or no column {missing[0]!r})")
    return rows


def fmt(x: str, spec: str) -> str:
    return format(float(x), spec) if x else "pending"


def mean_std(mean: str, std: str) -> str:
    """'mean ± std' of a CSV's pair of columns; the std is empty with one seed."""
    return fmt(mean, ".3f") + (f" ± {float(std):.3f}" if mean and std else "")


def bpb(r: dict) -> str:
    return mean_std(r["val_bpb_mean"], r["val_bpb_std"])


def spread(r: dict, first: bool) -> str:
    if first:
        return "(baseline)"
    return {"True": "yes", "False": "no"}.get(r["beyond_seed_spread"], "n/a (1 seed)" if r["val_bpb_mean"] else "")


def per_seed(r: dict) -> str:
    """The step from the previous rung seed by seed, marked when every seed moved the same way."""
    if not r.get("delta_bpb_previous_by_seed"):
        return ""
    same = {"True": " (same sign)", "False": ""}.get(r.get("previous_same_sign", ""), "")
    return ", ".join(f"{float(d):+.3f}" for d in r["delta_bpb_previous_by_seed"].split(";")) + same


def main(paths: list[str]) -> int:
    if asked_for_help(paths, __doc__, USAGE):
        return 0
    if len(paths) > 2:
        raise ConfigError(USAGE)
    rows = read_results(paths[0])
    other = {r["variant"]: r for r in read_results(paths[1])} if len(paths) > 1 else None
    tasks = [name[len("task:"):-len("_mean")] for name in rows[0] if name.startswith("task:") and name.endswith("_mean")]
    if missing := [f"task:{t}_std" for t in tasks if f"task:{t}_std" not in rows[0]]:
        raise ConfigError(f"{paths[0]}: no {missing[0]} column beside its mean; write it with train.ablate --report")
    head = ["rung", "active params", "FLOPs/token", "KV B/token", "tok/s", "val bpb", "Δ vs previous rung",
            "per seed", "Δ vs 00-gpt2", "beyond seed spread"]
    align = "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    if other is not None:
        head += ["val bpb, 2x budget", "Δ vs previous, 2x budget", "per seed, 2x budget"]
        align += "--:|--:|--:|"
    print("| " + " | ".join(head) + " |")
    print(align)
    for i, r in enumerate(rows):
        flops = f"{float(r['flops_per_token']) / 1e6:.1f} M" if r["flops_per_token"] else ""
        cells = [r["variant"], fmt(r["active_params"], ",.0f"), flops, fmt(r["kv_bytes_per_token"], ",.0f"),
                 fmt(r["tok_per_s"], ",.0f"), bpb(r), fmt(r["delta_bpb_previous"], "+.3f") if i else "",
                 per_seed(r), fmt(r["delta_bpb"], "+.3f"), spread(r, i == 0)]
        if other is not None:
            o = other.get(r["variant"])
            cells += [bpb(o), fmt(o["delta_bpb_previous"], "+.3f") if i else "", per_seed(o)] if o else ["", "", ""]
        print("| " + " | ".join(cells) + " |")
    if tasks:
        print()
        print("| rung | val bpb | " + " | ".join(tasks) + " |")
        print("|---|--:|" + "--:|" * len(tasks))
        for r in rows:
            cells = [r["variant"], bpb(r)] + [mean_std(r[f"task:{t}_mean"], r[f"task:{t}_std"]) for t in tasks]
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
