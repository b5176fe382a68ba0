"""Kernels per device, for a model that is already built and on its device.

A layer is built with the kernel every device can run, forward and backward (the CPU's). Once the
model is on its device, `use_device_kernels` switches the layers that have a faster kernel there:

| layer                | CPU, MPS (build time)             | CUDA                                        |
|----------------------|-----------------------------------|---------------------------------------------|
| causal attention     | SDPA                              | SDPA (FlashAttention)                       |
| window/softcap/sinks | SDPA with a band mask / softmax   | FlexAttention (model/mixer/flex.py)         |
| MoE experts          | a loop over experts               | grouped GEMM in bf16 (model/ffn/moe.py)     |
| Gated DeltaNet       | chunked form in PyTorch           | the same (flash-linear-attention's kernel,  |
|                      |                                   | `use_kernel("fla")`, is not picked: below)  |

The choice is made once, here; forward never asks which device it runs on. A kernel is picked only
once it has been seen equal to the build kernel on its device. flash-linear-attention's Gated DeltaNet
kernel (extra `fla`, model/mixer/delta_rule.py) has been, forward only: on an H200 its output and state
match the chunked form's within bf16 and tf32 rounding (docs/LOG.md). Its backward has not: fla 0.6.0
refuses it on Hopper GPUs with Triton >= 3.4, < 3.7.1, which miscompiles one of its kernels. So every
device keeps the chunked form until tests/test_deltanet.py's backward comparison passes on a GPU.
"""

import torch
from torch import nn

from .ffn.moe import Experts, expert_kernel
from .mixer.attention import CausalSelfAttention, device_kernel
from .mixer.deltanet import GatedDeltaNet


# layer class -> (its kernel on a device for a compute dtype, the kernel it is built with: the CPU's)
KERNEL_CHOICES = {
    CausalSelfAttention: (lambda layer, device, dtype: device_kernel(layer, device), lambda layer: layer.build_kernel),
    Experts: (expert_kernel, lambda layer: "loop"),
    GatedDeltaNet: (lambda layer, device, dtype: "torch", lambda layer: "torch"),  # not "fla" yet: docstring
}


def use_device_kernels(model: nn.Module, device: torch.device, dtype: torch.dtype) -> dict[str, str]:
    """Switch each attention, expert and linear-attention layer to its kernel for `device` and the
    compute `dtype` (autocast's, else the weights'); returns {module name: kernel} for reports."""
    return _switch(model, lambda layer, on_device, built: on_device(layer, device, dtype))


def use_build_kernels(model: nn.Module) -> dict[str, str]:
    """Switch every such layer back to the kernel it was built with (the CPU's), so that a benchmark
    can time the device kernels against them on the same device."""
    return _switch(model, lambda layer, on_device, built: built(layer))


def _switch(model: nn.Module, pick) -> dict[str, str]:
    chosen = {}
    for name, module in model.named_modules():
        for kind, choices in KERNEL_CHOICES.items():
            if isinstance(module, kind):
                module.use_kernel(pick(module, *choices))
                chosen[name] = module.kernel
                break
    return chosen
