"""HellaSwag (Zellers et al. 2019, arXiv:1905.07830) scored the two ways GPT-2's figures are quoted.

Both read the raw file of github.com/rowanz/hellaswag (hellaswag_val.jsonl: ctx, ctx_a, ctx_b,
activity_label, endings, label) and score each ending by its log-likelihood (multiple_choice.py):
* completion: llm.c's dev/data/hellaswag.py. The context is `ctx` as it is and each ending is
  " " + ending; the two are tokenized apart (mc.encode_apart). acc picks the lowest summed loss,
  acc_norm the lowest mean loss per ending token (our acc_tokens). GPT-2 124M: acc 0.2859,
  acc_norm 0.2955 on the 10,042 validation items.
* harness: lm-evaluation-harness's `hellaswag` task (lm_eval/tasks/hellaswag/utils.py). The query
  is activity_label + ": " + ctx_a + " " + ctx_b.capitalize() and it and every ending pass through
  `preprocess`; pairs are split as the harness splits them (mc.encode_pair); acc_norm divides by
  each ending's length in characters (acc_bytes, in bytes, is reported too). GPT-2 124M: acc
  0.2892, acc_norm 0.3114.
"""

import re
from dataclasses import dataclass

from . import multiple_choice as mc
from .items import ChoiceItem
from .jsonl import choice_item

STYLES = ("completion", "harness")
HARNESS_FIELDS = ("activity_label", "ctx_a", "ctx_b")


def preprocess(text: str) -> str:
    """The harness's clean-up: strip, WikiHow's " [title]" becomes ". ", any other [bracketed]
    markup goes, and each double space becomes one (one pass, as there)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def harness_query(row: dict) -> str:
    return preprocess(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())


@dataclass(frozen=True)
class HellaSwagItem:
    completion: ChoiceItem  # ctx and the endings as they are in the file
    harness: ChoiceItem  # the harness's query and preprocessed endings


def parse_row(row) -> HellaSwagItem:
    """One line of the raw file; a ValueError says what is missing or malformed."""
    item = choice_item(row)  # ctx, endings and label checked
    if "context" in row:
        raise ValueError('has "context": give the raw HellaSwag file (ctx, ctx_a, ctx_b, activity_label, endings)')
    for name in HARNESS_FIELDS:
        if not isinstance(row.get(name), str):
            raise ValueError(f'needs "{name}" as a string (a line of rowanz/hellaswag\'s hellaswag_val.jsonl)')
    harness = ChoiceItem(harness_query(row), tuple(preprocess(e) for e in item.choices), item.label)
    return HellaSwagItem(item, harness)


class HellaSwagTask:
    """The items in one style, as suite.run_task takes a task: the file's first `n` items."""

    kind = "choice"
    split = "validation"
    delimiter = " "

    def __init__(self, style: str, items: list[HellaSwagItem], source: str = "") -> None:
        assert style in STYLES
        self.name = f"hellaswag-{style}"
        self.source = source
        self.rows = [getattr(item, style) for item in items]
        self.encode_pair = mc.encode_apart if style == "completion" else mc.encode_pair

    def items(self, split: str, n: int, seed: int) -> list[ChoiceItem]:
        return self.rows[:n]


def headline(style: str, result: dict) -> dict[str, float]:
    """acc and acc_norm as the style's own script reports them (acc_bytes for the harness too)."""
    m = result["metrics"]
    if style == "completion":
        return {"acc": m["acc"], "acc_norm": m["acc_tokens"]}
    return {"acc": m["acc"], "acc_norm": m["acc_norm"], "acc_bytes": m["acc_bytes"]}
