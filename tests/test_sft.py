"""Supervised fine-tuning on chats: the chat format, its masking, the packed data, the config."""

import json

import pytest
import torch

from model import GPT, ModelConfig
from train.config import load_config
from train.errors import ConfigError
from train.post.chat_data import IGNORE, ChatData, ChatSplit
from train.post.chat_format import SPECIAL, ChatFormat, Message, parse_conversation
from train.post.config import PostConfig
from train.tokenizer import get_tokenizer

BYTES = get_tokenizer("byte")
CHAT = [Message("system", "Add."), Message("user", "2+3="), Message("assistant", "5"),
        Message("user", "<|user|>"), Message("assistant", "ok")]


def test_the_specials_follow_the_vocabulary_and_only_assistant_tokens_are_trained():
    fmt = ChatFormat(BYTES)
    assert [fmt.ids[s] for s in SPECIAL] == [257, 258, 259, 260] and fmt.n_vocab == 261
    ids, mask = fmt.encode(CHAT)
    sys_, user, asst, end = 257, 258, 259, 260
    expected = ([sys_, *b"Add.", end, user, *b"2+3=", end, asst, *b"5", end, user, *b"<|user|>", end,
                 asst, *b"ok", end])
    assert ids.tolist() == expected  # "<|user|>" inside a message stays plain text
    trained = [i for i, m in zip(ids.tolist(), mask) if m]
    assert trained == [*b"5", end, *b"ok", end]  # the answers and the <|end|> that stops them
    assert fmt.prompt(CHAT[:3])[-1] == asst and fmt.decode(ids).startswith("<|system|>Add.<|end|><|user|>2+3=")


def split_of(conversations, block_size=32) -> ChatSplit:
    fmt = ChatFormat(BYTES)
    return ChatSplit.pack([(*fmt.encode(c), 1) for c in conversations], fmt.end, block_size)


def test_rows_start_at_a_conversation_and_train_only_the_answers():
    convs = [[Message("user", f"{a}+{a}="), Message("assistant", str(2 * a))] for a in range(10, 40)]
    split = split_of(convs)
    x, y = split.batch(8, 24, (0, 0, 3, 0, 0))
    assert x.shape == y.shape == (8, 24) and x.dtype == y.dtype == torch.int64
    assert (x[:, 0] == 258).all()  # <|user|>
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        for t, target in enumerate(row_y):
            if target != IGNORE:  # a trained target is an answer digit or <|end|>, after <|assistant|> ...
                assert target == 260 or chr(target).isdigit()
                assert 259 in row_x[: t + 1]
    q = x[0].tolist()
    a = int(bytes(q[1:q.index(260)]).decode().split("+")[0])
    answer = [t for t in y[0].tolist()[q.index(259):] if t != IGNORE]
    assert bytes(answer[:answer.index(260)]).decode() == str(2 * a)  # the answer to that row's question
    again = split.batch(8, 24, (0, 0, 3, 0, 0))
    assert torch.equal(again[0], x) and torch.equal(again[1], y)  # a pure function of the key
    assert not torch.equal(split.batch(8, 24, (0, 0, 4, 0, 0))[0], x)


def test_gradients_reach_only_the_positions_with_an_assistant_target():
    convs = [[Message("user", "1+1="), Message("assistant", "2")], [Message("user", "hi"), Message("assistant", "yo")]]
    x, y = split_of(convs).batch(4, 20, (1,))
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=261, block_size=32, n_layer=1, n_head=2, n_embd=16))
    hidden = {}
    model.transformer.ln_f.register_forward_hook(lambda m, a, out: hidden.setdefault("h", out).retain_grad())
    model(x, y)[1]["loss"].backward()
    reached = hidden["h"].grad.abs().sum(-1) > 0  # (B, T): where the loss has a gradient
    assert torch.equal(reached, y != IGNORE) and reached.any() and not reached.all()


def test_chat_data_from_a_task_and_from_a_file(tmp_path):
    cfg = load_config(None, ["--post.method=sft", "--post.data=task:arithmetic:op=add,digits=2",
                             "--post.n_train=50", "--post.n_val=10"])
    data = ChatData(cfg.post, BYTES, cfg.model.block_size, cfg.data)
    assert data.meta["conversations"] == {"train": 50, "val": 10} and data.vocab_size == 261
    # bits per byte count the answers' bytes: 2 or 3 digits per answer, plus its <|end|> token
    assert 2 / 3 < data.bytes_per_token("val") < 3 / 4 + 1e-9
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(200)]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = load_config(None, ["--post.method=sft", f"--post.data={path}", "--post.val_fraction=0.2"])
    data = ChatData(cfg.post, BYTES, cfg.model.block_size, cfg.data)
    n = data.meta["conversations"]
    assert n["train"] + n["val"] == 200 and 20 < n["val"] < 60


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "bot", "content": "x"}]}, "message 0 has role 'bot'; roles are system, user, assistant"),
    ({"messages": [{"role": "user", "content": "x"}]}, "no assistant message, so nothing to learn"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]},
     "a system message may only come first (message 1)"),
    ({"messages": [{"role": "user", "content": 3}]}, "message 0 needs a string content"),
    ({"text": "x"}, 'expected {"messages"'),
])
def test_a_bad_conversation_is_one_line_naming_the_line(record, message):
    with pytest.raises(ConfigError, match=None) as e:
        parse_conversation(record, "chats.jsonl:7")
    assert str(e.value).startswith("chats.jsonl:7: ") and message in str(e.value) and "\n" not in str(e.value)


def test_the_config_makes_room_for_the_chat_tokens_in_the_padded_rows(tmp_path):
    cfg = load_config(None, ["--post.method=sft", "--post.data=task:arithmetic"])
    assert cfg.model.vocab_size == 261 and cfg.model.padded_vocab_size == 320
    assert load_config(None, []).model.vocab_size == 257  # pretraining: unchanged
    with pytest.raises(ConfigError, match="need model.vocab_size >= 261, beyond the model's 257 padded rows"):
        load_config(None, ["--post.method=sft", "--post.data=task:arithmetic", "--model.vocab_multiple=1"])
    with pytest.raises(ConfigError, match="needs post.data"):
        PostConfig(method="sft")
    with pytest.raises(ConfigError, match="post.method must be"):
        PostConfig(method="dpo ")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [}\n')
    cfg = load_config(None, ["--post.method=sft", f"--post.data={bad}"])
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: not JSON"):
        ChatData(cfg.post, BYTES, 64, cfg.data)
