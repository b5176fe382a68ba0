"""Data parallelism on PyTorch's own engine: the process group, DDP / FSDP2 wrapping, full state dicts.

`torchrun --nproc_per_node N [--nnodes M --rdzv_endpoint HOST:PORT ...] -m train CONFIG.toml`
starts one process per device and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`init` joins the process group from those (env:// rendezvous), so nothing here is node-specific.
Without them the run is a single process and nothing here does anything.

- `train.parallel = "ddp"`: every rank holds the whole model; DistributedDataParallel averages the
  gradients (all-reduce) during the last micro-step's backward (`no_sync` before it).
- `train.parallel = "fsdp2"`: `fully_shard` on every block and on the root (ZeRO-3: parameters,
  gradients and optimizer state sharded over ranks, parameters all-gathered per block for compute);
  with train.dtype = "bf16" a `MixedPrecisionPolicy` computes in bf16 and reduces gradients in fp32.
  `set_requires_gradient_sync(False)` skips the reduce-scatter on micro-steps before the last.
- `train.activation_checkpointing`: each block's activations are recomputed in backward instead of
  stored (`torch.utils.checkpoint`, use_reentrant=False).

Checkpoints keep one layout-free format (train/checkpoint.py): the full model and optimizer state,
gathered to rank 0 (`full_model_state`, `full_optimizer_state`) and scattered back into shards on
load (`load_optimizer_state`), so a checkpoint written by N processes resumes on M.
"""

import functools
import inspect
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import ConfigError, DistributedError, one_line

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets


@dataclass
class Dist:
    """This process's place in the process group (rank 0 of 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False  # a process group exists (under torchrun, even with one process)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks, in place; returns it."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise largest `tensor` over ranks, in place; returns it."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def max_int(self, value: int, device: torch.device) -> int:
        """The largest `value` over ranks (e.g. a signal number: any rank's stop becomes everyone's)."""
        if not self.active:
            return value
        return int(self.max_(torch.tensor([value], dtype=torch.int64, device=device)).item())

    def gather_objects(self, obj) -> list:
        """`obj` from every rank, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def launched() -> bool:
    """True under torchrun (or any launcher that sets the env:// rendezvous variables)."""
    return all(name in os.environ for name in ENV)


def init(parallel: str, backend: str, timeout_s: int, device: torch.device) -> Dist:
    """Join the process group that torchrun describes, or return a single-process Dist.

    Raises ConfigError for settings that cannot work (before anything is written): fsdp2 without a
    process group, NCCL on a CPU device."""
    if not launched():
        if parallel == "fsdp2":
            raise ConfigError("train.parallel='fsdp2' needs a process group: launch with "
                              "torchrun --nproc_per_node N -m train ... (N >= 1)")
        return Dist()
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(f"train.dist_backend='nccl' needs CUDA devices, but train.device is "
                          f"{device.type}; use train.dist_backend='gloo' (or 'auto')")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, dist.DistError) as e:
            raise DistributedError(f"could not join the process group ({one_line(e)}) within "
                                   f"train.dist_timeout_s={timeout_s}") from None
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]), True)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ----- wrapping ------------------------------------------------------------------------------------
def checkpoint_blocks(model: nn.Module) -> None:
    """Activation checkpointing per block: keep each block's input, recompute its inside in backward.
    Parameter names and the module tree stay as they are (checkpoints are unaffected)."""
    for block in model.transformer.h:
        block.forward = functools.partial(_recomputed, type(block).forward, block)


def _recomputed(forward, block, *args):
    return checkpoint(forward, block, *args, use_reentrant=False)


def wrap(model: nn.Module, parallel: str, d: Dist, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The module to run forward/backward on: `model` itself (one process), a DDP wrapper around
    it, or `model` sharded in place by FSDP2 (then the returned module is `model`)."""
    if not d.active:
        return model
    if parallel == "ddp":
        # broadcast_buffers=False: buffers are either constant (RoPE tables) or must follow each
        # rank's own counts until they are summed (MoE load) - and a broadcast would hide a drift.
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                   else {"broadcast_buffers": False})  # the newer name (torch >= 2.12) syncs at init only
        return ddp(model, device_ids=ids, **no_sync)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype != torch.float32 else None
    kwargs = {"mp_policy": mp} if mp is not None else {}
    for block in model.transformer.h:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)  # the embeddings, final norm and LM head (tied: one parameter)
    return model


def grad_sync(module: nn.Module, enabled: bool):
    """Context for one micro-step's backward: reduce gradients over ranks only when `enabled`."""
    if isinstance(module, nn.parallel.DistributedDataParallel):
        return nullcontext() if enabled else module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(enabled)
    return nullcontext()


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip to `max_norm`; return the global gradient norm (sharded FSDP2 gradients included), on
    the device: the caller reads it with whatever else it needs, in one copy."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if hasattr(total, "full_tensor"):  # a DTensor holding this rank's partial norm
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


# ----- full state, whatever the layout ---------------------------------------------------------------
def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def unique_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """model.state_dict() with each tied tensor once, under its alphabetically first name, and
    {dropped name: kept name}: what safetensors' save_model writes, so that checkpoints keep the
    single-process layout whatever the parallel layout."""
    state = model.state_dict(keep_vars=True)
    kept: dict[int, str] = {}
    aliases = {}
    for name in sorted(state):
        if id(state[name]) in kept:
            aliases[name] = kept[id(state[name])]
        else:
            kept[id(state[name])] = name
    return {n: t.detach() for n, t in state.items() if n not in aliases}, aliases


def full_model_state(model: nn.Module, d: Dist) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """(the whole model's weights on the CPU, tied aliases) on rank 0, None elsewhere. Sharded
    parameters are all-gathered one tensor at a time, on every rank, in the same order."""
    tensors, aliases = unique_state(model)
    out = {}
    for name, t in tensors.items():
        full = _full(t)
        if d.rank == 0:
            out[name] = full.cpu().clone().contiguous()
    return (out, aliases) if d.rank == 0 else None


def full_optimizer_state(sd: dict, d: Dist) -> dict | None:
    """An optimizer's state_dict() `sd` with every sharded tensor gathered whole, on rank 0 (None
    elsewhere): the format a single process writes, keyed by parameter index. An optimizer made of
    several (train/optim.py MuonWithAdamW: {"muon": ..., "adamw": ...}) is gathered part by part."""
    if "state" not in sd:
        parts = {name: full_optimizer_state(part, d) for name, part in sd.items()}
        return parts if d.rank == 0 else None
    state = {i: {k: _full(v) for k, v in s.items()} for i, s in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]} if d.rank == 0 else None


def load_full_model_state(model: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into `model`, cutting each to this rank's shard where it is sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            src = full[name]
            if isinstance(t, DTensor):
                src = distribute_tensor(src.to(t.device_mesh.device_type), t.device_mesh, t.placements)
            t.copy_(src)


def load_optimizer_state(optimizer: torch.optim.Optimizer, sd: dict) -> None:
    """Load a full optimizer state (full_optimizer_state's format) into an optimizer whose
    parameters may be FSDP2 shards: each full tensor is cut to this rank's shard first."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if "state" not in sd:  # an optimizer made of several (MuonWithAdamW), loaded part by part
        for name, part in sd.items():
            load_optimizer_state(getattr(optimizer, name), part)
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, s in sd["state"].items():
        p = params[int(i)] if int(i) < len(params) else None
        state[i] = {k: distribute_tensor(v.to(p.device_mesh.device_type), p.device_mesh, p.placements)
                    if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape else v
                    for k, v in s.items()}
    optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


@contextmanager
def clear_errors(d: Dist, timeout_s: int):
    """Turn a failed collective (a rank died, hung past the timeout) into one DistributedError."""
    try:
        yield
    except RuntimeError as e:  # dist.DistError is one
        if not isinstance(e, dist.DistError) and not (d.active and _looks_distributed(e)):
            raise
        raise DistributedError(f"rank {d.rank}: another rank stopped or cannot be reached "
                               f"({one_line(e)}); train.dist_timeout_s={timeout_s}") from None


def _looks_distributed(e: RuntimeError) -> bool:
    text = str(e).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))
