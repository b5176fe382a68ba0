"""A JSONL file of post-training records, split into train and validation lines.

A hash of each line (not its position) puts it in the validation split with probability
`val_fraction`, so the split is the same on every machine and a line keeps its split when others
are added. A line that is not JSON, or that `parse` refuses, is a one-line ConfigError naming
file:line.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError


def read_split(path: Path, val_fraction: float, parse: Callable[[object, str], object]) -> dict[str, list]:
    """{"train": [...], "val": [...]}: parse(record, "file:line") of every non-empty line."""
    out = {"train": [], "val": []}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ConfigError(f"{path}:{n}: not JSON ({str(e).splitlines()[0]})") from None
            u = int.from_bytes(hashlib.blake2b(line.strip().encode(), digest_size=8).digest(), "big") / 2**64
            out["val" if u < val_fraction else "train"].append(parse(record, f"{path}:{n}"))
    return out
