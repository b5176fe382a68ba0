"""Task evaluation (train/evals/, `python -m train.eval RUN --task ...`): the estimators against
enumeration, the scores of stub models whose log-probabilities are known, the harness's window
cut from the left, disjoint splits, python-eval against Python itself, and the command line on
the tiny run, bad input included."""

import ast
import json
import math
import random
from itertools import combinations
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.inference.generate import generate
from tiny_run import cli, error_line, files_at_most, snapshot
from train import eval as train_eval
from train.config import ConfigError, load_config
from train.data import prepare, val_documents
from train.evals import generative as gen
from train.evals import multiple_choice as mc
from train.evals import arithmetic, pyexpr
from train.evals.items import ChoiceItem, GenItem, split_of
from train.evals.suite import Settings, _shots, aggregate, run_task
from train.evals.tasks import TaskEnv, build_task
from train.tokenizer import ByteTokenizer, get_tokenizer

CPU = torch.device("cpu")
BYTES = ByteTokenizer()


# ---------------------------------------------------------------------------------------------
# stub models: logits from a rule, so every log-probability is known by hand


class SuccessorStub(torch.nn.Module):
    """p(next = this token + 1) = 1/2; every other of the 257 tokens 1/512."""

    SUCC, OTHER = math.log(0.5), math.log(0.5 / 256)

    def __init__(self, block_size: int = 64):
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size, vocab_size=257)
        table = torch.full((257, 257), self.OTHER)
        table[torch.arange(256), torch.arange(1, 257)] = self.SUCC
        self.register_buffer("table", table)

    def forward(self, idx):
        return self.table[idx]  # (B, T, 257)

    def generate(self, idx, max_new_tokens, *, temperature, top_k, generator):
        return generate(self, idx, max_new_tokens, temperature, top_k, generator, use_cache=False)


class FirstTokenStub(torch.nn.Module):
    """Every position predicts the first token of its window with probability 1/2 (the rest
    1/512 each): a continuation's score tells where the window starts."""

    def __init__(self, block_size: int):
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size, vocab_size=257)

    def forward(self, idx):
        logits = torch.full((*idx.shape, 257), SuccessorStub.OTHER)
        logits.scatter_(-1, idx[:, :1, None].expand(-1, idx.shape[1], 1), SuccessorStub.SUCC)
        return logits


def stub_task(kind: str, items: list, **extra):
    return SimpleNamespace(name="stub", kind=kind, split="test", items=lambda split, n, seed: items[:n], **extra)


# ---------------------------------------------------------------------------------------------
# estimators


def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_right_sample():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))  # samples 0..c-1 are the right ones
                brute = sum(any(i < c for i in s) for s in subsets) / len(subsets)
                assert gen.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)
    assert gen.ks_up_to(1) == [1] and gen.ks_up_to(6) == [1, 2, 4] and gen.ks_up_to(8) == [1, 2, 4, 8]


def test_greedy_pass_at_1_and_sampled_pass_at_k_and_maj_at_k_on_a_stub_sampler():
    items = [GenItem("1+0=", "1", "1"), GenItem("2+3=", "5", "5")]
    calls = []

    def sampler(prompts, max_new, n, temperature):
        calls.append((n, temperature))
        if temperature == 0:
            return [[" 1"], ["x"]]
        return [["2", "1", " 1 ", "3"], ["5", "", "", "7"]]

    task = stub_task("generate", items, chance=0.0, extract=str.strip)
    settings = Settings(samples=4, temperature=0.7)
    result = run_task(task, SuccessorStub(), BYTES, settings, CPU, "fp32", sampler=sampler)
    assert calls == [(1, 0.0), (4, 0.7)]
    # item 0 (answer 1): right samples 2 of 4; votes 2 | 2,1 (tie: first seen) | 2,1,1,3 -> 1
    # item 1 (answer 5): right samples 1 of 4; votes 5 | 5 ("" casts none) | 5,7 (tie: first seen)
    want = {"pass@1": 0.5,
            "pass@1 sampled": (2 / 4 + 1 / 4) / 2,
            "pass@2 sampled": ((1 - 1 / 6) + (1 - 3 / 6)) / 2,  # 1 - C(n-c, 2) / C(4, 2)
            "pass@4 sampled": 1.0,
            "maj@1": 0.5, "maj@2": 0.5, "maj@4": 1.0}
    assert result["metrics"] == pytest.approx(want)
    assert result["items"][0] == {"answer": "1", "greedy": "1", "samples": ["2", "1", "1", "3"]}


def test_a_completion_ends_at_a_newline_or_end_of_text():
    assert gen.completion(BYTES, list(b"42\n7")) == "42"
    assert gen.completion(BYTES, [*b"4", BYTES.eot, *b"2"]) == "4"
    assert gen.fit_prompt(list(range(10)), 4, 8) == (list(range(6, 10)), 4, True)
    assert gen.fit_prompt([1, 2], 20, 8) == ([2], 7, True)
    assert gen.fit_prompt([1, 2], 3, 8) == ([1, 2], 3, False)
    assert gen.fit_prompt([1, 2, 3, 4], 4, 8) == ([1, 2, 3, 4], 4, False)  # it fits exactly: not cut


def test_greedy_completions_through_generate_stop_at_the_newline():
    """The successor stub continues "ab" greedily as "cdef..."; 9 tokens after "\\x05" reach "\\n"
    (byte 10) and stop there."""
    sample = gen.model_sampler(SuccessorStub(), BYTES, CPU, "fp32", top_k=0, seed=0)
    assert sample([list(b"ab"), [5], list(b"xy")], [4, 9, 3], 1, 0.0) == [["cdef"], ["\x06\x07\x08\t"], ["z{|"]]


# ---------------------------------------------------------------------------------------------
# multiple choice


def test_acc_and_acc_norm_of_a_stub_with_known_log_probabilities():
    """Context "x", delimiter " ": each continuation starts with two unlikely steps (x -> space ->
    first letter), then one likely step per successor letter.
        " q"         2 o          = -12.477   /1 = -12.48
        " abcdefgh"  2 o + 7 s    = -17.329   /8 =  -2.17
        " mn"        2 o + s      = -13.170   /2 =  -6.59
    acc picks " q" (0), acc_norm " abcdefgh" (1): labels 0, 1, 1 give acc 1/3, acc_norm 2/3.
    Per token (2, 9 and 3 bytes): -6.24, -1.93, -4.39: acc_tokens picks " abcdefgh" too."""
    choices = ("q", "abcdefgh", "mn")
    items = [ChoiceItem("x", choices, label) for label in (0, 1, 1)]
    result = run_task(stub_task("choice", items, delimiter=" "), SuccessorStub(), BYTES, Settings(), CPU, "fp32")
    o, s = SuccessorStub.OTHER, SuccessorStub.SUCC
    assert result["items"][0]["loglikelihoods"] == pytest.approx([2 * o, 2 * o + 7 * s, 2 * o + s], abs=1e-5)
    assert result["items"][0]["tokens"] == [2, 9, 3]
    assert result["metrics"] == pytest.approx({"acc": 1 / 3, "acc_norm": 2 / 3, "acc_bytes": 2 / 3, "acc_tokens": 2 / 3})
    assert result["chance"] == pytest.approx(1 / 3) and result["truncated"] == result["skipped"] == 0


def test_acc_norm_divides_by_characters_and_acc_bytes_by_utf8_bytes():
    """lm-eval 0.4.13: acc_norm = argmax ll / len(choice), acc_bytes = argmax ll / len(choice.encode())."""
    item = ChoiceItem("c", ("é", "ab"), 0)  # 1 character, 2 bytes | 2 characters, 2 bytes
    # acc: -3 > -5 -> 0; acc_norm: -3/1 < -5/2 -> 1; acc_bytes: -3/2 > -5/2 -> 0
    assert mc.choice_metrics([item], [[-3.0, -5.0]]) == {"acc": 1.0, "acc_norm": 0.0, "acc_bytes": 1.0}
    tie = ChoiceItem("c", ("a", "b"), 0)  # equal scores: the first, as numpy's argmax
    assert mc.choice_metrics([tie], [[-1.0, -1.0]])["acc"] == 1.0


def test_acc_tokens_divides_by_each_continuations_number_of_tokens():
    """The lowest mean loss per token (llm.c's HellaSwag and CORE call it acc_norm)."""
    item = ChoiceItem("c", ("é", "ab"), 0)
    assert mc.choice_metrics([item], [[-3.0, -5.0]], [[1, 5]])["acc_tokens"] == 0.0  # -3/1 < -5/5
    assert mc.choice_metrics([item], [[-3.0, -5.0]], [[3, 1]])["acc_tokens"] == 1.0  # -3/3 > -5/1


def test_the_context_is_cut_from_the_left_to_the_last_block_size_plus_one_tokens():
    """block_size 8: "abcdefghij" + "dd" keeps the last 9 tokens "defghijdd" and feeds the first 8,
    so the window starts at "d", which the stub then predicts at every position: both "d" are
    likely. A continuation of 9 tokens cannot fit and its item is skipped."""
    model = FirstTokenStub(block_size=8)
    items = [ChoiceItem("abcdefghij", ("dd", "zz"), 0), ChoiceItem("abc", ("aa", "zz"), 0),
             ChoiceItem("abc", ("a" * 9, "zz"), 1)]
    result = run_task(stub_task("choice", items, delimiter=""), model, BYTES, Settings(), CPU, "fp32")
    o, s = SuccessorStub.OTHER, SuccessorStub.SUCC
    assert result["items"][0]["loglikelihoods"] == pytest.approx([2 * s, 2 * o], abs=1e-5)
    assert result["items"][1]["loglikelihoods"] == pytest.approx([2 * s, 2 * o], abs=1e-5)  # not cut
    assert (result["n"], result["truncated"], result["skipped"]) == (2, 1, 1)
    assert mc.fits(list(range(8)), 8) and not mc.fits(list(range(9)), 8)
    assert not mc.is_truncated(list(range(7)), [1, 2], 8) and mc.is_truncated(list(range(8)), [1, 2], 8)
    with pytest.raises(ConfigError, match="no item can be scored"):
        run_task(stub_task("choice", items[2:], delimiter=""), model, BYTES, Settings(), CPU, "fp32")


def test_pairs_are_split_as_the_harness_splits_them():
    """Whitespace ending the context moves to the continuation; an empty context becomes eot.
    encode_apart (llm.c's HellaSwag) leaves the whitespace where it is."""
    assert mc.encode_pair(BYTES, "Q: x \n", "y") == (list(b"Q: x"), list(b" \ny"))
    assert mc.encode_pair(BYTES, "", " y") == ([BYTES.eot], list(b" y"))
    assert mc.encode_apart(BYTES, "Q: x \n", "y") == (list(b"Q: x \n"), list(b"y"))
    assert mc.encode_apart(BYTES, "", " y") == ([BYTES.eot], list(b" y"))
    shots = [ChoiceItem("2+2 =", ("4", "5"), 0)]
    assert mc.fewshot_context(ChoiceItem("1+1 =", ("2",), 0), shots, " ") == "2+2 = 4\n\n1+1 ="


def test_shots_are_other_train_items_each_shown_with_its_labelled_choice():
    """A task whose train split also holds the scored items (a JSONL file without train=): with 3
    shots from 4 train items, each item's shots are the 3 others; a shot ends in its right choice."""
    test = [ChoiceItem(f"q{i} =", ("no", "yes"), 1) for i in range(3)]
    train = [*test, ChoiceItem("q9 =", ("no", "yes"), 1)]
    task = SimpleNamespace(name="stub", split="test", items=lambda split, n, seed: train if split == "train" else test)
    assert [set(s) for s in _shots(task, test, Settings(shots=3))] == [set(train) - {item} for item in test]
    assert mc.fewshot_context(test[0], [train[3]], " ") == "q9 = yes\n\nq0 ="


# ---------------------------------------------------------------------------------------------
# tasks: splits, answers, held-out documents


def env_for(corpus_args, tmp_path, block_size=256):
    cfg = load_config(None, [*corpus_args, f"--train.out_dir={tmp_path / 'unused'}"])
    return TaskEnv(BYTES, block_size, cfg.data)


@pytest.mark.parametrize("spec,key", [  # key: what picks an item's split
    ("arithmetic:digits=1", lambda item: item.prompt[:-1]),
    ("arithmetic:op=mul,steps", lambda item: item.prompt[:-1]),
    ("python-eval", lambda item: item.prompt[4:-1]),
    ("passkey:digits=2,length=300", lambda item: item.answer),
    ("stdlib-cloze", lambda item: (item.context, item.choices[item.label])),  # a line and what precedes it
])
def test_splits_are_disjoint_deterministic_and_seeded(spec, key, corpus, tmp_path):
    task = build_task(spec, env_for(corpus, tmp_path))
    drawn = {split: [key(i) for i in task.items(split, 300, seed=1)] for split in ("train", "validation", "test")}
    assert all(drawn.values())
    assert not set(drawn["train"]) & set(drawn["test"]) and not set(drawn["validation"]) & set(drawn["test"])
    assert not set(drawn["train"]) & set(drawn["validation"])
    assert [key(i) for i in task.items("test", 300, seed=1)] == drawn["test"]
    other = [key(i) for i in task.items("test", 300, seed=2)]
    assert other != drawn["test"] and not set(other) & set(drawn["train"])
    for split, keys in drawn.items():
        assert all(split_of(k) == split for k in keys if isinstance(k, str)), split


def test_generated_items_answer_their_own_prompts():
    arithmetic = build_task("arithmetic:steps,digits=3", None)
    for item in arithmetic.items("test", 50, seed=0):
        a, op, b = item.prompt[:-1].partition("+") if "+" in item.prompt else item.prompt[:-1].partition("*")
        assert item.answer == str(int(a) + int(b) if op == "+" else int(a) * int(b))
        assert arithmetic.extract(item.target) == item.answer and arithmetic.extract(item.answer) == ""
    assert build_task("arithmetic", None).extract(" 834 is it") == "834"
    assert build_task("arithmetic", None).extract("-834") == "-834"  # the leading integer, its sign included
    passkey = build_task("passkey:length=300,depth=0", SimpleNamespace(tok=BYTES, block_size=64))
    item = passkey.items("test", 1, seed=0)[0]
    assert len(item.prompt.encode()) + len(f" {item.answer}\n") <= 300 < len(item.prompt.encode()) + 30
    assert item.prompt.index(item.answer) < 150 and passkey.extract(item.target + ". Done") == item.answer


def test_worked_steps_carry_column_by_column_and_the_answer_follows_the_last_mark():
    """The docstring's examples worked by hand; a completion that writes "####" twice is read after
    the last one."""
    assert arithmetic.add_steps(478, 356) == "8+6=14, 7+5+1=13, 4+3+1=8"
    assert arithmetic.add_steps(95, 7) == "5+7=12, 9+0+1=10"
    assert arithmetic.mul_steps(478, 56) == "478*6=2868, 478*50=23900, 2868+23900=26768"
    assert build_task("arithmetic:steps", None).extract("3+4=7 #### 7 #### 834") == "834"


def test_cloze_context_is_the_lines_before_and_no_choice_repeats_in_its_file(corpus, tmp_path):
    """lines=3: the context is exactly the 3 lines before the right one (fewer at the top); a line
    that occurs twice in the file is never a choice, right or wrong."""
    task = build_task("stdlib-cloze:choices=10,lines=3", env_for(corpus, tmp_path))
    lines = [f"value_{i:02d} = {i} * 3" for i in range(24)]
    lines[6] = lines[15] = "        return None"
    task.docs = [("f.py", "\n".join(lines) + "\n")]
    items = task.items("train", 100, seed=0)
    assert len(items) > 5
    for item in items:
        i = lines.index(item.choices[item.label])
        assert item.context == "".join(line + "\n" for line in lines[max(0, i - 3):i])
        assert "        return None" not in item.choices


def test_a_small_item_space_is_drawn_whole_and_the_draw_stops_there(monkeypatch):
    """One-digit addition has 100 problems: asking for more than a split holds returns every one of
    the split's (enumerated here independently), in the order the full run of tries draws them, and
    the draw stops once every key was seen instead of spending all 50 * n + 1000 tries."""
    from train.evals import items as item_module

    task = build_task("arithmetic:op=add,digits=1", None)
    want = {f"{a}+{b}" for a in range(10) for b in range(10) if split_of(f"{a}+{b}") == "train"}
    draw, calls = item_module.draw_unique, []

    def counting(make, split, n, tries, space=0):
        calls.append(space)
        return draw(lambda: (calls.append(None), make())[1], split, n, tries, space)

    monkeypatch.setattr("train.evals.arithmetic.draw_unique", counting)
    drawn = task.items("train", 1000, seed=0)
    assert {item.prompt[:-1] for item in drawn} == want and len(drawn) == len(want)
    assert calls[0] == 100 and len(calls) - 1 < 5000  # every key seen long before 51,000 tries
    calls.clear()
    monkeypatch.setattr("train.evals.arithmetic.draw_unique", lambda make, split, n, tries, space: counting(make, split, n, tries))
    assert task.items("train", 1000, seed=0) == drawn and len(calls) - 1 == 51_000  # the same items


def python_value(text: str):
    """What Python itself makes of `text`, after checking that it holds only the node types
    the generator writes: the independent oracle for our tree evaluator (our own strings only)."""
    tree = ast.parse(text, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.Subscript, ast.List,
               ast.Constant, ast.Name, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod,
               ast.USub, ast.Lt, ast.LtE, ast.Eq, ast.NotEq)
    assert all(isinstance(node, allowed) for node in ast.walk(tree)), text
    assert all(node.id in pyexpr.CALLS for node in ast.walk(tree) if isinstance(node, ast.Name)), text
    return eval(compile(tree, "<generated>", "eval"), {"__builtins__": {}}, dict(pyexpr.CALLS))


def test_python_eval_answers_are_what_python_prints():
    by_hand = [
        (("bin", "-", ("const", 5), ("bin", "-", ("const", 3), ("const", 1))), "5 - (3 - 1)", 3),
        (("bin", "//", ("const", -7), ("const", 2)), "-7 // 2", -4),
        (("bin", "%", ("neg", ("const", 7)), ("const", 3)), "-7 % 3", 2),
        (("neg", ("const", -3)), "-(-3)", 3),
        (("bin", "*", ("bin", "+", ("const", 1), ("const", 2)), ("const", 4)), "(1 + 2) * 4", 12),
        (("index", ("bin", "+", ("const", "ab"), ("const", "c")), ("const", -1)), "('ab' + 'c')[-1]", "c"),
        (("cmp", "<", ("cmp", "==", ("const", 1), ("const", 1)), ("const", 2)), "(1 == 1) < 2", True),
        (("call", "len", [("bin", "*", ("list", [("const", 1)]), ("const", 3))]), "len([1] * 3)", 3),
    ]
    for node, text, value in by_hand:
        assert pyexpr.render(node) == text and pyexpr.evaluate(node) == value
    deep, shallow = (build_task(f"python-eval:depth={d}", None).items("test", n, seed=0) for d, n in ((3, 400), (1, 100)))
    assert len({i.prompt for i in deep}) == 400 and len({i.prompt for i in shallow}) == 100
    for item in deep + shallow:
        assert item.prompt.startswith(">>> ") and item.prompt.endswith("\n")
        assert repr(python_value(item.prompt[4:-1])) == item.answer, item.prompt


def test_val_documents_are_the_documents_prepare_put_in_the_val_split(corpus, tmp_path):
    """Against the token files themselves: the val split is each val document followed by eot."""
    small = tmp_path / "small"
    small.mkdir()
    for i in range(4):
        (small / f"s{i}.py").write_text(f"x = {i}\n" * (i + 1))
    (small / "empty.py").write_text("")
    below = tmp_path / "below"  # both ids hash below 0.5: at val_fraction 0.5 one must go back to train
    below.mkdir()
    for name in ("v4.py", "v8.py"):
        (below / name).write_text(f"# {name}\n")
    cases = [corpus, [f"--data.source={small}", f"--data.cache_dir={tmp_path / 'c'}", "--data.val_fraction=0.01"],
             [f"--data.source={small}", f"--data.cache_dir={tmp_path / 'c'}", "--data.val_fraction=0.5"],
             [f"--data.source={small / 's3.py'}", f"--data.cache_dir={tmp_path / 'c'}"],
             [f"--data.source={below}", f"--data.cache_dir={tmp_path / 'c'}", "--data.val_fraction=0.5"],
             [*corpus, "--data.max_docs=5"], [*corpus, "--data.max_tokens=20000"]]
    for case in cases:
        cfg = load_config(None, [*case, f"--train.out_dir={tmp_path / 'unused'}"]).data
        data = prepare(cfg, progress=False)
        written = bytes(np.asarray(data.val, dtype=np.int64).astype(np.uint8)).split(bytes([0]))  # eot 256 -> 0
        docs = val_documents(cfg, get_tokenizer("byte"))
        assert docs and sorted(written[:-1]) == sorted(text.encode() for _, text in docs), case


# ---------------------------------------------------------------------------------------------
# the command line on the tiny run


def test_cli_scores_stdlib_cloze_and_arithmetic_and_writes_only_the_json(base, capsys, tmp_path):
    before = snapshot(base)
    out = tmp_path / "scores.json"
    code, stdout, err = cli(capsys, base, "--task", "stdlib-cloze", "--task", "arithmetic:steps",
                            "--limit", "12", "--shots", "1", "--samples", "2", "--json", out,
                            entry=train_eval.main)
    assert code == 0, err
    assert snapshot(base) == before
    record = json.loads(out.read_text())
    cloze, arithmetic = record["tasks"]
    assert (cloze["task"], cloze["n"], cloze["chance"]) == ("stdlib-cloze", 12, 0.25)
    assert cloze["truncated"] == 12  # 8 lines of context do not fit 32 tokens
    assert set(cloze["metrics"]) == {"acc", "acc_norm", "acc_bytes", "acc_tokens"}
    assert arithmetic["n"] == 12 and set(arithmetic["metrics"]) >= {"pass@1", "pass@2 sampled", "maj@2"}
    centred = (cloze["metrics"]["acc_norm"] - 0.25) / 0.75 + arithmetic["metrics"]["pass@1"]
    assert record["aggregate"]["value"] == pytest.approx(centred / 2)
    assert record["aggregate"]["entered"] == {"stdlib-cloze": "acc_norm", "arithmetic:steps": "pass@1"}
    for line in ("stdlib-cloze      test   12  acc", "arithmetic:steps  test   12  pass@1",
                 "# stdlib-cloze: 1-shot", "12 of 12 cut from the left",
                 "averaged over stdlib-cloze acc_norm, arithmetic:steps pass@1): "):
        assert line in stdout, stdout
    assert f"{record['aggregate']['value']:.4f}" in stdout.splitlines()[-1]


def test_cli_reads_a_jsonl_file_and_hellaswag_fields(base, capsys, tmp_path):
    rows = [{"context": "def f1_2(x):\n    return x *", "choices": [" 2 + 1", " 9 + 9"], "label": 0},
            {"ctx": "def f3_4(x):\n    return", "endings": ["x * 4 + 3", "no"], "label": "0"}]
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    code, stdout, err = cli(capsys, base, "--task", f"{path}:delimiter=none", "--task", path, entry=train_eval.main)
    assert code == 0, err
    assert f"{path}:delimiter=none  test   2  acc_norm" in stdout


@pytest.mark.parametrize("lines,message", [
    (['{"context": "a", "choices": ["b", "c"], "label": 0}', '{"context": "a", "choices": '],
     "bad.jsonl line 2: Expecting value"),
    (['{"context": "a", "choices": ["b", "c"], "label": 2}'], "bad.jsonl line 1: label 2 is out of range for 2 choices"),
    (['{"context": "a", "choices": ["b"], "label": 0}'], 'line 1: "choices" must be a list of at least two'),
    (['{"context": "a", "choices": ["b", "c"], "label": true}'], 'line 1: "label" must be an integer'),
    (['{"context": "a", "choices": ["' + "b" * 40 + '", "' + "c" * 33 + '"], "label": 0}'],
     "no item can be scored: each has a choice longer than the model's context (model.block_size=32"),
])
def test_cli_refuses_a_bad_jsonl_file_in_one_line(base, capsys, tmp_path, lines, message):
    before = snapshot(base)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = cli(capsys, base, "--task", path, "--json", tmp_path / "out.json", entry=train_eval.main)
    assert code == 2 and message in error_line(err), err
    assert snapshot(base) == before and not (tmp_path / "out.json").exists()


def test_cli_refuses_bad_arguments_in_one_line(base, capsys, tmp_path):
    before = snapshot(base)
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    for args, message in [
        (["--task", "nosuch"], "--task nosuch: unknown task 'nosuch' (built in: arithmetic, passkey, python-eval"),
        (["--task", "arithmetic:digits=0"], "--task arithmetic:digits=0: option digits must be an integer from 1"),
        (["--task", "arithmetic:digits=5000"], "option digits must be an integer from 1 to 2000; got '5000'"),
        (["--task", "passkey:length=" + "9" * 5000], "option length must be an integer >= 1 of at most 100 digits"),
        (["--task", "arithmetic:base=2"], "unknown option 'base' (options: op, digits, steps, split)"),
        (["--task", "arithmetic:op=div"], "option op must be one of add, mul, mixed; got 'div'"),
        (["--task", "arithmetic:op=add,op=mul"], "--task arithmetic:op=add,op=mul: option op is given twice"),
        (["--task", "arithmetic:steps=yes"], "option steps must be a flag (given alone, or =true / =false); got 'yes'"),
        (["--task", "python-eval:depth=6"], "option depth must be an integer from 1 to 5; got '6'"),
        (["--task", "stdlib-cloze:choices=1"], "option choices must be an integer from 2 to 10; got '1'"),
        (["--task", "passkey:depth=1.5"], "option depth must be a number in [0, 1]; got '1.5'"),
        (["--task", "passkey:depth=half"], "option depth must be a number in [0, 1]; got 'half'"),
        (["--task", "missing.jsonl"], "no such file 'missing.jsonl'"),
        (["--task", "arithmetic", "--samples", "0"], "--samples must be an integer >= 1; got 0"),
        (["--task", "arithmetic", "--temperature", "0.5"], "--temperature is the temperature of --samples K"),
        (["--task", "arithmetic", "--samples", "2", "--temperature", "0"], "--temperature must be a number > 0"),
        (["--task", "arithmetic", "--json", taken], f"--json {taken} already exists"),
        (["--task", "arithmetic", "--json", base / "x.json"], "is inside the run"),
        (["--task", "arithmetic", "--json", tmp_path / "no" / "x.json"], "no such directory"),
        (["--shots", "2"], "--shots set(s) up task evaluation: add --task NAME"),
        (["--task", "arithmetic", "--train.eval_batches=3"], "sets up the val loss, which --task does not"),
        (["--task", "passkey:length=20"], "length=20 tokens cannot hold the instruction"),
        (["--task", "arithmetic", "--task", "arithmetic"], "--task arithmetic is given twice"),
        (["--task", "arithmetic", "--shots", "600"], "--shots 600: task arithmetic has only"),
    ]:
        code, _, err = cli(capsys, base, *args, entry=train_eval.main)
        assert code == 2 and message in error_line(err), (args, err)
    assert snapshot(base) == before and taken.read_text() == "{}"


def test_the_aggregate_centres_each_headline_on_its_chance():
    results = [{"task": "a", "metrics": {"acc": 0.9, "acc_norm": 0.5}, "headline": "acc_norm", "chance": 0.25},
               {"task": "b", "metrics": {"pass@1": 0.1}, "headline": "pass@1", "chance": 0.0}]
    agg = aggregate(results)
    assert agg["centred"] == pytest.approx({"a": 1 / 3, "b": 0.1}) and agg["value"] == pytest.approx((1 / 3 + 0.1) / 2)


def test_an_items_split_is_its_keys_blake2b_hash_cut_at_80_and_90_percent():
    import hashlib

    def by_hand(key):
        u = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
        return "train" if u < 0.8 else "validation" if u < 0.9 else "test"

    keys = [f"{a}+{b}" for a in range(40) for b in range(40)]
    assert [split_of(k) for k in keys] == [by_hand(k) for k in keys]
    assert {by_hand(k) for k in keys} == {"train", "validation", "test"}


def test_sampling_batches_rows_of_one_length_by_the_longest_request_and_past_the_batch_cap():
    """Prompts of one length share a batch: each row still gets its own max_new, the later one's
    longer too; more rows than gen.MAX_BATCH_ROWS all come back."""
    sample = gen.model_sampler(SuccessorStub(), BYTES, CPU, "fp32", top_k=0, seed=0)
    assert sample([list(b"ab"), list(b"xy")], [2, 5], 1, 0.0) == [["cd"], ["z{|}~"]]
    n = gen.MAX_BATCH_ROWS + 6
    assert sample([list(b"ab")], [3], n, 0.0) == [["cde"] * n]


def test_a_json_record_that_cannot_be_written_is_not_left_half_written(base, capsys, tmp_path):
    """A full disk (here a 100-byte limit per file) fails --json in one line, leaving no partial file
    to refuse the retry."""
    out = tmp_path / "out.json"
    args = (base, "--task", "arithmetic", "--limit", "2", "--json", out)
    with files_at_most(100):
        code, _, err = cli(capsys, *args, entry=train_eval.main)
    assert code == 1 and "File too large" in error_line(err) and not out.exists()
    assert cli(capsys, *args, entry=train_eval.main)[0] == 0 and json.loads(out.read_text())["tasks"]
