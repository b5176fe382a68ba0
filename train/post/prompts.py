"""The prompts of a run that samples (rft, grpo, dpo without a pairs file), and their checkers.

`post.data` names them:
    task:SPEC      a built-in checkable task (train/evals/): post.n_train items of its train split
                   to learn from, post.n_val of its validation split to score on; the task's own
                   checker reads the answer's first line, as `train.eval` does;
    a JSONL file   one {"prompt": "...", "answer": "..."} per line (e.g. GSM8K's questions and
                   final numbers), post.val_fraction of the lines held out by a hash of each;
                   `post.checker` reads the whole answer:
                       answer-mark   the number after the last "####" (GSM8K's mark; commas dropped)
                       last-number   the last number in the answer
                       exact         the answer, stripped of surrounding space
The reward is 1.0 when the checker's reading equals the item's answer and 0.0 otherwise: the
model's output is only ever read, never run.
"""

import re

import numpy as np

from ..errors import ConfigError
from ..evals.generative import completion
from ..evals.items import GenItem
from ..evals.tasks import TaskEnv, build_task
from .chat_format import Message
from .jsonl import read_split

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _number(text: str, last: bool) -> str:
    found = _NUMBER.findall(text)
    return (found[-1] if last else found[0]).replace(",", "") if found else ""


CHECKERS = {
    "answer-mark": lambda text: _number(text.rsplit("####", 1)[1], last=False) if "####" in text else "",
    "last-number": lambda text: _number(text, last=True),
    "exact": str.strip,
}


def read_prompt(record, where: str) -> GenItem:
    """One {"prompt", "answer"} record, or a one-line ConfigError naming `where` (file:line)."""
    if not (isinstance(record, dict) and isinstance(record.get("prompt"), str)
            and isinstance(record.get("answer"), (str, int))):
        raise ConfigError(f'{where}: expected {{"prompt": "...", "answer": "..."}}')
    return GenItem(record["prompt"], "", str(record["answer"]))


class PromptSet:
    """The train and validation items as chat prompts (ids ending in <|assistant|>), and `reward`."""

    def __init__(self, post, tok, block_size: int, data_cfg):
        self.tok = tok
        if post.data.startswith("task:"):
            task = build_task(post.data[len("task:"):], TaskEnv(tok, block_size, data_cfg))
            if task.kind != "generate":
                raise ConfigError(f"post.data={post.data!r}: rewards need a generative task (prompt and answer)")
            self.splits = {"train": task.items("train", post.n_train, 0),
                           "val": task.items("validation", post.n_val, 0)}
            self.extract = lambda ids: task.extract(completion(tok, ids))  # its first line, as train.eval
        else:
            self.splits = read_split(post.data, post.val_fraction, read_prompt, "a JSONL of prompts and answers")
            check = CHECKERS[post.checker]
            self.extract = lambda ids: check(tok.decode(ids[:ids.index(tok.eot)] if tok.eot in ids else ids))
        for name, items in self.splits.items():
            if not items:
                raise ConfigError(f"post.data={post.data!r} has no {name} prompts; use more, or another "
                                  "post.val_fraction")
        self.ids = {name: [tok.chat.prompt([Message("user", it.prompt)]) for it in items]
                    for name, items in self.splits.items()}
        longest = max(len(p) for ids in self.ids.values() for p in ids)
        self.max_new = min(post.max_new_tokens, block_size - longest)
        if self.max_new < 1:
            raise ConfigError(f"a prompt of {post.data!r} takes {longest} tokens, the whole "
                              f"model.block_size={block_size}: no room to answer")

    def draw(self, n: int, key: tuple[int, ...]) -> list[int]:
        """n train items (indices), a pure function of the batch key."""
        rng = np.random.default_rng(np.random.SeedSequence(key))
        return rng.integers(0, len(self.ids["train"]), size=n).tolist()

    def reward(self, split: str, i: int, answer_ids: list[int]) -> float:
        return float(self.extract(answer_ids) == self.splits[split][i].answer)
