"""Mixture of Experts (`[model.moe]`): a router sends each token to top_k of n_expert MLPs.

    chosen, weights = router(x)                        top_k experts per token (model/ffn/router.py)
    y = sum_k weights_k * expert_{chosen_k}(x)  (+ shared(x), experts every token uses)

With moe.shared_gate the shared output is scaled by sigmoid(x w_g), one number per token (Qwen3-Next).

Parameters grow with n_expert while the compute per token grows only with top_k: that is the whole
point (Shazeer et al. 2017, arXiv:1701.06538; Switch Transformer, arXiv:2101.03961).

Dispatch: the (token, expert) assignments are sorted by expert, each expert runs once on its
contiguous slice of tokens, and the weighted outputs are added back to their tokens (`index_add_`).
No expert computes a token it was not chosen for; tests check the result against a dense oracle
that runs every expert on every token.

Training signals (all in `model.moe`, none changes a trained model's function):
  * aux_loss_coef: the Switch load-balancing loss n_expert * sum_i f_i * P_i, where f_i is the
    fraction of tokens routed to expert i and P_i its mean router probability; the loss equals
    top_k when the load is even (f_i = top_k / n_expert, P_i = 1 / n_expert);
  * z_loss_coef: mean logsumexp(router logits)^2, which keeps logits small (ST-MoE, arXiv:2202.08906);
  * bias_update_rate: auxiliary-loss-free balancing (DeepSeek-V3, arXiv:2412.19437): after each
    optimizer step, `expert_bias` moves by +-rate towards an even load. It steers which experts are
    chosen, never the weights;
  * capacity_factor: an expert takes at most ceil(cf * tokens * top_k / n_expert) tokens per
    forward; later ones are dropped (their routed output is 0). Applied in training only, so
    evaluation and cached decoding never drop. Selecting the kept assignments reads the device
    (a sync on a GPU); without a limit, a forward never waits for the device.
A training forward hands its weighted aux terms to the `terms` dict it is given (under "aux_loss");
GPT.forward averages them over MoE layers and returns them with the LM loss (model/gpt.py). The
load and term statistics stay in the layer's own buffers until `end_step`, which the model calls
after each optimizer step (`GPT.end_step`).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from .mlp import activation, build_mlp
from .router import Router

grouped_mm = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)  # PyTorch >= 2.8


class Experts(nn.Module):
    """n_expert MLPs of `model.mlp`'s kind, as stacked weights, run on tokens grouped by expert.

    c_fc (n_expert, [gate; up] or hidden, n_embd) and c_proj (n_expert, n_embd, hidden) have the
    layout of HF `MixtralExperts.gate_up_proj` / `down_proj`, so conversion is a copy.
    Config: moe.n_expert, moe.expert_hidden, mlp (activation), bias.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        m = cfg.moe
        self.act, self.gated = activation(cfg)
        fc_out = (2 if self.gated else 1) * m.expert_hidden
        self.c_fc = nn.Parameter(torch.empty(m.n_expert, fc_out, cfg.n_embd))
        self.c_proj = nn.Parameter(torch.empty(m.n_expert, cfg.n_embd, m.expert_hidden))
        self.c_fc_bias = nn.Parameter(torch.zeros(m.n_expert, fc_out)) if cfg.bias else None
        self.c_proj_bias = nn.Parameter(torch.zeros(m.n_expert, cfg.n_embd)) if cfg.bias else None
        self.kernel = "loop"  # or "grouped" (CUDA, bf16), set by model/kernels.py
        self.run = self.loop

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x: (M, n_embd), the first counts[0] rows for expert 0, and so on -> (M, n_embd).
        counts: (n_expert,) on x's device."""
        return self.run(x, counts)

    def use_kernel(self, kernel: str) -> None:
        self.kernel, self.run = kernel, getattr(self, kernel)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        """The activation of c_fc's output h: act(gate, up) of its two halves when gated."""
        return self.act(*h.chunk(2, dim=-1)) if self.gated else self.act(h)

    @torch.compiler.disable  # data-dependent: each pattern of idle experts would be a new graph
    def loop(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One pair of matmuls per expert with tokens; reads the counts on the host, so under
        torch.compile it runs eagerly rather than recompiling for every pattern of idle experts."""
        counts = counts.tolist()
        # Unbound once: indexing a stacked weight per expert (`self.c_fc[e]`) would make backward
        # build a zero-filled gradient of the whole stack for each expert, O(n_expert^2) memory.
        no_bias = [None] * len(counts)
        c_fc, c_proj = self.c_fc.unbind(), self.c_proj.unbind()
        fc_bias = no_bias if self.c_fc_bias is None else self.c_fc_bias.unbind()
        proj_bias = no_bias if self.c_proj_bias is None else self.c_proj_bias.unbind()
        out = []
        for e, xe in enumerate(x.split(counts)):
            if not counts[e]:
                continue
            h = self.activate(F.linear(xe, c_fc[e], fc_bias[e]))
            out.append(F.linear(h, c_proj[e], proj_bias[e]))
        return torch.cat(out) if out else x[:0]

    def grouped(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """All experts in one grouped GEMM per projection (`F.grouped_mm`, bf16; CUDA needs SM >= 80):
        two launches instead of two per expert, and the counts never leave the device."""
        bf16, offs = torch.bfloat16, counts.cumsum(0).to(torch.int32)  # where each expert's rows end
        per_row = lambda b: b.to(bf16).repeat_interleave(counts, dim=0, output_size=x.shape[0])  # noqa: E731
        c_fc, c_proj, fc_bias = self.aligned(self.c_fc, self.c_proj, self.c_fc_bias)
        h = grouped_mm(x.to(bf16), c_fc.to(bf16).transpose(-2, -1), offs=offs)  # (M, fc_out)
        if fc_bias is not None:
            h = h + per_row(fc_bias)
        h = self.activate(h)
        y = grouped_mm(h.contiguous(), c_proj.to(bf16).transpose(-2, -1), offs=offs)  # (M, n_embd)
        return y if self.c_proj_bias is None else y + per_row(self.c_proj_bias)

    def aligned(self, c_fc, c_proj, fc_bias):
        """The weights with the hidden size rounded up to a multiple of 8 by zero units: grouped_mm
        needs 16-byte aligned rows. A zero unit adds nothing (act(0) * 0 = 0, and its c_proj column
        is 0), and the padding's gradient is dropped."""
        pad = -c_proj.shape[-1] % 8
        if not pad:
            return c_fc, c_proj, fc_bias
        halves = 2 if self.gated else 1  # [gate; up] are padded each
        E, fc_out, C = c_fc.shape
        c_fc = F.pad(c_fc.view(E, halves, fc_out // halves, C), (0, 0, 0, pad)).view(E, -1, C)
        if fc_bias is not None:
            fc_bias = F.pad(fc_bias.view(E, halves, -1), (0, pad)).view(E, -1)
        return c_fc, F.pad(c_proj, (0, pad)), fc_bias

    def extra_repr(self) -> str:
        return f"n_expert={self.c_fc.shape[0]}, act={self.act.__name__}, gated={self.gated}"


class GatedShared(nn.Module):
    """The shared experts behind a sigmoid gate: sigmoid(x w_g) * shared(x), one scalar per token
    read from the MoE layer's input, so a token can turn the always-on experts down (Qwen2-MoE,
    arXiv:2407.10671; Qwen3-Next, Qwen3.5-MoE). Matches HF `Qwen3NextSparseMoeBlock`'s
    `shared_expert` and `shared_expert_gate` (no bias, as there). Config: moe.shared_gate, n_shared,
    expert_hidden, mlp.
    """

    def __init__(self, cfg: ModelConfig, hidden: int):
        super().__init__()
        self.mlp = build_mlp(cfg, hidden)
        self.gate = nn.Linear(cfg.n_embd, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(x)) * self.mlp(x)  # (B, T, 1) * (B, T, n_embd)


SHARED = {False: build_mlp, True: GatedShared}  # keyed by `moe.shared_gate`: (cfg, hidden) -> module


class MoE(nn.Module):
    """A Mixture-of-Experts MLP: router, routed experts, optional shared experts (module docstring).

    Matches HF `MixtralSparseMoeBlock`, `Qwen3MoeSparseMoeBlock`, `DeepseekV3MoE` and (with
    `GatedShared`) `Qwen3NextSparseMoeBlock` for the same settings. Config: [model.moe], mlp, bias,
    dropout.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        m = cfg.moe
        self.router = Router(cfg)
        self.experts = Experts(cfg)
        self.shared = SHARED[m.shared_gate](cfg, m.n_shared * m.expert_hidden) if m.n_shared else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.n_expert, self.top_k = m.n_expert, m.top_k
        self.capacity_factor, self.bias_update_rate = m.capacity_factor, m.bias_update_rate
        self.aux_loss_coef, self.z_loss_coef = m.aux_loss_coef, m.z_loss_coef
        # since the last end_step: tokens per expert (before capacity drops), and sums of
        # [balance loss, z-loss, forwards, dropped assignments]
        self.register_buffer("load", torch.zeros(m.n_expert), persistent=False)
        self.register_buffer("sums", torch.zeros(4), persistent=False)

    def forward(self, x: torch.Tensor, terms: dict | None = None) -> torch.Tensor:
        """x: (B, T, n_embd). terms: a training forward's collection of loss terms; this layer adds
        its weighted aux terms to terms["aux_loss"] (a list, one entry per MoE layer)."""
        B, T, D = x.shape
        flat = x.reshape(-1, D)  # (N, n_embd)
        logits, scores, chosen, weights = self.router(flat)  # (N, n_expert) x2, (N, top_k) x2
        load = assignments_per_expert(chosen, self.n_expert)  # (n_expert,)
        order, counts = self._dispatch(chosen, load)  # assignments grouped by expert, kept per expert
        token = order // self.top_k  # (M,) the token of each kept assignment
        h = self.experts(flat.index_select(0, token), counts)  # (M, n_embd)
        h = h * weights.flatten()[order].unsqueeze(-1).to(h.dtype)
        y = torch.zeros_like(flat).index_add_(0, token, h.to(flat.dtype)).view(B, T, D)
        y = self.dropout(y)
        if self.shared is not None:
            y = y + self.shared(x)
        if self.training:
            aux = self._record(logits, scores, load.float(), dropped=chosen.numel() - order.numel())
            if aux is not None and terms is not None:
                terms.setdefault("aux_loss", []).append(aux)
        return y

    def _dispatch(self, chosen: torch.Tensor, load: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices into chosen.flatten() grouped by expert (stable: earlier tokens first), and the
        number per expert (`load`), after the capacity limit in training."""
        expert = chosen.flatten()  # (N * top_k,)
        order, counts = expert.argsort(stable=True), load
        if self.training and self.capacity_factor:
            capacity = math.ceil(self.capacity_factor * expert.numel() / self.n_expert)
            first = counts.cumsum(0) - counts  # where each expert's slice starts
            queue_pos = torch.arange(order.numel(), device=order.device) - first[expert[order]]
            order, counts = order[queue_pos < capacity], counts.clamp(max=capacity)
        return order, counts

    def _record(self, logits: torch.Tensor, scores: torch.Tensor, load: torch.Tensor,
                dropped: int) -> torch.Tensor | None:
        """Add this forward's load and terms to the step's statistics; return the weighted aux terms
        that join the objective (None when both weights are 0)."""
        n_tokens = logits.shape[0]
        probs = scores / scores.sum(dim=-1, keepdim=True)  # sigmoid scores normalised per token
        balance = self.n_expert * (load / n_tokens * probs.mean(dim=0)).sum()
        z = torch.logsumexp(logits, dim=-1).square().mean()
        # only the terms with a weight join the objective (a zero-weighted term would still cost
        # its backward); the other is recorded as a metric
        terms = [coef * term for coef, term in ((self.aux_loss_coef, balance), (self.z_loss_coef, z)) if coef]
        with torch.no_grad():  # in place, and no host value is copied to the device
            self.load += load
            self.sums[:2].add_(torch.stack([balance, z]))  # add_ on the view: no copy back
            self.sums[2].add_(1)
            if dropped:
                self.sums[3].add_(dropped)
        return sum(terms) if terms else None

    @torch.no_grad()
    def step_stats(self) -> torch.Tensor:
        """What end_step reports, still on the device (so that the trainer can read it together
        with the loss, in one copy): [balance sum, z-loss sum, forwards, dropped, assignments,
        busiest expert's load / mean load]."""
        load = self.load
        return torch.cat([self.sums, torch.stack([load.sum(), load.max() / load.mean().clamp(min=1e-9)])])

    @torch.no_grad()
    def end_step(self, stats: list[float] | None = None, update_bias: bool = True) -> dict:
        """Metrics since the last call, from `step_stats()` (read here if not given); then the
        aux-loss-free bias update (if on, on the device) and a reset."""
        balance, z, forwards, dropped, assigned, max_load = self.step_stats().tolist() if stats is None else stats
        metrics = {}
        if forwards:
            metrics = {"balance": balance / forwards, "z_loss": z / forwards,
                       "dropped": dropped / max(assigned, 1.0), "max_load": max_load}
            if update_bias and self.bias_update_rate:
                self.router.expert_bias += self.bias_update_rate * torch.sign(self.load.mean() - self.load)
        self.load.zero_()
        self.sums.zero_()
        return metrics


def assignments_per_expert(chosen: torch.Tensor, n_expert: int) -> torch.Tensor:
    """(n_expert,) how many of the (token, k) assignments in `chosen` go to each expert. A
    scatter-add of ones, not `torch.bincount`: on CUDA bincount reads the input's maximum on the
    host to size its output, a sync in every MoE forward and a graph break under torch.compile."""
    expert = chosen.flatten()
    counts = torch.zeros(n_expert, dtype=expert.dtype, device=expert.device)
    return counts.scatter_add_(0, expert, torch.ones_like(expert))


def step_stats(layers: list[MoE], sum_over_ranks=None) -> torch.Tensor:
    """Every layer's `step_stats()`, flat (6 per layer), to be read from the device in one copy.

    sum_over_ranks: with data parallelism, a function that sums a tensor over ranks in place. The
    layers' load and term sums are then summed over ranks first, in one all-reduce, so that the load
    metrics are global and the aux-loss-free bias update is the same on every rank (expert_bias
    never drifts apart; torchtitan does the same)."""
    if sum_over_ranks is not None:
        flat = sum_over_ranks(torch.cat([torch.cat([m.load, m.sums]) for m in layers]))
        for m, part in zip(layers, flat.split([m.load.numel() + m.sums.numel() for m in layers])):
            m.load.copy_(part[: m.load.numel()])
            m.sums.copy_(part[m.load.numel():])
    return torch.cat([layer.step_stats() for layer in layers])


def end_step(layers: list[MoE], stats: list[float] | None = None, update_bias: bool = True) -> dict:
    """After an optimizer step: load and aux-term metrics for the log (balance and z-loss averaged
    over layers), the aux-loss-free bias update, and a reset. `stats`: `step_stats(layers)` as
    read by the caller; read here (one copy for all layers) if not given.

    moe_max_load lists, per MoE layer, the busiest expert's tokens over the mean (1.0 = even);
    moe_dropped is the fraction of assignments dropped by the capacity limit.
    """
    if stats is None:
        stats = step_stats(layers).tolist() if layers else []
    n = len(stats) // max(len(layers), 1)  # one layer's row
    rows = [stats[i * n:(i + 1) * n] for i in range(len(layers))]
    per_layer = [layer.end_step(row, update_bias) for layer, row in zip(layers, rows)]
    per_layer = [m for m in per_layer if m]
    if not per_layer:
        return {}
    mean = lambda key: sum(m[key] for m in per_layer) / len(per_layer)  # noqa: E731
    return {"moe_balance": mean("balance"), "moe_z_loss": mean("z_loss"), "moe_dropped": mean("dropped"),
            "moe_max_load": [round(m["max_load"], 4) for m in per_layer]}


def expert_kernel(experts: Experts, device: torch.device, dtype: torch.dtype) -> str:
    """"grouped" on CUDA in bf16 when the op exists and the width's rows are 16-byte aligned (the
    hidden size is padded, `Experts.aligned`), else "loop"."""
    aligned = experts.c_proj.shape[1] % 8 == 0
    fits = grouped_mm is not None and device.type == "cuda" and dtype == torch.bfloat16 and aligned
    return "grouped" if fits else "loop"
