"""What a piece of code asks of the device, counted on any device (scripts/bench.py, tests).

On a GPU the host runs ahead of the device: it queues kernels and returns. Reading a device value
on the host (`.item()`, `.tolist()`, `float(t)`, `if t:`) waits until everything queued so far
has run, so the GPU then idles while the host prepares the next launches. Some operators read the
device by themselves on CUDA: `torch.bincount` and `repeat_interleave` without `output_size` size
their output from the data, and so do boolean-mask indexing and `nonzero`. None of this shows on a
CPU, where nothing is queued; `DeviceReads` counts it by name instead, so that a CPU test can
hold a GPU step to one read.

It also counts the operators that do work (views excluded): in an eager step of a small model a
GPU spends most of its time waiting for launches, one per operator, so the count is the cost.
"""

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# operators that, on CUDA, wait for the device to size their output or to return a Python value
READS = {"aten._local_scalar_dense",  # .item(), float(t), int(t), bool(t)
         "aten.bincount", "aten.nonzero", "aten.masked_select", "aten._unique2", "aten.unique_dim",
         "aten.unique_consecutive"}
VIEWS = {"aten.view", "aten._unsafe_view", "aten.t", "aten.transpose", "aten.expand", "aten.permute",
         "aten.unsqueeze", "aten.squeeze", "aten.slice", "aten.select", "aten.split",
         "aten.split_with_sizes", "aten.unbind", "aten.detach", "aten.alias", "aten.as_strided",
         "aten.lift_fresh"}


class DeviceReads(TorchDispatchMode):
    """`with DeviceReads() as seen: ...`, then `seen.reads` (host reads of device values, each a
    sync on a GPU), `seen.ops` (operators that do work) and `seen.by_name` (a Counter of both)."""

    def __init__(self):
        super().__init__()
        self.by_name: collections.Counter = collections.Counter()
        self.reads = self.ops = 0

    def __enter__(self):
        # .tolist() reads a CPU tensor's memory without dispatching an operator; count it here
        self._tolist = torch.Tensor.tolist

        def tolist(t):
            self.by_name["Tensor.tolist"] += 1
            self.reads += 1
            return self._tolist(t)
        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        if name not in VIEWS:
            self.by_name[name] += 1
            self.ops += 1
            self.reads += name in READS or _reads_to_size(name, args, kwargs)
        return func(*args, **kwargs)

    def report(self) -> str:
        return ", ".join(f"{name} x{n}" for name, n in self.by_name.most_common())


def _reads_to_size(name: str, args, kwargs) -> bool:
    """Operators that read the device only in some forms: indexing with a boolean mask, and
    repeat_interleave with tensor repeats but no output_size."""
    if name == "aten.index":
        return any(i is not None and i.dtype == torch.bool for i in args[1])
    if name == "aten.repeat_interleave":  # the tensor-repeats forms
        repeats = [a for a in args if isinstance(a, torch.Tensor)]
        return bool(repeats) and repeats[-1].dim() == 1 and kwargs.get("output_size") is None
    return False
