"""`arithmetic`: multi-digit addition and multiplication, answered directly or with worked steps.

Options (`--task arithmetic:op=add,digits=3,steps`):
    op=add|mul|mixed   the operation (mixed: each item picks one; default mixed)
    digits=N           each operand has N digits, 1 to 2000 (default 2; 1 means 0-9); Python writes
                       integers of at most 4,300 digits, and a product has up to 2N
    steps              answer with the working first, the result after "####"
    split=test|validation

An item's prompt is "478+356=" (or "*"). Directly, the target is "834". With steps, the target
works the columns from the right, then gives the result after "####", GSM8K's answer marker:
    addition:        "8+6=14, 7+5+1=13, 4+3+1=8 #### 834"   (digit + digit [+ carry] = sum)
    multiplication:  "478*6=2868, 478*50=23900, 2868+23900=26768 #### 26768"
                     (one partial product per digit of the second operand, then their sum)
The checker reads the completion's first line (after the last "####" with steps) and takes the
integer that starts it; it must equal the result. Chance is 0. The key "478+356" picks the split.
"""

import random
import re
from itertools import zip_longest

from .items import EVAL_SPLIT, GenerativeTask, GenItem, draw_unique, flag, int_between, one_of

OPTIONS = {"op": (one_of("add", "mul", "mixed"), "mixed"), "digits": (int_between(1, 2000), 2),
           "steps": (flag, False), **EVAL_SPLIT}
ANSWER_MARK = "####"
_LEADING_INT = re.compile(r"\s*(-?\d+)")


def add_steps(a: int, b: int) -> str:
    parts, carry = [], 0
    for x, y in zip_longest(map(int, str(a)[::-1]), map(int, str(b)[::-1]), fillvalue=0):
        total = x + y + carry
        parts.append(f"{x}+{y}+{carry}={total}" if carry else f"{x}+{y}={total}")
        carry = total // 10
    return ", ".join(parts)


def mul_steps(a: int, b: int) -> str:
    partials = [(int(d) * 10**i) for i, d in enumerate(str(b)[::-1]) if d != "0"] or [0]
    parts = [f"{a}*{p}={a * p}" for p in partials]
    if len(partials) > 1:
        parts.append("+".join(str(a * p) for p in partials) + f"={a * b}")
    return ", ".join(parts)


class Arithmetic(GenerativeTask):
    OPTIONS = OPTIONS

    def item(self, a: int, op: str, b: int) -> GenItem:
        result = a + b if op == "+" else a * b
        target = str(result)
        if self.options["steps"]:
            target = f"{add_steps(a, b) if op == '+' else mul_steps(a, b)} {ANSWER_MARK} {result}"
        return GenItem(prompt=f"{a}{op}{b}=", target=target, answer=str(result))

    def items(self, split: str, n: int, seed: int) -> list[GenItem]:
        rng = random.Random(f"arithmetic:{split}:{seed}")
        d = self.options["digits"]
        low, high = (0 if d == 1 else 10 ** (d - 1)), 10**d - 1
        ops = {"add": "+", "mul": "*", "mixed": "+*"}[self.options["op"]]

        def make():
            a, op, b = rng.randint(low, high), rng.choice(ops), rng.randint(low, high)
            return f"{a}{op}{b}", self.item(a, op, b)

        return draw_unique(make, split, n, tries=50 * n + 1000, space=(high - low + 1) ** 2 * len(ops))

    def extract(self, text: str) -> str:
        if self.options["steps"]:
            if ANSWER_MARK not in text:
                return ""
            text = text.rsplit(ANSWER_MARK, 1)[1]
        match = _LEADING_INT.match(text)
        return match.group(1) if match else ""
