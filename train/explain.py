"""`python -m train.explain CONFIG [--vs OTHER_CONFIG] [--no-source]`: what a config changes, in code.

Compares CONFIG with configs/ladder/00-gpt2.toml (GPT-2), or with OTHER_CONFIG, and prints:
1. the [model] and [optim] fields that differ ([train] and [data] in one line);
2. the code behind them, found by building both models and comparing their modules
   (train/model_diff.py): the classes and functions CONFIG's model runs that the other's does not
   (+) and those it runs with other shapes or settings (~), in forward order, each at file:line,
   with its source (the lines that use what changed, for a changed class); the optimizer classes
   `train.optim.build_optimizer` builds, and the schedule `lr_at`, when [optim] differs;
3. the papers these classes' docstrings cite;
4. the measured effect: CONFIG's rows in docs/results/NAME/results.csv, for every ablation file
   configs/ablations/*.toml (named NAME) that ran CONFIG unchanged.
A config whose model is the other's prints the classes that model runs, their files and lines: for
GPT-2, the whole model to read in one sitting.
"""

import csv
import dataclasses
import inspect
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .ablate import load_spec
from .cli import argument_parser, run_cli
from .config import CONFIGS_DIR, OptimConfig, RunConfig, _flat, config_path, load_config
from .errors import ConfigError
from .model_diff import ROOT, Code, build, classes_run, compare, where
from .optim import build_optimizer, lr_at

BASELINE = CONFIGS_DIR / "ladder" / "00-gpt2.toml"
RESULTS_DIR = ROOT / "docs" / "results"
SCHEDULE_FIELDS = ("schedule", "warmup_steps", "decay_steps", "decay_fraction", "min_lr_ratio")
CITATION = re.compile(r"arXiv:\d{4}\.\d{4,5}|\bet al\.")
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
MAX_CITATION = 400  # characters of a citing sentence shown
SPREAD = {"True": ", beyond seed spread", "False": ", within seed spread"}  # results.csv's beyond_seed_spread
MAX_USES = 8  # lines of a changed class shown, those that use what changed


@dataclass
class Measurement:
    """One row of an ablation's results.csv that ran the config unchanged."""
    results: str  # the CSV, relative to the repository
    variant: str
    budget: str  # "196,608 tokens" per run
    baseline: str
    row: dict[str, str]

    def line(self) -> str:
        r = self.row
        if r.get("status") != "ok" or not r.get("val_bpb_mean"):
            return f"{self.results} [{self.variant}]: {r.get('status') or 'no result'} {r.get('error', '')}".rstrip()
        seeds = f"{r['seeds_done']} seed{'' if r['seeds_done'] == '1' else 's'}"
        text = (f"{self.results} [{self.variant}], {self.budget} per run, {seeds}: "
                f"val bpb {float(r['val_bpb_mean']):.4f}")
        text += f" ± {float(r['val_bpb_std']):.4f}" if r.get("val_bpb_std") else ""
        if self.variant != self.baseline and r.get("delta_bpb"):
            spread = SPREAD.get(r.get("beyond_seed_spread"), "")
            text += f"; vs {self.baseline} {float(r['delta_bpb']):+.4f}{spread}"
        if r.get("delta_bpb_previous"):
            text += f"; vs the row before {float(r['delta_bpb_previous']):+.4f}"
        return text


@dataclass
class Explanation:
    config: str
    other: str
    fields: list[tuple[str, object, object]]  # [model] and [optim] keys that differ: (key, other's, config's)
    elsewhere: list[tuple[str, object, object]]  # [train] and [data] keys that differ
    code: list[Code]
    runs: list[type]  # the project classes the config's model runs
    measurements: list[Measurement] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.code]

    def papers(self) -> list[tuple[str, str]]:
        """(where, sentence) for each sentence that cites a paper in the docstring of the listed code,
        or, when that docstring cites none, in the docstring of its module."""
        out: dict[tuple[str, str], None] = {}
        for obj in [c.obj for c in self.code] or self.runs[:1]:
            own = _citations(obj.__doc__)
            module = sys.modules[obj.__module__]
            label, found = (obj.__qualname__, own) if own else (obj.__module__, _citations(module.__doc__))
            out |= {(label, s): None for s in found}
        return list(out)


def explain(config: str, vs: str | None = None) -> Explanation:
    """Compare `config` with `vs` (default: GPT-2, configs/ladder/00-gpt2.toml)."""
    other = vs or str(BASELINE)
    mine, theirs = load_config(config, warn_ignored=False), load_config(other, warn_ignored=False)
    a, b = (_flat(dataclasses.asdict(c)) for c in (mine, theirs))
    differ = [(k, b.get(k), a.get(k)) for k in dict.fromkeys([*b, *a]) if a.get(k) != b.get(k) and k != "train.out_dir"]
    model = build(mine.model)
    code = compare(model, build(theirs.model)) + _optimizer_code(mine, theirs, len(list(model.modules())))
    return Explanation(_shown(config), _shown(other), [d for d in differ if d[0].startswith(("model.", "optim."))],
                       [d for d in differ if d[0].startswith(("train.", "data."))], code, classes_run(model),
                       measurements(config))


def measurements(config: str) -> list[Measurement]:
    """The rows of docs/results/*/results.csv that ran `config` with no change of its own."""
    path = config_path(config).resolve()
    out = []
    for ablation in sorted((CONFIGS_DIR / "ablations").glob("*.toml")):
        try:
            spec = load_spec(ablation)
        except ConfigError:  # a broken ablation file is train.ablate's to report
            continue
        results = RESULTS_DIR / spec["name"] / "results.csv"
        labels = [label for label, v in spec["variants"].items()
                  if Path(v["config"]).resolve() == path and not v["overrides"]]
        if not labels or not results.is_file():
            continue
        with results.open(newline="") as f:
            rows = {row["variant"]: row for row in csv.DictReader(f)}
        budget = " ".join(f"{v:_} {k}".replace("_", ",") for k, v in spec["budget"].items())
        out += [Measurement(str(results.relative_to(ROOT)), label, budget, spec["baseline"], rows[label])
                for label in labels if label in rows]
    return out


def render(e: Explanation, source: bool = True) -> str:
    out = [f"{e.config} vs {e.other}", "", "1. Fields that differ"]
    out += [f"  {key}: {_value(old)} -> {_value(new)}" for key, old, new in e.fields] or [
        "  none in [model] or [optim]"]
    if e.elsewhere:
        out.append("  also, not in the model: " + ", ".join(f"{k} {_value(o)} -> {_value(n)}"
                                                            for k, o, n in e.elsewhere))
    if e.code:
        out += ["", "2. Code (+ runs only here, ~ runs here with other shapes or settings; forward order)"]
        out += [line for c in e.code for line in _code_lines(c, source)]
    else:
        out += ["", "2. Code: the same model" + (", the baseline: GPT-2" if e.other == _shown(str(BASELINE)) else "")
                + ". It runs these classes (forward order):"]
        out += _listing(e.runs)
    out += ["", "3. Papers (docstrings: the class's, else its module's)"]
    out += [textwrap.fill(f"{name}: {s}", 100, initial_indent="  ", subsequent_indent="      ")
            for name, s in e.papers()] or ["  none cited"]
    out += ["", "4. Measured effect"]
    out += [f"  {m.line()}" for m in e.measurements] or [
        f"  no measurement: no ablation in configs/ablations/ with a report in docs/results/ ran {e.config} unchanged"]
    return "\n".join(out)


def _code_lines(c: Code, source: bool) -> list[str]:
    file, start, n = where(c.obj)
    out = [f"  {'+' if c.new else '~'} {c.name}  {file}:{start}"] + [f"      {line}" for line in c.change_lines()]
    if not source:
        return out
    lines = inspect.getsourcelines(c.obj)[0]
    if c.new:
        return out + [f"    {start + i:4d}| {line.rstrip()}" for i, line in enumerate(lines)]
    uses = re.compile("|".join(rf"\.{re.escape(n)}\b|[\"']{re.escape(n)}[\"']" for n in sorted(c.names)) or "$^")
    hits = [(start + i, line) for i, line in enumerate(lines) if uses.search(line)]
    out += [f"    {i:4d}| {line.rstrip()}" for i, line in hits[:MAX_USES]]
    return out + ([f"          ... {len(hits) - MAX_USES} more lines use them"] if len(hits) > MAX_USES else [])


def _listing(classes: list[type]) -> list[str]:
    """file:line and length of each class, then the total: what a reader of this model reads."""
    rows = [(c.__qualname__, *where(c)) for c in classes]
    width = max(len(name) for name, *_ in rows)
    out = [f"  {name:<{width}}  {f'{file}:{start}':<30} {n:4d} lines" for name, file, start, n in rows]
    files = {file for _, file, _, _ in rows}
    return out + [f"  total: {sum(r[3] for r in rows)} lines in {len(files)} files"]


def _optimizer_code(mine: RunConfig, theirs: RunConfig, order: int) -> list[Code]:
    """The optimizer classes `mine` builds and `theirs` does not; `lr_at` when the schedule differs."""
    out = []
    if mine.optim.name != theirs.optim.name:
        change = {f"optim.name: {_value(theirs.optim.name)} -> {_value(mine.optim.name)}": {-1}}
        other = set(_optimizer_classes(theirs.optim))
        out += [Code(c, True, order, dict(change)) for c in _optimizer_classes(mine.optim) if c not in other]
    schedule = {f"optim.{k}: {_value(getattr(theirs.optim, k))} -> {_value(getattr(mine.optim, k))}": {-1}
                for k in SCHEDULE_FIELDS if getattr(mine.optim, k) != getattr(theirs.optim, k)}
    return out + ([Code(lr_at, False, order + 1, schedule, {"schedule", *SCHEDULE_FIELDS})] if schedule else [])


def _optimizer_classes(cfg: OptimConfig) -> list[type]:
    """The classes `build_optimizer` makes for `cfg` (on a two-matrix stand-in), outermost first."""
    opt = build_optimizer(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), cfg, "cpu")
    return [type(opt), *(type(v) for v in vars(opt).values() if isinstance(v, torch.optim.Optimizer))]


def _citations(doc: str | None) -> list[str]:
    """The sentences of a docstring that cite a paper; paragraphs and list items end a sentence."""
    blocks = re.split(r"\n\s*\n|\n\s*- ", doc or "")
    sentences = [s for block in blocks for s in SENTENCE.split(" ".join(block.split()))]
    return [s if len(s) <= MAX_CITATION else s[:MAX_CITATION] + " ..." for s in sentences if CITATION.search(s)]


def _value(v: object) -> str:
    return {True: "true", False: "false"}.get(v, f'"{v}"') if isinstance(v, (bool, str)) else repr(v)


def _shown(config: str) -> str:
    path = config_path(config).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else config


def main(argv: list[str]) -> int:
    p = argument_parser("python -m train.explain", __doc__)
    p.add_argument("config", metavar="CONFIG", help="a config file, or preset:NAME")
    p.add_argument("--vs", default=None, metavar="OTHER_CONFIG", help="the config to compare with (default: configs/ladder/00-gpt2.toml)")
    p.add_argument("--no-source", dest="source", action="store_false", help="print the listing only, no source")
    args = p.parse_args(argv)
    print(render(explain(args.config, args.vs), args.source))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
