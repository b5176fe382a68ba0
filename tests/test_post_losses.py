"""The post-training losses against their formulas written out by hand, and the direction of one
gradient step: each method makes the rewarded (or chosen) answer more likely."""

import math

import pytest
import torch

from model import GPT
from tiny_run import tiny
from train.post.losses import (dpo_loss, group_advantages, grpo_loss, kl_k3, masked_mean, rft_loss,
                               token_logprobs)


def test_token_logprobs_read_each_next_token():
    logits = torch.randn(2, 4, 7)
    ids = torch.randint(0, 7, (2, 4))
    got = token_logprobs(logits, ids)
    for b in range(2):
        for t in range(3):
            assert got[b, t] == pytest.approx(float(torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]]), abs=1e-6)


def test_token_level_mean_weighs_every_answer_token_the_same():
    x = torch.tensor([[1.0, 9.0, 9.0, 9.0], [2.0, 3.0, 4.0, 9.0]])
    mask = torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 1.0, 0]])
    assert float(masked_mean(x, mask)) == pytest.approx((1 + 2 + 3 + 4) / 4)  # not (1 + 3) / 2
    assert float(rft_loss(x, mask)) == pytest.approx(-2.5)
    assert float(masked_mean(x, torch.zeros_like(mask))) == 0.0  # nothing accepted: no loss


def test_dpo_loss_is_the_papers_equation_7():
    chosen, rejected = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
    ref_c, ref_r = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])
    loss, margins = dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.1)
    # pair 1: 0.1 * ((-1 + 2) - (-3 + 2)) = 0.2; pair 2: 0.1 * ((-4 + 2) - (-2 + 2)) = -0.2
    assert margins.tolist() == pytest.approx([0.2, -0.2])
    want = (math.log1p(math.exp(-0.2)) + math.log1p(math.exp(0.2))) / 2  # -log sigmoid(m)
    assert float(loss) == pytest.approx(want)


def test_dpo_loss_subtracts_each_responses_own_reference_logp():
    """With references that differ between chosen and rejected, the margin is
    beta * ((chosen - ref_chosen) - (rejected - ref_rejected)): here 0.5 * ((-1 + 3) - (-2 + 1)) = 1.5,
    and the loss -log sigmoid(1.5) = log(1 + e^-1.5)."""
    loss, margins = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-3.0]),
                             torch.tensor([-1.0]), beta=0.5)
    assert margins.tolist() == pytest.approx([1.5])
    assert float(loss) == pytest.approx(math.log1p(math.exp(-1.5)))


def test_group_advantages_with_and_without_the_std():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    plain = group_advantages(rewards, scale_by_std=False)
    assert plain.tolist() == [[0.5, -0.5, -0.5, 0.5], [0.0] * 4]
    scaled = group_advantages(rewards, scale_by_std=True)
    std = math.sqrt(4 * 0.25 / 3)  # the sample std of (1, 0, 0, 1)
    assert scaled[0].tolist() == pytest.approx([0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std], rel=1e-3)
    assert scaled[1].tolist() == [0.0] * 4  # all the same: nothing to learn, no division by 0
    noisy = group_advantages(torch.rand(5, 8), scale_by_std=True)
    assert noisy.sum(dim=1).abs().max() < 1e-5  # each group's advantages sum to zero


def test_k3_is_unbiased_for_the_kl_under_the_policy():
    p = torch.softmax(torch.randn(11, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(11, dtype=torch.float64), 0)
    exact = float((p * (p.log() - q.log())).sum())
    expectation = float((p * kl_k3(p.log(), q.log())).sum())  # E_{x ~ p}[k3(x)]
    assert expectation == pytest.approx(exact, rel=1e-9)
    assert bool((kl_k3(p.log(), q.log()) >= 0).all()) and float(kl_k3(p.log(), p.log()).abs().max()) == 0.0


def test_grpo_loss_clips_the_ratio_pessimistically():
    mask = torch.ones(2, 1)
    old = torch.zeros(2, 1)
    up = torch.full((2, 1), math.log(1.5))  # ratio 1.5, beyond 1 + 0.2
    loss, clipped = grpo_loss(up, old, torch.tensor([1.0, -1.0]), mask, clip_eps=0.2)
    # advantage +1: min(1.5, 1.2) = 1.2; advantage -1: min(-1.5, -1.2) = -1.5
    assert float(loss) == pytest.approx(-(1.2 - 1.5) / 2)
    assert float(clipped) == 1.0
    same, none_clipped = grpo_loss(old, old, torch.tensor([2.0, 1.0]), mask, clip_eps=0.2)
    assert float(same) == pytest.approx(-1.5) and float(none_clipped) == 0.0


def test_grpo_loss_averages_over_tokens_not_responses():
    """At ratio 1 each token contributes its response's advantage: a 1-token answer with advantage
    +1 and a 3-token answer with -1 give -(1 - 3) / 4 = 0.5 (the token-level mean), not the 0 of a
    mean over responses; with tokens=8 given, -(1 - 3) / 8 = 0.25."""
    logps = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -1.0])
    assert float(grpo_loss(logps, logps, adv, mask, clip_eps=0.2)[0]) == pytest.approx(0.5)
    assert float(grpo_loss(logps, logps, adv, mask, clip_eps=0.2, tokens=torch.tensor(8.0))[0]) == pytest.approx(0.25)


def one_step(loss_of, model, ids, lr=0.05):
    """Log-probabilities of each row's last token before and after one SGD step on loss_of(logps)."""
    def last():
        return token_logprobs(model(ids), ids)[:, -1]
    before = last().detach()
    loss_of(token_logprobs(model(ids), ids)).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return before, last().detach()


def test_a_grpo_step_makes_the_rewarded_answer_more_likely():
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=16, block_size=8))
    ids = torch.tensor([[3, 4, 5], [3, 4, 9]])  # one prompt, two answers; the first is right
    mask = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    adv = group_advantages(torch.tensor([[1.0, 0.0]]), scale_by_std=True).flatten()
    before, after = one_step(lambda lp: grpo_loss(lp, lp.detach(), adv, mask, 0.2)[0], model, ids)
    assert after[0] > before[0] and after[1] < before[1]


def test_a_dpo_step_widens_the_margin_and_rft_raises_the_accepted():
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=16, block_size=8))
    ids = torch.tensor([[3, 4, 5], [3, 4, 9]])  # chosen, rejected
    ref = token_logprobs(model(ids), ids)[:, -1].detach()
    before, after = one_step(lambda lp: dpo_loss(lp[0:1, -1], lp[1:2, -1], ref[0:1], ref[1:2], 0.1)[0], model, ids)
    assert after[0] - after[1] > before[0] - before[1]
    mask = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # only the first row was accepted
    before, after = one_step(lambda lp: rft_loss(lp, mask), model, ids)
    assert after[0] > before[0]
