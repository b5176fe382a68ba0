"""Checkpoints that survive a kill at any moment and load without executing code.

Layout of `<out_dir>/checkpoints/step_00001000/`:
    model.safetensors  model weights (tied tensors stored once)
    train_state.pt     optimizer, grad-scaler and RNG state; plain tensors and numbers, read with
                       torch.load(weights_only=True)
    state.json         step, tokens seen and bookkeeping
    config.toml        the run config that produced it
    COMPLETE           written last: a directory without it is never loaded

A checkpoint is written into a temporary directory, every file fsync'd, then renamed into place;
a rename is atomic, so a reader sees either the whole checkpoint or none of it.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

MARKER = "COMPLETE"
PREFIX = "step_"


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    train_state: dict[str, Any],
    state: dict[str, Any],
    config_toml: str,
    keep: int = 2,
) -> Path:
    """Atomically write checkpoint `step`; then delete all but the newest `keep` (0 = keep all)."""
    root = checkpoint_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(train_state, tmp / "train_state.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    (tmp / "config.toml").write_text(config_toml)
    (tmp / MARKER).write_text("ok\n")
    for f in tmp.iterdir():
        _fsync(f)
    if final.exists():  # an older run wrote this step; the new one replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    if keep:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, map_location: str | torch.device = "cpu"):
    """Load weights into `model`; return (train_state, state). Never unpickles code."""
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=True,
                                     device=str(map_location))
    assert not missing and not unexpected, (missing, unexpected)
    train_state = torch.load(path / "train_state.pt", map_location=map_location, weights_only=True)
    state = json.loads((path / "state.json").read_text())
    return train_state, state


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
