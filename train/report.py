"""The report of an ablation, read from its run directories alone: results.md, results.csv, curves.png.

`write_report(out_dir)` reads `<out_dir>/ablation.json` (labels, their order, the baseline; written
by train/ablate.py, and the mark of a directory it made: no other directory gets a report) and, for
every run, its resolved `config.toml`, `metrics.jsonl` and `status.json`. Nothing is typed by
hand: parameters, FLOPs and KV bytes per token come from model/accounting.py applied to the resolved
config; tok/s, tokens, wall-clock and validation numbers from metrics.jsonl. Writing it twice from
the same directories gives the same files.

Per variant: the final val loss and val bpb (mean ± sample std over seeds), the delta to the
baseline and whether it exceeds the seed spread, and with `tasks` each task's headline score from
the run's `python -m train.eval --json` record; the notes under results.md's table say how.
"""

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from model.accounting import flops_per_token, kv_bytes_per_token, param_count

from .config import RunConfig, load_config
from .errors import ConfigError

STATUS_FILE = "status.json"
SPEC_FILE = "ablation.json"
FIELDS = ["variant", "status", "seeds_done", "params", "active_params", "flops_per_token",
          "kv_bytes_per_token", "tokens", "tok_per_s", "wall_s", "val_loss_mean", "val_loss_std",
          "val_bpb_mean", "val_bpb_std", "delta_bpb", "beyond_seed_spread", "delta_bpb_previous",
          "delta_bpb_previous_by_seed", "previous_same_sign", "error"]
YES_NO = {True: "yes", False: "no", None: ""}


def read_json(path: Path) -> dict:
    """A JSON object written by train.ablate; {} when the file is missing."""
    try:
        data = json.loads(path.read_text())
    except OSError:
        return {}
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object; got {type(data).__name__}")
    return data


@dataclass
class RunData:
    """One run directory: its resolved config, metrics records and ablation status."""
    path: Path
    cfg: RunConfig | None
    records: list[dict]
    status: dict
    tasks: dict = field(default_factory=dict)  # its train.eval record (<out_dir>/tasks/...), if any

    @property
    def done(self) -> bool:
        """Finished: so recorded by train.ablate, or (a plain run) evaluated at train.max_steps or
        at its train.max_seconds."""
        evals = [r for r in self.records if r.get("val_loss") is not None]
        if self.status:
            return self.status.get("state") == "done" and bool(evals)
        return bool(evals) and (evals[-1]["step"] == self.cfg.train.max_steps
                                or evals[-1].get("ended_by") == "max_seconds")

    @property
    def tokens_per_step(self) -> int:
        t = self.cfg.train
        return t.batch_size * t.grad_accum * self.cfg.seq_len

    def tokens(self, r: dict) -> int:
        return r["tokens"] if "tokens" in r else r["step"] * self.tokens_per_step

    def elapsed(self) -> list[float]:
        """Wall-clock seconds at each record: `elapsed_s` when logged, else the training time
        implied by each logged step's tokens_per_s, applied to the steps since the previous record
        (evaluation and checkpoint time then not included)."""
        out, t, prev_step, rate = [], 0.0, 0, None
        for r in self.records:
            rate = r.get("tokens_per_s") or rate
            if rate:
                t += (r["step"] - prev_step) * self.tokens_per_step / rate
            prev_step = r["step"]
            out.append(r["elapsed_s"] if "elapsed_s" in r else t)
        return out

    def evals(self) -> list[tuple[int, float, float, float]]:
        """(tokens, wall-clock s, val_loss, val_bpb) at every evaluation."""
        return [(self.tokens(r), s, r["val_loss"], r["val_bpb"])
                for r, s in zip(self.records, self.elapsed()) if r.get("val_loss") is not None]

    def tok_per_s(self) -> float | None:
        """Median training throughput over the logged steps, the first (warm-up) one left out."""
        rates = [r["tokens_per_s"] for r in self.records[1:] if r.get("tokens_per_s")]
        return statistics.median(rates) if rates else None


def load_run(path: Path) -> RunData:
    cfg = None
    if (path / "config.toml").is_file():
        try:
            cfg = load_config(path / "config.toml", warn_ignored=False, resolved=True)  # a resolved config lists every key
        except ConfigError:
            pass  # written by another version of the code: counted as unreadable
    records = read_records(path / "metrics.jsonl") if cfg is not None else []
    return RunData(path, cfg, records, read_json(path / STATUS_FILE))


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl that have an integer step; [] when the file is missing."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def find_runs(root: Path) -> list[Path]:
    """Run directories under root (root itself if it is one): those with a metrics.jsonl or status."""
    if (root / "metrics.jsonl").is_file() or (root / STATUS_FILE).is_file():
        return [root]
    return sorted({p.parent for name in ("metrics.jsonl", STATUS_FILE) for p in root.rglob(name)})


def variants(out_dir: Path) -> tuple[dict, dict[str, list[RunData]]]:
    """The ablation's spec and its runs grouped by label, in the ablation file's order."""
    path = out_dir / SPEC_FILE
    spec = read_json(path)
    runs = spec.get("runs")
    if not runs:  # the report's files would overwrite someone else's (or land in a run)
        raise ConfigError(f"report: {out_dir} was not made by python -m train.ablate (no {SPEC_FILE} listing "
                          f"its runs); give an ablation's out_dir, or draw runs with python -m train.plot")
    # the keys of ablation.json that the report relies on: runs with a label and a dir, the variants
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("label"), str)
                                              and isinstance(r.get("dir"), str) for r in runs):
        raise ConfigError(f"{path}: runs must be a list of {{\"label\": str, \"dir\": str}}; got {runs!r:.80}")
    if not isinstance(spec.get("variants", {}), dict):
        raise ConfigError(f"{path}: variants must be an object keyed by label")
    groups: dict[str, list[RunData]] = {label: [] for label in spec.get("variants", {})}  # the file's order
    for r in runs:
        run = load_run(out_dir / r["dir"])
        run.tasks = read_json(task_file(out_dir, r["dir"]))
        groups.setdefault(r["label"], []).append(run)
    return spec, groups


def task_file(out_dir: Path, run_dir: str) -> Path:
    """Where the runner keeps a run's task scores: beside the runs, never inside one."""
    return Path(out_dir) / "tasks" / f"{run_dir}.json"


def task_scores(spec: dict, record: dict, step: int | None) -> dict[str, float] | None:
    """{task: headline score, ..., "aggregate": CORE-style value} from a train.eval --json record,
    or None unless it scored exactly the ablation's tasks, with its settings, at checkpoint `step`."""
    results = record.get("tasks")
    if (not spec.get("tasks") or step is None or record.get("step") != step or not isinstance(results, list)
            or [r.get("task") for r in results] != spec["tasks"]
            or record.get("settings") != spec.get("task_settings")):
        return None
    return {r["task"]: r["metrics"][r["headline"]] for r in results} | {"aggregate": record["aggregate"]["value"]}


def task_columns(spec: dict) -> list[str]:
    tasks = spec.get("tasks", [])
    return [*tasks, "aggregate"] if tasks else []


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _previous(row: dict, prev: dict, mine: dict[int, float], theirs: dict[int, float]) -> None:
    """The step from the previous row: of the mean val bpb, and seed by seed (`mine`, `theirs`:
    {seed: val bpb}). A seed fixes the order of the training batches (and the initialisation, where
    the shapes agree), so comparing equal seeds takes that share of the noise out; with >= 2 seeds,
    `previous_same_sign` says whether every seed moved the same way."""
    if prev["val_bpb_mean"] is not None:
        row["delta_bpb_previous"] = row["val_bpb_mean"] - prev["val_bpb_mean"]
    deltas = [mine[s] - theirs[s] for s in sorted(mine) if s in theirs]
    if deltas:
        row["delta_bpb_previous_by_seed"] = ";".join(f"{d:+.4f}" for d in deltas)
    if len(deltas) > 1:
        row["previous_same_sign"] = all(d < 0 for d in deltas) or all(d > 0 for d in deltas)


def rows(spec: dict, groups: dict[str, list[RunData]]) -> list[dict]:
    """One row per variant: the FIELDS (the steps from the previous variant only with delta_previous),
    and a (mean, std) pair under `task:<column>` per task column."""
    tasks = task_columns(spec)
    out, by_seed = [], {}
    for label, runs in groups.items():
        done = [r for r in runs if r.done]
        errors = [str(r.status.get("error") or "no error recorded") for r in runs
                  if r.status.get("state") == "failed"]
        status = "failed" if errors else "ok" if len(done) == len(runs) else f"{len(done)}/{len(runs)} seeds"
        row = dict.fromkeys(FIELDS) | dict.fromkeys([f"task:{t}" for t in tasks], (None, None)) | {
            "variant": label, "status": status, "seeds_done": len(done), "error": errors[0] if errors else ""}
        cfg = next((r.cfg for r in runs if r.cfg is not None), None)
        if cfg is not None:
            row |= {"params": param_count(cfg.model), "active_params": param_count(cfg.model, active=True),
                    "flops_per_token": flops_per_token(cfg.model, cfg.seq_len),
                    "kv_bytes_per_token": kv_bytes_per_token(cfg.model)}
        if done:
            finals = [r.evals()[-1] for r in done]
            rates = [x for x in (r.tok_per_s() for r in done) if x]
            row["tokens"] = round(statistics.fmean(f[0] for f in finals))
            row["wall_s"] = statistics.fmean(f[1] for f in finals)
            row["tok_per_s"] = statistics.fmean(rates) if rates else None
            row["val_loss_mean"], row["val_loss_std"] = _stats([f[2] for f in finals])
            row["val_bpb_mean"], row["val_bpb_std"] = _stats([f[3] for f in finals])
            by_seed[label] = {r.cfg.train.seed: f[3] for r, f in zip(done, finals)}
            scored = [x for x in (task_scores(spec, r.tasks, r.records[-1]["step"]) for r in done) if x]
            for column in tasks if scored else ():
                row[f"task:{column}"] = _stats([x[column] for x in scored])
            row["tasks_scored"] = len(scored)
            if spec.get("delta_previous") and out:
                _previous(row, out[-1], by_seed[label], by_seed.get(out[-1]["variant"], {}))
        out.append(row)
    base = next((r for r in out if r["variant"] == spec.get("baseline")), out[0])
    for row in out:
        if row["val_bpb_mean"] is None or base["val_bpb_mean"] is None:
            continue
        row["delta_bpb"] = row["val_bpb_mean"] - base["val_bpb_mean"]
        if row is not base and row["val_bpb_std"] is not None and base["val_bpb_std"] is not None:
            row["beyond_seed_spread"] = abs(row["delta_bpb"]) > row["val_bpb_std"] + base["val_bpb_std"]
    return out


def _csv(spec: dict, table: list[dict]) -> str:
    """FIELDS, then each task column as task:<task>_mean / task:<task>_std and how many seeds were scored;
    floats in full (repr), a missing value empty."""
    tasks = task_columns(spec)
    names = FIELDS + [f"task:{t}_{stat}" for t in tasks for stat in ("mean", "std")] + (["tasks_scored"] if tasks else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, names, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in table:
        flat = row | {f"task:{t}_{stat}": v for t in tasks for stat, v in zip(("mean", "std"), row[f"task:{t}"])}
        writer.writerow({k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in flat.items()})
    return buf.getvalue()


def _pm(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _num(x, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


# The columns of results.md: (heading, alignment, the cell of a row); with delta_previous the
# PREVIOUS_COLUMNS follow, then one column per task.
COLUMNS = [("variant", "---", lambda r: r["variant"]),
           ("status", "---", lambda r: r["status"]),
           ("params", "--:", lambda r: _num(r["params"], ",")),
           ("active", "--:", lambda r: _num(r["active_params"], ",")),
           ("FLOPs/token", "--:", lambda r: "" if r["flops_per_token"] is None else f"{r['flops_per_token'] / 1e6:.1f} M"),
           ("KV bytes/token", "--:", lambda r: _num(r["kv_bytes_per_token"], ",")),
           ("tokens", "--:", lambda r: _num(r["tokens"], ",")),
           ("tok/s", "--:", lambda r: _num(r["tok_per_s"], ",.0f")),
           ("wall s", "--:", lambda r: _num(r["wall_s"], ",.0f")),
           ("val loss", "--:", lambda r: _pm(r["val_loss_mean"], r["val_loss_std"])),
           ("val bpb", "--:", lambda r: _pm(r["val_bpb_mean"], r["val_bpb_std"])),
           ("Δ bpb vs baseline", "--:", lambda r: _num(r["delta_bpb"], "+.4f")),
           ("beyond seed spread", "---", lambda r: YES_NO[r["beyond_seed_spread"]])]
PREVIOUS_COLUMNS = [("Δ bpb vs previous", "--:", lambda r: _num(r["delta_bpb_previous"], "+.4f")),
                    ("per seed", "--:", lambda r: (r["delta_bpb_previous_by_seed"] or "").replace(";", ", ")),
                    ("same sign", "---", lambda r: YES_NO[r["previous_same_sign"]])]


def _markdown(spec: dict, table: list[dict]) -> str:
    budget = spec.get("budget")
    kind, amount = next(iter(budget.items())) if isinstance(budget, dict) and len(budget) == 1 else ("?", "?")
    amount = f"{amount:,}" if isinstance(amount, (int, float)) else amount
    base = spec.get("baseline", table[0]["variant"])
    prev = bool(spec.get("delta_previous"))
    tasks = task_columns(spec)
    columns = COLUMNS + (PREVIOUS_COLUMNS if prev else []) + [
        (t, "--:", lambda r, t=t: _pm(*r[f"task:{t}"], digits=3)) for t in tasks]
    lines = [f"# Ablation: {spec.get('name', '?')}", "",
             f"Budget per run: {amount} {kind}; seeds {spec.get('seeds', '?')}; "
             f"{spec.get('parallel', '?')} run(s) at once, {spec.get('threads') or 'all'} CPU threads in all. "
             f"Baseline: `{base}`.", "", *([str(spec["note"]), ""] if spec.get("note") else []),
             "| " + " | ".join(heading for heading, _, _ in columns) + " |",
             "|" + "".join(f"{align}|" for _, align, _ in columns),
             *("| " + " | ".join(cell(r) for _, _, cell in columns) + " |" for r in table)]
    lines += ["", "Val loss and val bpb: the last evaluation of each finished run, mean ± sample standard "
              "deviation over seeds. Beyond seed spread: |Δ| > std(variant) + std(baseline). "
              + ("Per seed: the step from the previous variant with equal seeds (a seed fixes the order "
                 "of the training batches), and whether every seed moved the same way (with two seeds, a step "
                 "with no effect shows one sign half the time). " if prev else "")
              + "FLOPs/token: training (forward + backward) at the run's sequence length; KV bytes in bf16 "
              "(model/accounting.py on the resolved config.toml). tok/s: median over logged steps, mean "
              "over seeds, measured while the runs shared the machine as stated above. Wall s: training "
              "time to the last evaluation (`elapsed_s` when logged, else implied by tok/s).", ""]
    if tasks:
        lines += [f"Tasks: `python -m train.eval RUN {' '.join(spec.get('task_argv', []))}` on each finished "
                  "run's last checkpoint (the same items for every run); mean ± standard deviation over the "
                  "seeds scored. A multiple-choice task shows acc_norm (chance: 1 / choices), a generative "
                  "task greedy pass@1 (chance 0); aggregate: CORE-style, each (score - chance) / (1 - chance), "
                  "averaged (train/evals/suite.py).", ""]
    failed = [r for r in table if r["error"]]
    if failed:
        lines += ["Failed:", ""] + [f"- `{r['variant']}`: {r['error']}" for r in failed] + [""]
    return "\n".join(lines)


def write_report(out_dir: Path) -> Path:
    """Write results.md, results.csv and curves.png into out_dir; return the path of results.md."""
    from .plot import plot_curves, plot_post  # matplotlib is imported only when a figure is drawn

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ConfigError(f"report: {out_dir} is not a directory")
    spec, groups = variants(out_dir)
    table = rows(spec, groups)
    text = {"results.csv": _csv(spec, table), "results.md": _markdown(spec, table)}  # no file half-written on an error
    for name, content in text.items():
        (out_dir / name).write_text(content)
    drawn = {label: [r for r in runs if r.cfg is not None] for label, runs in groups.items()}
    sampling = any("val_pass@1" in rec for runs in drawn.values() for r in runs for rec in r.records)
    (plot_post if sampling else plot_curves)(drawn, out_dir / "curves.png", title=str(spec.get("name", out_dir.name)))
    return out_dir / "results.md"
