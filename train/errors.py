"""The error vocabulary of the trainer: user mistakes, and squeezing an exception into one line.

Kept free of imports from the rest of `train`, so that every module can use it without a cycle.
"""


class ConfigError(ValueError):
    """A user mistake in a config file or an override; the CLI prints it as one line."""


def one_line(e: BaseException, limit: int = 200) -> str:
    """`Type: message` with whitespace collapsed and cut to `limit`, for quoting inside an error."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + "..."


class DistributedError(RuntimeError):
    """Another rank died, hung past train.dist_timeout_s or cannot be reached; the CLI prints it
    as one line on every surviving rank."""
