"""`[post]`: the post-training method of a run (empty: pretraining on `[data]`)."""

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from .chat_format import SPECIAL


@dataclass
class PostConfig:
    method: Literal["", "sft"] = ""  # "" = pretraining; "sft": supervised fine-tuning on chats
    data: str = ""  # sft: a JSONL file of {"messages": [...]}, or task:SPEC (train/post/chat_data.py)
    n_train: int = 20000  # task:SPEC: items drawn from the task's train split
    n_val: int = 500  # task:SPEC: items drawn from its validation split
    val_fraction: float = 0.05  # a JSONL file: the share of conversations held out for evaluation

    def __post_init__(self) -> None:
        if self.method not in ("", "sft"):
            raise ConfigError(f"post.method must be '' (pretraining) or 'sft'; got {self.method!r}")
        if self.method and not self.data:
            raise ConfigError(f'post.method = "{self.method}" needs post.data (a JSONL of chats, or task:NAME)')
        for name in ("n_train", "n_val"):
            if isinstance(getattr(self, name), bool) or getattr(self, name) < 1:
                raise ConfigError(f"post.{name} must be an integer >= 1; got {getattr(self, name)!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"post.val_fraction must be in (0, 1); got {self.val_fraction}")

    @property
    def chat(self) -> bool:
        """The run's tokens include the chat format's specials."""
        return bool(self.method)


def chat_vocab_size(n_vocab: int, model_cfg) -> int:
    """model.vocab_size for a chat run: the tokenizer's ids plus the specials, which must fit in the
    padded rows the model already has (model.vocab_multiple), so a pretrained model's weights load
    as they are."""
    need = n_vocab + len(SPECIAL)
    if need > model_cfg.padded_vocab_size:
        raise ConfigError(f"the chat tokens need model.vocab_size >= {need}, beyond the model's "
                          f"{model_cfg.padded_vocab_size} padded rows; raise model.vocab_multiple")
    return max(need, model_cfg.vocab_size)
