"""The Mixture-of-Experts rung: sparse dispatch against a dense oracle, routing rules, capacity,
balancing losses and bias, accounting, cached decoding, and exact resume of an MoE run."""

import dataclasses

import pytest
import torch

from model import GPT
from model.accounting import flops_per_token, matmul_params, param_count
from model.config import ModelConfig, MoEConfig
from model.ffn.mlp import build_mlp
from model.ffn.moe import GatedShared, MoE, end_step
from scripts.device_reads import DeviceReads
from tiny_run import fit, make, numerics
from train import checkpoint as ckpt
from train.trainer import Trainer

SMALL = dict(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=32)

CASES = {  # name: (ModelConfig fields, MoEConfig fields)
    "mixtral-like top-2 of 4": (dict(mlp="swiglu", bias=False), dict(n_expert=4, top_k=2)),
    "switch-like top-1, gelu, biases, raw weights": (dict(mlp="gelu"), dict(n_expert=4, top_k=1, norm_topk=False)),
    "deepseek-like sigmoid, groups, shared, scale": (
        dict(mlp="swiglu", bias=False),
        dict(n_expert=8, top_k=3, router="sigmoid", n_group=4, topk_group=2, n_shared=1, routed_scale=2.5)),
    "qwen3-next-like gated shared": (
        dict(mlp="swiglu", bias=False), dict(n_expert=4, top_k=2, n_shared=2, shared_gate=True)),
    "every expert, relu2": (dict(mlp="relu2", bias=False), dict(n_expert=3, top_k=3, expert_hidden=16)),
    # limit 0.5 so that the clamp bites on most units at this scale
    "gpt-oss-like clamped swiglu, biases, router bias": (
        dict(mlp="swiglu_clamped", swiglu_limit=0.5, bias=True), dict(n_expert=4, top_k=2, router_bias=True)),
}


def build(name: str, **moe_overrides) -> MoE:
    model_fields, moe_fields = CASES[name]
    cfg = ModelConfig(**SMALL, **model_fields, moe=MoEConfig(**moe_fields | moe_overrides))
    torch.manual_seed(0)
    moe = MoE(cfg)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.3)
        moe.router.expert_bias.normal_(0, 0.3)  # steers the choice, so it must be exercised
    return moe


def expert_output(moe: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e as a plain MLP of model.mlp's kind, on all tokens."""
    ex = moe.experts
    act, gated = ex.act, ex.gated  # the activation function itself is tested with the dense MLPs
    h = x @ ex.c_fc[e].T + (0 if ex.c_fc_bias is None else ex.c_fc_bias[e])
    h = act(*h.chunk(2, -1)) if gated else act(h)  # a gated activation takes (gate, up)
    return h @ ex.c_proj[e].T + (0 if ex.c_proj_bias is None else ex.c_proj_bias[e])



def oracle(moe: MoE, x: torch.Tensor, capacity: int | None = None) -> torch.Tensor:
    """Every expert computes every token; plain-Python routing then picks and weights per token.
    With `capacity`, an expert keeps only its first `capacity` tokens in sequence order."""
    r = moe.router
    flat = x.reshape(-1, x.shape[-1])
    logits = flat @ r.weight.T + (0 if r.bias is None else r.bias)
    scores = logits.softmax(-1) if r.score is not torch.sigmoid else logits.sigmoid()
    outputs = torch.stack([expert_output(moe, e, flat) for e in range(moe.n_expert)])  # (E, N, D)
    used = [0] * moe.n_expert
    rows = []
    for t in range(flat.shape[0]):
        choice = (scores[t] + r.expert_bias).tolist()
        if r.n_group > 1:
            size = moe.n_expert // r.n_group
            groups = [choice[g * size:(g + 1) * size] for g in range(r.n_group)]
            rank = [sum(sorted(g)[-2:]) for g in groups]
            best = sorted(range(r.n_group), key=lambda g: -rank[g])[: r.topk_group]
            choice = [c if i // size in best else float("-inf") for i, c in enumerate(choice)]
        chosen = sorted(range(moe.n_expert), key=lambda e: -choice[e])[: moe.top_k]
        w = scores[t, chosen]
        w = w / w.sum() if r.norm_topk else w
        if r.norm_topk and r.score is not torch.sigmoid:  # gpt-oss's form: a softmax over the chosen logits
            torch.testing.assert_close(w, logits[t, chosen].softmax(-1))
        y = torch.zeros_like(flat[t])
        for e, we in zip(chosen, w * r.routed_scale):
            if capacity is None or used[e] < capacity:
                y = y + we * outputs[e, t]
            used[e] += 1
        rows.append(y)
    y = torch.stack(rows).view_as(x)
    return y + moe.shared(x) if moe.shared is not None else y


@pytest.mark.parametrize("name", CASES)
def test_sparse_dispatch_equals_dense_oracle_values_and_gradients(name):
    moe = build(name).eval()
    x = torch.randn(3, 7, 32)
    y = moe(x)
    y_ref = oracle(moe, x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(y.square().sum(), list(moe.parameters()))
    grads_ref = torch.autograd.grad(y_ref.square().sum(), list(moe.parameters()))
    for (name_, _), g, g_ref in zip(moe.named_parameters(), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4, msg=name_)


def test_capacity_drops_late_tokens_in_training_only():
    moe = build("mixtral-like top-2 of 4", capacity_factor=0.5).train()
    x = torch.randn(2, 16, 32)  # 32 tokens x 2 / 4 experts = 16 per expert on average; capacity 8
    y = moe(x)
    torch.testing.assert_close(y, oracle(moe, x, capacity=8), atol=1e-5, rtol=1e-5)
    load = moe.load.clone()
    metrics = moe.end_step()
    assert metrics["dropped"] == pytest.approx((load - 8).clamp(min=0).sum().item() / 64)
    assert metrics["dropped"] > 0
    torch.testing.assert_close(moe.eval()(x), oracle(moe, x), atol=1e-5, rtol=1e-5)  # never in eval
    roomy = build("mixtral-like top-2 of 4", capacity_factor=4.0).train()  # capacity = all tokens
    torch.testing.assert_close(roomy(x), oracle(roomy, x), atol=1e-5, rtol=1e-5)


def test_fractional_capacity_rounds_up():
    """capacity = ceil(cf * tokens * top_k / n_expert): 0.3 * 32 * 2 / 4 = 4.8 keeps 5 tokens per expert."""
    moe = build("mixtral-like top-2 of 4", capacity_factor=0.3).train()
    x = torch.randn(2, 16, 32)
    torch.testing.assert_close(moe(x), oracle(moe, x, capacity=5), atol=1e-5, rtol=1e-5)


def test_balance_loss_matches_hf_mixtral_and_z_loss_its_definition():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    moe = build("mixtral-like top-2 of 4").train()
    with torch.no_grad():
        moe.router.expert_bias.zero_()  # HF's router has no bias
    x = torch.randn(2, 16, 32)
    moe(x)
    metrics = moe.end_step()
    logits = x.reshape(-1, 32) @ moe.router.weight.T
    hf = load_balancing_loss_func((logits,), num_experts=4, top_k=2)
    assert metrics["balance"] == pytest.approx(hf.item(), rel=1e-5)
    z = logits.double().exp().sum(-1).log().square().mean()
    assert metrics["z_loss"] == pytest.approx(z.item(), rel=1e-5)


def test_balance_loss_of_sigmoid_scores_normalises_each_tokens_scores():
    """Sigmoid scores do not sum to 1: P_i is the mean of each token's scores divided by their sum
    (DeepSeek-V3's s'_i), and f_i counts the choices the expert bias steered."""
    moe = build("deepseek-like sigmoid, groups, shared, scale", n_group=1, topk_group=1).train()
    x = torch.randn(2, 16, 32)
    flat = x.reshape(-1, 32)
    scores = (flat @ moe.router.weight.T).sigmoid()
    chosen = (scores + moe.router.expert_bias).topk(3, dim=-1).indices
    f = torch.bincount(chosen.flatten(), minlength=8) / flat.shape[0]
    p = (scores / scores.sum(-1, keepdim=True)).mean(0)
    moe(x)
    assert moe.end_step()["balance"] == pytest.approx(8 * (f * p).sum().item(), rel=1e-5)


def test_aux_terms_are_named_apart_from_the_lm_loss_and_only_in_training():
    cfg = ModelConfig(**SMALL, mlp="swiglu", moe=MoEConfig(n_expert=4, top_k=2))
    idx = torch.randint(0, 97, (2, 16))
    torch.manual_seed(0)
    plain = GPT(cfg)
    weighted = GPT(dataclasses.replace(cfg, moe=MoEConfig(n_expert=4, top_k=2, aux_loss_coef=0.1, z_loss_coef=0.01)))
    weighted.load_state_dict(plain.state_dict())
    _, plain_terms = plain.train()(idx, idx)
    _, terms = weighted.train()(idx, idx)
    ce, lm = plain_terms["loss"], terms["loss"]
    assert lm.item() == ce.item()  # the "loss" term is the LM cross-entropy alone
    assert set(plain_terms) == {"loss"}  # no coefficients, no terms
    balance = [layer.sums[0].item() for layer in weighted.moe_layers]
    z = [layer.sums[1].item() for layer in weighted.moe_layers]
    expected = (0.1 * sum(balance) + 0.01 * sum(z)) / 2  # averaged over the 2 layers
    assert set(terms) == {"loss", "aux_loss"} and terms["aux_loss"].item() == pytest.approx(expected, rel=1e-6)
    (lm + terms["aux_loss"]).backward()
    ce.backward()
    router_w, router_p = weighted.moe_layers[0].router.weight.grad, plain.moe_layers[0].router.weight.grad
    assert not torch.allclose(router_w, router_p)  # the balancing terms reach the router
    _, val = weighted.eval()(idx, idx)
    assert set(val) == {"loss"}  # evaluation is pure cross-entropy
    assert val["loss"].item() == pytest.approx(ce.item(), rel=1e-6)


def test_router_logits_stay_fp32_under_autocast():
    moe = build("deepseek-like sigmoid, groups, shared, scale")
    x = torch.randn(24, 32)
    exact = moe.router(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, scores, chosen, weights = moe.router(x)
    assert logits.dtype == scores.dtype == weights.dtype == torch.float32
    torch.testing.assert_close(logits, exact[0], rtol=0, atol=0)  # bf16 matmuls would differ
    assert torch.equal(chosen, exact[2])


def test_bias_update_moves_towards_even_load_and_steers_choice_not_weights():
    moe = build("mixtral-like top-2 of 4", bias_update_rate=0.01, top_k=1, norm_topk=False).train()
    with torch.no_grad():
        moe.router.expert_bias.zero_()
        moe.load.copy_(torch.tensor([10.0, 0.0, 2.0, 4.0]))  # mean 4
        moe.sums[2] = 1  # one forward recorded
    moe.end_step()
    assert moe.router.expert_bias.tolist() == pytest.approx([-0.01, 0.01, 0.01, 0.0])
    with torch.no_grad():
        moe.router.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 100.0]))
    flat = torch.randn(20, 32)
    logits, scores, chosen, weights = moe.router(flat)
    assert chosen.flatten().tolist() == [3] * 20
    torch.testing.assert_close(weights.flatten(), scores[:, 3])  # the bias never enters the weight
    moe.end_step(update_bias=False)  # a skipped step: nothing moves
    assert moe.router.expert_bias.tolist() == [0.0, 0.0, 0.0, 100.0]


@pytest.mark.parametrize("moe_fields, message", [
    (dict(n_expert=4, top_k=5), "model.moe.top_k (5) must be <= model.moe.n_expert (4)"),
    (dict(n_expert=6, n_group=4), "must be divisible by model.moe.n_group"),
    (dict(n_expert=8, n_group=2, topk_group=3), "model.moe.topk_group (3) must be <= model.moe.n_group (2)"),
    (dict(n_expert=8, n_group=8), "each group needs >= 2 experts"),
    (dict(n_expert=8, n_group=4, topk_group=1, top_k=3), "must be <= the experts in model.moe.topk_group"),
    (dict(n_expert=4, router="tanh"), "model.moe.router must be one of 'softmax', 'sigmoid'"),
    (dict(n_expert=4, aux_loss_coef=-1.0), "model.moe.aux_loss_coef must be >= 0"),
    (dict(n_expert=4, first_dense=2), "model.moe.first_dense (2) must be < model.n_layer (2)"),
    (dict(n_expert=4, shared_gate=True), "model.moe.shared_gate gates the shared experts: it needs model.moe.n_shared"),
    (dict(n_expert=4, n_shared=1, shared_gate=1), "model.moe.shared_gate must be true or false; got 1"),
])
def test_invalid_moe_configs_name_the_field(moe_fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**SMALL, moe=MoEConfig(**moe_fields))


@pytest.mark.parametrize("moe_fields", [
    dict(n_expert=4, top_k=2), dict(n_expert=8, top_k=2, n_shared=2, first_dense=1, expert_hidden=24),
    dict(n_expert=4, top_k=2, router_bias=True),  # gpt-oss: a learned bias per expert on the router
    dict(n_expert=8, top_k=2, n_shared=2, shared_gate=True, expert_hidden=24),  # Qwen3-Next's gated shared experts
])
@pytest.mark.parametrize("mlp, bias", [("gelu", True), ("swiglu", False), ("swiglu_clamped", True)])
def test_accounting_counts_all_experts_and_charges_only_active_ones(moe_fields, mlp, bias):
    cfg = ModelConfig(**SMALL | dict(n_layer=3), mlp=mlp, bias=bias, moe=MoEConfig(**moe_fields))
    model = GPT(cfg)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    m = cfg.moe
    idle_experts = (m.n_expert - m.top_k) * sum(
        p.numel() for p in model.moe_layers[0].experts.parameters()) // m.n_expert
    assert param_count(cfg, active=True) == param_count(cfg) - len(model.moe_layers) * idle_experts
    # compute: top_k experts of h units cost what one dense MLP of top_k * h units (+ shared) costs,
    # plus the router's n_embd x n_expert matrix (and the shared experts' n_embd x 1 gate)
    hidden = m.top_k * m.expert_hidden + m.n_shared * m.expert_hidden
    dense = ModelConfig(**SMALL | dict(n_layer=3), mlp=mlp, bias=bias, mlp_hidden=hidden)
    extra = 0 if not m.first_dense else m.first_dense * (
        matmul_params(dataclasses.replace(dense, mlp_hidden=cfg.mlp_hidden)) - matmul_params(dense)) // 3
    router = len(model.moe_layers) * cfg.n_embd * (m.n_expert + m.shared_gate)
    assert matmul_params(cfg) == matmul_params(dense) + extra + router
    assert flops_per_token(cfg, 16) == flops_per_token(dense, 16) + 6 * (extra + router)


def test_shared_gate_off_builds_what_the_field_did_not_exist_for_and_on_scales_each_token():
    """Off (the default): the shared experts are the plain MLP `build_mlp` gives, under the names
    they had before the field existed, and the same seed builds the same parameters and logits as a
    config that leaves the field out. On: one more (1, n_embd) weight per MoE layer, counted by
    model/accounting.py, and y = routed + sigmoid(x w_g) * shared(x), one gate value per token."""
    moe = dict(n_expert=4, top_k=2, n_shared=1, first_dense=1)
    fields = SMALL | dict(n_layer=3, mlp="swiglu", bias=False)
    cfg_unset = ModelConfig(**fields, moe=MoEConfig(**moe))
    cfg_off = ModelConfig(**fields, moe=MoEConfig(**moe, shared_gate=False))
    cfg_on = dataclasses.replace(cfg_off, moe=dataclasses.replace(cfg_off.moe, shared_gate=True))
    idx = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    built = {}
    for name, cfg in dict(unset=cfg_unset, off=cfg_off, on=cfg_on).items():
        torch.manual_seed(0)
        built[name] = GPT(cfg).eval()
    unset, off, on = built.values()
    assert type(off.moe_layers[0].shared) is type(build_mlp(cfg_off, 32))
    assert [n for n in off.state_dict() if ".shared." in n] == [f"transformer.h.{i}.mlp.shared.{p}.weight"
                                                                 for i in (1, 2) for p in ("c_fc", "c_proj")]
    for a, b in zip(unset.state_dict().items(), off.state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    with torch.no_grad():
        assert torch.equal(unset(idx), off(idx))

    layer = on.moe_layers[0]
    assert isinstance(layer.shared, GatedShared) and layer.shared.gate.weight.shape == (1, cfg_on.n_embd)
    assert param_count(cfg_on) == sum(p.numel() for p in on.parameters()) == param_count(cfg_off) + 2 * 32
    assert param_count(cfg_on, active=True) == param_count(cfg_off, active=True) + 2 * 32
    assert matmul_params(cfg_on) == matmul_params(cfg_off) + 2 * 32
    # the same weights as `off` plus a gate: the shared output shrinks by sigmoid(x w_g) per token
    on_state = {n.replace(".shared.", ".shared.mlp."): t for n, t in off.state_dict().items()}
    missing, unexpected = on.load_state_dict(on_state, strict=False)
    assert missing == ["transformer.h.1.mlp.shared.gate.weight", "transformer.h.2.mlp.shared.gate.weight"]
    assert not unexpected
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        layer.shared.gate.weight.normal_(0, 0.5)  # far from its N(0, init_std) start
        gate = torch.sigmoid(x @ layer.shared.gate.weight.T)  # (2, 5, 1), one number per token
        shared = off.moe_layers[0].shared(x)
        torch.testing.assert_close(layer(x), off.moe_layers[0](x) - shared + gate * shared, atol=1e-6, rtol=1e-6)
        assert gate.std() > 0.05  # a random gate: tokens differ, so a constant scale would fail


def test_cached_decoding_equals_the_full_forward():
    cfg = ModelConfig(**SMALL, pos="rope", norm="rmsnorm", mlp="swiglu", bias=False,
                      moe=MoEConfig(n_expert=4, top_k=2, n_shared=1, capacity_factor=0.5))
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    idx = torch.randint(0, 97, (2, 12))
    full = model(idx)
    cache = model.new_cache(2)
    steps = [model(idx[:, :5], cache=cache)] + [model(idx[:, t:t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_end_step_reports_per_layer_load_and_resets():
    cfg = ModelConfig(**SMALL, mlp="swiglu", moe=MoEConfig(n_expert=4, top_k=2, first_dense=1))
    model = GPT(cfg).train()
    idx = torch.randint(0, 97, (2, 16))
    model(idx, idx)
    model(idx, idx)  # two micro-batches: their loads add up
    load = model.moe_layers[0].load.clone()
    assert load.sum().item() == 2 * 32 * 2
    metrics = end_step(model.moe_layers)
    assert len(metrics["moe_max_load"]) == 1  # layer 0 is dense
    assert metrics["moe_max_load"][0] == pytest.approx((load.max() / load.mean()).item(), abs=1e-4)
    assert metrics["moe_dropped"] == 0.0
    assert model.moe_layers[0].load.sum().item() == 0
    assert end_step(model.moe_layers) == {}  # nothing recorded since


def test_a_dense_model_ends_a_step_with_nothing_to_report():
    """No MoE layer: no statistics to read and no metrics, as the trainer calls it for any model."""
    model = GPT(ModelConfig(**SMALL)).train()
    idx = torch.randint(0, 97, (2, 16))
    model(idx, idx)
    assert model.step_stats().numel() == 0
    assert model.end_step() == {} and model.end_step([]) == {} and end_step([]) == {}


def test_moe_run_resumes_bit_exactly(tmp_path, corpus):
    moe = ["--model.mlp=swiglu", "--model.moe.n_expert=4", "--model.moe.top_k=2", "--model.moe.n_shared=1",
           "--model.moe.capacity_factor=1.0", "--model.moe.aux_loss_coef=0.01", "--model.moe.z_loss_coef=0.001",
           "--model.moe.bias_update_rate=0.01", "--train.eval_interval=4"]
    straight = Trainer(make(tmp_path, corpus, "a", "--train.max_steps=8", *moe))
    straight_log = fit(straight)
    first = fit(Trainer(make(tmp_path, corpus, "b", "--train.max_steps=4", *moe)))
    second = fit(Trainer(make(tmp_path, corpus, "b", "--train.max_steps=8", *moe)))
    assert second[0]["step"] == 5
    assert numerics(first + second) == numerics(straight_log)
    record = straight_log[-1]
    assert {"aux_loss", "moe_balance", "moe_z_loss", "moe_dropped", "moe_max_load"} <= set(record)
    assert len(record["moe_max_load"]) == 2
    assert any(r["moe_dropped"] > 0 for r in straight_log)  # capacity 1.0 drops on uneven steps
    a, b = ckpt.latest_checkpoint(tmp_path / "a"), ckpt.latest_checkpoint(tmp_path / "b")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    bias = straight.model.moe_layers[0].router.expert_bias
    assert bias.abs().sum() > 0  # the aux-loss-free bias moved and was saved with the weights


@pytest.mark.parametrize("name", ["mixtral-like top-2 of 4", "deepseek-like sigmoid, groups, shared, scale"])
def test_grouped_moe_never_reads_the_device_and_traces_as_one_graph(name):
    """With the grouped kernel (CUDA's), an MoE forward and backward queue work without waiting for
    it: no host read of a device value, no operator that sizes its output from the data
    (torch.bincount did, in every forward). torch.compile then traces the layer whole."""
    moe = build(name).train()
    moe.experts.use_kernel("grouped")
    x = torch.randn(2, 16, 32, requires_grad=True)
    with DeviceReads() as seen, torch.autocast("cpu", dtype=torch.bfloat16):
        y = moe(x)
        (y.float() * torch.randn(y.shape)).sum().backward()
    assert seen.reads == 0, seen.report()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(moe)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loop reads the counts: one read per forward
        moe.experts.use_kernel("loop")
        with DeviceReads() as seen:
            moe(x)
    assert seen.reads == 1 and seen.by_name["Tensor.tolist"] == 1


def test_the_loop_kernel_runs_eagerly_under_compile():
    """The CPU loop reads the counts and skips idle experts. Traced, each pattern of idle experts was
    a new graph: a compiled decode of an MoE rung recompiled token after token until dynamo's limit
    (8) and warned. The loop is left out of tracing, so new patterns compile nothing new, and the
    output is the eager one."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    moe = build("mixtral-like top-2 of 4").eval()
    compiled = torch.compile(moe, backend="eager")
    patterns = set()
    with torch.no_grad():
        for seed in range(12):  # one token: 2 of the 4 experts busy, a pattern per draw
            x = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(compiled(x), moe(x))
            patterns.add(tuple(moe.router(x.view(1, 32))[2].sort().values.flatten().tolist()))
            if seed == 0:
                graphs = counters["stats"]["unique_graphs"]
    assert len(patterns) >= 3 and counters["stats"]["unique_graphs"] == graphs, (patterns, counters["stats"])


def test_moe_training_step_reads_the_device_once(tmp_path, corpus):
    """The trainer reads the loss terms, the gradient norm and every MoE layer's statistics in one
    copy per step (it was 2 + 3 per MoE layer), with the grouped experts the GPU runs."""
    trainer = Trainer(make(tmp_path, corpus, "moe", "--model.mlp=swiglu", "--model.moe.n_expert=4",
                           "--model.moe.top_k=2", "--model.moe.expert_hidden=16", "--model.moe.aux_loss_coef=0.01",
                           "--model.moe.bias_update_rate=0.001", "--train.dtype=bf16"))
    for layer in trainer.model.moe_layers:
        layer.experts.use_kernel("grouped")
    trainer.train_step()
    with DeviceReads() as seen:
        record = trainer.train_step()
    assert seen.reads == 1 and seen.by_name["Tensor.tolist"] == 1, seen.report()
    assert {"loss", "aux_loss", "grad_norm", "moe_balance", "moe_z_loss", "moe_max_load"} <= set(record)
    assert len(record["moe_max_load"]) == 2 and all(v >= 1.0 for v in record["moe_max_load"])
