"""The processes of an ablation grid (train/ablate.py): a training run per (variant, seed), a
train.eval scoring of each finished run on the ablation's tasks, their status files, and the
signals the runner forwards to them.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .config import load_config
from .metrics_log import write_atomic
from .report import STATUS_FILE, task_file


def write_status(run, state: str, **extra) -> dict:
    """Write <run>/status.json (whole or not at all); return it."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    status = {"state": state, "label": run.label, "seed": run.seed, "max_steps": run.max_steps, **extra}
    write_atomic(run.out_dir / STATUS_FILE, json.dumps(status, indent=1) + "\n")
    return status


class Child:
    """A running `python -m train` for one Run, its output appended to <run>/train.log."""

    def __init__(self, run, threads: int) -> None:
        self.run, self.status = run, {}  # status: what finish() wrote to status.json
        run.out_dir.mkdir(parents=True, exist_ok=True)
        with open(run.out_dir / "train.log", "a") as log:
            self.log_start = log.seek(0, os.SEEK_END)  # this launch's part of the log begins here
            self.proc = _spawn(["train", run.config, *run.overrides], log, threads)

    def finish(self, interrupted: bool) -> tuple[str, str]:
        """Record how the child ended in status.json (also kept as `self.status`); return
        ("done" | "stopped" | "failed", the error line)."""
        code = self.proc.returncode
        if code == 0:
            state, extra = "done", {}
        elif code in (130, 143) or (interrupted and code < 0):
            state, extra = "stopped", checkpoint_saved(self.log(), code)
        else:
            state, extra = "failed", {"error": _error_line(self.log(), code)}
        self.status = write_status(self.run, state, exit_code=code, **extra)
        return state, self.status.get("error", "")

    def log(self) -> str:
        """What this launch wrote to train.log (earlier launches' lines left out)."""
        with open(self.run.out_dir / "train.log", "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")


class Scoring:
    """A running `python -m train.eval` scoring one finished run on the ablation's tasks; its log
    beside the record it writes."""

    def __init__(self, spec: dict, run, threads: int) -> None:
        self.run, self.path = run, task_file(spec["out_dir"], run.name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # a stale record: train.eval writes only a new file
        args = ["train.eval", str(run.out_dir), *spec["task_argv"], "--json", str(self.path)]
        if load_config(run.config, run.overrides, warn_ignored=False).train.tensorboard:
            args.append("--tensorboard")
        with open(self.path.with_suffix(".log"), "w") as log:
            self.proc = _spawn(args, log, threads)

    def finish(self, interrupted: bool) -> tuple[str, str]:
        """("scored" | "stopped" | "failed", the error line)."""
        code = self.proc.returncode
        if code == 0:
            return "scored", ""
        if interrupted:
            return "stopped", ""
        return "failed", _error_line(self.path.with_suffix(".log").read_text(errors="replace"), code)


def _spawn(args: list[str], log, threads: int) -> subprocess.Popen:
    """`python -m ARGS` with `threads` CPU threads, its output appended to `log`. Its own process
    group (a new Unix session): a Ctrl-C at the terminal reaches only the runner, which forwards
    exactly one signal (two would skip the trainer's checkpoint)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                           *filter(None, [os.environ.get("PYTHONPATH")])]))
    log.write(f"$ python -m {' '.join(args)}\n")
    log.flush()
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def checkpoint_saved(log: str, code: int) -> dict:
    """How a stopped child ended, from its own log: the trainer's clean stop prints "checkpoint
    saved"; a second signal (or one before training began) ends it with an error line and none."""
    if code in (130, 143) and any("stopped by " in line and "checkpoint saved" in line
                                  for line in log.splitlines()):
        return {"checkpoint_saved": True}
    return {"checkpoint_saved": False, "error": _error_line(log, code)}


def stop_message(sig: signal.Signals, stopped: list[dict]) -> str:
    """The runner's last line after a signal, from the status.json of each run it stopped."""
    lost = [f"{s.get('label')}/seed{s.get('seed')}" for s in stopped if not s.get("checkpoint_saved")]
    if not lost:
        saved = "checkpoints saved, " if stopped else ""
        return f"stopped by {sig.name}; {saved}re-run the same command to resume"
    return (f"stopped by {sig.name}; {len(lost)} of {len(stopped)} stopped run(s) without a final checkpoint "
            f"({', '.join(lost)}: the steps since their last checkpoint are lost); re-run the same command "
            f"to resume")


def _error_line(log: str, code: int) -> str:
    lines = [line for line in log.splitlines() if line.startswith("error: ")]
    if lines:
        return lines[-1][len("error: "):]
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code} (see train.log)"


class Interrupts:
    """While active, SIGINT / SIGTERM are recorded and forwarded to the running children, not raised."""

    def __init__(self, children: list[Child | Scoring]) -> None:
        self.children, self.received, self._old = children, None, {}

    def __enter__(self) -> "Interrupts":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum)
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(signum)
