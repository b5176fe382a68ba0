"""Our tokenizers as Hugging Face tokenizers, built offline, for an exported model directory.

* gpt2: tiktoken's ranks file holds only (token bytes, rank); HF's `GPT2Tokenizer` wants
  vocab.json (token -> id, each byte spelled as a printable character, GPT-2's `bytes_to_unicode`)
  and merges.txt (the pair merged at each rank). A token's merge is found by running BPE on its
  bytes with only the lower ranks: what is left is the two parts it was merged from.
* byte: a byte-level BPE with the 256 byte tokens at their byte values, no merges, and
  <|endoftext|> at 256; no regex split, so every string maps to its UTF-8 bytes.

Both add <|endoftext|> as the eos, bos and unk token. One difference stays: HF tokenizers read the
text "<|endoftext|>" inside a string as the special token; ours encode it as plain text.

A chat run's tokenizer (`chat=True`, train/post/chat_format.py) adds the four chat tokens as special
tokens at our ids (byte: 257-260, gpt2: 50257-50260), makes <|end|> the eos (an answer stops there)
and carries `CHAT_TEMPLATE`, so that `apply_chat_template(messages, add_generation_prompt=True)`
gives `ChatFormat.prompt(messages)`. The same difference holds there: HF reads the text
"<|user|>" inside a message as the special token (a message can forge a turn), ours as plain text;
the two agree on every conversation whose contents hold none of the five special tokens' texts.
"""

from pathlib import Path

from .post.chat_format import SPECIAL
from .tokenizer import EOT_TEXT

# ChatFormat.encode as Jinja: each message is <|role|>, its content, <|end|>; then <|assistant|> to
# ask for an answer. raise_exception is a function HF's template renderer provides.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles are system, user and assistant; got ' + message['role']) }}{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character: printable Latin-1 bytes stand for
    themselves, the other 68 get the code points from 256 up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    return {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(moved)}


def gpt2_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab.json's mapping and merges.txt's pairs (in rank order) from tiktoken ranks."""
    to_char = bytes_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(to_char[b] for b in token)

    vocab, merges = {}, []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vocab[spell(token)] = rank
        if len(token) > 1:
            left, right = _last_merge(token, ranks, rank)
            merges.append((spell(left), spell(right)))
    vocab[EOT_TEXT] = len(ranks)
    return vocab, merges


def _last_merge(token: bytes, ranks: dict[bytes, int], rank: int) -> tuple[bytes, bytes]:
    """BPE on `token` with ranks below `rank`: the two parts that the last merge joins."""
    splits = [i for i in range(1, len(token)) if ranks.get(token[:i], rank) < rank > ranks.get(token[i:], rank)]
    if len(splits) == 1:  # the only split into two known tokens (most tokens): no BPE to run
        return token[:splits[0]], token[splits[0]:]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], rank))
        if ranks.get(parts[best] + parts[best + 1], rank) >= rank:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"ranks file: token {token!r} (rank {rank}) is not a merge of two lower ranks")
    return parts[0], parts[1]


def hf_tokenizer(tok, chat: bool = False):
    """An HF fast tokenizer equivalent to our `tok` ("gpt2" or "byte"); with `chat`, to a chat
    run's: the chat tokens after it, <|end|> as the eos, and the chat template."""
    hf = _base_tokenizer(tok)
    if chat:
        hf.add_special_tokens({"additional_special_tokens": list(SPECIAL)})
        hf.eos_token = "<|end|>"
        hf.chat_template = CHAT_TEMPLATE
        ids = hf.convert_tokens_to_ids(list(SPECIAL))
        assert ids == list(range(tok.n_vocab, tok.n_vocab + len(SPECIAL))), f"chat tokens at {ids}"
    return hf


def _base_tokenizer(tok):
    from transformers import GPT2Tokenizer, PreTrainedTokenizerFast

    special = dict(eos_token=EOT_TEXT, bos_token=EOT_TEXT, unk_token=EOT_TEXT)
    if tok.name == "gpt2":
        vocab, merges = gpt2_vocab_and_merges(tok.ranks())
        return GPT2Tokenizer(vocab=vocab, merges=merges, **special)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    to_char = bytes_to_unicode()
    core = Tokenizer(models.BPE(vocab={to_char[b]: b for b in range(256)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=core, **special)
    assert hf.convert_tokens_to_ids(EOT_TEXT) == tok.eot, "the byte tokenizer's eot must be 256"
    return hf


def save_hf_tokenizer(tok, out_dir: str | Path, chat: bool = False) -> None:
    """The tokenizer files; a chat template goes into tokenizer_config.json, where every
    transformers version reads it (not chat_template.jinja, which only newer ones read)."""
    hf_tokenizer(tok, chat).save_pretrained(str(out_dir), save_jinja_files=False)
