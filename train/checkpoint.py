"""Checkpoints that survive a kill at any moment and load without executing code.

Layout of `<out_dir>/checkpoints/step_00001000/`:
    model.safetensors  model weights (tied tensors stored once)
    train_state.pt     optimizer, grad-scaler and RNG state; plain tensors and numbers, read with
                       torch.load(weights_only=True)
    state.json         step, tokens seen and bookkeeping
    config.toml        the run config that produced it
    COMPLETE           written last: a JSON manifest of the files above (size and SHA-256 of each);
                       a directory without it is never loaded

A checkpoint is written into a temporary directory `.tmp-step_...-<pid>`, every file fsync'd, then
renamed into place; a rename is atomic, so a reader sees either the whole checkpoint or none of it.
A writer killed half-way leaves only its temporary directory, which the next run deletes. A
checkpoint that fails its manifest (truncated, bit-flipped) or cannot be parsed is reported and
skipped in favour of the previous one (`load_newest`), as in torchtitan / PyTorch DCP.
"""

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_file

from .errors import one_line

MARKER = "COMPLETE"
PREFIX = "step_"
TMP_PREFIX = ".tmp-"
FILES = ("model.safetensors", "train_state.pt", "state.json", "config.toml")
T = TypeVar("T")


class CheckpointCorrupt(ValueError):
    """A checkpoint directory whose files are truncated, altered or unreadable."""


class CheckpointMismatch(ValueError):
    """A readable checkpoint that does not fit the model or the run it is loaded into."""


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def step_of(checkpoint: Path) -> int:
    """The step of checkpoint directory `step_00001000`: 1000."""
    return int(checkpoint.name[len(PREFIX):])


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit() and (p / MARKER).is_file()]
    return sorted(found, key=step_of)  # folders not named step_N are not ours


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    return next(reversed(list_checkpoints(out_dir)), None)


def save_checkpoint(out_dir: str | Path, step: int,
                    weights: tuple[dict[str, torch.Tensor], dict[str, str]],
                    train_state: dict[str, Any], state: dict[str, Any], config_toml: str,
                    keep: int = 2) -> Path:
    """Atomically write checkpoint `step`; then delete all but the newest `keep` (0 = keep all).

    `weights` is (tensors, aliases) as train/parallel.py's full_model_state returns them: the
    whole model, whatever the parallel layout that trained it, so that any layout can resume it.

    A failed write (disk full, I/O error, an interrupt) removes the temporary directory and
    raises OSError; the checkpoints already on disk are untouched.
    """
    root = checkpoint_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        tensors, aliases = weights  # tied names are stored once; aliases map each dropped name to it
        save_file(tensors, str(tmp / "model.safetensors"), metadata=aliases or None)
        torch.save(train_state, tmp / "train_state.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        (tmp / "config.toml").write_text(config_toml)
        for name in FILES:
            _fsync(tmp / name)
        manifest = {"files": {name: _describe(tmp / name) for name in FILES}}
        (tmp / MARKER).write_text(json.dumps(manifest, indent=2) + "\n")
        _fsync(tmp / MARKER)
        _fsync(tmp)
    except (OSError, SafetensorError, RuntimeError) as e:  # torch.save's writer: RuntimeError on a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e)
        raise OSError(f"could not write checkpoint {final} ({reason}); the earlier checkpoints are untouched") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # an older run (or a corrupt copy we fell back from) wrote this step
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    if keep:
        for old in list_checkpoints(out_dir)[:-keep]:
            (old / MARKER).unlink()  # first, so that a half-deleted directory is never loaded
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temps(out_dir: str | Path) -> None:
    """Delete `.tmp-*` directories left by writers that were killed. A directory whose writer (the
    pid in its name) is still alive and is not this process is kept: it may be writing it now."""
    root = checkpoint_dir(out_dir)
    for path in root.glob(TMP_PREFIX + "*") if root.is_dir() else []:
        pid = path.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)


def verify_checkpoint(path: Path) -> None:
    """Check every file against the manifest in COMPLETE; raise CheckpointCorrupt if one differs."""
    try:
        files = json.loads((path / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointCorrupt(f"{path.name}: unreadable {MARKER} marker ({one_line(e)})") from None
    if not isinstance(files, dict):
        raise CheckpointCorrupt(f"{path.name}: unreadable {MARKER} marker (its files are not a table)")
    for name in FILES:
        expected = files.get(name)
        if not isinstance(expected, dict):
            raise CheckpointCorrupt(f"{path.name}: {name} is not in the manifest")
        try:
            actual = _describe(path / name)
        except OSError as e:
            raise CheckpointCorrupt(f"{path.name}: {name} is unreadable ({e.strerror or e})") from None
        if actual["bytes"] != expected.get("bytes"):
            raise CheckpointCorrupt(f"{path.name}: {name} has {actual['bytes']} bytes, "
                                    f"expected {expected.get('bytes')} (truncated?)")
        if actual["sha256"] != expected.get("sha256"):
            raise CheckpointCorrupt(f"{path.name}: {name} does not match its SHA-256 (corrupted)")


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointCorrupt(f"{path.name}: unreadable state.json ({one_line(e)})") from None


def load_checkpoint(path: Path, model: torch.nn.Module, map_location: str | torch.device = "cpu",
                    verify: bool = True):
    """Verify (unless already done), then load weights into `model`; return (train_state, state).
    Never unpickles code.

    Raises CheckpointCorrupt for damaged files and CheckpointMismatch when the weights do not fit
    `model` (another architecture).
    """
    if verify:
        verify_checkpoint(path)
    state = read_state(path)
    try:  # weights_only: tensors, numbers, strings and containers; any other object is refused
        train_state = torch.load(path / "train_state.pt", map_location=map_location, weights_only=True)
    except Exception as e:  # refused object (UnpicklingError), truncation (EOFError, RuntimeError), I/O
        raise CheckpointCorrupt(f"{path.name}: train_state.pt is not loadable with "
                                f"weights_only=True ({one_line(e)})") from None
    try:
        load_model(model, str(path / "model.safetensors"), strict=True, device=str(map_location))
    except SafetensorError as e:
        raise CheckpointCorrupt(f"{path.name}: unreadable model.safetensors ({one_line(e)})") from None
    except RuntimeError as e:  # missing, unexpected or differently shaped tensors
        raise CheckpointMismatch(f"checkpoint {path} does not fit this model "
                                 f"({one_line(e)}); it was written for another architecture") from None
    return train_state, state


def load_newest(out_dir: str | Path, load: Callable[[Path], T]) -> tuple[Path, T] | None:
    """Call `load(path)` on the newest complete checkpoint; if it raises CheckpointCorrupt, warn and
    try the one before. None when there is no checkpoint; ValueError when none of them loads."""
    found = list_checkpoints(out_dir)
    problems = []
    for path in reversed(found):
        try:
            return path, load(path)
        except CheckpointCorrupt as e:
            problems.append(str(e))
            print(f"warning: skipping checkpoint {path} ({e}); trying the previous one",
                  file=sys.stderr)
    if found:
        raise CheckpointCorrupt(f"no checkpoint in {checkpoint_dir(out_dir)} could be loaded: "
                                + "; ".join(problems))
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
