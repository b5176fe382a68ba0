"""When a run stops early: a SIGTERM / SIGINT caught on any rank, or train.max_seconds reached on
any rank's clock; every rank then stops after the same step.

The signal handler (train/guard.py StopSignals) sets its flag at any moment and each rank's clock
runs on its own, so the loop never reads either: it reads only the values every rank agreed on, the
maximum of each rank's flags. With several ranks the flags ride in the step's one read of the
device (train_step appends `flags()` to it and hands the values read back to `set`); before the
first step, and after each step of a single process, `agree()` takes them on its own.
"""

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .guard import StopSignals
from .parallel import Dist


class StopAgreement:
    """The agreed reasons to stop: `signal` (a caught signal, or None) and `out_of_time`."""

    size = 2  # the flags: a caught signal's number or 0, and 1 if train.max_seconds is reached

    def __init__(self, max_seconds: float, elapsed_s: Callable[[], float], dist: Dist, device: torch.device):
        self.max_seconds, self.elapsed_s = max_seconds, elapsed_s
        self.dist, self.device = dist, device
        self.signals: StopSignals | None = None  # the handler, while `catching_signals` runs
        self.signal: signal.Signals | None = None
        self.out_of_time = False

    @contextmanager
    def catching_signals(self) -> Iterator[None]:
        """SIGTERM / SIGINT set the handler's flag inside the block (the previous handlers after)."""
        with StopSignals() as self.signals:
            try:
                yield
            finally:
                self.signals = None

    def local(self) -> list[float]:
        """This rank's flags."""
        received = self.signals.received if self.signals else None
        return [float(received or 0), float(0 < self.max_seconds <= self.elapsed_s())]

    def flags(self) -> torch.Tensor:
        """The flags of every rank, combined (max) on the device: to append to the step's one read."""
        return self.dist.max_(torch.tensor(self.local(), device=self.device))

    def set(self, values: list[float]) -> None:
        """Take the agreed flags, as read back from `flags()`."""
        self.signal = signal.Signals(int(values[0])) if values[0] else None
        self.out_of_time = bool(values[1])

    def agree(self) -> None:
        """Agree now, in a read of its own (one process: no read, its own flags are the agreed ones)."""
        self.set(self.flags().tolist() if self.dist.active else self.local())
