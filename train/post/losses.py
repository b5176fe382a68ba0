"""The losses of the post-training methods, each a small function to read next to its paper.

Shapes: a batch of B sequences (prompt + response) of length L; `logps` (B, L-1) holds
log p(token t+1 | tokens <= t) under the policy being trained, `mask` (B, L-1) is 1.0 where
token t+1 is a response token (the response and its <|end|>, never the prompt or the padding).

    rft_loss    rejection-sampling fine-tuning (STaR, Zelikman et al. 2022, arXiv:2203.14465;
                RAFT, Dong et al. 2023, arXiv:2304.06767): the SFT loss on the accepted samples.
    dpo_loss    Direct Preference Optimization (Rafailov et al. 2023, arXiv:2305.18290, eq. 7).
    grpo_loss   Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath,
                arXiv:2402.03300, eq. 3), with DAPO's token-level normalisation (Yu et al. 2025,
                arXiv:2503.14476, eq. 8) and PPO's clipped ratio (Schulman et al. 2017,
                arXiv:1707.06347); `group_advantages` with or without the division by the group's
                standard deviation (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783, drops it).
"""

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, L-1): log p(ids[:, t+1]) from logits (B, L, V) of the sequence ids (B, L), in fp32."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of x over the tokens where mask is 1: every response token weighs the same, so a
    long response counts for more than a short one (token-level, DAPO)."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def rft_loss(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean negative log-likelihood of the accepted responses' tokens."""
    return -masked_mean(logps, mask)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, margins): each argument (P,) is the summed log-probability of a pair's response under
    the policy or the frozen reference. The implicit reward of a response is beta times its
    log-ratio to the reference; the loss is -log sigmoid(reward(chosen) - reward(rejected)),
    averaged over pairs. margins (P,), detached: those reward differences."""
    margins = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return -F.logsigmoid(margins).mean(), margins.detach()


def group_advantages(rewards: torch.Tensor, scale_by_std: bool, eps: float = 1e-4) -> torch.Tensor:
    """rewards (P, G), G samples per prompt -> advantages (P, G): each reward minus its group's
    mean, divided by the group's standard deviation (GRPO) or not (Dr. GRPO). A group whose samples
    all score the same has advantage 0: it teaches nothing."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (rewards.std(dim=1, keepdim=True) + eps)
    return centred


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per token, an unbiased, non-negative estimate of KL(policy || reference) from samples of the
    policy: r - log r - 1 with r = p_ref / p (Schulman's "k3"; the estimator GRPO's eq. 4 uses)."""
    log_ratio = ref_logps - logps
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              clip_eps: float, tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clip_fraction). advantages (B,) are per response and apply to each of its tokens.
    ratio = p / p_old per token, where p_old is the policy that sampled the batch: exactly 1 when a
    batch of rollouts is used for one step only (then the loss is REINFORCE with a group baseline),
    and clipped to [1 - eps, 1 + eps] in PPO's pessimistic form when it is reused. The loss is
    the negative clipped surrogate, averaged over every response token of the batch: `tokens` of
    them when rows of advantage 0 were left out (default: mask's)."""
    ratio = torch.exp(logps - old_logps)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)
    clipped = ((ratio - 1.0).abs() > clip_eps).float()
    tokens = mask.sum().clamp(min=1.0) if tokens is None else tokens
    return -(surrogate * mask).sum() / tokens, ((clipped * mask).sum() / tokens).detach()
