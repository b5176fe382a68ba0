"""gpt-ladder models: GPT-2 and the rungs above it, chosen by `ModelConfig`."""

from .config import ModelConfig, RopeConfig
from .gpt import GPT
from .cache import ModelCache

__all__ = ["GPT", "ModelConfig", "RopeConfig", "ModelCache"]
