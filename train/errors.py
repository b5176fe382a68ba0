"""The error vocabulary of the trainer: user mistakes, and squeezing an exception into one line.

Kept free of imports from the rest of `train`, so that every module can use it without a cycle.
"""

from pathlib import Path


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
