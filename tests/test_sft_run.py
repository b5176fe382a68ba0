"""Supervised fine-tuning as an ordinary run: exact resume, a start from a pretrained run, the chat
command's cached turns, and evaluation prompts in the chat format."""

import pytest
import torch

from model import GPT, ModelConfig
from tiny_run import TINY, cli, error_line, metrics, numerics, randomize_
import train.chat
from train.chat import Chat, _loop
from train.chat import main as chat_main
from train.config import load_config
from train.errors import ConfigError
from train.evals.generative import prompt_ids
from train.evals.items import GenItem
from train.post.chat_format import ChatTokenizer, Message
from train.run import load_run
from train.sample import main as sample_main
from train.tokenizer import get_tokenizer
from train.trainer import Trainer

SFT = ["--post.method=sft", "--post.data=task:arithmetic:op=add,digits=2", "--post.n_train=300", "--post.n_val=40"]


def sft_run(out, *extra):
    return Trainer(load_config(None, [*TINY, *SFT, f"--train.out_dir={out}", "--train.eval_interval=3", *extra]))


def test_an_sft_run_resumes_bit_exactly(tmp_path):
    sft_run(tmp_path / "straight", "--train.max_steps=6").fit()
    sft_run(tmp_path / "cut", "--train.max_steps=3", "--train.ckpt_interval=3").fit()
    sft_run(tmp_path / "cut", "--train.max_steps=6").fit()
    straight, cut = metrics(tmp_path / "straight"), metrics(tmp_path / "cut")
    assert [r["step"] for r in straight if "val_loss" in r] == [3, 6]
    assert numerics(straight) == numerics(cut)
    assert straight[-1]["val_loss"] < [r for r in straight if "val_loss" in r][0]["val_loss"]
    assert all("val_pass@1" in r for r in straight if "val_loss" in r)  # greedy, on held-out problems


def test_sft_starts_from_a_pretrained_run(tmp_path, base):
    """The base run (byte vocabulary, 257 ids) is fine-tuned with the chat tokens in its padded rows:
    every weight it had comes over unchanged."""
    trainer = sft_run(tmp_path / "ft", f"--train.init_from={base}", "--train.max_steps=2")
    assert trainer.cfg.model.vocab_size == 261 and trainer.cfg.model.padded_vocab_size == 320
    source = load_run(base).model.state_dict()
    assert all(torch.equal(trainer.model.state_dict()[k].cpu(), v) for k, v in source.items())
    trainer.fit()
    assert metrics(tmp_path / "ft")[0]["step"] == 0 and metrics(tmp_path / "ft")[-1]["step"] == 2


def test_chat_keeps_its_cache_across_turns_and_answers_once(tmp_path, capsys):
    out = tmp_path / "chat"
    sft_run(out, "--train.max_steps=4").fit()
    run = load_run(out)
    tok = ChatTokenizer(get_tokenizer("byte"))
    chat = Chat(run.model, tok, max_new_tokens=6, temperature=0.0, top_k=0, generator=None)
    first = chat.turn("12+30=")
    assert chat.tokens[:9] == tok.chat.prompt([Message("user", "12+30=")])
    said = chat.tokens + chat.user_ids("40+41=")  # what the second turn adds to the cache
    second = chat.turn("40+41=")
    # the second answer again, from the whole conversation recomputed without a cache
    new = run.model.generate(torch.tensor([said]), 6, temperature=0.0, use_cache=False)[0, len(said):].tolist()
    assert chat.tokens == said + new[:len(chat.tokens) - len(said)]
    assert second == tok.decode([t for t in new if t != tok.eot][:len(chat.tokens) - len(said)])
    capsys.readouterr()
    code, printed, _ = cli(capsys, out, "--once", "12+30=", "--temperature", "0", "--max_new_tokens", "6",
                           entry=chat_main)
    assert code == 0 and printed == first + "\n"
    for bad, message in [(["--temperature", "-1"], "--temperature must be a number >= 0"),
                         (["--top_k", "-3"], "--top_k must be >= 0"),
                         (["--max_new_tokens", "0"], "--max_new_tokens must be >= 1"),
                         (["--seed", "-1"], "--seed must be in [0, 2**63); got -1")]:
        code, _, err = cli(capsys, out, "--once", "12+30=", *bad, entry=chat_main)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (bad, err)


@torch.no_grad()
def answering(token: int) -> GPT:
    """A random chat-vocabulary model (block_size 64) whose greedy next token is always `token`: the final
    norm adds a fixed vector u to a small normalised state and the head's row for `token` has u . w = 10,
    while the other logits (std ~1.7) still depend on the whole context."""
    model = randomize_(GPT(ModelConfig(vocab_size=261, block_size=64, n_layer=2, n_head=2, n_embd=32,
                                       tie_embeddings=False)))
    u = torch.randn(32, generator=torch.Generator().manual_seed(1))
    model.transformer.ln_f.weight.mul_(0.1)
    model.transformer.ln_f.bias.copy_(u)
    model.lm_head.weight[token] = 10 * u / u.dot(u)
    return model


def assert_cache_holds(chat: Chat, ids: list[int]) -> None:
    """The chat's cache holds exactly `ids`: one more token through it gives the full forward's logits."""
    with torch.no_grad():
        cached = chat.model(torch.tensor([[7]]), cache=chat.cache)[0, -1]
        torch.testing.assert_close(cached, chat.model(torch.tensor([ids + [7]]))[0, -1], atol=1e-5, rtol=0)


def test_an_answer_ended_by_end_enters_the_cache_with_the_next_turn(capsys):
    """...and not with the first turn of a conversation that starts over (the context is full)."""
    tok = ChatTokenizer(get_tokenizer("byte"))
    chat = Chat(answering(tok.eot), tok, max_new_tokens=6, temperature=0.0, top_k=0, generator=None)
    assert chat.turn("12+30=") == "" and chat.turn("40+41=") == ""  # <|end|> at once, twice
    said = [Message("user", "12+30="), Message("assistant", ""), Message("user", "40+41="), Message("assistant", "")]
    assert chat.tokens == tok.chat.encode(said)[0].tolist()
    assert_cache_holds(chat, chat.tokens[:-1])  # the second <|end|> waits for the third turn
    for turn in range(2, 7):  # 19 positions, then 8 a turn: the sixth turn's answer would not fit
        assert chat.turn(f"{turn}+1=") == ""
        assert ("starts over" in capsys.readouterr().err) == (turn == 6)
    assert chat.tokens == tok.chat.encode([Message("user", "6+1="), Message("assistant", "")])[0].tolist()
    assert_cache_holds(chat, chat.tokens[:-1])


def test_a_conversation_past_the_context_starts_over_with_a_note(capsys):
    """Each turn takes 7 prompt ids and 8 answer tokens: four fit in 64 positions, the fifth starts over."""
    tok = ChatTokenizer(get_tokenizer("byte"))
    chat = Chat(answering(ord("7")), tok, max_new_tokens=8, temperature=0.0, top_k=0, generator=None)
    for turn in range(5):
        assert chat.turn(f"{turn}+1=") == "7" * 8
        assert ("starts over" in capsys.readouterr().err) == (turn == 4)
    assert chat.tokens == tok.chat.prompt([Message("user", "4+1=")]) + [ord("7")] * 8
    assert_cache_holds(chat, chat.tokens)


def test_a_turn_that_continues_gets_the_rest_of_the_context(capsys):
    """A turn continues the conversation while min(max_new_tokens, block_size / 2) positions are left for
    its answer, which then stops at the last position: 7 prompt ids and 6 answer tokens, then 7 more ids
    leave 44 of 64 positions for an answer of up to 100 tokens."""
    tok = ChatTokenizer(get_tokenizer("byte"))
    chat = Chat(answering(ord("7")), tok, max_new_tokens=6, temperature=0.0, top_k=0, generator=None)
    assert chat.turn("1+1=") == "7" * 6
    chat.max_new = 100
    assert chat.turn("2+1=") == "7" * 44
    assert "starts over" not in capsys.readouterr().err
    assert chat.length == len(chat.tokens) == 64
    prompts = [tok.chat.prompt([Message("user", text)]) for text in ("1+1=", "2+1=")]
    assert chat.tokens == prompts[0] + [ord("7")] * 6 + prompts[1] + [ord("7")] * 44


def test_a_long_first_message_answers_in_what_is_left_and_one_filling_the_context_is_refused(capsys):
    """A first message of 43 ids leaves 21 of 64 positions: the answer takes them, with no note (there is
    nothing to start over); 63 ids leave one token; 64 ids leave none, a ConfigError."""
    tok = ChatTokenizer(get_tokenizer("byte"))
    chat = Chat(answering(ord("7")), tok, max_new_tokens=30, temperature=0.0, top_k=0, generator=None)
    assert len(chat.user_ids("1" * 40)) == 43
    assert chat.turn("1" * 40) == "7" * 21
    assert capsys.readouterr().err == ""
    chat.reset()
    assert chat.turn("1" * 60) == "7"
    with pytest.raises(ConfigError, match=r"the message \(64 tokens\) fills the context"):
        chat.turn("1" * 61)


def test_a_chat_runs_answer_goes_on_past_a_newline_to_end():
    """Only a base run's answer ends at a newline; a chat run's ends at <|end|> (or max_new_tokens)."""
    tok = ChatTokenizer(get_tokenizer("byte"))
    chat = Chat(answering(ord("\n")), tok, max_new_tokens=6, temperature=0.0, top_k=0, generator=None)
    assert chat.turn("1+1=") == "\n" * 6  # all of it, shown and returned
    assert chat.tokens == tok.chat.prompt([Message("user", "1+1=")]) + [ord("\n")] * 6
    assert chat.pending == [] and chat.length == len(chat.tokens)
    base = Chat(answering(ord("\n")), get_tokenizer("byte"), max_new_tokens=6, temperature=0.0, top_k=0,
                generator=None)
    assert base.turn("1+1=") == ""
    assert base.tokens == [*b"User: 1+1=\nAssistant:", ord("\n")] and base.pending == [ord("\n")]


@pytest.mark.parametrize("said, answer, pieces", [
    ([*"é!".encode(), 260], "é!", ["é", "!"]),  # "é" is two byte tokens: shown once both are there
    ([ord("a"), 0xC3], "a\ufffd", ["a", "\ufffd"]),  # an answer cut inside a character shows what it has
], ids=["two-byte-character", "cut-character"])
def test_the_streamed_pieces_add_up_to_the_answer(monkeypatch, said, answer, pieces):
    tok = ChatTokenizer(get_tokenizer("byte"))
    script = iter(said)
    monkeypatch.setattr(train.chat, "sample_next", lambda *args, **kwargs: torch.tensor([next(script)]))
    chat = Chat(answering(ord("7")), tok, max_new_tokens=len(said), temperature=0.0, top_k=0, generator=None)
    emitted = []
    assert chat.turn("1+1=", emitted.append) == answer
    assert [piece for piece in emitted if piece] == pieces


def test_the_chat_loop_commands(monkeypatch, capsys):
    """/reset starts over; /temperature sets the temperature, a bad value is refused with a note; an answer
    stopped by Ctrl-C leaves a conversation whose cache holds its tokens; Ctrl-D ends the loop."""
    tok = ChatTokenizer(get_tokenizer("byte"))
    chat = Chat(answering(ord("7")), tok, max_new_tokens=3, temperature=0.0, top_k=0, generator=None)

    def typing(*lines):  # then Ctrl-D
        it = iter(lines)

        def typed(prompt):
            line = next(it, None)
            if line is None:
                raise EOFError
            return line

        monkeypatch.setattr("builtins.input", typed)

    typing("1+1=", "/reset")
    assert _loop(chat, lambda piece: None) == 0
    assert chat.tokens == [] and chat.length == 0
    typing("/temperature -1", "/temperature x")
    assert _loop(chat, lambda piece: None) == 0 and chat.temperature == 0.0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err), err
    typing("ab\udcff", "1+1=")  # a line of bytes that are not UTF-8 (as input() gives it) is refused alone
    assert _loop(chat, lambda piece: None) == 0 and chat.length > 0
    assert "error: that line is not valid UTF-8 text" in capsys.readouterr().err
    chat.reset()
    typing("/temperature 0.5")
    assert _loop(chat, lambda piece: None) == 0 and chat.temperature == 0.5
    chat.temperature = 0.0
    shown = []

    def interrupted(piece):  # Ctrl-C after the answer's first token went into the cache
        shown.append(piece)
        if len(shown) == 2:
            raise KeyboardInterrupt

    typing("1+1=", "2+1=")
    assert _loop(chat, interrupted) == 0
    assert chat.tokens[-4:] == [*tok.chat.prompt([Message("user", "2+1=")])[-1:], ord("7"), ord("7"), ord("7")]
    assert_cache_holds(chat, chat.tokens)


def test_chat_once_prompts_a_chat_run_in_its_format_and_samples_by_seed(tmp_path, capsys, monkeypatch):
    out = tmp_path / "chat"
    sft_run(out, "--train.max_steps=2").fit()
    made = []

    class Recorded(Chat):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(train.chat, "Chat", Recorded)
    capsys.readouterr()
    answers = [cli(capsys, out, "--once", "12+30=", "--temperature", "1", "--top_k", "0", "--seed", seed,
                   "--max_new_tokens", "8", entry=chat_main) for seed in (5, 5, 6)]
    assert [code for code, _, _ in answers] == [0, 0, 0]
    assert answers[0][1] == answers[1][1] != answers[2][1]
    prompt = ChatTokenizer(get_tokenizer("byte")).chat.prompt([Message("user", "12+30=")])
    assert all(chat.tokens[:len(prompt)] == prompt and chat.temperature == 1.0 for chat in made)


def test_chat_flags_default_to_what_their_help_says(capsys):
    with pytest.raises(SystemExit):
        train.chat.parse_args(["--help"])
    printed = " ".join(capsys.readouterr().out.split())
    args = train.chat.parse_args(["RUN"])
    for flag, value in (("temperature", 0.6), ("top_k", 50), ("max_new_tokens", 256)):
        assert getattr(args, flag) == value and f"(default {value})" in printed, flag


def test_an_evaluation_prompts_a_chat_model_in_its_format():
    plain = get_tokenizer("byte")
    tok = ChatTokenizer(plain)
    item, shot = GenItem("2+2=", "4", "4"), GenItem("1+1=", "2", "2")
    user, assistant, end = 258, 259, 260
    assert prompt_ids(tok, item, [shot]) == [user, *b"1+1=", end, assistant, *b"2", end, user, *b"2+2=", end, assistant]
    assert prompt_ids(plain, item, [shot]) == [*b"1+1=2\n2+2="]  # a base model: few-shot text


def test_eval_scores_a_chat_run_on_its_chats_and_in_its_format(tmp_path, capsys):
    from train.eval import main as eval_main

    out = tmp_path / "ev"
    sft_run(out, "--train.max_steps=3").fit()
    capsys.readouterr()
    code, printed, _ = cli(capsys, out, entry=eval_main)
    last = metrics(out)[-1]
    assert code == 0 and f"val loss {last['val_loss']:.4f}" in printed  # the held-out chats, as in training
    code, printed, _ = cli(capsys, out, "--task", "arithmetic:op=add,digits=2", "--limit", "5", entry=eval_main)
    assert code == 0 and "pass@1" in printed
    code, _, err = cli(capsys, out, "--data.source=/nonexistent", entry=eval_main)
    assert code == 2 and "--data.source does not apply: a chat run is scored on its own conversations" in err


def test_a_draft_run_must_share_the_targets_vocabulary(tmp_path, base, capsys):
    """A chat run's special tokens widen its vocabulary past its base's: neither drafts for the other."""
    sft_run(tmp_path / "chat", "--train.max_steps=1").fit()
    capsys.readouterr()
    for target, draft in ((base, tmp_path / "chat"), (tmp_path / "chat", base)):
        code, out, err = cli(capsys, target, "--draft", draft, "--max_new_tokens", "2", entry=sample_main)
        assert code == 2 and out == "" and "token ids" in error_line(err) and "share one vocabulary" in err
