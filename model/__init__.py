"""gpt-ladder models: GPT-2 and the rungs above it, chosen by `ModelConfig`.

The public names (train/trainer.py reads the package through these alone): the model, its config, the
generation cache, the training FLOPs per token (model/accounting.py) and the device kernels a model
switches to on CUDA (model/kernels.py). Nothing in this package imports train/.
"""

from .accounting import flops_per_token
from .inference.cache import ModelCache
from .config import ModelConfig, RopeConfig
from .gpt import GPT
from .kernels import use_device_kernels

__all__ = ["GPT", "ModelConfig", "RopeConfig", "ModelCache", "flops_per_token", "use_device_kernels"]
