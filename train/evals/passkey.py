"""`passkey`: retrieve a number hidden at a chosen depth of filler text of a chosen length.

The retrieval test of Mohtashami & Jaggi 2023 ("Landmark Attention", arXiv:2305.16300): a short
instruction, filler sentences with one sentence that gives the key, and the question
"... The pass key is", answered " 68214". Options (`--task passkey:length=200,depth=0.25`):
    length=N    tokens of prompt + the room its answer gets (the answer, a newline and one token
                of slack; default: the model's block_size); a prompt longer than the context is cut
                from the left, and counted
    depth=F     where the key sits, as the share of filler sentences before it (0 = right after
                the instruction, 1 = just before the question; default 0.5)
    digits=N    digits of the key (default 5)
    split=test|validation
The checker takes the integer that starts the completion's first line. Chance is 0 (for 5
digits, 1 in 90,000). The key picks the split.
"""

import random
import re

from ..errors import ConfigError
from .generative import answer_room
from .items import EVAL_SPLIT, GenerativeTask, GenItem, draw_unique, fraction, positive_int

INSTRUCTION = "A pass key is hidden in the text below. Find it and remember it: you will be asked for it at the end."
FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
OPTIONS = {"length": (positive_int, None), "depth": (fraction, 0.5), "digits": (positive_int, 5), **EVAL_SPLIT}
_LEADING_INT = re.compile(r"\s*(\d+)")


def passkey_prompt(key: str, n_filler: int, depth: float) -> str:
    filler = [FILLER[i % len(FILLER)] for i in range(n_filler)]
    before = round(depth * n_filler)
    return " ".join([INSTRUCTION, *filler[:before], NEEDLE.format(key=key), *filler[before:], QUESTION])


class Passkey(GenerativeTask):
    OPTIONS = OPTIONS

    def __init__(self, name: str, options: str, env) -> None:
        super().__init__(name, options, env)
        self.tok = env.tok
        self.length = self.options["length"] or env.block_size
        need = self._tokens("9" * self.options["digits"], 0)
        if need > self.length:
            raise ConfigError(f"--task {name}: length={self.length} tokens cannot hold the instruction, "
                              f"the key and the question ({need} tokens)")

    def _tokens(self, key: str, n_filler: int) -> int:
        """Tokens of the prompt with `n_filler` sentences, and the room its answer gets when scored."""
        return (len(self.tok.encode(passkey_prompt(key, n_filler, self.options["depth"])))
                + answer_room(self.tok, f" {key}"))

    def item(self, key: str) -> GenItem:
        """As many filler sentences as fit in `length` tokens."""
        base, per = self._tokens(key, 0), len(self.tok.encode(" " + " ".join(FILLER))) / len(FILLER)
        n = max(0, int((self.length - base) / per))
        while n and self._tokens(key, n) > self.length:
            n -= 1
        while self._tokens(key, n + 1) <= self.length:
            n += 1
        return GenItem(prompt=passkey_prompt(key, n, self.options["depth"]), target=f" {key}", answer=key)

    def items(self, split: str, n: int, seed: int) -> list[GenItem]:
        rng = random.Random(f"passkey:{split}:{seed}")
        digits = self.options["digits"]

        def make():
            key = str(rng.randint(10 ** (digits - 1), 10**digits - 1))
            return key, key

        return [self.item(key) for key in draw_unique(make, split, n, tries=50 * n + 1000, space=9 * 10 ** (digits - 1))]

    def extract(self, text: str) -> str:
        match = _LEADING_INT.match(text)
        return match.group(1) if match else ""
