"""ModelConfig: every architectural choice of the ladder as one typed field.

The defaults are GPT-2 small (124M). Each rung adds one field whose default keeps GPT-2 unchanged,
so a config file names only what it changes. Values are validated on creation: a bad value raises
ValueError naming the field and what is allowed. Sizes written as 0 mean "derive the usual value"
and are resolved here, so the config saved next to a run states every size explicitly.
"""

import math
from dataclasses import dataclass, fields
from typing import Literal, get_args, get_origin


@dataclass
class ModelConfig:
    # --- sizes ---
    vocab_size: int = 50257  # real vocabulary; embeddings are padded up to `padded_vocab_size`
    vocab_multiple: int = 64  # pad the embedding table to a multiple of this (matmul-friendly)
    block_size: int = 1024  # longest sequence the model is built for
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 0  # key/value heads; 0 = n_head (multi-head attention)
    n_embd: int = 768
    head_dim: int = 0  # 0 = n_embd // n_head
    mlp_hidden: int = 0  # 0 = 4 * n_embd
    # --- GPT-2 choices; each later rung offers alternatives ---
    pos: Literal["learned", "none"] = "learned"  # learned absolute positions (GPT-2) | none (NoPE)
    norm: Literal["layernorm"] = "layernorm"
    norm_eps: float = 1e-5
    mlp: Literal["gelu"] = "gelu"  # GELU with the tanh approximation, as GPT-2
    bias: bool = True  # biases in linear layers and norms
    tie_embeddings: bool = True  # lm_head shares the token embedding matrix
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if get_origin(f.type) is Literal and value not in get_args(f.type):
                allowed = ", ".join(repr(c) for c in get_args(f.type))
                raise ValueError(f"model.{f.name} must be one of {allowed}; got {value!r}")
        for name in ("vocab_size", "vocab_multiple", "block_size", "n_layer", "n_head", "n_embd"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("n_kv_head", "head_dim", "mlp_hidden"):
            _check_int(name, getattr(self, name), minimum=0)
        if not self.head_dim and self.n_embd % self.n_head:
            raise ValueError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head}), "
                "or set model.head_dim explicitly"
            )
        self.n_kv_head = self.n_kv_head or self.n_head
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        self.mlp_hidden = self.mlp_hidden or 4 * self.n_embd
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"model.n_head ({self.n_head}) must be divisible by model.n_kv_head ({self.n_kv_head})"
            )
        if not (_is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"model.dropout must be a number in [0, 1); got {self.dropout!r}")
        for name in ("norm_eps", "init_std"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"model.{name} must be a positive finite number; got {value!r}")

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.{name} must be an integer >= {minimum}; got {value!r}")
