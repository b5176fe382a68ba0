"""A finished (or interrupted) training run as something to use: its config, model and tokenizer.

A run directory (`train.out_dir`) holds `config.toml`, `tokenizer.json`, `metrics.jsonl` and
`checkpoints/step_XXXXXXXX/`. `load_run(run_dir)` rebuilds the model from the newest complete
checkpoint (a damaged one falls back to the previous, as on resume), or from `step=` when asked.
sample.py, eval.py and export.py call it; so does a user in Python (`load_run("runs/default").model`).
The model package knows nothing of this layout. Nothing here writes into the run.
"""

from dataclasses import dataclass
from pathlib import Path

from model import GPT

from . import checkpoint as ckpt
from .config import RunConfig, load_config
from .errors import ConfigError


@dataclass
class LoadedRun:
    run_dir: Path
    checkpoint: Path  # the checkpoint directory the weights came from
    step: int
    cfg: RunConfig  # the checkpoint's own config.toml
    model: GPT  # on the CPU, in fp32, in eval mode


def is_run_dir(path: str | Path) -> bool:
    """A directory that `python -m train` wrote: a config.toml next to a checkpoints/ folder."""
    path = Path(path)
    return (path / "config.toml").is_file() and ckpt.checkpoint_dir(path).is_dir()


def check_run_dir(path: str | Path) -> Path:
    """`path` as a run directory, or a ConfigError saying what it is instead and what to pass."""
    path = Path(path).expanduser()
    here = path.resolve()
    for parent in (here, here.parent):  # checkpoints/step_X or checkpoints/ given by mistake
        if parent.name == ckpt.checkpoint_dir("").name and is_run_dir(parent.parent):
            step = here.name[len(ckpt.PREFIX):]
            hint = f" with --step {int(step)}" if here.name.startswith(ckpt.PREFIX) and step.isdigit() else ""
            raise ConfigError(f"{path} is inside the run directory {parent.parent}; pass that "
                              f"directory{hint}")
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run directory (train.out_dir of a training run)")
    if not (path / "config.toml").is_file():
        raise ConfigError(f"{path} is not a training run (no config.toml); train one with python -m train")
    return path


def load_run(run_dir: str | Path, step: int | None = None) -> LoadedRun:
    """The model of a run: the newest complete checkpoint, or checkpoint `step`."""
    run_dir = check_run_dir(run_dir)
    found = {ckpt.step_of(p): p for p in ckpt.list_checkpoints(run_dir)}
    if step is not None:
        if step not in found:
            have = ", ".join(map(str, found)) or "none"
            raise ConfigError(f"{run_dir} has no complete checkpoint at step {step}; it has: {have}")
        path, (cfg, model) = found[step], _load(found[step])
    else:
        newest = ckpt.load_newest(run_dir, _load)
        if newest is None:
            raise ConfigError(f"{run_dir} has no complete checkpoint yet (the first is written at "
                              "train.ckpt_interval or at the end of the run)")
        path, (cfg, model) = newest
    return LoadedRun(run_dir, path, ckpt.step_of(path), cfg, model)


def run_config(run_dir: str | Path, overrides: list[str] = ()) -> RunConfig:
    """The run's resolved config.toml with `overrides` applied (its own keys stay silent)."""
    return load_config(check_run_dir(run_dir) / "config.toml", overrides, warn_ignored=False, resolved=True)


def _load(path: Path) -> tuple[RunConfig, GPT]:
    """The checkpoint's config (data, never executed) and its model with the saved weights."""
    ckpt.verify_checkpoint(path)
    cfg = load_config(path / "config.toml", warn_ignored=False, resolved=True)  # not its init_from again
    model = GPT(cfg.model)
    ckpt.load_checkpoint(path, model, verify=False)
    return cfg, model.eval()
