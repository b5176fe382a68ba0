"""`[post]`: the post-training method of a run (empty: pretraining on `[data]`).

    sft    supervised fine-tuning on chats (train/post/chat_data.py)
    rft    rejection-sampling fine-tuning on the model's own accepted answers  \
    grpo   RL on the task's checkable rewards                                   > train/post/methods.py
    dpo    preference pairs against a frozen reference                         /
"""

from dataclasses import dataclass
from typing import Literal

from model.config import check_int

from ..errors import ConfigError
from .chat_format import SPECIAL

CHECKERS = ("answer-mark", "last-number", "exact")  # train/post/prompts.py


@dataclass
class PostConfig:
    method: Literal["", "sft", "rft", "grpo", "dpo"] = ""  # "" = pretraining on [data]
    # sft: a JSONL file of {"messages": [...]}; dpo: a JSONL file of {"prompt", "chosen", "rejected"};
    # rft, grpo: a JSONL file of {"prompt", "answer"} read by post.checker; instead of a file, the
    # same records from hf:NAME[:CONFIG][@SPLIT] (train/post/jsonl.py); any method: task:SPEC, a
    # built-in checkable task (train/post/prompts.py)
    data: str = ""
    checker: str = "answer-mark"  # rft, grpo on a JSONL file: answer-mark | last-number | exact
    n_train: int = 20000  # task:SPEC: items drawn from the task's train split
    n_val: int = 500  # task:SPEC: items drawn from its validation split (evaluations score them)
    val_fraction: float = 0.05  # a JSONL file: the share of its lines held out for evaluation
    # rft, grpo, dpo from a task: per micro-batch, `prompts` prompts with `samples` answers each
    prompts: int = 8  # (dpo from a file: pairs per micro-batch)
    samples: int = 8  # GRPO's group size
    max_new_tokens: int = 64  # an answer's length at most (it ends earlier at <|end|>)
    temperature: float = 1.0  # the sampling of answers (1.0: the policy itself)
    top_k: int = 0  # 0: the whole vocabulary
    rollout_steps: int = 1  # grpo: the steps one batch of rollouts is trained on (> 1: ratio clipping)
    clip_eps: float = 0.2  # grpo: the ratio's clip range, 1 +- clip_eps
    scale_by_std: bool = True  # grpo: divide advantages by the group's std (false: Dr. GRPO)
    kl_coef: float = 0.0  # grpo: weight of the KL term to the frozen reference (0: none, no reference)
    beta: float = 0.1  # dpo: the strength of the implicit KL constraint

    def __post_init__(self) -> None:
        if self.method not in ("", "sft", "rft", "grpo", "dpo"):
            raise ConfigError(f"post.method must be '' (pretraining), 'sft', 'rft', 'grpo' or 'dpo'; got {self.method!r}")
        if self.method and not self.data:
            raise ConfigError(f'post.method = "{self.method}" needs post.data (a JSONL file, or task:SPEC)')
        if self.checker not in CHECKERS:
            raise ConfigError(f"post.checker must be one of {', '.join(CHECKERS)}; got {self.checker!r}")
        for name in ("n_train", "n_val", "prompts", "samples", "max_new_tokens", "rollout_steps"):
            check_int(f"post.{name}", getattr(self, name), minimum=1)
        check_int("post.top_k", self.top_k, minimum=0)
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"post.val_fraction must be in (0, 1); got {self.val_fraction}")
        for name in ("temperature", "clip_eps", "beta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"post.{name} must be > 0; got {getattr(self, name)}")
        if not self.kl_coef >= 0:
            raise ConfigError(f"post.kl_coef must be >= 0 (0: no KL term); got {self.kl_coef}")
        if self.method == "grpo" and self.samples < 2:
            raise ConfigError("post.method = \"grpo\" compares answers within a group: post.samples must be >= 2")

    @property
    def chat(self) -> bool:
        """The run's tokens include the chat format's specials."""
        return bool(self.method)

    @property
    def has_prompts(self) -> bool:
        """post.data holds prompts with checkable answers (train/post/prompts.py)."""
        return self.data.startswith("task:") or self.method in ("rft", "grpo")

    @property
    def needs_reference(self) -> bool:
        """The method compares the policy with a frozen copy of the run's initial weights."""
        return self.method == "dpo" or (self.method == "grpo" and self.kl_coef > 0)


def chat_vocab_size(n_vocab: int, model_cfg) -> int:
    """model.vocab_size for a chat run: the tokenizer's ids plus the specials, in the padded rows
    the model already has (model.vocab_multiple; train/post/chat_format.py says why)."""
    need = n_vocab + len(SPECIAL)
    if need > model_cfg.padded_vocab_size:
        raise ConfigError(f"the chat tokens need model.vocab_size >= {need}, beyond the model's "
                          f"{model_cfg.padded_vocab_size} padded rows; raise model.vocab_multiple")
    return max(need, model_cfg.vocab_size)
