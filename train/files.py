"""Writing files so that a failure or a second process cannot spoil them.

- `staged_dir`: a folder written beside its final name and renamed into place when complete, so
  a failed write (a full disk) leaves nothing behind and a retry is not refused.
- `locked`: an exclusive lock on a file (flock: the OS drops it when the process ends, even by
  kill -9), for a run directory one process trains in, or a data cache two ranks fill at once.

Kept free of imports from the rest of `train` but errors, so that every module can use it.
"""

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError

from .errors import make_dir, one_line

try:
    import fcntl
except ImportError:  # Windows has no flock: no lock there
    fcntl = None


@contextlib.contextmanager
def staged_dir(out: Path, where: str) -> Iterator[Path]:
    """A new hidden folder beside `out` to write into, which becomes `out` (absent, or an empty
    folder) when the block ends. If the block raises, the folder is removed; safetensors' own
    write error becomes an OSError (one line, exit 1)."""
    parent = make_dir(out.absolute().parent, where)
    staging = parent / f".{out.name}.{secrets.token_hex(4)}.partial"
    try:
        staging.mkdir()
        yield staging
        os.replace(staging, out)
    except SafetensorError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(f"could not write {out} ({one_line(e)})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def locked(path: Path, where: str = "") -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing, and holding this process's pid) while the
    block runs. Without `where`, wait for it; with `where`, a ValueError naming it and the holder's
    pid if another process holds the lock."""
    with open(path, "a+") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (fcntl.LOCK_NB if where else 0))
            except BlockingIOError:
                f.seek(0)
                raise ValueError(f"{where} is in use by another process (pid {f.read().strip() or '?'}); wait "
                                 "for it to end, or use another directory") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
