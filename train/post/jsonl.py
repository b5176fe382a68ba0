"""Post-training records from a JSONL file or a Hugging Face dataset, split into train and val.

`post.data` names them:
    PATH.jsonl                   one JSON record per line
    hf:NAME[:CONFIG][@SPLIT]     a Hugging Face dataset (the `datasets` package and a network, or
                                 its cache; SPLIT defaults to train), e.g. hf:openai/gsm8k:main
A hash of each record's text (the line, or the record as sorted JSON) puts it in the validation
split with probability `val_fraction`, so the split is the same on every machine and a record
keeps its split when others are added. A record that is not JSON, or that `parse` refuses, is a
one-line ConfigError naming where it is (file:line, or dataset[index]).
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from ..data import unit_hash
from ..errors import ConfigError, one_line

HF = "hf:"


def read_split(data: str, val_fraction: float, parse: Callable[[object, str], object], what: str) -> dict[str, list]:
    """{"train": [...], "val": [...]}: parse(record, where) of every record of `data`; `what`
    says what the records should be, for the error when there is no such file."""
    out = {"train": [], "val": []}
    for text, record, where in (_hf_records(data) if data.startswith(HF) else _file_records(data, what)):
        out["val" if unit_hash(text) < val_fraction else "train"].append(parse(record, where))
    return out


def _file_records(data: str, what: str) -> Iterator[tuple[str, object, str]]:
    path = Path(data)
    if not path.is_file():
        raise ConfigError(f"post.data={data!r}: no such file ({what}, hf:NAME, or task:SPEC)")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ConfigError(f"{path}:{n}: not JSON ({str(e).splitlines()[0]})") from None
            yield line.strip(), record, f"{path}:{n}"


def _hf_records(data: str) -> Iterator[tuple[str, object, str]]:
    spec, _, split = data[len(HF):].partition("@")
    name, _, config = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"post.data={data!r} needs the datasets package (pip install datasets)") from None
    try:
        records = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as e:  # network, unknown dataset or split: one line for the CLI
        raise ConfigError(f"post.data={data!r}: could not load the dataset ({one_line(e)})") from None
    for i, record in enumerate(records):
        yield json.dumps(record, sort_keys=True, default=str), record, f"{data}[{i}]"
