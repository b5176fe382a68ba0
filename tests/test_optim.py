"""Optimizers: Muon's orthogonalised update, which parameters each optimizer trains, that every
optimizer lowers the loss, exact resume with Muon, and Muon on sharded (DTensor) parameters."""

import dataclasses
import math
import os
import socket

import pytest
import torch
from torch import nn

from model import GPT, ModelConfig
from model.config import MoEConfig
from model.ffn.moe import Experts
from model.ffn.router import Router
from train.config import OptimConfig, load_config
from train.errors import ConfigError
from train.optim import Muon, MuonWithAdamW, build_optimizer, hidden_matrices, lr_at, orthogonalize
from train.trainer import Trainer

from tiny_run import ROOT, fit, make, tiny


def spread_gradient(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A gradient-like matrix whose singular values spread over two decades (1 .. 0.01)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g))
    k = min(rows, cols)
    return u[:, :k] @ torch.diag(torch.logspace(0, -2, k)) @ v[:, :k].T


@pytest.mark.parametrize("shape", [(48, 128), (128, 48)])
def test_muon_update_is_close_to_orthogonal(shape):
    grad = spread_gradient(*shape)
    w = nn.Parameter(torch.zeros(shape))
    w.grad = grad.clone()
    lr = 0.1
    Muon([w], lr=lr, momentum=0.95).step()
    update = -w.detach() / (lr * 0.2 * max(shape) ** 0.5)  # undo the documented RMS scaling
    s = torch.linalg.svdvals(update)
    assert s.max() / s.min() > 1 and s.min() > 0.6 and s.max() < 1.25, s  # the gradient's spread: 100x
    # the same singular vectors as the polar factor U V^T of the gradient
    u, _, vt = torch.linalg.svd(grad, full_matrices=False)
    cos = torch.sum(update * (u @ vt)) / (update.norm() * (u @ vt).norm())
    assert cos > 0.97


@pytest.mark.parametrize("shape", [(48, 128), (128, 48)], ids=["wide", "tall"])
def test_orthogonalize_equals_the_quintic_applied_to_the_singular_values(shape):
    """Newton-Schulz acts on the singular values alone: from X0 = G / (||G||_F + eps) = U S V^T, each
    step maps s to p(s) = a s + b s^3 + c s^5, so five steps give U p(p(p(p(p(S))))) V^T. Written
    out in float64 from torch.linalg.svd with the published coefficients (3.4445, -4.7750, 2.0315);
    the fp32 iteration stays within ~1e-6 of it, while a coefficient off in its fourth digit moves
    the result by ~5e-3 and one step fewer by ~0.1."""
    grad = spread_gradient(*shape) + 0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(1))
    g = grad.double()
    u, s, vt = torch.linalg.svd(g, full_matrices=False)
    x = s / (torch.linalg.matrix_norm(g) + 1e-7)
    for _ in range(5):
        x = 3.4445 * x - 4.7750 * x**3 + 2.0315 * x**5
    expected = u @ torch.diag(x) @ vt
    got = orthogonalize(grad)
    assert got.dtype == torch.float32 and got.shape == shape
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


def test_orthogonalize_treats_expert_stacks_one_by_one():
    stack = torch.stack([spread_gradient(24, 40, seed=i) * (10.0 ** i) for i in range(3)])
    together = orthogonalize(stack)
    for i in range(3):
        torch.testing.assert_close(together[i], orthogonalize(stack[i]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("batched", [False, True], ids=["one by one (CPU)", "batched by shape (CUDA)"])
def test_muon_step_equals_the_per_matrix_update(batched):
    """On CUDA, matrices of one shape are orthogonalised as one batch (fewer launches); either way
    the result equals the documented update computed matrix by matrix, over three steps with
    momentum and weight decay."""
    torch.manual_seed(0)
    shapes = [(24, 40), (40, 24), (24, 40), (3, 16, 24), (24, 40), (3, 16, 24)]
    params = [nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [p.detach().clone() for p in params]
    bufs = [torch.zeros(s) for s in shapes]
    opt = Muon(params, lr=0.02, momentum=0.9, weight_decay=0.1, batched=batched)
    for _ in range(3):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for w, buf, g in zip(ref, bufs, grads):
            buf.lerp_(g, 1 - 0.9)
            w.mul_(1 - 0.02 * 0.1).add_(orthogonalize(g.lerp(buf, 0.9)), alpha=-0.02 * 0.2 * max(w.shape[-2:]) ** 0.5)
    for p, w in zip(params, ref):
        torch.testing.assert_close(p.detach(), w, atol=1e-6, rtol=1e-6)
    assert all(torch.equal(opt.state[p]["momentum_buffer"], b) for p, b in zip(params, bufs))


# ----------------------------------------------------------------------------- the speedrun's Muon options
# Polar Express (arXiv:2505.16932) as modded-nanogpt uses it: one (a, b, c) per step
POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("shape", [(48, 128), (128, 48)], ids=["wide", "tall"])
def test_polar_express_equals_its_quintics_applied_to_the_singular_values(shape):
    """optim.muon_ns = "polar_express": step k maps each singular value s to a_k s + b_k s^3 + c_k s^5
    with its own coefficients, from X0 = G / (1.02 ||G||_F + eps); written out in float64 from the SVD.
    The fp32 iteration stays within ~1.5e-6 of it; any coefficient off by 1e-4 of itself moves the
    result by 3e-5 or more."""
    grad = spread_gradient(*shape) + 0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(1))
    g = grad.double()
    u, s, vt = torch.linalg.svd(g, full_matrices=False)
    x = s / (1.02 * torch.linalg.matrix_norm(g) + 1e-7)
    for a, b, c in POLAR_EXPRESS:
        x = a * x + b * x**3 + c * x**5
    got = orthogonalize(grad, schedule="polar_express")
    assert got.dtype == torch.float32 and got.shape == shape
    torch.testing.assert_close(got.double(), u @ torch.diag(x) @ vt, atol=1e-5, rtol=0)
    assert not torch.allclose(got, orthogonalize(grad), atol=1e-3)  # not the default quintic


def muon_by_hand(shapes, steps: int, lr: float, mu: float, wd: float, beta2: float | None = None,
                 cautious: bool = False, schedule: str = "jordan", batched: bool = False):
    """Muon's step with NorMuon (beta2 given) and cautious weight decay, written out per matrix and
    run beside Muon's own over `steps` steps; returns (optimizer, Muon's parameters, the written-out
    weights, the fraction decayed per matrix and step) for the test to compare:

        m <- mu m + (1 - mu) g;   o = orthogonalize((1 - mu) g + mu m)
        NorMuon: v <- beta2 v + (1 - beta2) mean(o^2) per row (per column when the matrix is wide);
                 o <- o / sqrt(v), rescaled to the Frobenius norm o had
        W <- W - lr wd W [where o W > 0 when cautious] - lr 0.2 sqrt(max(A, B)) o
    """
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [p.detach().clone() for p in params]
    bufs = [torch.zeros(s) for s in shapes]
    second: list = [None] * len(shapes)
    opt = Muon(params, lr=lr, momentum=mu, weight_decay=wd, batched=batched, schedule=schedule,
               normuon=beta2 is not None, beta2=beta2 or 0.95, cautious_wd=cautious)
    decayed = []
    for _ in range(steps):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, (w, g) in enumerate(zip(ref, grads)):
            bufs[i] = mu * bufs[i] + (1 - mu) * g
            o = orthogonalize((1 - mu) * g + mu * bufs[i], schedule=schedule)
            A, B = w.shape[-2:]
            if beta2 is not None:
                mean_square = o.square().mean(dim=-1 if A >= B else -2, keepdim=True)
                previous = 0.0 if second[i] is None else second[i]
                second[i] = beta2 * previous + (1 - beta2) * mean_square
                n = o / (second[i].sqrt() + 1e-10)
                o = n * torch.linalg.matrix_norm(o, keepdim=True) / torch.linalg.matrix_norm(n, keepdim=True)
            decay = (torch.sign(o) == torch.sign(w)) if cautious else torch.ones_like(w, dtype=torch.bool)
            decayed.append(decay.float().mean().item())
            w.sub_(lr * wd * w * decay).sub_(lr * 0.2 * max(A, B) ** 0.5 * o)
    return opt, params, ref, decayed


def assert_same_weights(params, ref) -> None:
    for p, w in zip(params, ref, strict=True):
        torch.testing.assert_close(p.detach(), w, atol=2e-6, rtol=1e-5)


SHAPES = [(24, 40), (40, 24), (24, 24), (3, 16, 24)]  # wide, tall, square, an expert stack


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "batched"])
def test_normuon_step_equals_the_update_written_out(batched):
    opt, params, ref, _ = muon_by_hand(SHAPES, steps=3, lr=0.02, mu=0.9, wd=0.1, beta2=0.8, batched=batched)
    assert_same_weights(params, ref)
    moments = [opt.state[p]["second_moment"].shape for p in params]
    assert moments == [(1, 40), (40, 1), (24, 1), (3, 1, 24)]  # one per neuron of the longer side


@pytest.mark.usefixtures("one_thread")
def test_cautious_weight_decay_decays_only_where_the_update_has_the_weights_sign():
    _, params, ref, decayed = muon_by_hand(SHAPES, steps=3, lr=0.1, mu=0.9, wd=0.5, cautious=True)
    assert_same_weights(params, ref)
    assert all(0.2 < f < 0.8 for f in decayed), decayed  # some entries decayed, others not


@pytest.mark.usefixtures("one_thread")
def test_speedrun_muon_options_together():
    _, params, ref, _ = muon_by_hand(SHAPES, steps=2, lr=0.05, mu=0.95, wd=0.3, beta2=0.95, cautious=True,
                                     schedule="polar_express")
    assert_same_weights(params, ref)


def test_muon_options_reach_the_optimizer_from_the_config():
    cfg = OptimConfig(name="muon", muon_ns="polar_express", normuon=True, cautious_wd=True, beta2=0.9)
    muon = build_optimizer(moe_model(), cfg, "cpu").muon
    assert (muon.schedule, muon.normuon, muon.beta2, muon.cautious_wd) == ("polar_express", True, 0.9, True)
    default = build_optimizer(moe_model(), OptimConfig(name="muon"), "cpu").muon
    assert (default.schedule, default.normuon, default.cautious_wd) == ("jordan", False, False)
    with pytest.raises(ConfigError, match="optim.muon_ns must be one of 'jordan', 'polar_express'"):
        load_config(None, ["--optim.name=muon", "--optim.muon_ns=newton"])


def moe_model() -> GPT:
    return GPT(ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, pos="rope",
                           norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False,
                           moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=16)))


def test_muon_takes_hidden_matrices_and_adamw_the_rest():
    model = moe_model()
    opt = build_optimizer(model, OptimConfig(name="muon"), "cpu")
    assert isinstance(opt, MuonWithAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    assert muon.isdisjoint(adamw) and muon | adamw == set(names.values())
    assert {"transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.experts.c_fc",
            "transformer.h.1.mlp.experts.c_proj", "transformer.h.0.attn.c_proj.weight"} <= muon
    routers = {n for n, m in model.named_modules() if isinstance(m, Router)}
    assert all(names[id(p)] in adamw for r in routers for p in model.get_submodule(r).parameters())
    assert {"transformer.wte.weight", "lm_head.weight", "transformer.ln_f.weight"} <= adamw
    assert all(p.dim() >= 2 for g in opt.muon.param_groups for p in g["params"])
    on_cuda = build_optimizer(model, OptimConfig(name="muon"), "cuda").muon
    assert (opt.muon.runs.__name__, on_cuda.runs.__name__) == ("_one_by_one", "_same_shape")  # batched on CUDA
    assert any(isinstance(m, Experts) for m in model.modules())
    tied = GPT(ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    assert all(p is not tied.lm_head.weight for p in hidden_matrices(tied))


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_every_optimizer_lowers_the_loss_on_the_default_model(name, one_thread):
    cfg = load_config(ROOT / "configs" / "default.toml", [f"--optim.name={name}"])
    torch.manual_seed(0)
    model = GPT(cfg.model).train()
    x = torch.randint(0, cfg.model.vocab_size, (2, 65), generator=torch.Generator().manual_seed(0))
    opt = build_optimizer(model, dataclasses.replace(cfg.optim, warmup_steps=0), "cpu")
    losses = []
    for _ in range(6):
        loss = model(x[:, :-1], x[:, 1:])[1]["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_optim_name_is_checked():
    with pytest.raises(ConfigError, match="optim.name"):
        load_config(None, ["--optim.name=sgd"])
    with pytest.raises(ValueError, match="optim.name"):
        OptimConfig(name="sgd")
    with pytest.raises(ValueError, match="optim.muon_momentum"):
        OptimConfig(name="muon", muon_momentum=1.0)


def test_adamw_step_equals_the_update_written_out():
    """optim.name = "adamw" over two steps, written out per parameter with the configured betas:
    m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; W <- W (1 - lr wd) - lr m^ / (sqrt(v^) + eps),
    m^ and v^ bias-corrected, where wd is optim.weight_decay for matrices and embeddings (>= 2-D)
    and 0 for biases and norm scales (1-D)."""
    torch.manual_seed(0)
    model = GPT(tiny(bias=True))
    cfg = OptimConfig(lr=0.01, weight_decay=0.5, beta1=0.6, beta2=0.9, eps=1e-8)
    opt = build_optimizer(model, cfg, "cpu")
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    m = {n: torch.zeros_like(p) for n, p in ref.items()}
    v = {n: torch.zeros_like(p) for n, p in ref.items()}
    assert any(p.dim() == 1 for p in ref.values())
    for t in (1, 2):
        for n, p in model.named_parameters():
            p.grad = torch.randn_like(p)
            m[n] = 0.6 * m[n] + 0.4 * p.grad
            v[n] = 0.9 * v[n] + 0.1 * p.grad**2
            wd = 0.5 if p.dim() >= 2 else 0.0
            step = (m[n] / (1 - 0.6**t)) / ((v[n] / (1 - 0.9**t)).sqrt() + 1e-8)
            ref[n] = ref[n] * (1 - 0.01 * wd) - 0.01 * step
        opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), ref[n], atol=1e-6, rtol=1e-5, msg=n)


def test_adamw_first_step_divides_by_the_configured_eps():
    """From zero state, AdamW's bias-corrected moments are m^ = g and v^ = g^2, so the first step
    is lr g / (|g| + eps): with eps = 0.5 a gradient of 0.5 moves a weight by lr / 2."""
    layer = nn.Linear(3, 2)
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    opt = build_optimizer(layer, OptimConfig(lr=0.1, weight_decay=0.0, eps=0.5), "cpu")
    layer.weight.grad = torch.tensor([[0.5, -1.5, 0.0], [2.0, -0.5, 1.0]])
    layer.bias.grad = torch.tensor([0.5, -2.0])
    opt.step()
    torch.testing.assert_close(layer.weight.detach(), w - 0.1 * torch.tensor([[0.5, -0.75, 0.0], [0.8, -0.5, 2 / 3]]))
    torch.testing.assert_close(layer.bias.detach(), b - 0.1 * torch.tensor([0.5, -0.8]))


# ----------------------------------------------------------------------------- the learning-rate schedule
def test_cosine_schedule_warms_up_then_decays_to_the_minimum():
    """Peak 1, 4 warm-up steps, min_lr_ratio 0.1 over 24 steps: step s < 4 takes (s + 1) / 4, so the
    last warm-up step is at the peak; then 0.1 + 0.45 (1 + cos(pi (s - 4) / 20)), which is 0.55
    halfway (step 14), and 0.1 from step 24 on."""
    cfg = OptimConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, cfg, 24) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    for s in (9, 14, 23):
        assert lr_at(s, cfg, 24) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * (s - 4) / 20)))
    assert lr_at(14, cfg, 24) == pytest.approx(0.55)
    assert [lr_at(s, cfg, 24) for s in (24, 30)] == pytest.approx([0.1, 0.1])


def test_wsd_schedule_decays_linearly_over_its_last_fraction():
    """wsd, decay_fraction 0.25 of 24 steps: the peak through step 17, then down by 0.9 / 6 a step
    from 0.85 at step 18 to the minimum 0.1 at the last step (23), and 0.1 after it."""
    cfg = OptimConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.25)
    assert [lr_at(s, cfg, 24) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(lr_at(s, cfg, 24) == 1.0 for s in range(3, 18))
    assert [lr_at(s, cfg, 24) for s in range(18, 26)] == pytest.approx([0.85, 0.7, 0.55, 0.4, 0.25, 0.1, 0.1, 0.1])
    # 0.3 of 26 steps is 7.8: the nearest whole number of steps, 8, decays, from step 18 on
    cfg = dataclasses.replace(cfg, decay_fraction=0.3)
    assert lr_at(17, cfg, 26) == 1.0 and lr_at(18, cfg, 26) == pytest.approx(1 - 0.9 / 8)


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_schedules_end_at_min_lr_ratio_of_the_peak(schedule):
    cfg = OptimConfig(lr=0.02, warmup_steps=2, min_lr_ratio=0.25, schedule=schedule)
    assert lr_at(1, cfg, 10) == pytest.approx(0.02)
    assert [lr_at(s, cfg, 10) for s in (10, 15)] == pytest.approx([0.005, 0.005])


def test_constant_schedule_warms_up_then_holds_the_peak():
    cfg = OptimConfig(lr=0.02, warmup_steps=4, min_lr_ratio=0.1, schedule="constant")
    assert [lr_at(s, cfg, 10) for s in range(6)] == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02, 0.02])
    assert [lr_at(s, cfg, 10) for s in (9, 10, 50)] == pytest.approx([0.02, 0.02, 0.02])


@pytest.mark.parametrize("clip", [0.01, 0.0])
def test_the_optimizer_steps_on_gradients_clipped_to_grad_clip(tmp_path, corpus, monkeypatch, clip):
    """The logged grad_norm is the norm before clipping; the optimizer sees the gradients scaled to
    optim.grad_clip when they are longer (0: never)."""
    trainer = Trainer(make(tmp_path, corpus, "run", f"--optim.grad_clip={clip}", "--train.max_steps=1"))
    seen, step = [], trainer.optimizer.step

    def spy(*args, **kwargs):
        seen.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.params])).item())
        return step(*args, **kwargs)
    monkeypatch.setattr(trainer.optimizer, "step", spy)
    record = trainer.train_step()
    assert record["grad_norm"] > 0.1
    assert seen == [pytest.approx(clip or record["grad_norm"], rel=1e-4)]
    # the first step takes the schedule's first learning rate
    assert record["lr"] == lr_at(0, trainer.cfg.optim, 1) != lr_at(1, trainer.cfg.optim, 1)


def test_resume_is_bit_exact_with_muon(tmp_path, corpus):
    muon = ["--optim.name=muon", "--train.eval_interval=4"]
    straight = Trainer(make(tmp_path, corpus, "a", "--train.max_steps=8", *muon))
    straight_log = fit(straight)
    first_log = fit(Trainer(make(tmp_path, corpus, "b", "--train.max_steps=4", *muon)))
    second = Trainer(make(tmp_path, corpus, "b", "--train.max_steps=8", *muon))
    second_log = fit(second)
    assert second_log[0]["step"] == 5
    assert [r["loss"] for r in first_log + second_log] == [r["loss"] for r in straight_log]
    for p, q in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(p, q)
    a, b = straight.optimizer.state_dict(), second.optimizer.state_dict()
    assert set(a) == {"muon", "adamw"} and a["muon"]["state"]
    for part in a:
        for i, s in a[part]["state"].items():
            assert all(torch.equal(v, b[part]["state"][i][k]) for k, v in s.items())


def test_resuming_adamw_state_with_muon_is_refused(tmp_path, corpus):
    from train.checkpoint import CheckpointMismatch

    Trainer(make(tmp_path, corpus, "c", "--train.max_steps=2", "--train.eval_interval=0")).fit()
    again = Trainer(make(tmp_path, corpus, "c", "--train.max_steps=4", "--optim.name=muon"))
    with pytest.raises(CheckpointMismatch, match="optimizer state"):
        again.fit()


# ----------------------------------------------------------------------------- FSDP2-style shards
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharded_step(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        full = spread_gradient(8, 12, seed=3)
        w = nn.Parameter(distribute_tensor(torch.ones(8, 12), mesh, [Shard(0)]))
        opt = Muon([w], lr=0.1, momentum=0.9, weight_decay=0.1)
        for step in range(2):
            w.grad = distribute_tensor(full * (step + 1), mesh, [Shard(0)])
            opt.step()
        assert w.to_local().shape == (8 // world, 12)
        gathered = w.full_tensor()
        if rank == 0:
            torch.save(gathered, out)
        dist.barrier()  # gloo aborts a rank that tears down while its peer still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes, each importing torch
def test_muon_on_sharded_parameters_equals_unsharded(tmp_path):
    """Two gloo processes, each parameter sharded by rows as FSDP2 shards it: the same weights as
    one process with the whole matrices."""
    mp = pytest.importorskip("torch.multiprocessing")
    out = str(tmp_path / "w.pt")
    mp.spawn(_sharded_step, args=(2, _free_port(), out), nprocs=2, join=True)
    w = nn.Parameter(torch.ones(8, 12))
    opt = Muon([w], lr=0.1, momentum=0.9, weight_decay=0.1)
    for step in range(2):
        w.grad = spread_gradient(8, 12, seed=3) * (step + 1)
        opt.step()
    torch.testing.assert_close(torch.load(out), w.detach(), atol=1e-6, rtol=0)
