"""The MoE router (`model.moe.router`): which top_k experts each token goes to, and with what weight.

    scores  = softmax(x W_r^T + b_r)  (Mixtral, Qwen3-MoE, gpt-oss)   |   sigmoid(x W_r^T)  (DeepSeek-V3)
    chosen  = top_k of (scores + expert_bias), among the best topk_group of n_group groups
    weights = scores[chosen], rescaled to sum to 1 (norm_topk), times routed_scale

A sigmoid scores each expert on its own, so adding or removing experts does not rescale the others;
the per-token renormalisation then makes the top_k weights a distribution again. `expert_bias` only
changes which experts win, never their weights: that is what lets DeepSeek-V3 balance the load
without an auxiliary loss (model/ffn/moe.py moves it). The learned bias b_r (`moe.router_bias`,
gpt-oss) is different: it is part of the logits, so it changes the weights too.

gpt-oss takes the top_k logits, then a softmax over those alone; that is softmax over all experts
renormalised over the chosen (norm_topk = true): exp(l_i) / sum_chosen exp(l_j) either way.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig

SCORES = {"softmax": lambda logits: logits.softmax(dim=-1), "sigmoid": torch.sigmoid}  # moe.router


class Router(nn.Module):
    """Scores the experts for each token and picks top_k of them, with their weights.

    softmax: matches HF `MixtralTopKRouter` (norm_topk) and `Qwen3MoeTopKRouter`. sigmoid with
    groups, `expert_bias` and routed_scale: matches HF `DeepseekV3TopkRouter` (arXiv:2412.19437;
    group-limited routing from DeepSeek-V2, arXiv:2405.04434). softmax, norm_topk and router_bias:
    matches HF `GptOssTopKRouter` (arXiv:2508.10925). Logits are computed in fp32, also
    under autocast: near-tied experts must not swap on a bf16 rounding.
    Config: moe.n_expert, top_k, router, norm_topk, routed_scale, n_group, topk_group, router_bias.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        m = cfg.moe
        self.top_k, self.n_group, self.topk_group = m.top_k, m.n_group, m.topk_group
        self.norm_topk, self.routed_scale = m.norm_topk, m.routed_scale
        self.score = SCORES[m.router]
        self.weight = nn.Parameter(torch.empty(m.n_expert, cfg.n_embd))
        self.bias = nn.Parameter(torch.zeros(m.n_expert)) if m.router_bias else None
        # moved by `MoE.end_step` (aux-loss-free balancing), not by gradients; saved with the model
        self.register_buffer("expert_bias", torch.zeros(m.n_expert))

    def forward(self, x: torch.Tensor):
        """x: (N, n_embd) -> logits, scores (N, n_expert); chosen experts, their weights (N, top_k)."""
        with torch.autocast(x.device.type, enabled=False):  # else autocast would make this bf16
            bias = None if self.bias is None else self.bias.float()
            logits = F.linear(x.float(), self.weight.float(), bias)  # (N, n_expert), fp32
        scores = self.score(logits)
        choice = self._best_groups(scores + self.expert_bias.float())
        chosen = choice.topk(self.top_k, dim=-1).indices
        weights = scores.gather(-1, chosen)
        if self.norm_topk:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return logits, scores, chosen, weights * self.routed_scale

    def _best_groups(self, s: torch.Tensor) -> torch.Tensor:
        """Mask (to -inf) every expert outside the token's topk_group best groups, a group ranked
        by the sum of its two best scores (DeepSeek-V3). One group: unchanged."""
        if self.n_group == 1:
            return s
        groups = s.view(s.shape[0], self.n_group, -1)  # (N, n_group, experts per group)
        rank = groups.topk(2, dim=-1).values.sum(dim=-1)  # (N, n_group)
        best = rank.topk(self.topk_group, dim=-1).indices
        keep = torch.zeros_like(rank, dtype=torch.bool).scatter_(1, best, True)
        return groups.masked_fill(~keep.unsqueeze(-1), float("-inf")).view_as(s)

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, n_group={self.n_group}, topk_group={self.topk_group}"
