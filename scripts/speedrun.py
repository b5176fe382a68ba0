"""Time to quality: the speedrun against the GPT-2 default, measured in one invocation.
`python scripts/speedrun.py [--record CONFIG] [--baseline CONFIG] [--seeds 1,2] [--target BPB]
[--out DIR] [--baseline_run DIR] [--section.key=value ...]`

Trains the record config (configs/speedrun.toml) once per seed and the baseline (configs/default.toml)
once, interleaved (record seed 1, baseline, record seed 2, ...), each as its own `python -m train`
process into DIR (default runs/speedruns/<date-time>), so a slower or faster hour of a shared machine
falls on both sides. Every run is scored on the baseline's validation batches (`train.eval_seed` =
the baseline's seed) with the baseline's evaluation (its eval_batches, batch_size and seq_len).

A run's time to the target is `elapsed_s` at its first evaluation with val bpb <= target (default
2.342, the 600-step default's result): wall-clock from the start of training, evaluations and
checkpoints included. The ratio is the baseline's time over the record's, per record seed.
`--baseline_run DIR` reads an already finished baseline run instead of training one (its times are
then from another hour: say so when you quote the ratio). Overrides apply to every run.

Writes DIR/speedrun.json and prints a table. Exit 0 when every run reached the target, 1 when one
did not (its time is then "-"), 2 on a bad command line.
"""

import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.cli import RUN_ERROR, argument_parser, parse_overrides, run_cli  # noqa: E402
from train.config import ConfigError, load_config  # noqa: E402

TARGET = 2.342  # val bpb of configs/default.toml after 600 steps (docs/speedrun.md)


def parse(argv: list[str]):
    p = argument_parser("scripts/speedrun.py", __doc__)
    p.add_argument("--record", default="configs/speedrun.toml")
    p.add_argument("--baseline", default="configs/default.toml")
    p.add_argument("--seeds", default="1337,1338", help="the record's seeds, comma-separated")
    p.add_argument("--target", type=float, default=TARGET, help="val bits per byte to reach")
    p.add_argument("--out", default="", help="where the runs go (default runs/speedruns/<date-time>)")
    p.add_argument("--baseline_run", default="", help="a finished baseline run to read instead of training one")
    args, overrides = parse_overrides(p, argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be integers separated by commas; got {args.seeds!r}")
    if not args.target > 0:
        p.error(f"--target must be > 0; got {args.target}")
    return args, overrides


def time_to_target(metrics: Path, target: float) -> dict:
    """The first evaluation at or under `target` in a run's metrics.jsonl, and the run's last one."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    evals = [r for r in records if "val_bpb" in r]
    if not evals:
        raise ValueError(f"{metrics}: no evaluation logged")
    hit = next((r for r in evals if r["val_bpb"] <= target), {})
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    return {"reached": bool(hit), "seconds": hit.get("elapsed_s"), "step": hit.get("step"),
            "val_bpb_at": hit.get("val_bpb"), "final_step": evals[-1]["step"], "final_val_bpb": evals[-1]["val_bpb"],
            "final_elapsed_s": evals[-1]["elapsed_s"], "median_tok_s": statistics.median(rates) if rates else None}


def train(config: str, out_dir: Path, overrides: list[str]) -> None:
    """One `python -m train` run in its own process; a failed run stops the speedrun."""
    print(f"== {config} -> {out_dir}", flush=True)
    cmd = [sys.executable, "-m", "train", config, f"--train.out_dir={out_dir}", *overrides]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1])
    if done.returncode:
        raise ValueError(f"{' '.join(cmd)} exited {done.returncode}")  # one line, exit 1; its own error is above


def main(argv: list[str]) -> int:
    args, overrides = parse(argv)
    baseline_cfg = load_config(args.baseline, overrides, warn_ignored=False)  # bad configs fail here, first
    for seed in args.seeds:
        record = load_config(args.record, [*overrides, f"--train.seed={seed}"], warn_ignored=False)
        if (record.train.batch_size, record.seq_len) != (baseline_cfg.train.batch_size, baseline_cfg.seq_len):
            raise ConfigError(f"{args.record}: evaluates batches of {record.train.batch_size} x {record.seq_len} "
                              f"tokens, the baseline {baseline_cfg.train.batch_size} x {baseline_cfg.seq_len}: "
                              "the scores would not be comparable")
    if args.baseline_run and not (Path(args.baseline_run) / "metrics.jsonl").is_file():
        raise ConfigError(f"--baseline_run {args.baseline_run}: no metrics.jsonl there (not a run directory)")
    out = Path(args.out or f"runs/speedruns/{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty: the speedrun times fresh runs only")
    t = baseline_cfg.train
    same_eval = [f"--train.eval_seed={t.val_seed}", f"--train.eval_batches={t.eval_batches}"]
    runs = {}
    for i, seed in enumerate(args.seeds):
        name = f"record-seed{seed}"
        train(args.record, out / name, [*overrides, f"--train.seed={seed}", *same_eval])
        runs[name] = {"config": args.record, "seed": seed, **time_to_target(out / name / "metrics.jsonl", args.target)}
        if i == 0:
            base_dir = Path(args.baseline_run) if args.baseline_run else out / "baseline"
            if not args.baseline_run:
                train(args.baseline, base_dir, overrides)
            runs["baseline"] = {"config": args.baseline, "seed": t.seed, "dir": str(base_dir), "reused": bool(args.baseline_run),
                                **time_to_target(base_dir / "metrics.jsonl", args.target)}
    base = runs["baseline"]["seconds"]
    for name, r in runs.items():
        r["ratio"] = base / r["seconds"] if base and r["seconds"] and name != "baseline" else None
    summary = {"target": args.target, "eval_seed": t.val_seed, "runs": runs}
    (out / "speedrun.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))
    print(f"written: {out / 'speedrun.json'}")
    return 0 if all(r["reached"] for r in runs.values()) else RUN_ERROR


def table(summary: dict) -> str:
    rows = [f"target: val bpb <= {summary['target']} (validation batches of seed {summary['eval_seed']})",
            "| run | seed | time to target s | at step | final step | final val bpb | median tok/s | baseline / run |",
            "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name, r in summary["runs"].items():
        secs = f"{r['seconds']:.1f}" if r["reached"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else ""
        rate = f"{r['median_tok_s']:.0f}" if r["median_tok_s"] else ""
        rows.append(f"| {name} | {r['seed']} | {secs} | {r['step'] or '-'} | {r['final_step']} | "
                    f"{r['final_val_bpb']:.3f} | {rate} | {ratio} |")
    ratios = [r["ratio"] for r in summary["runs"].values() if r.get("ratio")]
    if ratios:
        rows.append(f"mean ratio over {len(ratios)} record seed(s): {statistics.mean(ratios):.2f}x")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(run_cli(main))
