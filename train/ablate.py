"""Config-driven ablations: a grid of ordinary training runs, then a report read from their files.

    python -m train.ablate ABLATION.toml [--key=value ...] [--debug]   # run (or resume) the grid
    python -m train.ablate --report OUT_DIR                             # rewrite the report only

An ablation file names a base config, labelled variants, one budget, the seeds, and how many runs
go at once (paths are relative to the ablation file; `--key=value` overrides any key of it, e.g.
`--budget.tokens=200_000`, `--seeds=[1]`, `--overrides.train.device="cuda"`):

    name = "moe-balancing"
    base = "../ladder/11-moe.toml"
    out_dir = "runs/ablations/moe-balancing"  # relative to the working directory, like train.out_dir
    seeds = [1, 2]
    parallel = 2         # runs at once
    threads = 2          # CPU threads shared among them (0 = all cores)
    baseline = "switch"  # the row deltas are measured against (default: the first variant)
    note = "..."         # optional: printed under the report's heading (what the budget can and cannot show)
    tasks = ["stdlib-cloze", "arithmetic"]  # optional: task columns (python -m train.eval --task ...)
    task_options = {limit = 200}            # optional: eval's --shots/--limit/--samples/--temperature/--top_k/--seed

    [budget]             # per run, exactly one of: tokens, flops (training FLOPs), seconds, steps
    tokens = 1_000_000

    [overrides]          # applied to every run
    train.eval_interval = 25

    [variants.switch]    # a variant is a `config` file (default: base), overrides, or both
    [variants.none]
    model.moe.aux_loss_coef = 0.0

Each (variant, seed) is an ordinary run of `python -m train` in `<out_dir>/<label>/seed<k>`, with
`train.seed = k` and `train.max_steps` set from the budget, so it can be resumed, sampled and
benchmarked like any other. A tokens or flops budget becomes a step count (the LR schedule spans
it), as a steps budget is one; a seconds budget keeps the config's schedule and sets
`train.max_seconds`: the run ends after the step that spends it, with an evaluation and a
checkpoint, like any finished run.

Runs execute as subprocesses (train/ablate_procs.py): each gets its own thread count
(OMP_NUM_THREADS), a crash or an out-of-memory in one cannot take the grid down, and the trainer's
own signal handling gives a clean stop. Re-running skips finished runs and resumes interrupted ones
from their checkpoints. A variant whose config is invalid, or whose run fails, is recorded
(`status.json` in its run directory, with the one-line error) and the others go on. Ctrl-C forwards
one SIGINT to every running child, which finishes its step and checkpoints (a second Ctrl-C stops
them at once, without one, and the last line names those runs); the next call resumes. The report
(train/report.py) is written to out_dir at the end, from the run directories alone. The runner
writes only into a new or empty out_dir or its own (one whose ablation.json has its name), and
`--report` only into a directory this runner made.

With `tasks`, every finished run is then scored by `python -m train.eval RUN --task ... --json
<out_dir>/tasks/<variant>/seed<k>.json` (its log beside it; with `--tensorboard` when the run has
train.tensorboard = true), in the same slots as the training runs. The tasks are built once before
anything runs, so a misspelt task or option is a bad ablation file. A re-run scores only the runs
whose record is missing or stale (other tasks or settings, or another checkpoint).
Exit code: 0 all runs done (and scored), 1 some run or scoring failed, 2 a bad ablation file,
130 / 143 interrupted.
"""

import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from model.accounting import flops_per_token

from .ablate_procs import Child, Interrupts, Scoring, stop_message, write_status
from .cli import asked_for_help, run_cli
from .config import RunConfig, _flat, _toml_value, apply_override, load_config, override_value
from .config import read_toml
from .errors import ConfigError, make_dir, one_line
from .guard import run_lock
from .report import SPEC_FILE, STATUS_FILE, read_json, read_records, task_file, task_scores, write_report

USAGE = "usage: python -m train.ablate ABLATION.toml [--key=value ...] | --report OUT_DIR"
BUDGETS = ("tokens", "flops", "seconds", "steps")
KEYS = {"name", "base", "out_dir", "seeds", "parallel", "threads", "baseline", "delta_previous", "note",
        "budget", "overrides", "variants", "tasks", "task_options"}
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
POLL_S = 0.5


@dataclass
class Run:
    """One (variant, seed): the `python -m train` arguments, or the reason there are none."""
    label: str
    seed: int
    out_dir: Path
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    max_steps: int = 0
    seconds: float = 0.0  # a time budget (0 = none)
    error: str = ""  # the config is invalid: nothing to run

    @property
    def name(self) -> str:
        return f"{self.label}/seed{self.seed}"


# ----- the ablation file ---------------------------------------------------------------------------
def load_spec(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read and check an ablation file; paths in it become absolute (relative to the file)."""
    path = Path(path)
    raw = read_toml(path, "ablation file")
    for item in overrides:
        _override(raw, item)
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(KEYS))}")
    here = path.resolve().parent
    for key in ("base", "out_dir", "name", "note"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{key} must be a string; got {raw[key]!r}")
    spec = {"name": raw.get("name", path.stem), "source": str(path),
            "out_dir": str(raw.get("out_dir", Path("runs") / "ablations" / path.stem)),
            "base": _config_file(here, raw["base"], "base") if "base" in raw else "",
            "seeds": raw.get("seeds", [1]), "parallel": raw.get("parallel", 1),
            "threads": raw.get("threads", 0), "delta_previous": raw.get("delta_previous", False),
            "overrides": _flatten(raw.get("overrides", {}), "overrides"), "variants": {},
            "note": raw.get("note", "")}
    seeds = spec["seeds"]
    if not (isinstance(seeds, list) and seeds and all(_is_int(s) and s >= 0 for s in seeds)
            and len(set(seeds)) == len(seeds)):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers >= 0; got {seeds!r}")
    for key, low in (("parallel", 1), ("threads", 0)):
        if not (_is_int(spec[key]) and spec[key] >= low):
            raise ConfigError(f"{key} must be an integer >= {low}; got {spec[key]!r}")
    budget = raw.get("budget", {})
    if not (isinstance(budget, dict) and len(budget) == 1 and set(budget) <= set(BUDGETS)):
        raise ConfigError(f"[budget] must set exactly one of {', '.join(BUDGETS)}; got {budget!r}")
    (kind, amount), = budget.items()
    if not (isinstance(amount, (int, float)) and not isinstance(amount, bool) and math.isfinite(amount)
            and amount > 0):
        raise ConfigError(f"budget.{kind} must be a finite number > 0; got {amount!r}")
    if kind == "steps" and not _is_int(amount):
        raise ConfigError(f"budget.steps must be an integer >= 1; got {amount!r}")
    spec["budget"] = budget
    variants = raw.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{path}: no [variants.LABEL] tables")
    for label, table in variants.items():
        if not LABEL.match(label):
            raise ConfigError(f"variant label {label!r} must be letters, digits, '.', '_' or '-'")
        if not isinstance(table, dict):
            raise ConfigError(f"variants.{label} must be a table")
        table = dict(table)
        config = table.pop("config", "")
        if config:  # a missing file, like a misspelt key, makes only this variant invalid (plan records why)
            config = _config_file(here, config, f"variants.{label}.config", must_exist=False)
        elif not spec["base"]:
            raise ConfigError(f"variants.{label} has no config and the ablation names no base")
        spec["variants"][label] = {"config": config or spec["base"], "overrides": _flatten(table, "")}
    _load_tasks(spec, raw, here)
    spec["baseline"] = raw.get("baseline", next(iter(spec["variants"])))
    if spec["baseline"] not in spec["variants"]:
        raise ConfigError(f"baseline {spec['baseline']!r} is not a variant label")
    return spec


def _load_tasks(spec: dict, raw: dict, here: Path) -> None:
    """`tasks` and `task_options` -> the train.eval arguments, checked by train.eval's own parser;
    a JSONL task file is relative to the ablation file."""
    from .eval import TASK_FLAGS, parse_args

    tasks, options = raw.get("tasks", []), raw.get("task_options", {})
    # the runner gives --json itself, and --tensorboard where the run has train.tensorboard
    flags = [f for f in TASK_FLAGS if f not in ("json", "tensorboard")]
    if not (isinstance(tasks, list) and all(isinstance(t, str) and t for t in tasks)):
        raise ConfigError(f"tasks must be a list of task names, as python -m train.eval --task takes; got {tasks!r}")
    if not isinstance(options, dict) or set(options) - set(flags):
        raise ConfigError(f"task_options must be a table of {', '.join(flags)}; got {options!r}")
    if options and not tasks:
        raise ConfigError("task_options is set but tasks is empty")
    spec["tasks"] = [str(here / t) if (here / t.partition(":")[0]).is_file() and not Path(t).is_file() else t
                     for t in tasks]
    spec["task_argv"] = [a for t in spec["tasks"] for a in ("--task", t)] + \
        [a for k, v in options.items() for a in (f"--{k}", str(v))]
    if tasks:
        args, _ = parse_args([".", *spec["task_argv"]])
        spec["task_settings"] = asdict(args.settings)


def check_tasks(spec: dict, runs: list["Run"]) -> None:
    """Build every task once, for the first valid run's tokenizer, context and data, so that a bad
    task stops the grid before any training (train.eval builds them again for each run)."""
    from .evals.tasks import TaskEnv, build_task
    from .tokenizer import get_tokenizer

    run = next((r for r in runs if not r.error), None)
    if not spec["tasks"] or run is None:
        return
    cfg = load_config(run.config, run.overrides, warn_ignored=False)
    env = TaskEnv(get_tokenizer(cfg.data.tokenizer, cfg.data.tokenizer_path), cfg.model.block_size, cfg.data)
    for task in spec["tasks"]:
        build_task(task, env)


def _config_file(here: Path, name, key: str, must_exist: bool = True) -> str:
    """A run config named in the ablation file, relative to the ablation file (an existing one
    when `must_exist`)."""
    if not isinstance(name, str):
        raise ConfigError(f"{key} must be a config file name; got {name!r}")
    path = here / name
    if must_exist and not path.is_file():
        raise ConfigError(f"{key}: config file not found: {path}")
    return str(path)


def _override(raw: dict, item: str) -> None:
    """`--key=value` on the ablation file: top-level keys, or dotted ones like budget.tokens."""
    key, sep, text = item.lstrip("-").partition("=")
    if not key or not sep:
        raise ConfigError(f"override {item!r} must look like --key=value or --section.key=value "
                          f"(e.g. --parallel=2, --budget.tokens=200_000)")
    if "." in key:
        apply_override(raw, item)
    else:
        raw[key] = override_value(text)


def _flatten(table: dict, where: str) -> list[str]:
    """{"model": {"moe": {"top_k": 1}}} -> ["--model.moe.top_k=1"] (a run config override)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of config sections")
    return [f"--{key}={_toml_value(value)}" for key, value in _flat(table).items()]


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ----- the grid ------------------------------------------------------------------------------------
def plan(spec: dict) -> list[Run]:
    """Every (variant, seed) run, its max_steps resolved from the budget, or its config error."""
    root = Path(spec["out_dir"]).resolve()
    (kind, amount), = spec["budget"].items()
    runs = []
    for seed in spec["seeds"]:
        for label, variant in spec["variants"].items():
            out = root / label / f"seed{seed}"
            overrides = [*spec["overrides"], *variant["overrides"], f"--train.seed={seed}",
                         f"--train.out_dir={_toml_value(str(out))}"]
            run = Run(label, seed, out, variant["config"], overrides)
            try:
                cfg = load_config(run.config, overrides)
                if kind == "seconds":
                    run.seconds, run.max_steps = float(amount), cfg.train.max_steps
                    run.overrides.append(f"--train.max_seconds={float(amount)!r}")
                else:  # a steps budget suits e.g. post-training, whose tokens per step vary
                    run.max_steps = amount if kind == "steps" else _steps(cfg, kind, amount)
                    run.overrides.append(f"--train.max_steps={run.max_steps}")
                load_config(run.config, run.overrides)
            except (ValueError, OSError) as e:
                run.error = str(e).splitlines()[0] if str(e) else one_line(e)
            runs.append(run)
    # The baseline's seeds first (the yardstick of seed noise), then seed-major: a grid stopped
    # part-way has every variant once rather than half the variants twice.
    return sorted(runs, key=lambda r: (r.label != spec["baseline"], spec["seeds"].index(r.seed)))


def _steps(cfg: RunConfig, kind: str, amount: float) -> int:
    """A tokens or flops budget as a number of the run's optimizer steps (at least one)."""
    tokens = amount if kind == "tokens" else amount / flops_per_token(cfg.model, cfg.seq_len)
    return max(1, round(tokens / (cfg.train.batch_size * cfg.train.grad_accum * cfg.seq_len)))


def is_done(run: Run) -> bool:
    status = read_json(run.out_dir / STATUS_FILE)
    return status.get("state") == "done" and (run.seconds > 0 or status.get("max_steps") == run.max_steps)


def progress(run: Run) -> float:
    """How far a run is, 0..1: its last logged step over max_steps (time over budget for seconds)."""
    if is_done(run):
        return 1.0
    last = last_record(run)
    if run.seconds:
        return min(1.0, last.get("elapsed_s", 0.0) / run.seconds)
    return min(1.0, last.get("step", 0) / run.max_steps)


def last_record(run: Run) -> dict:
    """The last whole metrics.jsonl record ({} if none): a finished run's last checkpoint."""
    records = read_records(run.out_dir / "metrics.jsonl")
    return records[-1] if records else {}


def needs_scoring(spec: dict, run: Run) -> bool:
    """A finished valid run whose task record is missing or stale (other tasks or settings, other checkpoint)."""
    if not spec["tasks"] or not is_done(run):
        return False
    return task_scores(spec, read_json(task_file(spec["out_dir"], run.name)), last_record(run).get("step")) is None


def run_grid(spec: dict, runs: list[Run]) -> tuple[int, int, signal.Signals | None, list[dict]]:
    """Run what is not done yet, then score what is not scored; return (failed runs, failed
    scorings, the signal that stopped us, the status of each run that signal stopped)."""
    threads = max(1, (spec["threads"] or os.cpu_count() or 1) // spec["parallel"])
    invalid, valid = [r for r in runs if r.error], [r for r in runs if not r.error]
    for run in invalid:
        write_status(run, "failed", error=run.error)
    for label, error in {r.label: r.error for r in invalid}.items():  # once per variant, not per seed
        print(f"invalid {label}: {error}", file=sys.stderr, flush=True)
    todo = [r for r in valid if not is_done(r)]
    score = [r for r in valid if needs_scoring(spec, r)]
    failed, unscored, stopped = len(invalid), 0, []
    print(f"ablation {spec['name']}: {len(runs)} runs ({len(valid) - len(todo)} done, {len(todo)} to run, "
          f"{failed} invalid)" + (f", {len(score)} done but not scored" if spec["tasks"] else "")
          + f", {spec['parallel']} at once with {threads} thread(s) each -> {spec['out_dir']}", flush=True)
    children: list[Child | Scoring] = []
    bar = tqdm(total=len(valid), unit="run", dynamic_ncols=True, mininterval=1.0,
               bar_format="{l_bar}{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}]")
    with Interrupts(children) as stop:
        while todo or score or children:
            while (todo or score) and len(children) < spec["parallel"] and stop.received is None:
                job = Scoring(spec, score.pop(0), threads) if score else Child(todo.pop(0), threads)
                children.append(job)
                bar.write(f"{'score' if isinstance(job, Scoring) else 'start':6} {job.run.name}")
            for child in list(children):
                if child.proc.poll() is None:
                    continue
                children.remove(child)
                state, detail = child.finish(stop.received is not None)
                name = child.run.name
                if isinstance(child, Scoring):
                    unscored += state == "failed"
                    name += " (tasks)"
                else:
                    failed += state == "failed"
                    stopped += [child.status] if state == "stopped" else []
                    score += [child.run] if state == "done" and spec["tasks"] else []
                bar.write(f"{state:6} {name}" + (f": {detail}" if detail else ""))
            if stop.received is not None and not children:
                break
            bar.update(sum(progress(r) for r in valid) - bar.n)
            time.sleep(POLL_S)
    bar.close()
    return failed, unscored, stop.received, stopped


def claim(out: Path, name: str) -> None:
    """A ConfigError unless `out` is new, empty, or this ablation's own folder (its ablation.json
    names it): a re-run resumes, and adds seeds or variants, but never writes over another's files."""
    owner = read_json(out / SPEC_FILE).get("name") if (out / SPEC_FILE).is_file() else None
    if owner is None and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"out_dir {out} is not empty and holds no {SPEC_FILE}; name a new or empty folder")
    if owner is not None and owner != name:
        raise ConfigError(f"out_dir {out} holds the ablation {owner!r}, not {name!r}; name another out_dir")


def main(argv: list[str]) -> int:
    if asked_for_help(argv, __doc__, USAGE):
        return 0
    if argv[0] == "--report":
        if len(argv) != 2:
            raise ConfigError(USAGE)
        print(f"report: {write_report(Path(argv[1]))}")
        return 0
    if argv[0].startswith("--"):
        raise ConfigError(f"the first argument must be an ablation file; {USAGE}")
    spec = load_spec(argv[0], argv[1:])
    runs = plan(spec)
    check_tasks(spec, runs)
    claim(Path(spec["out_dir"]), spec["name"])
    out = make_dir(Path(spec["out_dir"]), f"out_dir {spec['out_dir']}")
    saved = {k: v for k, v in spec.items() if k != "out_dir"} | {
        "runs": [{"label": r.label, "seed": r.seed, "dir": str(r.out_dir.relative_to(out.resolve()))}
                 for r in runs]}
    with run_lock(out, f"out_dir {spec['out_dir']}"):  # a second runner would restart the first's runs
        (out / SPEC_FILE).write_text(json.dumps(saved, indent=1) + "\n")
        failed, unscored, received, stopped = run_grid(spec, runs)
        print(f"report: {write_report(out)}")
    if received is not None:
        print(stop_message(received, stopped), file=sys.stderr)
        return 128 + int(received)
    if failed or unscored:
        problems = [f"{failed} of {len(runs)} runs failed (see results.md)"] if failed else []
        if unscored:
            problems.append(f"{unscored} finished run(s) could not be scored (see {out / 'tasks'}/*/*.log)")
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
