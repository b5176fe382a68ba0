"""The chat format: a conversation as token ids, and which of them a fine-tuned model learns.

    <|system|>You add.<|end|><|user|>2+3=<|end|><|assistant|>5<|end|>

Each message is its role's token, its content (the run's tokenizer, byte or gpt2) and `<|end|>`.
A model answers after `<|assistant|>` and ends its turn with `<|end|>`. Supervised fine-tuning
trains only the assistant's content and its `<|end|>`: the model learns to answer and to stop,
never to write the user's side (`train_mask`).

The four special tokens come after the tokenizer's own ids (byte: 257-260, gpt2: 50257-50260).
A model pretrained without them already holds their rows: the embedding and the LM head are padded
to a multiple of `model.vocab_multiple` (byte: 257 -> 320 rows, gpt2: 50257 -> 50304), and the
padding rows, never trained and cut off the logits, keep their initial N(0, init_std) values. A
chat run raises model.vocab_size by four into those rows (train/config.py), so the pretrained
weights load unchanged and the new tokens start from small random vectors, as new tokens do in
other fine-tuning recipes. The text "<|user|>" inside a message is encoded as plain text, never as
the special token, so a message cannot forge a turn.
"""

from dataclasses import dataclass
from itertools import groupby

import numpy as np

from ..errors import ConfigError

ROLES = ("system", "user", "assistant")
SPECIAL = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")  # in this order after the vocabulary


@dataclass(frozen=True)
class Message:
    role: str
    content: str


class ChatFormat:
    """Encodes conversations for one tokenizer; `n_vocab` is its vocabulary plus the specials."""

    def __init__(self, tok):
        self.tok = tok
        self.ids = {text: tok.n_vocab + i for i, text in enumerate(SPECIAL)}
        self.role_id = {role: self.ids[f"<|{role}|>"] for role in ROLES}
        self.end = self.ids["<|end|>"]
        self.n_vocab = tok.n_vocab + len(SPECIAL)

    def encode(self, messages: list[Message]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, train_mask), int64 and bool of the same length: train_mask is True at the tokens a
        fine-tuned model learns to write (every assistant message's content and its <|end|>)."""
        ids, mask = [], []
        for m in messages:
            content = self.tok.encode(m.content)
            ids += [self.role_id[m.role], *content, self.end]
            mask += [False] + [m.role == "assistant"] * (len(content) + 1)
        return np.array(ids, dtype=np.int64), np.array(mask, dtype=bool)

    def prompt(self, messages: list[Message]) -> list[int]:
        """The ids that ask for the next assistant message: the conversation, then <|assistant|>."""
        return [*self.encode(messages)[0].tolist(), self.role_id["assistant"]]

    def decode(self, ids) -> str:
        """Text with each special token written as itself."""
        names = {i: text for text, i in self.ids.items()}
        parts = []
        for special, run in groupby(ids, key=names.__contains__):  # runs of specials, runs of text
            parts.append("".join(names[i] for i in run) if special else self.tok.decode(list(run)))
        return "".join(parts)


def parse_conversation(record, where: str) -> list[Message]:
    """A `{"messages": [{"role", "content"}, ...]}` record (the format of TRL, nanochat and HF chat
    datasets) as Messages, or a ConfigError in one line naming `where` (file:line)."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f'{where}: expected {{"messages": [{{"role": ..., "content": ...}}, ...]}}')
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ConfigError(f"{where}: message {i} needs a string content")
        if m.get("role") not in ROLES:
            raise ConfigError(f"{where}: message {i} has role {m.get('role')!r}; roles are {', '.join(ROLES)}")
        if m["role"] == "system" and i:
            raise ConfigError(f"{where}: a system message may only come first (message {i})")
        out.append(Message(m["role"], m["content"]))
    if not any(m.role == "assistant" for m in out):
        raise ConfigError(f"{where}: no assistant message, so nothing to learn")
    return out


class ChatTokenizer:
    """A chat run's tokenizer: the base tokenizer's text encoding, the specials on top. `eot` is
    <|end|>, where an answer stops; `chat` is the format, which builds prompts (train/evals/)."""

    def __init__(self, tok):
        self.base, self.chat = tok, ChatFormat(tok)
        self.name, self.path = tok.name, getattr(tok, "path", "")
        self.n_vocab, self.eot = self.chat.n_vocab, self.chat.end

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def decode(self, ids) -> str:
        return self.chat.decode(ids)
