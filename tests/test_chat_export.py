"""A chat run exported with `python -m train.export` carries its chat format: HF's
`apply_chat_template` gives our prompt ids, <|end|> is the eos, and the HF model answers as ours."""

import json

import pytest
import torch

from tiny_run import GPT2_RANKS, TINY, cli, needs_gpt2_ranks
from train import export
from train.config import load_config
from train.post.chat_format import ChatFormat, Message
from train.run import load_run
from train.tokenizer import get_tokenizer
from train.trainer import Trainer

SFT = ["--post.method=sft", "--post.data=task:arithmetic:op=add,digits=2", "--post.n_train=300", "--post.n_val=40"]
CONVERSATIONS = [
    [{"role": "user", "content": "12+30="}],
    [{"role": "system", "content": "You add, in any script: é, 日本語, 🤖."},
     {"role": "user", "content": "2+3="}, {"role": "assistant", "content": "5"},
     {"role": "user", "content": "  and 40+41?\n\n"}, {"role": "assistant", "content": " 81 \t"},
     {"role": "user", "content": ""}],
    [{"role": "user", "content": "It's  two   spaces\n\ttabs, a <tag> and |pipes|"}],
]


def sft_export(out, tmp_path_factory, *extra):
    """A 2-step SFT run, exported; returns (run dir, HF dir)."""
    run = tmp_path_factory.mktemp("chat-run") / "run"
    Trainer(load_config(None, [*TINY, *SFT, *extra, f"--train.out_dir={run}", "--train.max_steps=2",
                               "--train.eval_interval=0"])).fit()
    export.export(run, out)
    return run, out


@pytest.fixture(scope="module")
def byte_chat(tmp_path_factory):
    return sft_export(tmp_path_factory.mktemp("byte-chat") / "hf", tmp_path_factory)


def assert_round_trip(out, tok):
    """apply_chat_template on the exported tokenizer gives ChatFormat's ids, with and without the
    generation prompt, and decodes them as ChatFormat does."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(out)
    chat = ChatFormat(tok)
    assert hf.convert_tokens_to_ids(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]) == \
        list(range(tok.n_vocab, tok.n_vocab + 4))
    assert hf.eos_token == "<|end|>" and hf.eos_token_id == chat.end and len(hf) == tok.n_vocab + 4
    for messages in CONVERSATIONS:
        ours = [Message(**m) for m in messages]
        prompt = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
        assert prompt == chat.prompt(ours)
        whole = hf.apply_chat_template(messages, tokenize=True, return_dict=False)
        assert whole == chat.encode(ours)[0].tolist()
        assert hf.decode(prompt) == chat.decode(prompt)


def test_the_exported_tokenizer_applies_our_chat_format(byte_chat):
    _, out = byte_chat
    assert_round_trip(out, get_tokenizer("byte"))
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"].startswith("{% for message in messages %}")


@needs_gpt2_ranks
def test_a_gpt2_chat_run_exports_its_chat_format(tmp_path_factory):
    gpt2 = ["--data.tokenizer=gpt2", f"--data.tokenizer_path={GPT2_RANKS}"]
    _, out = sft_export(tmp_path_factory.mktemp("gpt2-chat") / "hf", tmp_path_factory, *gpt2)
    assert_round_trip(out, get_tokenizer("gpt2", GPT2_RANKS))
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 50260


def test_hf_reads_special_token_text_in_a_message_where_ours_does_not(byte_chat):
    """The one documented difference (train/hf_tokenizer.py), and a role the format lacks."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(byte_chat[1])
    messages = [{"role": "user", "content": "<|user|>"}]
    assert hf.apply_chat_template(messages, return_dict=False) == [258, 258, 260]
    assert ChatFormat(get_tokenizer("byte")).encode([Message(**messages[0])])[0].tolist() == \
        [258, *b"<|user|>", 260]
    with pytest.raises(Exception, match="roles are system, user and assistant; got tool"):
        hf.apply_chat_template([{"role": "tool", "content": "x"}])


def test_the_exported_model_continues_a_chat_prompt_as_ours_with_end_as_its_eos(byte_chat):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, out = byte_chat
    end = 260
    config = json.loads((out / "config.json").read_text())
    generation = json.loads((out / "generation_config.json").read_text())
    assert config["eos_token_id"] == generation["eos_token_id"] == generation["pad_token_id"] == end
    assert config["bos_token_id"] == generation["bos_token_id"] == 256
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = AutoTokenizer.from_pretrained(out).apply_chat_template(
        CONVERSATIONS[0], add_generation_prompt=True, return_dict=False)
    x = torch.tensor([ids])
    n_new = 12
    ours = load_run(run).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), atol=1e-4, rtol=1e-4)
    new = ours.generate(x, n_new, temperature=0.0)[0, len(ids):].tolist()
    expected = ids + (new[:new.index(end) + 1] if end in new else new)  # HF stops after <|end|>
    # (after two steps ours repeats a digit and never reaches <|end|>: the files above hold the eos)
    assert hf.generate(x, max_new_tokens=n_new, do_sample=False)[0].tolist() == expected


def test_a_pretraining_run_exports_no_chat_format(base, tmp_path, capsys):
    from transformers import AutoTokenizer

    code, _, err = cli(capsys, base, tmp_path / "hf", entry=export.main)
    assert code == 0, err
    assert "chat_template" not in json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert not (tmp_path / "hf" / "chat_template.jinja").exists()
    hf = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf.chat_template is None and hf.eos_token_id == 256 and len(hf) == 257
    assert json.loads((tmp_path / "hf" / "generation_config.json").read_text())["eos_token_id"] == 256


def test_a_chat_runs_gguf_export_from_the_command_line_holds_its_chat_format(byte_chat, tmp_path, capsys):
    """--format gguf on an SFT run: <|end|> (260) is the eos and pad, bos stays 256, and the
    tokenizer carries the chat template and the four chat tokens after the 257 byte tokens."""
    from gguf import GGUFReader

    from train.hf_tokenizer import CHAT_TEMPLATE

    run, _ = byte_chat
    code, _, err = cli(capsys, run, tmp_path / "g", "--format", "gguf", "--gguf_type", "f32", entry=export.main)
    assert code == 0, err
    fields = GGUFReader(tmp_path / "g" / "model.gguf").fields
    ids = [fields[f"tokenizer.ggml.{key}_token_id"].contents() for key in ("bos", "eos", "padding")]
    assert ids == [256, 260, 260]
    assert fields["tokenizer.chat_template"].contents() == CHAT_TEMPLATE
    assert fields["tokenizer.ggml.tokens"].contents()[257:] == ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
