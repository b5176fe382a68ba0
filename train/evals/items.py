"""What every task is made of: its items, its splits and its options.

Splits: a built-in task's item belongs to train, validation or test by a hash of its key (the
text that identifies it, e.g. "478+356"), never by the seed or the order of drawing, so the
three splits cannot share an item whatever seed or size is asked for; the seed only picks which
items of a split are drawn. Few-shot examples come from train, scored items from test (or
validation, with the task option `split=validation`).

Options: `--task NAME:key=value,key=value,flag`; each task declares its options with a parser
and a default, and a wrong one is a one-line ConfigError naming the task and what it accepts.
"""

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from ..data import unit_hash
from ..errors import ConfigError

SPLITS = ("train", "validation", "test")
SPLIT_EDGES = (0.8, 0.9)  # a key's hash in [0, 1): train below 0.8, validation below 0.9, else test


@dataclass(frozen=True)
class ChoiceItem:
    """A multiple-choice item: `label` indexes the right one of `choices`."""

    context: str
    choices: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class GenItem:
    """A generative item: the model continues `prompt`; `answer` is what the task's checker must
    extract from its completion; `target` is the whole reference completion (worked steps
    included), which few-shot examples show."""

    prompt: str
    target: str
    answer: str


class GenerativeTask:
    """What a built-in generative task shares: its name, its options parsed against the module's
    `OPTIONS` table (given by the subclass) and the split it draws from. Graded by pass@k and maj@k."""

    kind = "generate"
    chance = 0.0
    OPTIONS: dict = {}

    def __init__(self, name: str, options: str, env) -> None:
        self.name = name
        self.options = parse_options(name, options, self.OPTIONS)
        self.split = self.options["split"]


def split_of(key: str) -> str:
    """train, validation or test, from a hash of the item's key (the same on every machine)."""
    return SPLITS[bisect.bisect_right(SPLIT_EDGES, unit_hash(key))]


def draw_unique(make: Callable[[], tuple[str, object]], split: str, n: int, tries: int, space: int = 0) -> list:
    """Up to `n` items of `split` with distinct keys, from `make()` -> (key, item) called at most
    `tries` times (a small item space may hold fewer than `n`). `space`: how many distinct keys
    make() can return, if known; once it has returned every one, no later call can add an item,
    so the draw stops there (the same items, without the rest of the tries)."""
    seen, out = set(), []
    for _ in range(tries):
        if len(out) == n or len(seen) == space > 0:
            break
        key, item = make()
        if key not in seen and split_of(key) == split:  # a key seen before was kept or not then
            out.append(item)
        seen.add(key)
    return out


def _natural(text: str) -> int:
    """A plain decimal number, or -1 (also for one of over 100 digits, which no option takes)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 100 else -1


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not low <= _natural(text) <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return int(text)
    return parse


def positive_int(text: str) -> int:
    if _natural(text) < 1:
        raise ValueError("an integer >= 1 of at most 100 digits")
    return int(text)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError("a number in [0, 1]")
    return value


def one_of(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return text
    return parse


def flag(text: str) -> bool:
    if text not in ("", "true", "false"):
        raise ValueError("a flag (given alone, or =true / =false)")
    return text != "false"


EVAL_SPLIT = {"split": (one_of("test", "validation"), "test")}  # every built-in task takes it


def parse_options(task: str, text: str, schema: dict[str, tuple[Callable[[str], object], object]]) -> dict:
    """`key=value,flag` -> {key: parsed value} with every default of `schema` filled in."""
    options, given = {key: default for key, (_, default) in schema.items()}, set()
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in schema:
            accepted = ", ".join(schema) or "none"
            raise ConfigError(f"--task {task}: unknown option {key!r} (options: {accepted})")
        if key in given:
            raise ConfigError(f"--task {task}: option {key} is given twice")
        given.add(key)
        try:
            options[key] = schema[key][0](value)
        except ValueError as e:
            raise ConfigError(f"--task {task}: option {key} must be {e}; got {value!r}") from None
    return options
