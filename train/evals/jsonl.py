"""Multiple-choice items from a JSONL file: `--task FILE.jsonl[:train=FILE.jsonl,delimiter=space]`.

One JSON object per line (blank lines are skipped):
    {"context": "The capital of France is", "choices": ["Paris", "Rome"], "label": 0}
or HellaSwag's field names, {"ctx": ..., "endings": [...], "label": ...}, read as they are
(hellaswag.py builds the harness's prompts from the raw file). `label` is an integer, or a string
of digits as in HellaSwag's files, indexing `choices`; at least two choices, none empty.

The text scored for a choice is context + delimiter + choice, the harness's
`target_delimiter` (" " by default, as in the harness; `delimiter=none` or `delimiter=newline`
to change it), and acc_norm divides by the length of the choice alone (multiple_choice.py).
The file is the test set: --limit N takes its first N items. Few-shot examples come from the
`train=` file, or else from the file's other items, never the item itself.
"""

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .items import ChoiceItem, one_of, parse_options

DELIMITERS = {"space": " ", "none": "", "newline": "\n"}
OPTIONS = {"train": (str, ""), "delimiter": (one_of(*DELIMITERS), "space")}


def read_items(path: Path, parse: Callable[[object], object] | None = None) -> list:
    """The file's items, each line's JSON value read by `parse` (default `choice_item`), which
    raises ValueError on a malformed one: a ConfigError naming the file and the line."""
    parse = parse or choice_item
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                items.append(parse(json.loads(line)))
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                raise ConfigError(f"{path} line {number}: {' '.join(str(e).split())}") from None
    if not items:
        raise ConfigError(f"{path}: no items (one JSON object per line)")
    return items


def choice_item(row) -> ChoiceItem:
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    context, choices = (("context", "choices") if "context" in row else ("ctx", "endings"))
    if not isinstance(row.get(context), str):
        raise ValueError(f'needs "{context}" as a string (or "context"/"choices" or "ctx"/"endings")')
    if not (isinstance(row.get(choices), list) and len(row[choices]) >= 2
            and all(isinstance(c, str) and c for c in row[choices])):
        raise ValueError(f'"{choices}" must be a list of at least two non-empty strings')
    label = row.get("label")
    if isinstance(label, str) and label.isascii() and label.isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f'"label" must be an integer index into "{choices}"; got {label!r}')
    if not 0 <= label < len(row[choices]):
        raise ValueError(f"label {label} is out of range for {len(row[choices])} choices")
    return ChoiceItem(row[context], tuple(row[choices]), label)


class JsonlTask:
    kind = "choice"
    split = "test"

    def __init__(self, name: str, path: str, options: str) -> None:
        self.name = name
        self.options = parse_options(name, options, OPTIONS)
        self.delimiter = DELIMITERS[self.options["delimiter"]]
        self.rows = read_items(Path(path))
        self.train = read_items(Path(self.options["train"])) if self.options["train"] else None

    def items(self, split: str, n: int, seed: int) -> list[ChoiceItem]:
        if split == "train":
            return self.train if self.train is not None else self.rows
        return self.rows[:n]
