"""rft, grpo and dpo as ordinary runs: exact resume (rollouts reused across a checkpoint included),
the per-step metrics, the frozen reference, DPO learning from a pairs file, and bad input.

A tiny random model never answers arithmetic right, so where a test needs rewards of both kinds
the task's checker is replaced by a rule such a model meets about half the time (the answer's
first token is even); everything else is the real pipeline."""

import json
import math

import pytest
import torch

from tiny_run import TINY, cli, error_line, metrics, numerics
from train.config import load_config
from train.errors import ConfigError
from train.post.losses import group_advantages, grpo_loss, rft_loss, token_logprobs
from train.post.prompts import PromptSet
from train.post.rollouts import held_out_pass, pack
from train.run import load_run
from train.trainer import Trainer

TASK = ["--post.data=task:arithmetic:op=add,digits=1", "--post.n_train=40", "--post.n_val=6",
        "--post.prompts=2", "--post.samples=4", "--post.max_new_tokens=6"]


def run(out, method, *extra):
    return Trainer(load_config(None, [*TINY, f"--post.method={method}", *TASK, f"--train.out_dir={out}",
                                      "--train.eval_interval=2", *extra]))


@pytest.fixture
def even_first_token(monkeypatch):
    monkeypatch.setattr(PromptSet, "reward", lambda self, split, i, answer: float(answer[0] % 2 == 0))


def half_uniform(self, split, i, answer):
    """Problems of even index: every answer right (a group of advantage 0); the others: half."""
    return 1.0 if i % 2 == 0 else float(answer[0] % 2 == 0)


def test_pack_right_pads_and_masks_the_targets_that_are_answer_tokens():
    """Prompts (1, 2, 3) and (4) with answers (5, 6) and (7, 8, 9), padded with 0: mask[t] is 1
    where ids[t + 1] is an answer token, so the last prompt token's prediction is trained and no
    earlier prompt token or padding is."""
    ids, mask = pack([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad=0, device="cpu")
    assert ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert mask.tolist() == [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]]


@pytest.mark.parametrize("kl", [0.05, 0.0])
def test_grpo_resumes_exactly_with_rollouts_kept_across_the_checkpoint(tmp_path, even_first_token, monkeypatch, kl):
    if not kl:  # without a KL term the rows of advantage 0 are left out, and their old log-probs too
        monkeypatch.setattr(PromptSet, "reward", half_uniform)
    reuse = ["--post.rollout_steps=2", "--post.clip_eps=1e-4", f"--post.kl_coef={kl}", "--post.prompts=4",
             "--train.eval_interval=1"]  # the cut's last step evaluates
    run(tmp_path / "straight", "grpo", *reuse, "--train.max_steps=5").fit()
    run(tmp_path / "cut", "grpo", *reuse, "--train.max_steps=3", "--train.ckpt_interval=3").fit()
    run(tmp_path / "cut", "grpo", *reuse, "--train.max_steps=5").fit()  # step 4 reuses step 3's rollouts
    straight, cut = metrics(tmp_path / "straight"), metrics(tmp_path / "cut")
    assert numerics(straight) == numerics(cut)
    assert {"reward_mean", "reward_std", "pass_rate", "answer_len", "clip_frac", "rows_trained",
            "t_rollout_s", "t_reward_s", "t_loss_s"} <= straight[0].keys()
    assert (straight[0]["rows_trained"] < 1) == (not kl)
    if not kl:
        assert straight[1]["clip_frac"] > 0 == straight[0]["clip_frac"]
        return
    assert {"kl", "kl_loss"} <= straight[0].keys()
    assert 0 < straight[0]["reward_mean"] < 1 and straight[0]["grad_norm"] > 0
    assert [r["step"] for r in straight if "val_pass@1" in r] == [1, 2, 3, 4, 5]
    # the second step of a cycle trains the same rollouts (no new rewards) with a ratio that has
    # moved from 1 (by more than the tiny clip range); the first one's ratio is exactly 1
    assert "reward_mean" not in straight[1] and straight[1]["clip_frac"] > 0 == straight[0]["clip_frac"]
    assert straight[1]["kl"] > 0


def test_grpo_forwards_only_the_rows_with_an_advantage_for_the_same_loss_and_gradient(tmp_path, monkeypatch):
    monkeypatch.setattr(PromptSet, "reward", half_uniform)
    trainer = run(tmp_path / "grpo", "grpo", "--post.prompts=6", "--train.max_steps=1")
    method, key, model = trainer.method, (1337, 0, 0, 0, 0), trainer.model.eval()
    loss = method.terms(model, key)["loss"]
    loss.backward()
    skipped = [q.grad.clone() for q in model.parameters()]
    share = method.metrics()["rows_trained"]
    assert 0 < share < 1  # some groups scored all the same, some did not
    model.zero_grad()
    ro = method.kept[0][0]  # the same rollouts, every row forwarded
    adv = group_advantages(ro.rewards.view(-1, ro.group), method.post.scale_by_std).flatten()
    logps = token_logprobs(model(ro.ids) / method.post.temperature, ro.ids)
    full = grpo_loss(logps, logps.detach(), adv, ro.mask, 0.2)[0]
    full.backward()
    assert float(loss) == pytest.approx(float(full), rel=1e-5, abs=1e-7)
    for a, b in zip(skipped, (q.grad for q in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_grpo_scores_answers_at_the_sampling_temperature_and_starts_at_zero_kl(tmp_path, even_first_token):
    """At temperature 0.7 the policy gradient is that of log p(answer) under logits / 0.7, each token
    weighted by its answer's advantage over the batch's answer tokens (REINFORCE with the group
    baseline: the ratio is 1 on fresh rollouts); the reference's log-probabilities for the KL term are
    also at 0.7. At the first step the policy is the reference, so the KL is exactly 0."""
    trainer = run(tmp_path / "grpo", "grpo", "--post.temperature=0.7", "--post.kl_coef=0.1", "--train.max_steps=1")
    method, key, model = trainer.method, (1337, 0, 0, 0, 0), trainer.model.eval()
    terms = method.terms(model, key)
    assert terms["kl_loss"].item() == 0.0 and method.metrics()["kl"] == 0.0
    terms["loss"].backward()
    got = [q.grad.clone() for q in model.parameters()]
    model.zero_grad()
    ro = method.kept[0][0]
    adv = group_advantages(ro.rewards.view(-1, ro.group), method.post.scale_by_std).flatten()
    assert adv.any()
    logps = torch.log_softmax(model(ro.ids).float() / 0.7, dim=-1)[:, :-1].gather(-1, ro.ids[:, 1:, None])[..., 0]
    (-(logps * adv[:, None] * ro.mask).sum() / ro.mask.sum()).backward()
    for a, b in zip(got, (q.grad for q in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_held_out_pass_is_the_share_of_validation_prompts_answered_right(tmp_path, monkeypatch):
    """Six validation prompts (fewer than one batch of 64), two of them scored right: 2 / 6."""
    monkeypatch.setattr(PromptSet, "reward", lambda self, split, i, answer: float(split == "val" and i in (1, 4)))
    trainer = run(tmp_path / "rft", "rft", "--train.max_steps=1")
    assert held_out_pass(trainer.model, trainer.method.prompts, "fp32") == pytest.approx(2 / 6)
    assert held_out_pass(trainer.model, trainer.method.prompts, "fp32", batch=4) == pytest.approx(2 / 6)


def test_rft_trains_on_the_accepted_answers_only(tmp_path, even_first_token):
    trainer = run(tmp_path / "rft", "rft", "--train.max_steps=1")
    method, key = trainer.method, (1337, 0, 0, 0, 0)
    ro = method.rollout(trainer.model, key)  # what terms() samples for this key, again
    keep = ro.rewards > 0
    assert 0 < int(keep.sum()) < len(keep)
    model = trainer.model.eval()  # no dropout: the two forwards must agree
    want = rft_loss(token_logprobs(model(ro.ids), ro.ids)[keep], ro.mask[keep])
    assert float(method.terms(model, key)["loss"]) == pytest.approx(float(want), rel=1e-5)
    assert method.metrics()["accepted"] == pytest.approx(float(keep.float().mean()))


def write_pairs(path, n=60):
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"{i} ok?", "chosen": "yes", "rejected": "no"}) + "\n")
    return path


def test_dpo_from_a_pairs_file_learns_the_preference(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "dpo"
    run(out, "dpo", f"--post.data={data}", "--post.val_fraction=0.2", "--post.prompts=8", "--post.beta=0.5",
        "--train.max_steps=12", "--train.eval_interval=6", "--optim.lr=1e-2", "--model.dropout=0.0").fit()
    evals = [r for r in metrics(out) if "val_dpo_acc" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert evals[-1]["val_dpo_acc"] == 1.0 and evals[-1]["val_dpo_margin"] > evals[0]["val_dpo_margin"] > 0
    assert evals[-1]["val_dpo_loss"] < 0.5 < 0.69  # log 2: the loss of a policy equal to its reference


def moved_off(model, seed: int):
    """`model` in eval mode, its weights moved off the reference by a seeded random step."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for q in model.parameters():
            q.add_(torch.randn_like(q) * 0.05)
    return model.eval()


def answer_logp(m, prompt, answer) -> float:
    """The summed log-probability of `answer`'s tokens after `prompt`, one sequence alone."""
    logp = torch.log_softmax(m(torch.tensor([prompt + answer]))[0, :-1].float(), dim=-1)
    return sum(float(logp[len(prompt) - 1 + i, a]) for i, a in enumerate(answer))

def test_dpo_objective_compares_each_response_with_its_own_reference_logp(tmp_path):
    """DPO's loss on a micro-batch, the policy moved off its reference: the mean over pairs of
    -log sigmoid(beta ((pi(c) - ref(c)) - (pi(r) - ref(r)))), each term the summed log-probability
    of the answer's tokens after its prompt, computed here one sequence at a time."""
    data = write_pairs(tmp_path / "pairs.jsonl")
    trainer = run(tmp_path / "dpo", "dpo", f"--post.data={data}", "--post.val_fraction=0.2", "--post.beta=0.5",
                  "--post.prompts=3")
    method, key, model = trainer.method, (1337, 0, 0, 0, 0), moved_off(trainer.model, seed=0)
    want = 0.0
    with torch.no_grad():
        for prompt, c, r in zip(*method.batch(key)):
            margin = 0.5 * ((answer_logp(model, prompt, c) - answer_logp(method.reference, prompt, c))
                            - (answer_logp(model, prompt, r) - answer_logp(method.reference, prompt, r)))
            want += math.log1p(math.exp(-margin)) / 3
        assert float(method.terms(model, key)["loss"]) == pytest.approx(want, rel=1e-4)


def test_dpo_validation_averages_over_pairs_across_uneven_batches(tmp_path):
    """evaluate() in batches of 5 gives the per-pair mean of the DPO loss and margin, each pair
    computed alone; a last, shorter batch weighs only its own pairs."""
    data = write_pairs(tmp_path / "pairs.jsonl")
    trainer = run(tmp_path / "dpo", "dpo", f"--post.data={data}", "--post.val_fraction=0.2", "--post.beta=0.5")
    method, model = trainer.method, moved_off(trainer.model, seed=1)
    pairs = method.pairs.splits["val"]
    assert len(pairs) % 5 and len(pairs) > 5
    with torch.no_grad():
        margins = [0.5 * ((answer_logp(model, p, c) - answer_logp(method.reference, p, c))
                          - (answer_logp(model, p, r) - answer_logp(method.reference, p, r))) for p, c, r in pairs]
        got = method.pairs.evaluate(model, method.reference, 0.5, batch=5)
    assert got["val_dpo_loss"] == pytest.approx(sum(math.log1p(math.exp(-m)) for m in margins) / len(pairs), rel=1e-4)
    assert got["val_dpo_margin"] == pytest.approx(sum(margins) / len(pairs), rel=1e-4, abs=1e-6)
    assert got["val_dpo_acc"] == sum(m > 0 for m in margins) / len(pairs)

def test_the_reference_is_the_initial_weights_also_after_a_resume(tmp_path, base):
    data = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "ref"
    args = ("dpo", f"--post.data={data}", "--post.val_fraction=0.2", f"--train.init_from={base}",
            "--train.ckpt_interval=2")
    run(out, *args, "--train.max_steps=2").fit()
    resumed = run(out, *args, "--train.max_steps=3")
    source = load_run(base).model.state_dict()
    reference = resumed.method.reference.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in source.items())
    assert not any(p.requires_grad for p in resumed.method.reference.parameters())
    resumed.fit()
    trained = load_run(out).model.state_dict()
    assert not all(torch.equal(trained[k], v) for k, v in source.items())


def test_dpo_from_a_task_builds_pairs_from_the_references_checked_answers(tmp_path, even_first_token):
    out = tmp_path / "dpo-task"
    trainer = run(out, "dpo", "--train.max_steps=2", "--post.prompts=4")
    prompts, chosen, rejected = trainer.method.batch((1337, 0, 0, 0, 0))
    assert prompts and all(c[0] % 2 == 0 and r[0] % 2 == 1 for c, r in zip(chosen, rejected))  # the checker's verdicts
    ro = trainer.method.rollout(trainer.method.reference, (1337, 0, 0, 0, 0))  # the answers batch() judged
    want = [(ro.prompts[g], ro.answers[g + right[0]], ro.answers[g + wrong[0]]) for g in range(0, len(ro.answers), 4)
            if (right := [r for r in range(4) if ro.answers[g + r][0] % 2 == 0])
            and (wrong := [r for r in range(4) if ro.answers[g + r][0] % 2 == 1])]  # each group's first of each
    assert list(zip(prompts, chosen, rejected)) == want
    assert all(p[-1] == trainer.method.tok.chat.role_id["assistant"] for p in prompts)
    trainer.fit()
    first = metrics(out)[0]
    assert first["pairs"] >= 1 and "dpo_acc" in first and first["loss"] > 0  # pairs: per micro-batch


@pytest.mark.parametrize("args, message", [
    (["--post.method=grpo", "--post.data=qa.jsonl", "--post.checker=nope"], "post.checker must be one of"),
    (["--post.method=grpo", "--post.data=qa.jsonl"], "post.data='qa.jsonl': no such file"),
    (["--post.method=grpo", "--post.data=task:arithmetic", "--post.samples=1"], "post.samples must be >= 2"),
    (["--post.method=dpo", "--post.data=task:arithmetic", "--post.beta=0"], "post.beta must be > 0"),
    (["--post.method=ppo", "--post.data=task:arithmetic"], "post.method"),
    (["--post.method=grpo", "--post.data=task:nosuch"], "unknown task 'nosuch'"),  # no such checker
])
def test_bad_post_settings_are_one_line_errors(tmp_path, capsys, cfg_file, args, message):
    code, _, err = cli(capsys, cfg_file, "--train.out_dir=" + str(tmp_path / "x"), *args)
    assert code == 2 and message in error_line(err)


def test_prompts_that_cannot_train_are_refused_in_one_line(tmp_path, capsys, cfg_file):
    """A multiple-choice task has no answer to generate; a 40-character prompt fills the 32-token
    context before any answer."""
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"prompt": "x" * 40 if i == 0 else f"{i}+1=", "answer": "2"}) + "\n"
                            for i in range(10)))
    for args, message in [
        (["--post.data=task:stdlib-cloze"], "post.data='task:stdlib-cloze': a chat task must be generative"),
        ([f"--post.data={long}", "--post.val_fraction=0.5"],
         f"a prompt of '{long}' takes 43 tokens, the whole model.block_size=32: no room to answer"),
    ]:
        code, _, err = cli(capsys, cfg_file, *TINY, "--post.method=grpo", "--train.out_dir=" + str(tmp_path / "x"),
                           *args)
        assert code == 2 and message in error_line(err), (args, err)
        assert not any((tmp_path / "x").rglob("*"))  # at most the empty run directory


def test_a_pair_is_the_prompt_and_both_answers_ended_and_both_must_fit(tmp_path, capsys, cfg_file):
    data = write_pairs(tmp_path / "pairs.jsonl", n=10)
    trainer = run(tmp_path / "dpo", "dpo", f"--post.data={data}", "--post.val_fraction=0.2", "--train.max_steps=1")
    tok = trainer.method.tok
    for p, c, r in zip(*trainer.method.pairs.draw(3, (1337, 0, 0, 0, 0))):
        assert p[-1] == tok.chat.role_id["assistant"] and tok.decode(p).endswith(" ok?<|end|><|assistant|>")
        assert (c, r) == (tok.encode("yes") + [tok.eot], tok.encode("no") + [tok.eot])
    with data.open("a") as f:  # a rejected answer longer than the context, the chosen one short
        f.write(json.dumps({"prompt": "x", "chosen": "y", "rejected": "n" * 40}) + "\n")
    code, _, err = cli(capsys, cfg_file, *TINY, "--post.method=dpo", f"--post.data={data}", "--post.val_fraction=0.2",
                       "--train.max_steps=1", "--train.out_dir=" + str(tmp_path / "x"))
    assert code == 2 and "1 train pairs exceed model.block_size=32 tokens" in error_line(err)


def test_a_bad_pairs_line_names_its_file_and_line(tmp_path, capsys, cfg_file):
    data = write_pairs(tmp_path / "pairs.jsonl", n=3)
    with data.open("a") as f:
        f.write(json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    code, _, err = cli(capsys, cfg_file, *TINY, "--post.method=dpo", f"--post.data={data}", "--train.max_steps=1",
                       "--train.out_dir=" + str(tmp_path / "x"))
    assert code == 2 and f"{data}:4: expected" in error_line(err)
    assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_checkers_read_gsm8k_marks_last_numbers_and_exact_text():
    from train.post.config import CHECKERS as NAMES
    from train.post.prompts import CHECKERS

    assert tuple(CHECKERS) == NAMES
    assert CHECKERS["answer-mark"]("3 + 4 = 7\nso 1,234 #### 1,234 apples") == "1234"
    assert CHECKERS["answer-mark"]("no mark 12") == ""
    assert CHECKERS["last-number"]("first 3, then -4.5 and 1,000") == "1000"
    assert CHECKERS["exact"]("  yes \n") == "yes"


def test_checkers_take_the_last_mark_the_first_number_after_it_and_its_sign():
    """answer-mark reads the number right after the last "####", whatever follows it; both keep a
    minus sign."""
    from train.post.prompts import CHECKERS

    assert CHECKERS["answer-mark"]("#### 3 then #### 12 apples in 4 bags") == "12"
    assert CHECKERS["answer-mark"]("so #### -5") == "-5"
    assert CHECKERS["last-number"]("from 3 down to -7") == "-7"


def test_a_conversational_pair_keeps_every_prompt_turn():
    """TRL's conversational format: the prompt's system and user turns both precede the answers."""
    from train.post.chat_format import Message
    from train.post.pairs import read_pair

    record = {"prompt": [{"role": "system", "content": "Add."}, {"role": "user", "content": "2+3="}],
              "chosen": [{"role": "assistant", "content": "5"}], "rejected": "6"}
    assert read_pair(record, "x:1") == ([Message("system", "Add."), Message("user", "2+3=")], "5", "6")


def test_sampled_answers_are_grouped_prompt_by_prompt_and_cut_after_the_end_token():
    """Two prompts of one length decode as one batch of rows p0, p0, p1, p1; the stub answers
    row r of prompt [p] with p * 10 + r, then <|end|> (9), then 5, which is cut."""
    from train.post.rollouts import sample

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def generate(self, idx, max_new, *, temperature, top_k, generator, stop_token):
            rows = torch.arange(len(idx))[:, None]
            return torch.cat([idx, idx[:, :1] * 10 + rows, torch.full_like(rows, 9), torch.full_like(rows, 5)], 1)

    assert sample(Stub(), [[1], [2]], 2, 3, 1.0, 0, None, 9, "fp32") == [[10, 9], [11, 9], [22, 9], [23, 9]]
    # prompts of two lengths: [1] and [3] decode together (rows 0-3), [2, 2] alone; each answer
    # still lands in its own prompt's slots
    assert sample(Stub(), [[1], [2, 2], [3]], 2, 3, 1.0, 0, None, 9, "fp32") == [
        [10, 9], [11, 9], [20, 9], [21, 9], [32, 9], [33, 9]]


def test_each_rollout_key_seeds_its_own_generator(monkeypatch):
    """The sampler's seed is a function of the whole batch key: the same key, the same seed; another
    step, micro-batch or rank, another seed."""
    from types import SimpleNamespace

    from train.post import methods

    seeds = []

    def fake_sample(model, prompts, n, max_new, temperature, top_k, generator, eot, dtype):
        seeds.append(generator.initial_seed())
        return [[eot]] * (len(prompts) * n)

    monkeypatch.setattr(methods, "sample", fake_sample)
    post = SimpleNamespace(prompts=1, samples=2, temperature=1.0, top_k=0)
    prompts = SimpleNamespace(draw=lambda n, key: [0] * n, ids={"train": [[1, 2]]}, max_new=3,
                              reward=lambda split, i, answer: 0.0)
    method = methods.SamplingMethod(post, SimpleNamespace(eot=0), 32, prompts, torch.nn.Linear(1, 1), None, "fp32")
    for key in [(7, 2, 1, 0, 0), (7, 2, 1, 0, 0), (7, 2, 2, 0, 0), (7, 2, 1, 1, 0), (7, 2, 1, 0, 1)]:
        method.rollout(None, key)
    assert seeds[0] == seeds[1] and len(set(seeds)) == 4


def test_grpo_on_a_jsonl_of_prompts_and_answers(tmp_path, capsys, cfg_file):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": i + 1}) + "\n" for i in range(40)))
    out = tmp_path / "qa"
    trainer = run(out, "grpo", f"--post.data={data}", "--post.val_fraction=0.25", "--post.checker=last-number",
                  "--train.max_steps=2")
    prompts = trainer.held_out
    assert len(prompts.splits["val"]) + len(prompts.splits["train"]) == 40 and prompts.splits["val"]
    first = prompts.splits["train"][0]
    right = trainer.tokenizer.encode(f"so {first.answer}") + [trainer.method.tok.eot]
    wrong = trainer.tokenizer.encode(f"so {int(first.answer) + 5}")
    assert prompts.reward("train", 0, right) == 1.0 and prompts.reward("train", 0, wrong) == 0.0
    trainer.fit()
    assert "val_pass@1" in metrics(out)[-1]
    with data.open("a") as f:
        f.write('{"prompt": "x"}\n')
    code, _, err = cli(capsys, cfg_file, *TINY, "--post.method=grpo", f"--post.data={data}",
                       "--train.out_dir=" + str(tmp_path / "bad"))
    assert code == 2 and f"{data}:41: expected" in error_line(err)


def test_post_curves_average_the_seeds_at_every_shared_step(tmp_path, monkeypatch):
    from train import plot
    from train.plot import _by_step, majority_curves, plot_post
    from train.report import RunData

    def fake(rewards, passes):
        records = [{"step": i + 1, "reward_mean": r} for i, r in enumerate(rewards)]
        for step, p in passes:
            records[step - 1]["val_pass@1"] = p
        return RunData(tmp_path, None, records, {})

    runs = [fake([0.0, 1.0, 1.0], [(2, 0.5), (3, 0.6)]), fake([1.0, 1.0, 0.0], [(2, 0.7), (3, 0.8)])]
    steps, lo, mid, hi = _by_step(runs, "reward_mean", window=2)
    assert steps == [1, 2, 3] and mid == [0.5, 0.75, 0.75]  # each run's mean over its last 2 steps
    steps, lo, mid, hi = _by_step(runs, "val_pass@1")
    assert steps == [2, 3] and lo == [0.5, 0.6] and hi == [0.7, 0.8] and mid == pytest.approx([0.6, 0.7])
    runs[0].tasks = {"tasks": [{"kind": "generate", "metrics": {"pass@1": 0.9, "maj@1": 0.5, "maj@2": 0.6}}]}
    runs[1].tasks = {"tasks": [{"kind": "generate", "metrics": {"pass@1": 0.8, "maj@1": 0.7, "maj@2": 0.8}}]}
    assert majority_curves(runs) == pytest.approx({1: 0.6, 2: 0.7})
    figures, save = [], plot._save
    monkeypatch.setattr(plot, "_save", lambda fig, path, title: (figures.append(fig), save(fig, path, title))[1])
    assert plot_post({"grpo": runs}, tmp_path / "curves.png").stat().st_size > 0
    axes = figures[0].axes
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in axes] == [
        ("step", "reward of the step's samples (mean of 10 logged steps)"), ("step", "held-out pass@1 (greedy)"),
        ("k (samples voting, test problems)", "maj@k")]
    assert all([t.get_text() for t in ax.get_legend().get_texts()] == [want] for ax, want in
               zip(axes, ["grpo (n=2)", "grpo (n=2)", "grpo"]))


def test_post_data_from_a_hugging_face_dataset(tmp_path, monkeypatch):
    """hf:NAME[:CONFIG][@SPLIT] reads records through `datasets.load_dataset` (stood in for here:
    tests never download), parsed and split as a JSONL file's lines are."""
    import sys
    import types

    from train.post.jsonl import read_split
    from train.post.prompts import read_prompt

    asked = []

    def load_dataset(name, config, split):
        asked.append((name, config, split))
        return [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(200)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    got = read_split("hf:someone/sums:main@test", 0.25, read_prompt, "")
    assert asked == [("someone/sums", "main", "test")]
    assert len(got["train"]) + len(got["val"]) == 200 and 20 < len(got["val"]) < 80
    assert read_split("hf:someone/sums", 0.25, read_prompt, "") == got and asked[-1] == ("someone/sums", None, "train")
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(
        load_dataset=lambda *a, **k: [{"prompt": "x"}]))
    with pytest.raises(ConfigError, match=r"hf:someone/bad\[0\]: expected"):
        read_split("hf:someone/bad", 0.25, read_prompt, "")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(ConfigError, match="needs the datasets package"):
        read_split("hf:someone/sums", 0.25, read_prompt, "")
