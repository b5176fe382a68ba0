"""The error vocabulary of the trainer: user mistakes, squeezing an exception into one line, and
writing a folder so that a failure leaves nothing behind.

Kept free of imports from the rest of `train`, so that every module can use it without a cycle.
"""

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError


class ConfigError(ValueError):
    """A user mistake in a config file or an override; the CLI prints it as one line."""


def one_line(e: BaseException, limit: int = 200) -> str:
    """`Type: message` with whitespace collapsed and cut to `limit`, for quoting inside an error."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + "..."


def at_least(value: int, name: str, minimum: int, note: str = "") -> None:
    """A ConfigError naming the setting or flag `name` when `value` is below `minimum`."""
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}{note}; got {value}")


class DistributedError(RuntimeError):
    """Another rank died, hung past train.dist_timeout_s or cannot be reached; the CLI prints it
    as one line on every surviving rank."""


def make_dir(path: Path, where: str) -> Path:
    """mkdir -p `path`, or a ValueError (one line, exit 1) naming the setting `where` it came from."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{where}: cannot create it ({e.strerror or e})") from None
    return path


@contextlib.contextmanager
def staged_dir(out: Path, where: str) -> Iterator[Path]:
    """A new hidden folder beside `out` to write into, which becomes `out` (absent, or an empty
    folder) when the block ends. If the block raises, the folder is removed, so a failed write (a
    full disk) leaves nothing behind and a retry is not refused; safetensors' own write error
    becomes an OSError (one line, exit 1)."""
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
