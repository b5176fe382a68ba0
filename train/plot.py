"""Validation curves: `python -m train.plot RUN_DIR [RUN_DIR ...] -o out.png`.

Each RUN_DIR is one curve: a run directory, or a directory of runs (e.g. an ablation variant with
seed1/, seed2/), drawn as the mean over its runs with a band from the lowest to the highest. The left
panel plots val bits per byte against training tokens, the right one against wall-clock seconds
(`elapsed_s` when metrics.jsonl has it, else the training time implied by the logged tok/s).
When some run has no evaluation yet, every curve is its training loss instead (one quantity per
figure, so the curves stay comparable). train/report.py draws an ablation's curves.png with the same function.

Post-training runs that sample (rft, grpo, dpo: train/post/) are drawn against the step instead
(`plot_post`): the reward of each step's samples, averaged over 10 logged steps, and the held-out greedy
pass@1 of every evaluation; with task records that hold samples (an ablation's `tasks` scored
with --samples), a third panel draws maj@k against k.
"""

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

from .cli import asked_for_help, run_cli  # noqa: E402
from .errors import ConfigError  # noqa: E402
from .report import RunData, find_runs, load_run  # noqa: E402

USAGE = "usage: python -m train.plot RUN_DIR [RUN_DIR ...] -o OUT.png"
METRICS = {"val_bpb": "val bits per byte", "loss": "training loss"}  # metrics.jsonl key -> axis label


def _points(run: RunData, metric: str) -> list[tuple[float, float, float]]:
    """(tokens, wall-clock s, value) at every record of the run that logged `metric`."""
    return [(run.tokens(r), s, r[metric]) for r, s in zip(run.records, run.elapsed())
            if isinstance(r.get(metric), (int, float)) and not isinstance(r[metric], bool)]


def _series(runs: list[RunData], metric: str = "val_bpb"):
    """Mean tokens, mean seconds, and min / mean / max of `metric` at each record the runs share;
    non-finite points (a diverged run's NaN) are left out, so its curve ends where it diverged."""
    points = [p for p in (_points(r, metric) for r in runs) if p]
    n = min((len(p) for p in points), default=0)
    cols = [[p[i] for p in points if all(math.isfinite(v) for v in p[i])] for i in range(n)]
    cols = [col for col in cols if col]
    if not cols:
        return None
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return ([mean([c[0] for c in col]) for col in cols], [mean([c[1] for c in col]) for col in cols],
            [min(c[2] for c in col) for col in cols], [mean([c[2] for c in col]) for col in cols],
            [max(c[2] for c in col) for col in cols], len(points))


def plot_curves(groups: dict[str, list[RunData]], path: Path, title: str = "", metric: str = "val_bpb") -> Path:
    """Draw `metric` (a key of METRICS) vs tokens and vs wall-clock, one colour per group, seed
    bands; save to path (`.png` appended when it has no extension); return the path written."""
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    fig, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    ys = []
    for i, (label, runs) in enumerate(groups.items()):
        s = _series(runs, metric)
        if s is None:
            continue
        tokens, seconds, lo, mid, hi, n = s
        _band(by_tokens, tokens, lo, mid, hi, n, cmap(i % cmap.N), marker=".", label=f"{label} (n={n})")
        _band(by_time, seconds, lo, mid, hi, n, cmap(i % cmap.N), marker=".")
        ys += mid[1:] or mid
    if ys:  # the first evaluations (before learning starts) would squash the interesting part
        bottom, top = min(ys), max(ys)
        pad = top - bottom or 1
        by_tokens.set_ylim(bottom - 0.05 * pad, top + 0.3 * pad)
    _label(by_tokens, "training tokens", METRICS[metric], legend="upper right")
    _label(by_time, "wall-clock seconds (training)")
    return _save(fig, path, title)


def _band(ax, x: list, lo: list, mid: list, hi: list, n: int, color, **style) -> None:
    """The mean of n runs as a line, and a band from their lowest to their highest when n > 1."""
    ax.plot(x, mid, color=color, **style)
    if n > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def _label(ax, x: str, y: str = "", legend: str = "lower right") -> None:
    """Axis labels, a light grid, and a legend at `legend` when some curve has a label."""
    ax.set_xlabel(x)
    if y:
        ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc=legend)


def _save(fig, path: Path, title: str) -> Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _by_step(runs: list[RunData], metric: str, window: int = 1):
    """(steps, min, mean, max) over the runs of `metric` at the steps every run logged it, each run
    first averaged over the last `window` of its values."""
    series = []
    for run in runs:
        points = [(r["step"], r[metric]) for r in run.records if isinstance(r.get(metric), (int, float))]
        values = [v for _, v in points]
        recent = [values[max(0, i + 1 - window):i + 1] for i in range(len(values))]
        series.append({step: sum(r) / len(r) for (step, _), r in zip(points, recent)})
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    cols = [[s[k] for s in series] for k in steps]
    return steps, [min(c) for c in cols], [sum(c) / len(c) for c in cols], [max(c) for c in cols]


def majority_curves(runs: list[RunData]) -> dict[int, float]:
    """{k: maj@k} of the first generative task of the runs' task records, averaged over the runs
    that have it (k = 1, 2, 4, ...)."""
    found: dict[int, list[float]] = {}
    for run in runs:
        task = next((t for t in run.tasks.get("tasks", []) if t.get("kind") == "generate"), {})
        for name, value in task.get("metrics", {}).items():
            if name.startswith("maj@"):
                found.setdefault(int(name[4:]), []).append(value)
    return {k: sum(v) / len(v) for k, v in sorted(found.items())}


def plot_post(groups: dict[str, list[RunData]], path: Path, title: str = "") -> Path:
    """Reward (the mean of the last 10 logged steps: 10 steps with train.log_interval = 1) and held-out
    pass@1 against the step, one colour per group; maj@k against k when the runs' task records have it."""
    majority = {name: majority_curves(runs) for name, runs in groups.items()}
    panels = 3 if any(majority.values()) else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5))
    cmap = plt.get_cmap("tab10")
    curves = (("reward_mean", 10, "reward of the step's samples (mean of 10 logged steps)"),
              ("val_pass@1", 1, "held-out pass@1 (greedy)"))
    for ax, (metric, window, label) in zip(axes, curves):
        for i, (name, runs) in enumerate(groups.items()):
            steps, lo, mid, hi = _by_step(runs, metric, window)
            if steps:
                _band(ax, steps, lo, mid, hi, len(runs), cmap(i % cmap.N), marker="." if window == 1 else None,
                      label=f"{name} (n={len(runs)})")
        _label(ax, "step", label)
    if panels == 3:
        ax = axes[2]
        for i, (name, maj) in enumerate(majority.items()):
            if maj:
                ax.plot(list(maj), list(maj.values()), color=cmap(i % cmap.N), marker=".", label=name)
        ax.set_xscale("log", base=2)
        ks = sorted({k for maj in majority.values() for k in maj})
        ax.set_xticks(ks, labels=[str(k) for k in ks])
        _label(ax, "k (samples voting, test problems)", "maj@k")
    return _save(fig, Path(path), title)


def check_image_path(out: Path, flag: str) -> Path:
    """`out`, or a ConfigError unless it names an image file (a format matplotlib writes) in a folder
    that exists. An image already there is replaced, as a plot is redrawn."""
    if not out.parent.is_dir():
        raise ConfigError(f"{flag} {out}: the directory {out.parent} does not exist; create it or give another {flag}")
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; give a file name, e.g. {flag} {out / 'curves.png'}")
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix and out.suffix[1:].lower() not in formats:
        raise ConfigError(f"{flag} {out}: unknown image format {out.suffix!r}; allowed: {', '.join(sorted(formats))}")
    return out


def main(argv: list[str]) -> int:
    if asked_for_help(argv, __doc__, USAGE):
        return 0
    out, dirs, it = None, [], iter(argv)
    for arg in it:
        flag, sep, value = arg.partition("=")
        if flag in ("-o", "--out"):
            out = value if sep else next(it, None)
        else:
            dirs.append(Path(arg))
    if not out or not dirs:
        raise ConfigError(USAGE)
    out = check_image_path(Path(out), "-o")
    groups = {}
    for d in dirs:
        runs = [load_run(p) for p in find_runs(d)] if d.is_dir() else []
        runs = [r for r in runs if r.cfg is not None and r.records]
        if not runs:
            raise ConfigError(f"{d}: no run with a config.toml and records in metrics.jsonl")
        groups[d.name if d.name not in groups else str(d)] = runs
    unevaluated = [str(r.path) for runs in groups.values() for r in runs if not r.evals()]
    if unevaluated:
        print(f"note: no evaluation yet in {', '.join(unevaluated)}: plotting training loss", file=sys.stderr)
    print(f"wrote {plot_curves(groups, out, metric='loss' if unevaluated else 'val_bpb')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
