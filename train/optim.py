"""Optimizers and the learning-rate schedule.

`optim.name` picks the optimizer (OPTIMIZERS below):
- "adamw": AdamW for every parameter.
- "muon": Muon for the hidden weight matrices (attention, MLP and expert matrices), AdamW for the
  rest (embeddings, the LM head, norms, biases, the MoE router). One object, one state_dict.
"""

import math

import torch
from torch import nn

from model.ffn.moe import Experts

from .config import OptimConfig

# Muon (Keller Jordan 2024, https://kellerjordan.github.io/posts/muon/): the quintic Newton-Schulz
# coefficients, chosen to push every singular value towards 1 in five steps (not exactly to 1: they
# land in about [0.7, 1.2], which trains as well as the exact polar factor).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
# Polar Express (Amsel, Persson, Musco & Gower 2025, arXiv:2505.16932): a different quintic for each
# of the five steps, each optimal (minimax) for the interval the previous step leaves the singular
# values in, so they end closer to 1 in the same number of matmuls. These are the paper's
# coefficients as modded-nanogpt uses them, with its safety margin: the start is divided by
# 1.02 ||g||_F, because the first steps' polynomials are tuned for singular values <= 1 and rounding
# could push one just above.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
SCHEDULES = {"jordan": ((NS_COEFFICIENTS,) * NS_STEPS, 1.0), "polar_express": (POLAR_EXPRESS, 1.02)}


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7,
                  schedule: str = "jordan") -> torch.Tensor:
    """The nearest semi-orthogonal matrix to each matrix of g (..., A, B), approximately: U V^T of
    its SVD U S V^T, by a quintic Newton-Schulz iteration X <- a X + (b G + c G^2) X, G = X X^T,
    started from X = g / ||g||_F (so every singular value is <= 1). Runs in fp32; the stacked
    matrices of MoE experts are orthogonalised each on its own. schedule: the (a, b, c) of each
    step, "jordan" (the same five times) or "polar_express" (one per step; `steps` must be <= 5)."""
    coefficients, margin = SCHEDULES[schedule]
    x = g.float()
    wide = x.shape[-2] <= x.shape[-1]
    x = x if wide else x.mT  # iterate on the smaller Gram matrix
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * margin + eps)
    for a, b, c in coefficients[:steps]:
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.mT).to(g.dtype)


def normalize_neurons(o: torch.Tensor, second: torch.Tensor, beta2: float, eps: float = 1e-10) -> torch.Tensor:
    """NorMuon (Li et al. 2025, arXiv:2510.05491): an orthogonalised update o (..., A, B) gives every
    direction the same size, but its rows (output neurons) can still differ a lot in size. Keep an
    Adam-like running mean `second` of each neuron's mean squared update (along the longer side:
    rows when A >= B, else columns), divide by its square root, then restore o's Frobenius norm, so
    the step size is still Muon's. `second` is updated in place."""
    along = -1 if o.shape[-2] >= o.shape[-1] else -2
    second.lerp_(o.square().mean(dim=along, keepdim=True), 1 - beta2)
    scaled = o / (second.sqrt() + eps)
    return scaled * (o.norm(dim=(-2, -1), keepdim=True) / (scaled.norm(dim=(-2, -1), keepdim=True) + eps))


class Muon(torch.optim.Optimizer):
    """Muon: SGD momentum (Nesterov) whose update is orthogonalised before it is applied.

        m <- mu m + (1 - mu) g;  u = (1 - mu) g + mu m          (Nesterov, as torch.optim.Muon)
        W <- W (1 - lr wd) - lr * 0.2 sqrt(max(A, B)) * orthogonalize(u)

    Options (each off by default; the speedrun rungs, docs/speedrun.md):
    - schedule "polar_express": Polar Express's per-step coefficients (`orthogonalize`);
    - normuon: NorMuon's per-neuron second-moment normalisation of the orthogonalised update
      (`normalize_neurons`, decay `beta2`);
    - cautious_wd: cautious weight decay (Chen et al. 2025, arXiv:2510.12402): decay only the
      entries whose update has the parameter's sign, i.e. where the step already moves the entry
      towards 0; the others are left to the gradient.

    The shape-dependent factor 0.2 sqrt(max(A, B)) for an A x B matrix is Moonlight's
    (Liu et al. 2025, "Muon is Scalable for LLM Training", arXiv:2502.16982, sec. 2.2, the scaling
    Kimi K2 trains with): it gives the update the RMS (0.2) of a typical AdamW update, so the AdamW
    learning rate and decoupled weight decay carry over unchanged. Keller Jordan's original scales
    by sqrt(max(1, A / B)) with lr ~0.02 instead; torch.optim.Muon offers both, but takes only 2-D
    parameters, and MoE experts here are stacks (n_expert, A, B), hence this short implementation.

    Data parallel: under DDP the gradient is already all-reduced, so each rank computes the same
    update. Under FSDP2 a parameter is a DTensor sharded by rows; Newton-Schulz needs the whole
    matrix, so the update is gathered (`full_tensor()`, an all-gather per matrix), orthogonalised on
    every rank (redundant compute, no extra communication) and cut back to this rank's shard
    (`redistribute` from Replicate to the parameter's placements, a local slice). The momentum
    buffer stays sharded like the parameter.
    """

    def __init__(self, params, lr: float, momentum: float = 0.95, weight_decay: float = 0.0,
                 batched: bool = False, schedule: str = "jordan", normuon: bool = False,
                 beta2: float = 0.95, cautious_wd: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.schedule, self.normuon, self.beta2, self.cautious_wd = schedule, normuon, beta2, cautious_wd
        # batched: orthogonalise the matrices of one shape as one batch, ~50 launches per shape
        # instead of per matrix (for a GPU; on a CPU it is slower: a batch falls out of cache)
        self.runs = _same_shape if batched else _one_by_one

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for params in self.runs([p for p in group["params"] if p.grad is not None]):
                grads = [p.grad for p in params]
                for p in params:
                    if "momentum_buffer" not in self.state[p]:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
                bufs = [self.state[p]["momentum_buffer"] for p in params]
                torch._foreach_lerp_(bufs, grads, 1 - mu)
                # grad.lerp(buf, mu) for all at once, as copies lerped in place: torch shards the
                # in-place foreach lerp over DTensors (FSDP2) in 2.9 already, the out-of-place one from 2.13
                nesterov = [g.clone() for g in grads]
                torch._foreach_lerp_(nesterov, bufs, mu)
                updates = _orthogonalize_all(nesterov, self.schedule)
                if self.normuon:
                    updates = [normalize_neurons(u, self._second(p, u), self.beta2) for p, u in zip(params, updates)]
                A, B = params[0].shape[-2:]
                if self.cautious_wd:  # decay where the update (subtracted) has the parameter's sign
                    torch._foreach_sub_(params, [p * (u * p > 0) for p, u in zip(params, updates)], alpha=lr * wd)
                else:
                    torch._foreach_mul_(params, 1 - lr * wd)
                torch._foreach_add_(params, updates, alpha=-lr * 0.2 * math.sqrt(max(A, B)))
        return loss

    def _second(self, p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """NorMuon's per-neuron second moment of p, created on its first step."""
        if "second_moment" not in self.state[p]:
            A, B = u.shape[-2:]
            shape = (*u.shape[:-1], 1) if A >= B else (*u.shape[:-2], 1, B)
            self.state[p]["second_moment"] = torch.zeros(shape, dtype=u.dtype, device=u.device)
        return self.state[p]["second_moment"]


def _one_by_one(params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    return [[p] for p in params]


def _same_shape(params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The parameters in runs that one batched Newton-Schulz can take: plain tensors grouped by
    shape, dtype and device (the Muon rung's 24 matrices come in 8 shapes); sharded DTensors one
    by one (each is gathered)."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for i, p in enumerate(params):
        key = (p.shape, p.dtype, p.device) if type(p.grad) is torch.Tensor else i
        groups.setdefault(key, []).append(p)
    return list(groups.values())


def _orthogonalize_all(updates: list[torch.Tensor], schedule: str) -> list[torch.Tensor]:
    """orthogonalize() of each update: several (plain tensors of one shape) as one batch; a single
    one may be a sharded DTensor, then gathered and re-sharded."""
    if len(updates) > 1:
        return list(orthogonalize(torch.stack(updates), schedule=schedule).unbind())
    [u] = updates
    if type(u) is torch.Tensor:
        return [orthogonalize(u, schedule=schedule)]
    from torch.distributed.tensor import DTensor, Replicate

    full = orthogonalize(u.full_tensor(), schedule=schedule)
    mesh = u.device_mesh
    return [DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
            .redistribute(mesh, u.placements)]


class MuonWithAdamW:
    """Muon for the hidden matrices and AdamW for everything else, behind one optimizer interface
    (param_groups, step, zero_grad, state_dict, load_state_dict), so that the trainer, the LR
    schedule, gradient clipping and the checkpoint see one object."""

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW):
        self.muon, self.adamw = muon, adamw
        self.defaults = adamw.defaults

    @property
    def param_groups(self) -> list[dict]:
        # read through each time: load_state_dict replaces the optimizers' group dicts
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self):
        return {**self.muon.state, **self.adamw.state}

    def step(self, closure=None):
        loss = self.muon.step(closure)
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError(f"not a Muon + AdamW optimizer state (keys {sorted(state)})")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The weights Muon trains: every nn.Linear weight except the LM head's, and the expert stacks.
    Embeddings, the LM head, norms, biases, the router (a plain parameter, not an nn.Linear) and
    anything else (convolutions, sinks) stay with AdamW."""
    head = getattr(model, "lm_head", None)
    out = []
    for module in model.modules():
        if isinstance(module, nn.Linear) and module is not head:
            out.append(module.weight)
        elif isinstance(module, Experts):
            out += [module.c_fc, module.c_proj]
    head_weight = head.weight if head is not None else None
    return [p for p in out if p.requires_grad and p is not head_weight]  # a tied head is the embedding


def adamw(params: list[nn.Parameter], cfg: OptimConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101) with decoupled weight decay applied
    only to weight matrices and embeddings (>= 2-D); biases and norm parameters are not decayed,
    since shrinking them towards zero has no regularising meaning. The fused kernel (one pass over
    each tensor) is used on CUDA and on CPU, where it took a 10.9M-parameter step from ~400 ms
    (PyTorch's per-tensor default there) to ~60 ms (docs/LOG.md)."""
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=device_type in ("cuda", "cpu"))


def build_adamw(model: nn.Module, cfg: OptimConfig, device_type: str) -> torch.optim.AdamW:
    return adamw([p for p in model.parameters() if p.requires_grad], cfg, device_type)  # a tied weight once


def build_muon(model: nn.Module, cfg: OptimConfig, device_type: str) -> MuonWithAdamW:
    """Muon on `hidden_matrices(model)`, at the same peak lr and weight decay as AdamW (Moonlight's
    RMS matching makes them carry over), AdamW on the rest."""
    matrices = hidden_matrices(model)
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    muon = Muon(matrices, lr=cfg.lr, momentum=cfg.muon_momentum, weight_decay=cfg.weight_decay,
                batched=device_type == "cuda", schedule=cfg.muon_ns, normuon=cfg.normuon, beta2=cfg.beta2,
                cautious_wd=cfg.cautious_wd)
    return MuonWithAdamW(muon, adamw(rest, cfg, device_type))


OPTIMIZERS = {"adamw": build_adamw, "muon": build_muon}


def build_optimizer(model: nn.Module, cfg: OptimConfig, device_type: str):
    """The optimizer of `optim.name` for `model` (see the module docstring)."""
    return OPTIMIZERS[cfg.name](model, cfg, device_type)


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then a decay shape.

    - cosine: half a cosine from the peak down to `min_lr_ratio * lr` at the end of the schedule.
    - wsd (warmup-stable-decay, arXiv:2404.06395): constant at the peak, then a linear decay over
      the last `decay_fraction` of the schedule; a run can be extended from any stable-phase
      checkpoint without a restart of the cosine.
    - constant: the peak after warm-up.
    The schedule spans `decay_steps` (default: train.max_steps); past its end it stays at the minimum.
    Muon's groups follow the same schedule (their peak is the same lr).
    """
    total = cfg.decay_steps or max_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if step >= total:
        return min_lr
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * progress))
    decay_start = total - round(cfg.decay_fraction * total)  # wsd
    if step < decay_start:
        return cfg.lr
    return cfg.lr + (min_lr - cfg.lr) * (step - decay_start + 1) / max(1, total - decay_start)
