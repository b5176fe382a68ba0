"""Chat data for supervised fine-tuning: conversations packed into training rows.

`post.data` names the conversations:
    a JSONL file       one {"messages": [{"role", "content"}, ...]} per line (TRL's, nanochat's and
                       HF's chat format), DPO's {"prompt", "chosen", "rejected"} (the chosen
                       answer is the conversation's) or RL's {"prompt", "answer"}, split into
                       train and val as train/post/jsonl.py splits its records;
    task:SPEC          a built-in checkable task of the evaluation layer (train/evals/tasks.py),
                       e.g. "task:arithmetic:op=add,digits=2,steps": each item is a user message
                       (the prompt) and an assistant message (the reference answer); post.n_train
                       items of the task's train split, post.n_val of its validation split.
The conversations are shuffled once (a fixed seed) and laid end to end. A training row starts at
the start of a conversation, drawn from the batch key as pretraining draws its windows
(train/data.py get_batch), and runs on into the following ones; its targets are -100 (ignored)
except where the chat format trains (train/post/chat_format.py), so the loss is the mean over the
assistant tokens of the batch. Bits per byte count the bytes of the assistant's text.
"""

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..evals.tasks import TaskEnv, build_task
from .chat_format import ChatFormat, Message, parse_conversation
from .jsonl import read_split
from .pairs import read_pair
from .prompts import read_prompt

IGNORE = -100  # a target that adds nothing to the loss (model/loss.py)
SHUFFLE_SEED = 1234


@dataclass
class ChatSplit:
    """Conversations end to end: ids, the trained tokens (mask) and where each conversation starts."""

    ids: np.ndarray  # (N,) int64, followed by block-size padding that is never trained
    mask: np.ndarray  # (N,) bool
    starts: np.ndarray  # (n_conversations,)
    text_bytes: int  # UTF-8 bytes of the trained text (the specials count none)

    @classmethod
    def pack(cls, encoded: list[tuple[np.ndarray, np.ndarray, int]], pad: int, block_size: int) -> "ChatSplit":
        order = np.random.default_rng(SHUFFLE_SEED).permutation(len(encoded))
        parts = [encoded[i] for i in order]
        lengths = np.array([len(ids) for ids, _, _ in parts])
        ids = np.concatenate([p[0] for p in parts] + [np.full(block_size + 1, pad)])
        mask = np.concatenate([p[1] for p in parts] + [np.zeros(block_size + 1, dtype=bool)])
        return cls(ids, mask, np.cumsum(lengths) - lengths, sum(p[2] for p in parts))

    def batch(self, batch_size: int, seq_len: int, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y (batch_size, seq_len): rows from conversation starts chosen by `key` (a pure
        function of it, so resume is exact); y is -100 wherever the token is not trained."""
        rng = np.random.default_rng(np.random.SeedSequence(key))
        rows = self.starts[rng.integers(0, len(self.starts), size=batch_size)][:, None] + np.arange(seq_len + 1)
        ids, mask = self.ids[rows], self.mask[rows]
        y = np.where(mask[:, 1:], ids[:, 1:], IGNORE)
        return torch.from_numpy(ids[:, :-1].copy()), torch.from_numpy(y)

    def __len__(self) -> int:
        return int(self.mask.sum())  # trained tokens


class ChatData:
    """The train and val ChatSplits of `post.data`, with the interface the trainer reads from
    pretraining data (train/data.py TokenData): `train`, `val`, `meta`, `bytes_per_token`."""

    def __init__(self, post, tok, block_size: int, data_cfg):
        self.format = ChatFormat(tok)
        source = load_conversations(post, tok, block_size, data_cfg)
        splits = {}
        for name, conversations in source.items():
            if not conversations:
                raise ConfigError(f"post.data={post.data!r} has no {name} conversations; "
                                  "use more conversations or another post.val_fraction")
            encoded = [(*self.format.encode(c), assistant_bytes(c)) for c in conversations]
            splits[name] = ChatSplit.pack(encoded, self.format.end, block_size)
        self.train, self.val = splits["train"], splits["val"]
        identity = {"post.data": post.data, "tokenizer": tok.name, "n_train": post.n_train, "n_val": post.n_val,
                    "val_fraction": post.val_fraction}
        self.meta = {"fingerprint": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16],
                     "vocab_size": self.format.n_vocab, "eot": self.format.end,
                     "conversations": {name: len(c) for name, c in source.items()}}

    @property
    def vocab_size(self) -> int:
        return self.format.n_vocab

    def bytes_per_token(self, split: str) -> float:
        s = {"train": self.train, "val": self.val}[split]
        return s.text_bytes / max(len(s), 1)

    def check_batch(self, batch_size: int, seq_len: int, model_vocab_size: int) -> None:
        if self.vocab_size > model_vocab_size:
            raise ValueError(f"the chat format's {self.vocab_size} tokens exceed model.vocab_size ({model_vocab_size})")


def assistant_bytes(messages: list[Message]) -> int:
    return sum(len(m.content.encode("utf-8")) for m in messages if m.role == "assistant")


def conversation(record, where: str) -> list[Message]:
    """A chat record; a DPO pair's prompt and chosen answer (the val loss is the chosen's); or an
    RL prompt and its answer (the val loss is the answer's)."""
    if isinstance(record, dict) and "chosen" in record:
        turns, chosen, _ = read_pair(record, where)
        return [*turns, Message("assistant", chosen)]
    if isinstance(record, dict) and "answer" in record and "messages" not in record:  # rft, grpo prompts
        item = read_prompt(record, where)
        return [Message("user", item.prompt), Message("assistant", item.answer)]
    return parse_conversation(record, where)


def load_conversations(post, tok, block_size: int, data_cfg) -> dict[str, list[list[Message]]]:
    """{"train": [...], "val": [...]} from a JSONL file or a built-in task (module docstring)."""
    if post.data.startswith("task:"):
        task = build_task(post.data[len("task:"):], TaskEnv(tok, block_size, data_cfg))
        if task.kind != "generate":
            raise ConfigError(f"post.data={post.data!r}: a chat task must be generative (prompt and answer)")
        items = {"train": task.items("train", post.n_train, 0), "val": task.items("validation", post.n_val, 0)}
        return {name: [[Message("user", it.prompt), Message("assistant", it.target)] for it in split]
                for name, split in items.items()}
    return read_split(post.data, post.val_fraction, conversation, "a JSONL of chats")
