"""Multi-token prediction (model/mtp.py, model/inference/mtp_draft.py): the loss against the paper's equations
written out by hand, gradients, the objective term in the trainer's log, inference untouched, and
self-speculative decoding (greedy equals plain greedy; the draft's incremental guesses equal the
modules' parallel form; a trained MTP head gets its guesses accepted)."""

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from model import GPT
from model.accounting import flops_per_token, param_count
from model.config import DeltaNetConfig, MoEConfig
from model.inference.speculative import speculative_generate

from tiny_run import fit, jittered, make, tiny

BASE = dict(vocab_size=64, block_size=48, n_layer=2, n_head=2, n_embd=32, pos="rope", norm="rmsnorm",
            mlp="swiglu", bias=False, tie_embeddings=False)
# every parameter moved off its init, norm scales included (a norm left at ones could hide a missing one)
JITTER = dict(matrix_std=0.02, vector_std=0.3)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def reference_mtp_loss(model: GPT, idx, targets) -> torch.Tensor:
    """DeepSeek-V3 eqs. (21)-(25), by hand: h'_i = M_k [RMSNorm(h^{k-1}_i); RMSNorm(Emb(t_{i+k}))],
    h^k = TRM_k(h'), P = OutHead(h^k), L_k = CE(P, t_{i+k+1}); lambda / D * sum_k L_k. M_k is read
    from eh_proj, whose columns hold the embedding half first (the released weights' order)."""
    cfg, T, eps = model.config, idx.shape[1], model.config.norm_eps
    seq = torch.cat([idx, targets[:, -1:]], dim=1)  # t_0 .. t_T
    h = model.transformer.wte(idx)
    for block in model.transformer.h:
        h = block(h, torch.arange(T))
    emb_w, head_w, losses = model.transformer.wte.weight, model.lm_head.weight[: cfg.vocab_size], []
    for k, m in enumerate(model.mtp.layers, start=1):
        n = T - k
        W = m.eh_proj.weight  # (d, 2d): [embedding columns | hidden columns]
        M = torch.cat([W[:, cfg.n_embd:], W[:, : cfg.n_embd]], dim=1)  # the paper's [h; Emb] order
        hk = torch.cat([rms(h[:, :n], m.hnorm.weight, eps), rms(emb_w[seq[:, k:k + n]], m.enorm.weight, eps)], -1)
        h = m.block(hk @ M.T, torch.arange(n))  # TRM_k
        logits = rms(h, m.norm.weight, eps) @ head_w.T
        if cfg.final_softcap:  # as the main head: cap * tanh(z / cap)
            logits = cfg.final_softcap * torch.tanh(logits / cfg.final_softcap)
        losses.append(F.cross_entropy(logits.flatten(0, 1), seq[:, k + 1:k + 1 + n].flatten()))
    return cfg.mtp_loss_weight * sum(losses) / len(losses)


@pytest.mark.parametrize("depth", [1, 2])
def test_mtp_loss_matches_the_papers_equations(depth):
    model = jittered(tiny(BASE, mtp_depth=depth, mtp_loss_weight=0.3), **JITTER).train()
    seq = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(1))
    x, y = seq[:, :-1], seq[:, 1:]
    _, terms = model(x, y)
    assert set(terms) == {"loss", "mtp_loss"}
    torch.testing.assert_close(terms["mtp_loss"], reference_mtp_loss(model, x, y), atol=1e-5, rtol=1e-5)
    no_mtp = GPT(tiny(BASE))
    no_mtp.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("mtp.")})
    plain = no_mtp.train()(x, y)[1]
    assert set(plain) == {"loss"} and torch.equal(plain["loss"], terms["loss"])  # the main head's alone
    assert set(model.eval()(x, y)[1]) == {"loss"}  # evaluation: no MTP term


def test_mtp_loss_softcaps_its_logits_as_the_main_head_does():
    """With model.final_softcap, every depth's logits are capped, cap * tanh(z / cap), before the CE."""
    model = jittered(tiny(BASE, mtp_depth=2, final_softcap=2.0), **JITTER).train()
    seq = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(3))
    x, y = seq[:, :-1], seq[:, 1:]
    torch.testing.assert_close(model(x, y)[1]["mtp_loss"], reference_mtp_loss(model, x, y), atol=1e-5, rtol=1e-5)


def test_mtp_gradients_reach_trunk_embedding_and_head():
    model = jittered(tiny(BASE, mtp_depth=2), **JITTER).train()
    seq = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(2))
    model(seq[:, :-1], seq[:, 1:])[1]["mtp_loss"].backward()  # the MTP term alone
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in ("transformer.wte.weight", "lm_head.weight", "transformer.h.0.attn.c_attn.weight",
                 "mtp.layers.0.eh_proj.weight", "mtp.layers.1.block.mlp.c_fc.weight", "mtp.layers.1.norm.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert grads["transformer.ln_f.weight"] is None  # MTP starts before the final norm
    model.zero_grad()
    model(seq[:, :-1], seq[:, 1:])[1]["loss"].backward()  # the LM loss alone leaves the MTP modules alone
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("mtp."))


@pytest.mark.parametrize("extra", [{}, {"attention": "mla"}, {"window": 8, "global_every": 2},
                                   {"moe": {"n_expert": 4, "top_k": 2, "expert_hidden": 16}}])
def test_param_count_and_flops_include_mtp(extra):
    extra = {k: MoEConfig(**v) if k == "moe" else v for k, v in extra.items()}
    cfg = tiny(BASE, mtp_depth=2, **extra)
    model = GPT(cfg)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    base = dataclasses.replace(cfg, mtp_depth=0)
    assert flops_per_token(cfg, 32) > flops_per_token(base, 32) > 0


@pytest.mark.parametrize("extra", [{}, {"window": 8, "global_every": 2}, {"attention": "mla"},
                                   {"linear_attention": "gated_deltanet",
                                    "deltanet": DeltaNetConfig(full_every=3)},
                                   {"moe": MoEConfig(n_expert=4, top_k=2, expert_hidden=16, first_dense=1)}])
def test_each_mtp_module_costs_one_more_block_plus_its_projection_and_head(extra):
    """An MTP module's block attends in training like a stack block (a linear one, layer 3 of
    full_every = 3, runs its delta rule; past first_dense, it routes): its FLOPs are those of one
    more layer, plus the (2d -> d) projection and the LM head."""
    cfg = tiny(BASE, n_layer=3, mtp_depth=1, **extra)
    assert cfg.is_linear(3) == ("deltanet" in extra)
    plain = dataclasses.replace(cfg, mtp_depth=0)
    deeper = dataclasses.replace(cfg, n_layer=4, mtp_depth=0)  # layer 3: the pattern continued
    extra_matmuls = 2 * cfg.n_embd * cfg.n_embd + cfg.n_embd * cfg.padded_vocab_size
    for T in (16, 32):
        block = flops_per_token(deeper, T) - flops_per_token(plain, T)
        assert flops_per_token(cfg, T) == flops_per_token(plain, T) + block + 6 * extra_matmuls


def test_inference_ignores_mtp_modules():
    model = jittered(tiny(BASE, mtp_depth=1), **JITTER).eval()
    idx = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(3))
    before, out = model(idx), model.generate(idx, 8, temperature=0)
    with torch.no_grad():
        for p in model.mtp.parameters():
            p.mul_(-3.0)
    assert torch.equal(model(idx), before) and torch.equal(model.generate(idx, 8, temperature=0), out)


@pytest.mark.parametrize("depth, extra", [(1, {}), (2, {}), (2, {"attention": "mla"}),
                                          (3, {"window": 8, "global_every": 2})])
@pytest.mark.parametrize("prompt", [1, 6])
def test_self_speculative_greedy_equals_plain_greedy(depth, extra, prompt):
    model = jittered(tiny(BASE, mtp_depth=depth, **extra), **JITTER).eval()
    idx = torch.randint(0, 64, (1, prompt), generator=torch.Generator().manual_seed(prompt))
    plain = model.generate(idx, 30, temperature=0)
    assert torch.equal(model.generate(idx, 30, temperature=0, draft="mtp"), plain)


@pytest.mark.parametrize("n_draft, per_round", [(5, 2), (1, 1)])
def test_generate_with_the_mtp_draft_guesses_at_most_once_per_module(monkeypatch, n_draft, per_round):
    """draft="mtp" proposes min(n_draft, mtp_depth) tokens a round: the same rounds as calling
    speculative_generate with that many."""
    import model.inference.generate as generate_module

    model = jittered(tiny(BASE, mtp_depth=2), **JITTER).eval()
    idx = torch.randint(0, 64, (1, 4), generator=torch.Generator().manual_seed(2))
    runs = []
    real = generate_module.speculative_generate
    monkeypatch.setattr(generate_module, "speculative_generate",
                        lambda *args, **kwargs: runs.append(real(*args, **kwargs)) or runs[-1])
    out = model.generate(idx, 20, temperature=0, draft="mtp", n_draft=n_draft)
    expected, stats = real(model, model.mtp_draft(), idx, 20, per_round, temperature=0)
    assert torch.equal(out, expected)
    assert (runs[0][1].proposed, runs[0][1].rounds) == (stats.proposed, stats.rounds)


def parallel_form(model: GPT, seq: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The trunk's last hidden states over `seq` at once, and MTP.hidden_states's per depth."""
    h = model.transformer.wte(seq)
    for block in model.transformer.h:
        h = block(h, torch.arange(seq.shape[1]))
    return h, model.mtp.hidden_states(h, seq, model.transformer.wte)


def test_draft_guesses_equal_the_parallel_form():
    """Through caches and the target's observed states, depth k's guess after a prefix equals what
    MTP.hidden_states computes over the whole sequence at once."""
    model = jittered(tiny(BASE, mtp_depth=2), **JITTER).eval()
    seq = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(4))
    draft = model.mtp_draft()
    with torch.no_grad():
        t_cache, d_cache = model.new_cache(1, 20), draft.new_cache(1, 20)
        logits, hidden = model(seq[:, :-1], cache=t_cache, return_hidden=True)
        draft.observe(hidden, t_cache)
        main = draft(seq[:, :-1], cache=d_cache)[0, -1]  # depth 0: the main head's next token
        one = draft(seq[:, -1:], cache=d_cache)[0, -1]  # depth 1: guesses t_10
        guess = one.argmax().view(1, 1)
        two = draft(guess, cache=d_cache)[0, -1]  # depth 2: guesses t_11 from t_10 = guess
    full = torch.cat([seq, guess], dim=1)
    with torch.no_grad():
        h, states = parallel_form(model, full)
        head = lambda m, s: model.lm_head(m(s))[0, -1, :64]  # noqa: E731
        torch.testing.assert_close(main, head(model.transformer.ln_f, h[:, 8:9]), atol=1e-5, rtol=0)
        torch.testing.assert_close(one, head(model.mtp.layers[0].norm, states[0][:, 8:9]), atol=1e-5, rtol=0)
        torch.testing.assert_close(two, head(model.mtp.layers[1].norm, states[1][:, 8:9]), atol=1e-5, rtol=0)


def test_draft_guesses_after_a_rejection_equal_the_parallel_form():
    """A round as speculative decoding runs it: the draft guesses two tokens (the second from a wrong
    first guess), the target rejects the first and both caches roll back. The next round's guesses
    equal MTP.hidden_states over the kept sequence: no state computed from the rejected token is reused."""
    model = jittered(tiny(BASE, mtp_depth=2), **JITTER).eval()
    seq = torch.randint(0, 64, (1, 11), generator=torch.Generator().manual_seed(5))
    wrong = (seq[:, 9:10] + 1) % 64
    draft = model.mtp_draft()
    with torch.no_grad():
        t_cache, d_cache = model.new_cache(1, 20, rollback=2), draft.new_cache(1, 20, rollback=2)
        _, hidden = model(seq[:, :8], cache=t_cache, return_hidden=True)
        draft.observe(hidden, t_cache)
        draft(seq[:, :8], cache=d_cache)
        draft(seq[:, 8:9], cache=d_cache)  # depth 1: guesses t_9
        draft(wrong, cache=d_cache)  # depth 2: t_10 from the wrong t_9
        _, hidden = model(torch.cat([seq[:, 8:9], wrong, seq[:, :1]], dim=1), cache=t_cache, return_hidden=True)
        draft.observe(hidden, t_cache)  # the target checks [t_8, wrong, a second guess]
        t_cache.rollback(9)  # the wrong t_9 rejected: the target's own t_9 follows t_8
        d_cache.rollback(9)
        one = draft(seq[:, 9:10], cache=d_cache)[0, -1]  # depth 1: guesses t_10
        two = draft(seq[:, 10:11], cache=d_cache)[0, -1]  # depth 2: guesses t_11 from t_10
        h, states = parallel_form(model, seq)
        head = lambda m, s: model.lm_head(m(s))[0, -1, :64]  # noqa: E731
        torch.testing.assert_close(one, head(model.mtp.layers[0].norm, states[0][:, 8:9]), atol=1e-5, rtol=0)
        torch.testing.assert_close(two, head(model.mtp.layers[1].norm, states[1][:, 8:9]), atol=1e-5, rtol=0)


def test_draft_guesses_in_the_rounds_after_a_rejection_equal_the_parallel_form():
    """Three rounds as speculative decoding runs them, with three modules: the first round's guess of t_9
    is rejected and both caches roll back to 9 tokens; the second round's three guesses are accepted,
    with t_13 the bonus. The guesses of the second and third rounds equal MTP.hidden_states over the
    sequence: nothing the target observed past the rejection, nor any depth's state computed from the
    rejected token, is used."""
    model = jittered(tiny(BASE, mtp_depth=3), **JITTER).eval()
    seq = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(6))
    wrong = (seq[:, 9:10] + 1) % 64
    draft = model.mtp_draft()
    with torch.no_grad():
        h, states = parallel_form(model, seq)
        t_cache, d_cache = model.new_cache(1, 20, rollback=3), draft.new_cache(1, 20, rollback=3)

        def verify(tokens):
            _, hidden = model(tokens, cache=t_cache, return_hidden=True)
            draft.observe(hidden, t_cache)

        def assert_guess(tokens, k, i):
            """Given tokens, depth k guesses t_{i+k+1} from position i."""
            want = model.lm_head(model.mtp.layers[k - 1].norm(states[k - 1][:, i:i + 1]))[0, -1, :64]
            torch.testing.assert_close(draft(tokens, cache=d_cache)[0, -1], want, atol=1e-5, rtol=0)

        verify(seq[:, :8])
        draft(seq[:, :8], cache=d_cache)
        for guess in (seq[:, 8:9], wrong, seq[:, :1]):  # depth 1 .. 3: guesses after t_8, the wrong t_9, ...
            draft(guess, cache=d_cache)
        verify(torch.cat([seq[:, 8:9], wrong, seq[:, :1], seq[:, :1]], dim=1))  # t_8 and the three guesses
        t_cache.rollback(9)  # the wrong t_9 rejected: the target's own t_9 follows t_8
        d_cache.rollback(9)
        for k in (1, 2, 3):  # the second round: t_9, then its guesses of t_10, t_11; depth k guesses t_{9+k}
            assert_guess(seq[:, 8 + k:9 + k], k, 8)
        verify(seq[:, 9:13])  # all three accepted, t_13 the bonus
        assert_guess(seq[:, 12:14], 1, 12)  # the third round: t_12 and t_13 given; guesses t_14 .. t_16
        assert_guess(seq[:, 14:15], 2, 12)
        assert_guess(seq[:, 15:16], 3, 12)


def test_draft_guesses_after_a_two_token_prompt_are_the_capped_heads_over_the_vocabulary():
    """A two-token prompt leaves the target one position to draft from. Each guess is the head's logits over
    the vocabulary (97 of the 128 padded rows) soft-capped as the model's own: 3 tanh(logits / 3)."""
    model = jittered(tiny(BASE, vocab_size=97, final_softcap=3.0, mtp_depth=2), **JITTER).eval()
    assert model.config.padded_vocab_size == 128
    seq = torch.randint(0, 97, (1, 3), generator=torch.Generator().manual_seed(7))
    draft = model.mtp_draft()
    with torch.no_grad():
        t_cache, d_cache = model.new_cache(1, 8), draft.new_cache(1, 8)
        _, hidden = model(seq[:, :1], cache=t_cache, return_hidden=True)
        draft.observe(hidden, t_cache)
        main = draft(seq[:, :1], cache=d_cache)[0, -1]  # depth 0: the main head's next token
        one = draft(seq[:, 1:2], cache=d_cache)[0, -1]  # depth 1: guesses t_2
        two = draft(seq[:, 2:3], cache=d_cache)[0, -1]  # depth 2: guesses t_3 from t_2
        h, states = parallel_form(model, seq)
        head = lambda m, s: 3.0 * torch.tanh(model.lm_head(m(s))[0, -1, :97] / 3.0)  # noqa: E731
        torch.testing.assert_close(main, head(model.transformer.ln_f, h[:, :1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(one, head(model.mtp.layers[0].norm, states[0][:, :1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(two, head(model.mtp.layers[1].norm, states[1][:, :1]), atol=1e-5, rtol=0)


def test_trained_mtp_head_is_a_good_draft(one_thread):
    """Trained on a repeating pattern, the MTP module predicts two ahead; its guesses get accepted."""
    torch.manual_seed(0)
    model = GPT(tiny(BASE, mtp_depth=1, mtp_loss_weight=1.0)).train()
    pattern = torch.tensor([3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 93 % 64, 23])
    seq = pattern.repeat(4)[None, :41]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        total = sum(model(seq[:, :-1], seq[:, 1:])[1].values())  # the LM and MTP terms
        opt.zero_grad()
        total.backward()
        opt.step()
    model.eval()
    prompt = seq[:, :5]
    out, stats = speculative_generate(model, model.mtp_draft(), prompt, 24, n_draft=1, temperature=0)
    assert torch.equal(out, model.generate(prompt, 24, temperature=0))
    assert stats.acceptance_rate > 0.8, stats
    assert stats.target_forwards < 20  # plain greedy needs 24


def test_mtp_needs_modules_and_a_known_draft():
    model = GPT(tiny(BASE))
    idx = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="mtp_depth is 0"):
        model.generate(idx, 2, draft="mtp")
    with pytest.raises(ValueError, match="draft must be"):
        model.generate(idx, 2, draft="eagle")
    with pytest.raises(ValueError, match="model.mtp_depth"):
        tiny(BASE, mtp_depth=-1)
    with pytest.raises(ValueError, match="model.mtp_loss_weight"):
        tiny(BASE, mtp_depth=1, mtp_loss_weight=-0.1)


def test_to_hf_refuses_mtp_modules():
    from model.hf import to_hf

    with pytest.raises(ValueError, match="model.mtp_depth"):
        to_hf(GPT(tiny(BASE, mtp_depth=1)), "llama")


def test_trainer_logs_mtp_loss_apart(tmp_path, corpus):
    from train.trainer import Trainer

    records = fit(Trainer(make(tmp_path, corpus, "m", "--train.max_steps=2", "--train.eval_interval=2",
                               "--model.mtp_depth=1")))
    first, last = records[0], records[-1]
    assert first["mtp_loss"] > 0 and first["loss"] > 0
    assert first["mtp_loss"] < first["loss"]  # 0.3 x a cross-entropy of the same size
    assert "val_loss" in last  # the main head's, computed without the modules
