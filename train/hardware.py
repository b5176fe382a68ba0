"""Device and precision selection, and the peak FLOP/s that MFU is measured against."""

import functools
import time
from contextlib import nullcontext

import torch

from model import use_device_kernels

from .errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Dense (no sparsity) tensor-core peaks in FLOP/s, from the vendors' data sheets.
GPU_PEAK_FLOPS = {
    # name substring: {dtype: peak}
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12},
    "A10G": {"bf16": 125e12, "fp16": 125e12, "fp32": 31.2e12},
    "RTX 4090": {"bf16": 165e12, "fp16": 165e12, "fp32": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "fp16": 71e12, "fp32": 35.6e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
}


def pick_device(name: str, setting: str = "train.device") -> torch.device:
    """The device `name` stands for ("auto": CUDA, else MPS, else CPU); `setting` names the
    option it came from in errors."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{setting}={name!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={name!r} but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"{setting}={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{setting}={name!r} but MPS is not available on this machine")
    return device


def pick_dtype(name: str, device: torch.device) -> str:
    """'auto' means bf16 autocast on GPUs that support it, fp16 (with loss scaling) on older
    GPUs, fp32 on CPU and MPS."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, dtype: str):
    """Mixed precision: weights and optimizer state stay fp32; matmuls run in the low precision."""
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def on_device(model: torch.nn.Module, device: torch.device, dtype: str) -> torch.nn.Module:
    """`model` moved to `device`, each layer on its kernel there for the compute `dtype`
    (model/kernels.py), as the trainer runs it; on the CPU every layer keeps its build kernel."""
    use_device_kernels(model.to(device), device, DTYPES[dtype])
    return model


def peak_flops(device: torch.device, dtype: str) -> float:
    """The FLOP/s ceiling of this device in this precision: a data-sheet number for known GPUs,
    otherwise (CPU, unknown GPU) the measured throughput of a large matmul."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAK_FLOPS.items():
            if key in name and dtype in peaks:
                return peaks[dtype]
    return measure_matmul_flops(device, DTYPES[dtype])


class Peak:
    """The FLOP/s that MFU divides by: `peak_flops` at start-up, raised to any rate achieved since.

    A data-sheet peak is a ceiling no step can pass. A measured one (CPU) is not: on a machine
    shared with other processes the start-up matmuls may get a fraction of the cores that later
    steps get, and MFU against it read 140-173 % for hundreds of steps. Taking the best rate seen
    (start-up matmuls or any step) keeps MFU <= 100 % by construction and only ever corrects the
    peak upwards, towards what the machine demonstrably does (docs/LOG.md, "Honest MFU").
    """

    def __init__(self, device: torch.device, dtype: str):
        self.flops_per_s = peak_flops(device, dtype)

    def mfu(self, achieved_flops_per_s: float) -> float:
        """Achieved over peak, in [0, 1]; an achieved rate above the peak becomes the peak."""
        self.flops_per_s = max(self.flops_per_s, achieved_flops_per_s)
        return achieved_flops_per_s / self.flops_per_s


@functools.lru_cache(maxsize=None)
def measure_matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 1024, windows: int = 3,
                         seconds: float = 0.25) -> float:
    """Sustained throughput of back-to-back n x n x n matmuls: the practical peak of this device.

    Each window runs matmuls for `seconds` and counts the mean rate; the best window is returned,
    so a brief disturbance from another process does not lower the peak. (The fastest single
    matmul would overstate what a device sustains: 196 vs 171-177 GFLOP/s on a 2-core CPU.)
    Measured once per process and device."""
    gen = torch.Generator(device).manual_seed(0)  # leave the global RNG alone
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    a @ b  # warm-up
    best = 0.0
    for _ in range(windows):
        sync(device)
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
            sync(device)
        best = max(best, 2 * n**3 * count / (time.perf_counter() - start))
    return best


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU, whose ops run as they are called)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process on `device`: allocator peak on CUDA, max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
