"""`python-eval`: what a small Python expression evaluates to, in doctest form.

An item's prompt is ">>> EXPR\\n" and its answer the value's repr, e.g. ">>> len('ab' * 3) - 2\\n"
answered "4". Each expression is generated as a tree of our own nodes (tuples below), rendered
to source text with only the parentheses Python's grammar needs, and evaluated by walking the
tree and applying Python's own operators to Python values, so the answer is the one Python
would print. No text is ever parsed or run (no eval/exec), neither ours nor the model's: a
completion is only compared, as a string, with the answer. Trees whose evaluation fails (a type
mismatch, division by zero, an index out of range) or grows large are drawn again.

Nodes: ("const", value) | ("list", [node]) | ("neg", node) | ("bin", op, node, node)
| ("cmp", op, node, node) | ("call", name, [node]) | ("index", node, node)

Options: depth=N (nesting of operators and calls, 1-5, default 2), split=test|validation. The
checker takes the completion's first line, stripped. Chance is 0. The text picks the split.
"""

import operator
import random

from .items import EVAL_SPLIT, GenerativeTask, GenItem, draw_unique, int_between

BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod}
COMPARE = {"<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}
CALLS = {"len": len, "abs": abs, "max": max, "min": min, "sum": sum, "sorted": sorted}
# Binding strength in Python's grammar: comparison < + - < * // % < unary - < atoms and trailers.
PRECEDENCE = {"cmp": 1, "+": 2, "-": 2, "*": 3, "//": 3, "%": 3, "neg": 4, "atom": 6}
MAX_INT, MAX_LEN = 10_000, 12
OPTIONS = {"depth": (int_between(1, 5), 2), **EVAL_SPLIT}


def evaluate(node):
    """The node's value; Python raises TypeError, ZeroDivisionError or IndexError where it would."""
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "list":
        return [evaluate(x) for x in node[1]]
    if kind == "neg":
        return -evaluate(node[1])
    if kind in ("bin", "cmp"):
        return {**BINARY, **COMPARE}[node[1]](evaluate(node[2]), evaluate(node[3]))
    if kind == "call":
        return CALLS[node[1]](*[evaluate(x) for x in node[2]])
    return evaluate(node[1])[evaluate(node[2])]  # index


def render(node) -> str:
    return _render(node)[0]


def _render(node) -> tuple[str, int]:
    """(source text, its binding strength)."""
    kind = node[0]
    if kind == "const":
        value = node[1]
        return repr(value), PRECEDENCE["neg"] if isinstance(value, int) and value < 0 else PRECEDENCE["atom"]
    if kind == "list":
        return "[" + ", ".join(render(x) for x in node[1]) + "]", PRECEDENCE["atom"]
    if kind == "neg":
        inner = _wrap(node[1], PRECEDENCE["neg"])
        return "-" + (f"({inner})" if inner.startswith("-") else inner), PRECEDENCE["neg"]
    if kind in ("bin", "cmp"):
        strength = PRECEDENCE["cmp" if kind == "cmp" else node[1]]
        # left-associative: the right operand binds tighter; comparisons never chain
        left = _wrap(node[2], strength + (kind == "cmp"))
        return f"{left} {node[1]} {_wrap(node[3], strength + 1)}", strength
    if kind == "call":
        return f"{node[1]}(" + ", ".join(render(x) for x in node[2]) + ")", PRECEDENCE["atom"]
    return f"{_wrap(node[1], PRECEDENCE['atom'])}[{render(node[2])}]", PRECEDENCE["atom"]


def _wrap(node, at_least: int) -> str:
    text, strength = _render(node)
    return text if strength >= at_least else f"({text})"


def gen_int(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.25:
        return ("const", rng.randint(-3, 12) if rng.random() < 0.2 else rng.randint(0, 12))
    d = depth - 1
    kind = rng.choice(["bin", "bin", "bin", "neg", "len", "abs", "minmax", "sum", "index"])
    if kind == "bin":
        return ("bin", rng.choice(list(BINARY)), gen_int(rng, d), gen_int(rng, d))
    if kind == "neg":
        return ("neg", gen_int(rng, d))
    if kind == "len":
        return ("call", "len", [rng.choice([gen_str, gen_list])(rng, d)])
    if kind == "abs":
        return ("call", "abs", [gen_int(rng, d)])
    if kind == "minmax":
        return ("call", rng.choice(["min", "max"]), [gen_int(rng, d), gen_int(rng, d)])
    if kind == "sum":
        return ("call", "sum", [gen_list(rng, d)])
    return ("index", gen_list(rng, d), ("const", rng.randint(-2, 2)))


def gen_str(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.4:
        return ("const", "".join(rng.choice("abcxyz") for _ in range(rng.randint(1, 3))))
    kind = rng.choice(["concat", "repeat", "index"])
    if kind == "concat":
        return ("bin", "+", gen_str(rng, depth - 1), gen_str(rng, depth - 1))
    if kind == "repeat":
        return ("bin", "*", gen_str(rng, depth - 1), ("const", rng.randint(0, 3)))
    return ("index", gen_str(rng, depth - 1), ("const", rng.randint(-2, 2)))


def gen_list(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.4:
        return ("list", [gen_int(rng, max(depth - 1, 0)) for _ in range(rng.randint(1, 4))])
    kind = rng.choice(["concat", "repeat", "sorted"])
    if kind == "concat":
        return ("bin", "+", gen_list(rng, depth - 1), gen_list(rng, depth - 1))
    if kind == "repeat":
        return ("bin", "*", gen_list(rng, depth - 1), ("const", rng.randint(0, 2)))
    return ("call", "sorted", [gen_list(rng, depth - 1)])


def gen_expression(rng: random.Random, depth: int):
    """A tree with a small value, drawn again until it evaluates."""
    while True:
        kind = rng.choice(["int", "int", "int", "str", "list", "cmp"])
        if kind == "cmp":
            node = ("cmp", rng.choice(list(COMPARE)), gen_int(rng, depth - 1), gen_int(rng, depth - 1))
        else:
            node = {"int": gen_int, "str": gen_str, "list": gen_list}[kind](rng, depth)
        if node[0] in ("const", "list"):  # nothing to evaluate
            continue
        try:
            value = evaluate(node)
        except (TypeError, ZeroDivisionError, IndexError):
            continue
        if isinstance(value, bool) or (isinstance(value, int) and abs(value) <= MAX_INT) or (
                isinstance(value, (str, list)) and len(value) <= MAX_LEN):
            return node, value


class PythonEval(GenerativeTask):
    OPTIONS = OPTIONS

    def items(self, split: str, n: int, seed: int) -> list[GenItem]:
        rng = random.Random(f"python-eval:{split}:{seed}")

        def make():
            node, value = gen_expression(rng, self.options["depth"])
            text = render(node)
            return text, GenItem(prompt=f">>> {text}\n", target=repr(value), answer=repr(value))

        return draw_unique(make, split, n, tries=50 * n + 1000)

    def extract(self, text: str) -> str:
        return text.strip()
