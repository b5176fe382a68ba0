"""`stdlib-cloze`: pick the real next line of a held-out source file among lines of the same file.

Items come only from the run's validation documents, the files `prepare` held out of training
(train/data.py `val_documents`: by default 1 % of the Python standard library, chosen by a hash of
each path). The context is the `lines` lines before a line; the choices are that line and
`choices - 1` other lines of the same file, in a random order. A line qualifies when it holds at
least 8 characters besides indentation (no choice is blank or a lone bracket) and occurs once in its
file; the right line and the distractors are drawn alike from the qualifying lines, so a model that
ignores the context scores chance exactly, in expectation. (Drawing the right line by position but
distractors from the distinct lines favoured frequent, short lines such as "return None": a 1-step
model scored 0.283 acc_norm over 713 items, 2 standard errors above chance.) The choice follows the
context with nothing in between (the context ends with its newline); `--data.source=...` on the
command line points the task at another local corpus's held-out files.

Options (`--task stdlib-cloze:choices=4,lines=8`): choices=N (2-10, default 4), lines=N
(default 8), split=test|validation. The key "path/of/file.py:LINE" picks the split.
"""

import random
from collections import Counter

from ..data import val_documents
from ..errors import ConfigError
from .items import EVAL_SPLIT, ChoiceItem, int_between, parse_options, positive_int, split_of

OPTIONS = {"choices": (int_between(2, 10), 4), "lines": (positive_int, 8), **EVAL_SPLIT}
MIN_CHARS = 8


class StdlibCloze:
    kind = "choice"
    delimiter = ""

    def __init__(self, name: str, options: str, env) -> None:
        self.name = name
        self.options = parse_options(name, options, OPTIONS)
        self.split = self.options["split"]
        try:
            self.docs = val_documents(env.data, env.tok)
        except ValueError as e:
            raise ConfigError(f"--task {name}: {e}") from None
        self.source = f"{len(self.docs)} held-out files of {env.data.source}"

    def items(self, split: str, n: int, seed: int) -> list[ChoiceItem]:
        k, span = self.options["choices"], self.options["lines"]
        candidates = []  # (key, lines, index of the line, the file's distinct qualifying lines)
        for doc_id, text in self.docs:
            lines = text.split("\n")
            counts = Counter(lines)
            pool = sorted(line for line, count in counts.items() if count == 1 and len(line.strip()) >= MIN_CHARS)
            if len(pool) < k:
                continue
            unique = set(pool)
            candidates += [(f"{doc_id}:{i + 1}", lines, i, pool) for i in range(1, len(lines))
                           if lines[i] in unique and split_of(f"{doc_id}:{i + 1}") == split]
        drawn = random.Random(f"stdlib-cloze:{split}:{seed}").sample(candidates, min(n, len(candidates)))
        items = []
        for key, lines, i, pool in drawn:
            rng = random.Random(f"{seed}:{key}")
            choices = [lines[i], *rng.sample([line for line in pool if line != lines[i]], k - 1)]
            rng.shuffle(choices)
            items.append(ChoiceItem("\n".join(lines[max(0, i - span):i]) + "\n", tuple(choices),
                                    choices.index(lines[i])))
        return items
