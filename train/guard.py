"""Guards around a training run: clean stops on signals, a writable out_dir, finite weights, OOM hints.

- `StopSignals`: while active, SIGTERM and SIGINT only set a flag; the trainer finishes the step,
  writes a checkpoint and exits with code 128 + signal number (143 for SIGTERM, 130 for SIGINT,
  the shell's convention for "ended by this signal"). A second signal stops at once.
- `check_out_dir`: creates train.out_dir and writes a probe file into it before any work starts,
  so a path that is a file or is not writable fails in the first second, not at the first
  checkpoint hours later. A directory holding someone else's config.toml, tokenizer.json or
  metrics.jsonl (files a run overwrites) and no checkpoints is refused, not overwritten.
- `run_lock`: one process at a time trains in an out_dir (or runs an ablation in one); a second,
  e.g. the same command started twice, is refused instead of interleaving its files with the first's.
- `check_same_run`: resuming with a different [model] or [data] is refused, naming the keys.
- `check_same_tokenizer`: resuming with other BPE ranks (tokenizer.json's hash) is refused too.
- `thread_warning`: resuming a CPU run with another thread count is allowed, with a warning that
  the losses will no longer match an uninterrupted run's bit for bit.
- `all_finite`: the trainer never checkpoints a model with a NaN or infinite weight.
- `oom_message`: the one-line advice for a CUDA out-of-memory error.
"""

import os
import signal
import threading
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import ConfigError, RunConfig, config_differences
from .files import locked
from .metrics_log import write_atomic
from .tokenizer import recorded


class StopSignals:
    """Context manager: SIGTERM / SIGINT set `self.received` (a signal name) instead of killing.

    The previous handlers come back on exit. Outside the main thread signals cannot be caught
    in Python, and it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # asked twice: stop now, without the checkpoint
            self.__exit__()
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} received twice; "
                                    "stopped without a final checkpoint")
        self.received = signal.Signals(signum)


# The first line of the config.toml a run writes: what tells a run killed before its first
# checkpoint (resumable from scratch) from a directory of files that are not ours.
RUN_CONFIG_HEADER = "# The resolved config of this run, written by python -m train.\n"
RUN_FILES = ("config.toml", "tokenizer.json", "metrics.jsonl")  # what a starting run overwrites


def check_out_dir(out_dir: Path) -> None:
    """Create out_dir and prove it is writable; raise ValueError naming train.out_dir if not, or
    ConfigError if it holds files a run would overwrite that no run wrote."""
    where = f"train.out_dir={str(out_dir)!r}"
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{where} is a file, not a directory")
    theirs = [name for name in RUN_FILES if (out_dir / name).exists()]
    if theirs and not ckpt.checkpoint_dir(out_dir).is_dir() and not _written_by_a_run(out_dir / "config.toml"):
        raise ConfigError(f"{where} holds {', '.join(theirs)} but no run (no checkpoints/, and no config.toml "
                          "that python -m train wrote); a run would overwrite them: use another train.out_dir")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-probe-{os.getpid()}"
        write_atomic(probe, "ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{where} is not writable ({e.strerror or e})") from None


LOCK_FILE = ".lock"


def run_lock(out_dir: Path, where: str):
    """Held while one process trains in out_dir (or runs an ablation in it): `files.locked` on
    out_dir/.lock, a ValueError naming `where` if another process holds it."""
    return locked(out_dir / LOCK_FILE, where)


def _written_by_a_run(config_toml: Path) -> bool:
    try:
        with open(config_toml) as f:
            return f.readline() == RUN_CONFIG_HEADER
    except (OSError, UnicodeDecodeError):
        return False


def check_same_run(path: Path, cfg: RunConfig, data_fingerprint: str | None) -> None:
    """Raise ConfigError if checkpoint `path` was written with another [model], [data] or corpus."""
    diffs = config_differences((path / "config.toml").read_text(), cfg)
    saved = ckpt.read_state(path).get("data_fingerprint")
    if saved and saved != data_fingerprint:
        diffs.append(f"data fingerprint: {saved} -> {data_fingerprint} "
                     "(the corpus or its tokenization changed)")
    if diffs:
        raise ConfigError(
            f"{path.parent.parent} holds a run with a different config ({'; '.join(diffs)}); use "
            "another train.out_dir, or --train.allow_config_change=true to resume anyway")


def check_same_tokenizer(run_dir: Path, current: dict) -> None:
    """Refuse to resume with other BPE ranks than the run trained with (a different ranks file
    of the same size would re-map every token id the model has learned)."""
    record = recorded(run_dir)
    if record.get("ranks_sha256", "") != current["ranks_sha256"]:
        raise ConfigError(f"data.tokenizer_path: the ranks in {current['path'] or 'tiktoken cache'} "
                          f"differ from those this run trained with ({record.get('path') or 'tiktoken cache'}); "
                          "use the same ranks file, or --train.allow_config_change=true")


def all_finite(model: torch.nn.Module) -> bool:
    """True when every parameter and buffer is finite (one reduction per tensor)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    tensors = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]  # this rank's shards
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def oom_message(batch_size: int, grad_accum: int, device: str) -> str:
    """Advice for an out-of-memory error: the same tokens per step in smaller micro-batches."""
    if batch_size > 1:
        d = next(d for d in range(2, batch_size + 1) if batch_size % d == 0)  # smallest divisor
        fix = (f"try --train.batch_size={batch_size // d} --train.grad_accum={grad_accum * d} "
               f"(the same tokens per step in smaller micro-batches)")
    else:
        fix = ("train.batch_size is already 1: lower train.seq_len, use train.dtype=bf16, "
               "or train a smaller model")
    return (f"out of memory on {device} with train.batch_size={batch_size}, "
            f"train.grad_accum={grad_accum}; {fix}")


def thread_warning(path: Path, saved: int | None, device: torch.device) -> str | None:
    """Why a CPU run resumed from checkpoint `path` will not repeat its uninterrupted losses bit
    for bit, or None: a CPU kernel splits its sums across its threads, so another thread count
    rounds them differently (step 10 of configs/default.toml: 3.729215145 with 2, 3.729215384 with 1)."""
    now = torch.get_num_threads()
    if device.type != "cpu" or saved is None or saved == now:
        return None
    return (f"checkpoint {path.name} was written with {saved} CPU threads and this process has {now}: "
            f"the losses from here differ in float rounding from a run that kept {saved} "
            f"(OMP_NUM_THREADS={saved} resumes it bit for bit)")
