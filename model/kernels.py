"""Kernels per device, for a model that is already built and on its device.

A layer is built with the kernel every device can run, forward and backward (the CPU's). Once the
model is on its device, `use_device_kernels` switches the layers that have a faster kernel there:

| layer                | CPU, MPS (build time)             | CUDA                                        |
|----------------------|-----------------------------------|---------------------------------------------|
| causal attention     | SDPA                              | SDPA (FlashAttention)                       |
| window/softcap/sinks | SDPA with a band mask / softmax   | FlexAttention (model/mixer/flex.py)         |
| MoE experts          | a loop over experts               | grouped GEMM in bf16 (model/ffn/moe.py)     |
| Gated DeltaNet       | chunked form in PyTorch           | flash-linear-attention's Triton kernel, if  |
|                      |                                   | installed (extra `fla`; delta_rule.py)      |

The choice is made once, here; forward never asks which device it runs on.
"""

import torch
from torch import nn

from .ffn.moe import Experts, expert_kernel
from .mixer.attention import CausalSelfAttention, device_kernel
from .mixer.deltanet import GatedDeltaNet
from .mixer.delta_rule import fla_available


def use_device_kernels(model: nn.Module, device: torch.device, dtype: torch.dtype) -> dict[str, str]:
    """Switch each attention and expert layer to its kernel for `device` and the compute `dtype`
    (autocast's, else the weights'); returns {module name: kernel} for reports."""
    chosen = {}
    for name, module in model.named_modules():
        if isinstance(module, CausalSelfAttention):
            module.use_kernel(device_kernel(module, device))
        elif isinstance(module, Experts):
            module.use_kernel(expert_kernel(module, device, dtype))
        elif isinstance(module, GatedDeltaNet):
            module.use_kernel("fla" if device.type == "cuda" and fla_available() else "torch")
        else:
            continue
        chosen[name] = module.kernel
    return chosen


def use_build_kernels(model: nn.Module) -> dict[str, str]:
    """Switch every attention and expert layer back to the kernel it was built with (the CPU's), so
    that a benchmark can time the device kernels against them on the same device."""
    chosen = {}
    for name, module in model.named_modules():
        if isinstance(module, CausalSelfAttention):
            module.use_kernel(module.build_kernel)
        elif isinstance(module, Experts):
            module.use_kernel("loop")
        else:
            continue
        chosen[name] = module.kernel
    return chosen
