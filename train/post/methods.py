"""The post-training methods that sample from a model: rft, grpo and dpo (`[post] method`).

Each is an objective the trainer calls once per micro-batch, `terms(model, key)`, in place of the
language-model forward: it returns the terms of the loss by name ({"loss": ...}, and "kl_loss"
for GRPO with post.kl_coef > 0), which the trainer sums, backpropagates and logs as it does a
pretraining run's. The step's other numbers (reward mean and std, pass rate, answer length, KL,
clip fraction, DPO's accuracy and margin, and the seconds spent in the rollout, the reward and
the loss's forward) come from `metrics()` once per step; with several ranks, rank 0's. Batches
are pure functions of the batch key (train/post/rollouts.py), so a resumed run is exact; rollouts
that are used for more than one step (post.rollout_steps) travel in the checkpoint (`state_dict`).
"""

import time
from collections import defaultdict

import numpy as np
import torch

from model import GPT

from .chat_format import ChatTokenizer
from .losses import dpo_loss, group_advantages, grpo_loss, kl_k3, masked_mean, rft_loss, token_logprobs
from .pairs import PairSet
from .prompts import PromptSet
from .rollouts import Rollouts, pack, sample


class SamplingMethod:
    """What the three share: prompts, the sampler, per-step metrics and the trained-token count."""

    def __init__(self, post, tok, block_size: int, prompts: PromptSet | None, policy, reference, dtype: str):
        self.post, self.tok, self.policy, self.reference, self.dtype = post, tok, policy, reference, dtype
        self.device = next(policy.parameters()).device
        self.prompts = prompts
        self.tokens = 0  # trained tokens (prompt + answer rows), over the run
        self._metrics: dict[str, list[float]] = defaultdict(list)

    def rollout(self, model, key: tuple[int, ...]) -> Rollouts:
        """post.prompts prompts drawn by `key`, post.samples answers each from `model`, rewarded."""
        p, t0 = self.post, time.perf_counter()
        items = self.prompts.draw(p.prompts, key)
        prompt_ids = [self.prompts.ids["train"][i] for i in items]
        seed = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> 1)
        generator = torch.Generator(self.device).manual_seed(seed)
        answers = sample(model, prompt_ids, p.samples, self.prompts.max_new, p.temperature, p.top_k,
                         generator, self.tok.eot, self.dtype)
        t1 = time.perf_counter()
        rewards = torch.tensor([self.prompts.reward("train", i, a) for i, a in
                                zip((i for i in items for _ in range(p.samples)), answers)])
        prompts = [q for q in prompt_ids for _ in range(p.samples)]
        ids, mask = pack(prompts, answers, self.tok.eot, self.device)
        groups = rewards.view(-1, p.samples)
        self.log(t_rollout_s=t1 - t0, t_reward_s=time.perf_counter() - t1, reward_mean=rewards.mean(),
                 reward_std=rewards.std() if len(rewards) > 1 else 0.0, pass_rate=(groups.amax(1) > 0).float().mean(),
                 answer_len=mask.sum(1).mean())
        return Rollouts(ids, mask, rewards.to(self.device), p.samples, prompts, answers)

    def logps(self, model, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        self.tokens += ids.numel()
        return token_logprobs(model(ids) / temperature, ids)

    def log(self, **values) -> None:
        for name, v in values.items():
            self._metrics[name].append(float(v))

    def metrics(self) -> dict[str, float]:
        """The step's means, then a fresh start."""
        out = {name: sum(v) / len(v) for name, v in self._metrics.items()}
        self._metrics.clear()
        return out

    def evaluate(self) -> dict[str, float]:
        """Scores beyond the held-out pass@1 that every run on a task logs (the trainer's)."""
        return {}

    def state_dict(self) -> dict:
        return {"tokens": self.tokens}

    def load_state_dict(self, state: dict) -> None:
        self.tokens = state["tokens"]


class RFT(SamplingMethod):
    """Per prompt, post.samples answers from the policy; the checker's accepted ones are trained on
    like SFT data (`rft_loss`): each step a round of sample, filter, fine-tune."""

    def terms(self, model, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        ro = self.rollout(self.policy, key)
        t0 = time.perf_counter()
        keep = ro.rewards > 0
        rows = keep.nonzero().flatten() if keep.any() else ro.rewards.new_zeros(1, dtype=torch.long)
        mask = ro.mask[rows] * keep[rows, None]  # nothing accepted: one row, weight 0
        loss = rft_loss(self.logps(model, ro.ids[rows]), mask)
        self.log(t_loss_s=time.perf_counter() - t0, accepted=keep.float().mean())
        return {"loss": loss}


class GRPO(SamplingMethod):
    """post.samples answers per prompt from the policy; each answer's advantage is its reward
    against its group's (`group_advantages`, `grpo_loss`); rollouts are reused for
    post.rollout_steps steps with the ratio clipped to 1 +- post.clip_eps; post.kl_coef > 0 adds a
    KL term to the reference."""

    def __init__(self, *args):
        super().__init__(*args)
        self.kept: dict[int, tuple[Rollouts, torch.Tensor | None]] = {}  # micro-batch -> its rollouts

    def terms(self, model, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        p, (seed, _, step, micro, rank) = self.post, key
        fresh = step % p.rollout_steps == 0 or micro not in self.kept
        if fresh:  # new rollouts, from the policy as it is now
            self.kept[micro] = (self.rollout(self.policy, (seed, 2, step, micro, rank)), None)
        ro, old = self.kept[micro]
        t0 = time.perf_counter()
        advantages = group_advantages(ro.rewards.view(-1, ro.group), p.scale_by_std).flatten()
        ids, mask, rows = self.rows(ro, advantages)
        # the log-probabilities of the distribution the answers were sampled from (logits / T)
        logps = self.logps(model, ids, p.temperature)
        if fresh and p.rollout_steps > 1:  # the sampling policy's log-probabilities, for the later steps
            self.kept[micro] = (ro, logps.detach())
        loss, clipped = grpo_loss(logps, logps.detach() if fresh else old, advantages[rows], mask, p.clip_eps,
                                  tokens=ro.mask.sum().clamp(min=1.0))
        terms = {"loss": loss}
        if self.reference is not None:
            with torch.no_grad():
                ref = token_logprobs(self.reference(ids) / p.temperature, ids)
            kl = masked_mean(kl_k3(logps, ref), mask)
            terms["kl_loss"] = p.kl_coef * kl
            self.log(kl=kl.detach())
        self.log(t_loss_s=time.perf_counter() - t0, clip_frac=clipped)
        return terms

    def rows(self, ro: Rollouts, advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, mask, rows) of the rows the loss needs, cut to the longest of them. Without a KL
        term a row of advantage 0 (its group's answers all scored the same) has no gradient, so
        only the others are forwarded (the loss still averages over the whole batch's tokens:
        the same gradient for less compute, unless dropout or an MoE capacity limit sees the
        batch's size). The trained-token count and clip_frac count the forwarded rows' tokens.
        None left: one row, whose advantage is 0."""
        rows = torch.arange(len(advantages), device=advantages.device)
        if self.reference is None:
            rows = advantages.nonzero().flatten() if advantages.any() else rows[:1]
        length = max(len(ro.prompts[r]) + len(ro.answers[r]) for r in rows.tolist())
        self.log(rows_trained=len(rows) / len(advantages))
        return ro.ids[rows, :length], ro.mask[rows, :length - 1], rows

    def state_dict(self) -> dict:
        kept = self.kept if self.post.rollout_steps > 1 else {}  # rollouts that outlive a step
        return {**super().state_dict(), "kept": {m: (dict(vars(ro)), old) for m, (ro, old) in kept.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.kept = {m: (Rollouts(**{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in ro.items()}),
                         None if old is None else old.to(self.device)) for m, (ro, old) in state["kept"].items()}


class DPO(SamplingMethod):
    """Pairs (chosen, rejected) against the frozen reference (`dpo_loss`): from a JSONL file of
    {"prompt", "chosen", "rejected"} (TRL's format, train/post/pairs.py), or from a task, built from
    the reference's own samples: per prompt the first accepted and the first rejected of
    post.samples answers (prompts whose answers all agree give no pair)."""

    def __init__(self, post, tok, block_size, prompts, policy, reference, dtype):
        super().__init__(post, tok, block_size, prompts, policy, reference, dtype)
        self.pairs = None if self.prompts else PairSet(post, tok, block_size)

    def batch(self, key) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        """(prompts, chosen, rejected) answer ids for one micro-batch."""
        if self.pairs is not None:
            return self.pairs.draw(self.post.prompts, key)
        ro = self.rollout(self.reference, key)  # the reference's own answers, checked
        prompts, chosen, rejected = [], [], []
        for g in range(0, len(ro.answers), ro.group):
            right = [r for r in range(g, g + ro.group) if ro.rewards[r] > 0]
            wrong = [r for r in range(g, g + ro.group) if ro.rewards[r] == 0]
            if right and wrong:
                prompts.append(ro.prompts[g])
                chosen.append(ro.answers[right[0]])
                rejected.append(ro.answers[wrong[0]])
        return prompts, chosen, rejected

    def terms(self, model, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        prompts, chosen, rejected = self.batch(key)
        t0 = time.perf_counter()
        weight = 1.0
        if not prompts:  # no pair this time: one dummy pair of weight 0 keeps the step's graph
            prompts, chosen, rejected, weight = [[self.tok.eot]], [[self.tok.eot]], [[self.tok.eot]], 0.0
        ids, mask = pack(prompts * 2, chosen + rejected, self.tok.eot, self.device)
        seq = (self.logps(model, ids) * mask).sum(1)
        with torch.no_grad():
            ref = (token_logprobs(self.reference(ids), ids) * mask).sum(1)
        n = len(prompts)
        loss, margins = dpo_loss(seq[:n], seq[n:], ref[:n], ref[n:], self.post.beta)
        if weight:
            self.log(dpo_acc=(margins > 0).float().mean(), dpo_margin=margins.mean())
        self.log(pairs=n * weight, t_loss_s=time.perf_counter() - t0)
        return {"loss": loss * weight}

    def evaluate(self) -> dict[str, float]:
        return self.pairs.evaluate(self.policy, self.reference, self.post.beta) if self.pairs else {}


METHODS = {"rft": RFT, "grpo": GRPO, "dpo": DPO}


def build(cfg, tokenizer, policy, initial: dict | None, device: torch.device, dtype: str):
    """(held-out prompts, method) of a run: its task's validation prompts when post.data holds
    checkable prompts (evaluations log their greedy pass@1), and the objective of `post.method`
    (None for pretraining and SFT, which train on tokens). initial: the weights the run started
    from (train.init_from's; None from scratch), which a method with a reference keeps frozen."""
    post, tok = cfg.post, ChatTokenizer(tokenizer)
    prompts = PromptSet(post, tok, cfg.model.block_size, cfg.data) if post.has_prompts else None
    cls = METHODS.get(post.method)
    if cls is None:
        return prompts, None
    reference = frozen_copy(cfg, initial, device) if post.needs_reference else None
    return prompts, cls(post, tok, cfg.model.block_size, prompts, policy, reference, dtype)


def frozen_copy(cfg, weights: dict | None, device: torch.device) -> GPT:
    """The run's initial weights, frozen: train.init_from's, or the seed's from scratch (the
    generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = GPT(cfg.model)
    if weights is not None:
        model.load_state_dict(weights)
    return model.to(device).requires_grad_(False).eval()
