"""Supervised fine-tuning as an ordinary run: exact resume, a start from a pretrained run, the chat
command's cached turns, and evaluation prompts in the chat format."""

import torch

from model import GPT, ModelConfig
from tiny_run import TINY, cli, metrics, numerics, randomize_
from train.chat import Chat
from train.chat import main as chat_main
from train.config import load_config
from train.evals.generative import prompt_ids
from train.evals.items import GenItem
from train.post.chat_format import ChatTokenizer, Message
from train.run import load_run
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
