"""DeepSeek Sparse Attention's indexer loss (model/mixer/dsa.py): the KL term itself, that it trains
the indexer and only the indexer, that it leaves outputs and evaluation alone, and that a few steps
lower it. CPU, fp32, tiny models."""

import copy
import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

from model import GPT, ModelConfig
from model.config import MLAConfig
from model.hf import config_to_hf
from model.mixer.dsa import LightningIndexer, index_kl
from tiny_run import TINY, error_line, load_script, tokens
from train.cli import run_cli
from train.config import load_config
from train.parallel import checkpoint_blocks
from train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
MLA = MLAConfig(q_lora_rank=20, kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10,
                index_topk=8, index_n_head=3, index_head_dim=12)
CFG = ModelConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=48, pos="rope", norm="rmsnorm",
                  mlp="swiglu", bias=False, attention="mla", mla=MLA, init_std=0.1)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def with_coef(cfg: ModelConfig, coef: float) -> ModelConfig:
    return dataclasses.replace(cfg, mla=dataclasses.replace(cfg.mla, index_loss_coef=coef))


def is_indexer(name: str) -> bool:
    return ".indexer." in name


def backward(model: GPT, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """One training forward + backward of the objective the trainer builds: the LM loss plus every
    aux term. Returns the aux terms."""
    model.train().zero_grad(set_to_none=True)
    _, terms = model(idx[:, :-1], idx[:, 1:])
    sum(terms.values()).backward()
    return {name: term for name, term in terms.items() if name != "loss"}


# ----------------------------------------------------------------------------- the KL term
def test_kl_is_zero_for_the_target_itself_and_positive_otherwise():
    torch.manual_seed(0)
    T = 12
    mask = torch.ones(T, T, dtype=torch.bool).tril().expand(2, 1, T, T)
    logits = torch.randn(2, 1, T, T)
    target = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    # scores equal to the target's logits up to a per-query shift: the same distribution
    same = logits + torch.randn(2, 1, T, 1)
    assert index_kl(same, target, mask).abs() < 1e-6
    other = index_kl(torch.randn(2, 1, T, T), target, mask)
    assert other > 1e-2
    # finite although the keys outside the mask are -inf or garbage in the scores
    garbage = same.masked_fill(~mask, float("inf"))
    assert index_kl(garbage, target, mask).abs() < 1e-6
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        assert index_kl(torch.randn(2, 1, T, T, generator=g) * 5, target, mask) >= 0


def test_kl_gradient_is_finite_and_zero_at_the_target():
    T = 10
    mask = torch.ones(T, T, dtype=torch.bool).tril().expand(1, 1, T, T)
    logits = torch.randn(1, 1, T, T, generator=torch.Generator().manual_seed(2))
    target = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    scores = logits.masked_fill(~mask, float("-inf")).requires_grad_()
    index_kl(scores, target, mask).backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().max() < 1e-6


def test_kl_by_hand_sums_over_keys_and_averages_over_queries():
    """Two queries seeing 1 and 2 keys: KL(p || softmax(s)) per query summed over its keys, then the
    mean over the queries, here (0 + (0.75 ln 1.5 + 0.25 ln 0.5)) / 2."""
    mask = torch.tensor([[True, False], [True, True]]).view(1, 1, 2, 2)
    target = torch.tensor([[1.0, 0.0], [0.75, 0.25]]).view(1, 1, 2, 2)
    scores = torch.tensor([[3.0, -7.0], [0.0, 0.0]]).view(1, 1, 2, 2)  # the second query: q = (0.5, 0.5)
    expected = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2
    assert index_kl(scores, target, mask).item() == pytest.approx(expected, rel=1e-6)


def test_index_scores_are_the_weighted_relu_dot_products():
    """I[t, s] = sum_j w[t, j] relu(q_I[t, j] . k_I[s] / sqrt(index_head_dim)), w = W_w x_t / sqrt(index_n_head),
    -inf where s > t, written out as loops over heads and positions."""
    indexer = LightningIndexer(CFG).train()
    g = torch.Generator().manual_seed(0)
    T, n_I, d = 5, CFG.mla.index_n_head, CFG.mla.index_head_dim
    x = torch.randn(1, T, 48, generator=g)
    q, k = torch.randn(1, n_I, T, d, generator=g), torch.randn(1, 1, T, d, generator=g)
    _, scores, _ = indexer.select(x, q, k, torch.arange(T), None, 0, {})
    w = x[0] @ indexer.head_weights.weight.T / math.sqrt(n_I)  # (T, n_I)
    expected = torch.full((T, T), float("-inf"))
    for t in range(T):
        for s in range(t + 1):
            expected[t, s] = sum(w[t, j] * torch.relu(q[0, j, t] @ k[0, 0, s] / math.sqrt(d)) for j in range(n_I))
    torch.testing.assert_close(scores[0, 0], expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- in the model
def test_the_index_loss_trains_the_indexer_and_only_the_indexer():
    """coef 1 vs coef 0, same weights and batch: the non-indexer gradients are identical (the term does
    not leak into the main model), the indexer's are non-zero with the loss and zero without it."""
    torch.manual_seed(0)
    on = GPT(with_coef(CFG, 1.0))
    off = GPT(with_coef(CFG, 0.0))
    off.load_state_dict(on.state_dict())
    idx = tokens(41, vocab=CFG.vocab_size, seed=1)
    terms_on, terms_off = backward(on, idx), backward(off, idx)
    assert set(terms_on) == {"index_loss"} and terms_off == {}
    assert terms_on["index_loss"] > 0
    grads_off = dict(off.named_parameters())
    n_indexer = 0
    for name, p in on.named_parameters():
        if is_indexer(name):
            n_indexer += 1
            g = grads_off[name].grad  # k_proj: zeros through the cache concatenation; the rest: none
            assert g is None or not g.any(), name
            if "k_norm.bias" not in name:  # LayerNorm bias: the softmax is shift-invariant per query
                assert p.grad is not None and p.grad.abs().max() > 0, name
        else:
            assert p.grad is not None, name
            torch.testing.assert_close(p.grad, grads_off[name].grad, rtol=0, atol=0, msg=name)
    assert n_indexer == 2 * 5  # q_up, k_proj, k_norm weight and bias, head_weights per layer


def test_the_index_loss_is_the_mean_over_layers():
    """With zero residual projections every layer reads the embeddings, so two copies of one layer
    report that layer's own loss, not twice it."""
    one_layer = dataclasses.replace(CFG, n_layer=1, zero_init_proj=True)
    torch.manual_seed(0)
    single, double = GPT(one_layer), GPT(dataclasses.replace(one_layer, n_layer=2))
    weights = single.state_dict()
    double.load_state_dict({name: weights[name.replace("transformer.h.1.", "transformer.h.0.")]
                            for name in double.state_dict()})
    idx = tokens(41, vocab=CFG.vocab_size, seed=1)
    torch.testing.assert_close(backward(double, idx)["index_loss"], backward(single, idx)["index_loss"])


def test_the_loss_leaves_outputs_and_evaluation_alone():
    """Training-mode logits are the same with and without the loss (the target is a side computation);
    in eval there is no term."""
    torch.manual_seed(0)
    on, off = GPT(with_coef(CFG, 1.0)).train(), GPT(with_coef(CFG, 0.0)).train()
    off.load_state_dict(on.state_dict())
    idx = tokens(41, vocab=CFG.vocab_size, seed=1)[:, :-1]
    assert torch.equal(on(idx), off(idx))
    on.eval()
    _, terms = on(idx[:, :-1], idx[:, 1:])
    assert set(terms) == {"loss"}  # evaluation: the LM loss alone


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = GPT(CFG)
    recomputed = copy.deepcopy(plain)
    checkpoint_blocks(recomputed)
    idx = tokens(41, vocab=CFG.vocab_size, seed=1)
    a, b = backward(plain, idx), backward(recomputed, idx)
    torch.testing.assert_close(a["index_loss"], b["index_loss"])
    for (name, p), q in zip(plain.named_parameters(), recomputed.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_a_few_steps_on_the_preset_lower_the_index_loss():
    """deepseek-v3.2 shrunk (2 layers, 16 experts), random weights of std 0.1 (so the main attention
    is far from uniform), one fixed batch; the whole objective's backward, AdamW on the indexer alone
    (the main model held still, as in the paper's warm-up, so the target stays put)."""
    cfg = load_config(ROOT / "configs/presets/deepseek-v3.2.toml").model
    moe = dataclasses.replace(cfg.moe, n_expert=16, n_group=4, topk_group=2, top_k=4)
    cfg = dataclasses.replace(cfg, n_layer=2, block_size=64, moe=moe, init_std=0.1)
    assert cfg.mla.index_topk == 4 and cfg.mla.index_loss_coef == 1.0
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = torch.optim.AdamW([p for name, p in model.named_parameters() if is_indexer(name)], lr=1e-2)
    idx = tokens(65, B=4, vocab=cfg.vocab_size, seed=1)
    losses = []
    for _ in range(20):
        terms = backward(model, idx)
        opt.step()
        losses.append(terms["index_loss"].item())
    assert losses[-1] < 0.5 * losses[0], losses


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "1"])
def test_bad_index_loss_coef_is_refused(bad):
    with pytest.raises(ValueError, match="model.mla.index_loss_coef"):
        MLAConfig(index_loss_coef=bad)


def test_the_weight_is_training_only_for_hf():
    cfg = load_config(ROOT / "configs/presets/deepseek-v3.2.toml").model
    hf = config_to_hf(with_coef(cfg, 0.25), "deepseek_v32")  # not an HF setting: nothing is lost
    assert hf.index_topk == cfg.mla.index_topk
    assert isinstance(GPT(CFG).transformer.h[0].attn.indexer, LightningIndexer)


# ----------------------------------------------------------------------------- scripts/dsa_agreement.py
def test_agreement_script_counts_real_choices_and_their_chance_recall(tmp_path, corpus, base, capsys):
    """scripts/dsa_agreement.py on a 1-step DSA run. A query counts when it sees more than
    index_topk keys, and a random choice's recall is index_topk / keys seen: here the causal mask's
    t + 1 keys at position t, averaged by hand. Recall is a share and the KL is >= 0. Bad input is
    one line, exit 2."""
    run, topk, T = tmp_path / "dsa", 4, 32  # TINY's block_size
    Trainer(load_config(None, [*TINY, *corpus, f"--train.out_dir={run}", "--train.max_steps=1",
                               "--train.eval_interval=0", "--model.attention=mla", "--model.pos=rope",
                               "--model.mla.q_lora_rank=16", f"--model.mla.index_topk={topk}"])).fit()
    capsys.readouterr()
    main = load_script("dsa_agreement").main
    text = tmp_path / "text.py"
    text.write_text("def f(x):\n    return x  # é\n" * 20)  # 580 bytes: two windows of 32 and more
    assert run_cli(main, [str(run), "--text", str(text), "--batches", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    chance = sum(topk / (t + 1) for t in range(topk, T)) / (T - topk)
    numbers = r"recall ([\d.]+) \(random keys: ([\d.]+)\)\s+(?:mean )?KL ([\d.]+)"
    for line in lines:
        recall, random_keys, kl = map(float, re.findall(numbers, line)[0])
        assert 0 <= recall <= 1 and random_keys == round(chance, 3) and kl >= 0
    assert [line.split(":")[0] for line in lines] == ["layer 0", "layer 1", "all layers"]
    for argv, message in (([str(base)], "has no DSA indexer"),
                          ([str(run), "--batches", "0"], "--batches must be >= 1"),
                          ([str(run), "--text", str(tmp_path / "no.txt")], "no such file"),
                          ([str(run), "--text", str(text), "--batches", "50"], "holds 580 tokens")):
        assert run_cli(main, argv) == 2 and message in error_line(capsys.readouterr().err)
