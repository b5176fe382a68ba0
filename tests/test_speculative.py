"""Speculative decoding (model/inference/speculative.py): greedy output equals the target's own greedy output,
sampled output has the target's distribution (and a wrong acceptance rule is caught by the same
test), bad input is refused. CPU, fp32, tiny random models."""

import math

import pytest
import torch

import model.inference.speculative as speculative
from model import GPT, ModelConfig
from model.inference.generate import generate
from model.inference.sampling import probabilities
from model.inference.speculative import speculative_generate


def built(seed: int, **overrides) -> GPT:
    cfg = dict(vocab_size=50, block_size=64, n_layer=2, n_head=2, n_embd=32, init_std=0.1)
    torch.manual_seed(seed)
    return GPT(ModelConfig(**{**cfg, **overrides})).eval()


def prompt(T: int, vocab_size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (1, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- greedy
@pytest.mark.parametrize("arch", [
    {},
    dict(pos="rope", n_kv_head=1, norm="rmsnorm"),
    dict(pos="rope", window=6, global_every=2),  # ring-buffer caches on the window layers
    dict(pos="rope", norm="rmsnorm", linear_attention="gated_deltanet"),  # recurrent states, rolled back
])
@pytest.mark.parametrize("n_draft", [1, 3, 5])
def test_greedy_equals_target_greedy(arch, n_draft):
    target, draft = built(0, **arch), built(1, n_layer=1, n_embd=16, **arch)
    for seed, T in ((0, 1), (1, 7), (2, 20)):
        idx = prompt(T, 50, seed)
        want = generate(target, idx, 30, temperature=0)
        got, stats = speculative_generate(target, draft, idx, 30, n_draft=n_draft, temperature=0)
        assert torch.equal(got, want)
        assert stats.rounds == stats.target_forwards - (T > 1)
        assert stats.accepted + stats.rounds == 30  # each round adds its accepted tokens + 1


def test_greedy_with_itself_as_draft_accepts_everything():
    """The draft's proposals are then the target's own argmaxes: every round is full, bonus included,
    so both caches go through the 'draft is one token behind' path of every round."""
    target = built(0)
    idx = prompt(5, 50, 3)
    got, stats = speculative_generate(target, built(0), idx, 29, n_draft=4, temperature=0)
    assert torch.equal(got, generate(target, idx, 29, temperature=0))
    assert stats.acceptance_rate == 1.0
    assert stats.rounds == math.ceil(29 / 5)  # 5 tokens per round, the last round shorter


def test_the_stats_count_every_forward():
    """29 new tokens after a 5-token prompt, 4 guesses a round, all accepted (the target drafts for
    itself): rounds add 5, 5, 5, 5, 5 and 4 tokens, the last proposing 3 (23 in all). One prefill
    forward each, then one target forward per round and one draft forward per guess."""
    target = built(0)
    _, stats = speculative_generate(target, built(0), prompt(5, 50, 3), 29, n_draft=4, temperature=0)
    assert (stats.proposed, stats.accepted, stats.rounds) == (23, 23, 6)
    assert (stats.target_forwards, stats.draft_forwards) == (1 + 6, 1 + 23)


# ----------------------------------------------------------------------------- sampling
V = 4  # a vocabulary small enough to tabulate the exact distribution of two tokens


def exact_two_token_distribution(target, idx, temperature, top_p) -> torch.Tensor:
    """(V, V): P(first = a, second = b) of plain sampling from the target, from full forwards."""
    p1 = probabilities(target(idx)[0, -1], temperature, 0, top_p)
    follow = torch.cat([idx.repeat(V, 1), torch.arange(V).view(V, 1)], dim=1)  # (V, T + 1)
    p2 = probabilities(target(follow)[:, -1], temperature, 0, top_p)  # (V, V)
    return p1.view(V, 1) * p2


def empirical_two_token_distribution(target, draft, idx, n, temperature, top_p) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    counts = torch.zeros(V * V)
    T = idx.shape[1]
    for _ in range(n):  # 3 new tokens with n_draft=2: the first round proposes 2
        out, _ = speculative_generate(target, draft, idx, 3, n_draft=2, temperature=temperature,
                                      top_p=top_p, generator=gen)
        counts[out[0, T] * V + out[0, T + 1]] += 1
    return (counts / n).view(V, V)


def tv_bound(n: int) -> float:
    """A total-variation distance that N samples of a V*V-outcome distribution exceed with
    probability < 1e-4: E[TV] <= 0.5 * sqrt(outcomes / N) (Cauchy-Schwarz), and TV moves by at most
    1/N per sample, so McDiarmid gives P(TV > E[TV] + t) <= exp(-2 N t^2)."""
    return 0.5 * math.sqrt(V * V / n) + math.sqrt(math.log(1e4) / (2 * n))


@torch.no_grad()
def test_sampling_has_the_target_distribution_and_a_wrong_rule_is_caught(monkeypatch):
    temperature, top_p = 0.9, 0.95  # the filters shape p and q alike; top_p zeroes some tokens
    target = built(0, vocab_size=V, n_layer=1, n_embd=16, init_std=0.5)
    draft = built(5, vocab_size=V, n_layer=1, n_embd=16, init_std=0.5)
    idx = prompt(4, V, 5)
    exact = exact_two_token_distribution(target, idx, temperature, top_p)
    draft_exact = exact_two_token_distribution(draft, idx, temperature, top_p)
    n = 600
    bound = tv_bound(n)
    assert 0.5 * (draft_exact - exact).abs().sum() > 2.5 * bound  # the draft alone is far off

    got = empirical_two_token_distribution(target, draft, idx, n, temperature, top_p)
    assert 0.5 * (got - exact).abs().sum() < bound

    def accept_all(p, q, proposed, generator=None):  # the wrong rule: trust every proposal
        return proposed.shape[0], torch.multinomial(p[-1], 1, generator=generator)

    monkeypatch.setattr(speculative, "verify", accept_all)
    wrong = empirical_two_token_distribution(target, draft, idx, n, temperature, top_p)
    assert 0.5 * (wrong - exact).abs().sum() > bound


def test_verify_rule_on_fixed_distributions():
    """The rule alone, with many draws: the first token follows p whatever q is (exact formula:
    P(token = x) = min(p, q)(x) + (1 - sum min(p, q)) * norm(max(0, p - q))(x) = p(x))."""
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]])
    q = torch.tensor([[0.1, 0.1, 0.4, 0.4]])
    gen = torch.Generator().manual_seed(0)
    n = 5000
    counts = torch.zeros(4)
    for _ in range(n):
        proposal = torch.multinomial(q[0], 1, generator=gen)
        accepted, nxt = speculative.verify(p, q, proposal, gen)
        counts[proposal if accepted else nxt] += 1
    assert (counts / n - p[0]).abs().max() < 0.03  # 4 sigma of a 5000-draw frequency is < 0.03
    assert counts[3] == 0  # a token the target gives probability 0 is never output


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_one_line_errors():
    target, draft = built(0), built(1, n_layer=1)
    idx = prompt(4, 50, 0)
    cases = [
        (dict(draft=built(1, vocab_size=60)), "vocab_size"),
        (dict(n_draft=0), "n_draft"),
        (dict(n_draft=True), "n_draft"),
        (dict(idx=idx.repeat(2, 1)), "one prompt"),
        (dict(max_new_tokens=61), "block_size"),
        (dict(draft=built(1, block_size=16), max_new_tokens=20), "draft's model.block_size"),
        (dict(top_p=0.0), "top_p"),
    ]
    for change, match in cases:
        kwargs = {**dict(target=target, draft=draft, idx=idx, max_new_tokens=8), **change}
        with pytest.raises(ValueError, match=match) as err:
            speculative_generate(**kwargs)
        assert "\n" not in str(err.value)


def test_generate_method_dispatches_to_speculative_decoding():
    """`GPT.generate(..., draft=, n_draft=)` is the speculative path: greedy equals the target's own
    greedy output; settings it cannot serve are refused in one line."""
    target, draft = built(0), built(1, n_layer=1, n_embd=16)
    idx = prompt(6, 50, 4)
    want = target.generate(idx, 20, temperature=0)
    assert torch.equal(target.generate(idx, 20, temperature=0, draft=draft, n_draft=3), want)
    for bad in (dict(kv_dtype="int8"), dict(use_cache=False)):
        with pytest.raises(ValueError, match="speculative decoding"):
            target.generate(idx, 4, temperature=0, draft=draft, **bad)


def test_a_rolled_back_recurrent_state_is_the_state_of_the_kept_prefix():
    """A Gated DeltaNet cache that may roll back by R keeps the states of its last forward's last
    R + 1 positions: rolled back to n, it holds what a cache that only ever saw n tokens holds, and
    decodes on from there the same way."""
    model = built(0, pos="rope", norm="rmsnorm", linear_attention="gated_deltanet")
    seq = prompt(12, 50, 5)
    with torch.no_grad():
        for keep in (8, 9, 11):  # back into the last forward of 4 tokens, to its start, and by one
            cache = model.new_cache(1, 20, rollback=4)
            model(seq[:, :8], cache=cache)
            model(seq[:, 8:], cache=cache)
            cache.rollback(keep)
            fresh = model.new_cache(1, 20)
            for t in range(keep):  # one token at a time: the recurrence itself
                model(seq[:, t:t + 1], cache=fresh)
            for layer, want in zip(cache.layers, fresh.layers):
                if hasattr(want, "state"):
                    torch.testing.assert_close(layer.state, want.state, atol=1e-5, rtol=1e-5)
                    torch.testing.assert_close(layer.conv, want.conv, atol=1e-6, rtol=1e-5)
            nxt = seq[:, keep:keep + 1]
            torch.testing.assert_close(model(nxt, cache=cache), model(nxt, cache=fresh), atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="cannot roll the cache back by 5"):
            cache.rollback(cache.length - 5)


def test_a_recurrent_state_rolls_back_across_one_token_forwards():
    """A draft feeds its guesses one token at a time; rolled back over several of them, its Gated
    DeltaNet state is that of the kept prefix, as a fresh cache's."""
    model = built(0, pos="rope", norm="rmsnorm", linear_attention="gated_deltanet")
    seq = prompt(12, 50, 6)
    with torch.no_grad():
        cache = model.new_cache(1, 20, rollback=4)
        model(seq[:, :8], cache=cache)
        for t in range(8, 12):
            model(seq[:, t:t + 1], cache=cache)
        cache.rollback(9)
        fresh = model.new_cache(1, 20)
        model(seq[:, :8], cache=fresh)
        model(seq[:, 8:9], cache=fresh)
        nxt = seq[:, 9:10]
        torch.testing.assert_close(model(nxt, cache=cache), model(nxt, cache=fresh), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- the rule, exactly
def verify_law(p: torch.Tensor, q: torch.Tensor) -> dict:
    """Closed form of one round with k = 2 and fixed p, q: proposal i is kept with probability
    min(p_i, q_i)(d), a rejection draws from max(0, p_i - q_i) (its mass is the rejection's
    probability, so no renormalising is needed), and two kept proposals are followed by p_2."""
    keep0, keep1 = torch.minimum(p[0], q[0]), torch.minimum(p[1], q[1])
    law = {}
    for x in range(p.shape[1]):
        law[(x,)] = float((p[0] - q[0]).clamp_min(0)[x])
        for a in range(p.shape[1]):
            law[(a, x)] = float(keep0[a] * (p[1] - q[1]).clamp_min(0)[x])
            for b in range(p.shape[1]):
                law[(a, b, x)] = float(keep0[a] * keep1[b] * p[2][x])
    return law


def test_verify_has_the_closed_form_law_of_a_two_proposal_round():
    """8000 rounds of verify on fixed 3-token distributions: the frequencies of (kept proposals,
    next token) are within a 1e-4-probability total-variation bound of the closed form, which
    itself sums to 1 and gives the first output token the target's p_0."""
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.05, 0.15, 0.8]])
    q = torch.tensor([[0.3, 0.3, 0.4], [0.4, 0.4, 0.2]])
    law = verify_law(p, q)
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-6)
    first = torch.zeros(3)
    for out, prob in law.items():
        first[out[0]] += prob
    torch.testing.assert_close(first, p[0])
    gen, n = torch.Generator().manual_seed(0), 8000
    counts = dict.fromkeys(law, 0)
    for _ in range(n):
        proposed = torch.cat([torch.multinomial(q[i], 1, generator=gen) for i in range(2)])
        kept, nxt = speculative.verify(p, q, proposed, gen)
        counts[(*proposed[:kept].tolist(), int(nxt))] += 1
    tv = 0.5 * sum(abs(counts[o] / n - law[o]) for o in law)
    assert tv < 0.5 * math.sqrt(len(law) / n) + math.sqrt(math.log(1e4) / (2 * n))


def test_a_rejection_ends_the_round_even_when_a_later_proposal_would_pass():
    """The first proposal has target probability 0 (always rejected), the second p >= q (always
    acceptable): nothing is kept, and the next token comes from max(0, p_0 - q_0) = token 1."""
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    for seed in range(20):
        kept, nxt = speculative.verify(p, q, torch.tensor([0, 0]), torch.Generator().manual_seed(seed))
        assert (kept, int(nxt)) == (0, 1)


@torch.no_grad()
def test_the_rule_compares_the_filtered_target_and_draft_distributions_at_the_proposals(monkeypatch):
    """Each round hands verify the target's and the draft's distributions (temperature, top_k and
    top_p applied to both) at the positions of the proposals, as full uncached forwards give them."""
    target, draft = built(0), built(1, n_layer=1, n_embd=16)
    settings = dict(temperature=0.7, top_k=8, top_p=0.9)
    rounds, real = [], speculative.verify

    def spy(p, q, proposed, generator=None):
        kept, nxt = real(p, q, proposed, generator)
        rounds.append((p, q, proposed, kept))
        return kept, nxt

    monkeypatch.setattr(speculative, "verify", spy)
    idx = prompt(6, 50, 7)
    out, _ = speculative_generate(target, draft, idx, 14, n_draft=3, generator=torch.Generator().manual_seed(5),
                                  **settings)
    T = idx.shape[1]
    for p, q, proposed, kept in rounds:
        k = proposed.shape[0]
        seq = torch.cat([out[:, :T], proposed.view(1, k)], dim=1)
        want_p = probabilities(target(seq)[0, T - 1:], **settings)
        want_q = [probabilities(draft(seq[:, :T + i])[0, -1], **settings) for i in range(k)]
        torch.testing.assert_close(p, want_p, atol=1e-5, rtol=0)
        torch.testing.assert_close(q, torch.stack(want_q) if k else want_p[:0], atol=1e-5, rtol=0)
        T += kept + 1
    assert T == out.shape[1] and len(rounds) > 3


def test_a_seeded_generator_alone_decides_the_sampled_tokens():
    """Sampling with a seeded generator repeats itself whatever the global RNG's state."""
    target, draft = built(0), built(1, n_layer=1, n_embd=16)
    idx = prompt(4, 50, 8)
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        outs.append(speculative_generate(target, draft, idx, 24, n_draft=3, temperature=1.0,
                                         generator=torch.Generator().manual_seed(11))[0])
    assert torch.equal(*outs)
