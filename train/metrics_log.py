"""metrics.jsonl, the record of a run's numbers, and its optional TensorBoard mirror.

Rank 0 appends one JSON line per logged step. A resumed run first drops the lines past its
checkpoint (those steps run again) and a last line cut short by a kill.

With `train.tensorboard = true` the numbers of each line are also written as TensorBoard scalars in
`<out_dir>/tensorboard/` (`tensorboard --logdir runs`), at global step = the line's step, tagged
with its keys (`loss`, `lr`, `val_bpb`, ...; a list such as `moe_max_load` as `moe_max_load/0`, ...).
metrics.jsonl stays the record: the writer opens with `purge_step` = the resumed step + 1, so that
TensorBoard hides what a killed run wrote past its checkpoint, as the lines are dropped here.
Events reach the disk at each evaluation and at `close()`. `add_scalars` adds other numbers later
(task scores from the evaluation code). The package is optional (the `tensorboard` extra) and is
imported only when asked for.
"""

import json
import math
import os
from pathlib import Path

from .errors import ConfigError, one_line

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
INSTALL = "train.tensorboard = true needs the tensorboard package: pip install -e '.[tensorboard]'"


class MetricsLog:
    """A run's metrics.jsonl and, with `tensorboard`, its scalars; rank 0 writes them."""

    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.tensorboard_dir = Path(run_dir) / TENSORBOARD_DIR
        # imported now, so that a missing package fails before any work
        self._writer_class = summary_writer_class() if tensorboard else None
        self._writer = None

    def truncate(self, step: int) -> None:
        """Drop the lines logged after `step` (the checkpoint a run resumes from; 0 without one)."""
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= step]
            write_atomic(self.path, "".join(line + "\n" for line in kept))

    def open(self, after_step: int) -> None:
        """Start the TensorBoard writer, if asked for, for the steps after `after_step`."""
        if self._writer_class is not None:
            self._writer = self._writer_class(log_dir=str(self.tensorboard_dir), purge_step=after_step + 1)

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for tag, value in scalars(record).items():
                self._writer.add_scalar(tag, value, global_step=record["step"])
            if "val_loss" in record:
                self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record by tag: ints and floats (not bools, not the step itself),
    and each element of a list of numbers as `key/i`."""
    out = {}
    for key, value in record.items():
        for i, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "step":
                out[key if i is None else f"{key}/{i}"] = float(v)
    return out


def add_scalars(run_dir: str | Path, step: int, values: dict[str, float]) -> None:
    """Add `values` ({"task/stdlib-cloze/acc_norm": 0.3, ...}) at `step` to the TensorBoard scalars
    of the run in `run_dir`, beside its training metrics (in an event file of their own)."""
    with summary_writer_class()(log_dir=str(Path(run_dir) / TENSORBOARD_DIR)) as writer:
        for tag, value in values.items():
            writer.add_scalar(tag, float(value), global_step=step)


def summary_writer_class() -> type:
    """torch's SummaryWriter, or a one-line ConfigError saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and (e.name or "").partition(".")[0] == "tensorboard"
        raise ConfigError(INSTALL if missing else f"{INSTALL} ({one_line(e)})") from None
    return SummaryWriter


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; infinity for a line that is not a whole record."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` in one step: a reader (or a kill) sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
