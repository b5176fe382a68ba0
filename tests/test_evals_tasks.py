"""Task details checked against values worked by hand: the generation budget, the chance of the
items actually scored, the passkey prompt and checker, and a JSONL task's train= file."""

import json
from types import SimpleNamespace

from test_evals import BYTES, CPU, SuccessorStub, stub_task
from train.evals import passkey
from train.evals.items import ChoiceItem, GenItem
from train.evals.suite import Settings, _shots, run_task
from train.evals.tasks import build_task


def test_each_answer_gets_its_tokens_plus_a_newline_and_one_token_of_slack():
    """Byte tokens: target "3" -> 1 + 2 new tokens, "abcd" -> 4 + 2; the prompt is passed whole."""
    items = [GenItem("1+2=", "3", "3"), GenItem("xy=", "abcd", "abcd")]
    seen = {}

    def sampler(prompts, max_new, n, temperature):
        seen.update(prompts=prompts, max_new=max_new)
        return [[item.answer] for item in items]

    task = stub_task("generate", items, chance=0.0, extract=str.strip)
    result = run_task(task, SuccessorStub(block_size=64), BYTES, Settings(), CPU, "fp32", sampler=sampler)
    assert seen == {"prompts": [list(b"1+2="), list(b"xy=")], "max_new": [3, 6]}
    assert result["metrics"] == {"pass@1": 1.0} and result["truncated"] == 0


def test_chance_is_the_mean_over_the_items_scored_not_the_skipped_ones():
    """block_size 4: the 4-choice item has a 5-byte choice and is skipped, so only the 2-choice
    item is scored and chance is 1/2 (not (1/2 + 1/4) / 2)."""
    items = [ChoiceItem("ab", ("c", "d"), 0), ChoiceItem("ab", ("c", "d", "e", "fghij"), 0)]
    result = run_task(stub_task("choice", items, delimiter=""), SuccessorStub(block_size=4), BYTES, Settings(),
                      CPU, "fp32")
    assert (result["n"], result["skipped"]) == (1, 1)
    assert result["chance"] == 0.5


def test_passkey_checker_reads_only_the_integer_that_starts_the_completion():
    task = build_task("passkey:length=300", SimpleNamespace(tok=BYTES, block_size=64))
    assert task.extract(" 68214. The pass key") == "68214"
    assert task.extract("68214") == "68214"
    assert task.extract("the key is 68214") == ""  # a number later in the line is not an answer
    assert task.extract(" is it 123? 456") == ""


def count_filler(text: str) -> int:
    return sum(text.count(sentence) for sentence in passkey.FILLER)


def test_passkey_depth_puts_the_nearest_whole_number_of_sentences_before_the_needle():
    """10 sentences at depth 0.37: 3.7 -> 4 before the key, 6 after; at 0.93: 9.3 -> 9."""
    for depth, before in ((0.37, 4), (0.93, 9), (0.0, 0), (1.0, 10)):
        head, _, tail = passkey.passkey_prompt("123", 10, depth).partition(passkey.NEEDLE.format(key="123"))
        assert (count_filler(head), count_filler(tail)) == (before, 10 - before), depth


def test_passkey_prompt_holds_as_many_sentences_as_the_length_allows():
    """Byte tokens: the prompt and its answer's room (" KEY", a newline, one token of slack) fit
    `length`, and one more filler sentence would not."""
    for length, depth in ((300, 0.0), (257, 0.5), (411, 1.0)):
        task = build_task(f"passkey:length={length},depth={depth}", SimpleNamespace(tok=BYTES, block_size=64))
        for item in task.items("test", 3, seed=0):
            n, answer = count_filler(item.prompt), len(f" {item.answer}") + 2
            assert len(item.prompt.encode()) + answer <= length, (length, n)
            more = passkey.passkey_prompt(item.answer, n + 1, depth)
            assert len(more.encode()) + answer > length, (length, n)
    for n in (1, 4, 9):  # a length that n sentences fill exactly holds all n
        length = len(passkey.passkey_prompt("12345", n, 0.5).encode()) + len(" 12345") + 2
        task = build_task(f"passkey:length={length}", SimpleNamespace(tok=BYTES, block_size=64))
        assert count_filler(task.item("12345").prompt) == n


def test_a_passkey_prompt_at_the_default_length_is_scored_whole():
    """At length = block_size the evaluation cuts nothing: every prompt reaches the sampler whole,
    instruction first, at block sizes where the prompt fills the context exactly."""
    for block_size in (225, 242, 261, 273, 300):
        task = build_task("passkey", SimpleNamespace(tok=BYTES, block_size=block_size))
        seen = []

        def sampler(prompts, max_new, n, temperature):
            seen.extend(zip(prompts, max_new))
            return [["0"] for _ in prompts]

        result = run_task(task, SuccessorStub(block_size), BYTES, Settings(limit=3), CPU, "fp32", sampler=sampler)
        assert result["truncated"] == 0 and len(seen) == 3, block_size
        for prompt, new in seen:
            assert bytes(prompt).startswith(passkey.INSTRUCTION.encode()) and len(prompt) + new <= block_size


def test_a_jsonl_task_draws_its_shots_from_the_train_file(tmp_path):
    test_rows = [{"context": f"q{i} =", "choices": ["no", "yes"], "label": 1} for i in range(3)]
    train_rows = [{"context": f"t{i} =", "choices": ["a", "b"], "label": 0} for i in range(4)]
    for name, rows in (("test.jsonl", test_rows), ("train.jsonl", train_rows)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = build_task(f"{tmp_path / 'test.jsonl'}:train={tmp_path / 'train.jsonl'}", None)
    train = [ChoiceItem(r["context"], tuple(r["choices"]), r["label"]) for r in train_rows]
    test = task.items("test", 10, seed=0)
    assert task.items("train", 512, seed=0) == train
    assert [item.context for item in test] == ["q0 =", "q1 =", "q2 ="]
    for shots in _shots(task, test, Settings(shots=2)):
        assert len(shots) == 2 and all(s in train for s in shots)
