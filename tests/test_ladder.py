"""configs/ladder/ and configs/presets/: the ladder changes one thing per rung, the presets keep the
ratios of the models they mirror, and every one of them builds and overfits a fixed batch on CPU."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from model import GPT
from train.config import OptimConfig, load_config
from train.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
LADDER = sorted((ROOT / "configs" / "ladder").glob("*.toml"))
PRESETS = sorted((ROOT / "configs" / "presets").glob("*.toml"))

# A rung changes one model field, or one of these pairs that only make sense together.
COUPLED = [
    {"model.mlp", "model.mlp_hidden"},  # a GLU has 3 matrices: its width shrinks to keep params equal
    {"model.window", "model.global_every"},  # which layers slide, and how far
]


def flatten(obj, prefix: str = "") -> dict:
    """Resolved config -> {"model.rope.theta": 10000.0, ...}, nested dataclasses included."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def changed_keys(a, b) -> set[str]:
    fa, fb = flatten(a), flatten(b)
    changed = {k for k in fa if fa[k] != fb[k]}
    return changed - {"train.out_dir"}  # derived from the file name


# Switching the mixer to MLA brings its [model.mla] sizes, and returns the GQA-only settings that MLA
# refuses (KV-head groups, QK-norm on up-projected keys) to their defaults.
MLA_SWITCH = {"model.attention", "model.n_kv_head", "model.qk_norm"}

# Turning on linear-attention layers brings their [model.deltanet] pattern and sizes with it.
LINEAR_SWITCH = "model.linear_attention"


def is_one_change(changed: set[str]) -> bool:
    """One model field, or exactly one coupled group, or only [model.moe] fields (turning experts on
    needs their number and size together), or a switch of `model.attention` with only its
    [model.mla] sizes and the GQA settings it resets, or of `model.linear_attention` with only its
    [model.deltanet] pattern and sizes; outside [model], only the optimizer's name (the training
    budget must match across the ladder)."""
    if len(changed) == 1:
        return next(iter(changed)) in ("optim.name",) or next(iter(changed)).startswith("model.")
    if changed and all(k.startswith("model.moe.") for k in changed):
        return True
    if "model.attention" in changed and all(k in MLA_SWITCH or k.startswith("model.mla.") for k in changed):
        return True
    if LINEAR_SWITCH in changed and all(k == LINEAR_SWITCH or k.startswith("model.deltanet.") for k in changed):
        return True
    return any(changed == group for group in COUPLED)


# ----------------------------------------------------------------------------- the ladder
def test_ladder_exists_and_starts_at_gpt2():
    assert [p.name for p in LADDER][:2] == ["00-gpt2.toml", "01-rope.toml"]
    assert len(LADDER) >= 8
    assert [int(p.name[:2]) for p in LADDER] == list(range(len(LADDER)))  # no gaps, no duplicates
    m = load_config(LADDER[0]).model
    assert (m.pos, m.norm, m.mlp, m.n_kv_head, m.bias, m.tie_embeddings) == (
        "learned", "layernorm", "gelu", m.n_head, True, True)


@pytest.mark.parametrize("i", range(1, len(LADDER)), ids=lambda i: LADDER[i].stem)
def test_each_rung_changes_one_thing(i):
    prev, cur = load_config(LADDER[i - 1]), load_config(LADDER[i])
    changed = changed_keys(prev, cur)
    assert is_one_change(changed), f"{LADDER[i].name} changes {sorted(changed)} relative to {LADDER[i - 1].name}"


def test_one_change_check_can_fail():
    base = load_config(LADDER[0])
    two = load_config(LADDER[0], ["--model.pos=rope", "--model.norm=rmsnorm"])
    budget = load_config(LADDER[0], ["--optim.lr=1e-3"])
    pair = load_config(LADDER[0], ["--model.mlp=swiglu", "--model.mlp_hidden=682"])
    moe_and_more = load_config(LADDER[0], ["--model.moe.n_expert=4", "--model.n_kv_head=2"])
    mla = load_config(LADDER[0], ["--model.attention=mla", "--model.mla.kv_lora_rank=32"])
    mla_and_more = load_config(LADDER[0], ["--model.attention=mla", "--model.bias=false"])
    hybrid = load_config(LADDER[0], ["--model.linear_attention=gated_deltanet", "--model.deltanet.full_every=2"])
    hybrid_and_more = load_config(LADDER[0], ["--model.linear_attention=gated_deltanet", "--model.attn_gate=true"])
    muon = load_config(LADDER[0], ["--optim.name=muon"])
    muon_and_lr = load_config(LADDER[0], ["--optim.name=muon", "--optim.lr=1e-2"])
    assert not is_one_change(changed_keys(base, two))
    assert not is_one_change(changed_keys(base, budget))  # budgets must match across the ladder
    assert not is_one_change(changed_keys(base, base))
    assert is_one_change(changed_keys(base, pair))
    assert not is_one_change(changed_keys(base, moe_and_more))
    assert is_one_change(changed_keys(base, mla))
    assert not is_one_change(changed_keys(base, mla_and_more))
    assert is_one_change(changed_keys(base, hybrid))
    assert not is_one_change(changed_keys(base, hybrid_and_more))
    assert is_one_change(changed_keys(base, muon))
    assert not is_one_change(changed_keys(base, muon_and_lr))


@pytest.mark.parametrize("path", LADDER[1:], ids=lambda p: p.stem)
def test_rung_comment_says_change_paper_why(path):
    header = leading_comment(path)
    for word in ("Change", "Paper", "Why"):
        assert f"{word}" in header, f"{path.name}: top comment lacks '{word}:'"
    assert re.search(r"arXiv:\d{4}\.\d{4,5}", header), f"{path.name}: top comment cites no arXiv id"


# ----------------------------------------------------------------------------- the presets
# The real model each preset mirrors: (n_head, n_kv_head, head_dim, n_embd, mlp_hidden). The preset
# must keep the ratios that define the architecture: GQA groups, query width / model width, MLP / width.
# For MLA (DeepSeek-V3), n_kv_head = n_head and head_dim is the value / no-RoPE query-key head size.
REAL = {
    "llama3": ("Llama 3", (32, 8, 128, 4096, 14336)),  # Llama 3.1 8B
    "qwen3": ("Qwen3", (16, 8, 128, 1024, 3072)),  # Qwen3-0.6B
    "mistral": ("Mistral", (32, 8, 128, 4096, 14336)),  # Mistral 7B
    "gemma2": ("Gemma 2", (8, 4, 256, 2304, 9216)),  # Gemma 2 2B
    "gemma3": ("Gemma 3", (8, 4, 256, 2560, 10240)),  # Gemma 3 4B
    "olmo2": ("OLMo 2", (32, 32, 128, 4096, 11008)),  # OLMo 2 7B
    "olmo3": ("OLMo 3", (32, 32, 128, 4096, 11008)),  # OLMo 3 7B
    "gpt-oss-dense": ("gpt-oss", (64, 8, 64, 2880, 4 * 2880)),  # gpt-oss-20b: 4 active experts of 2880
    "gpt-oss": ("gpt-oss", (64, 8, 64, 2880, 2880)),  # gpt-oss-20b (its one intermediate_size, the experts')
    "mixtral": ("Mixtral", (32, 8, 128, 4096, 14336)),  # Mixtral 8x7B
    "qwen3-moe": ("Qwen3", (32, 4, 128, 2048, 6144)),  # Qwen3-30B-A3B (its dense width is unused)
    "deepseek-v3": ("DeepSeek-V3", (128, 128, 128, 7168, 18432)),
    "deepseek-v3.2": ("DeepSeek-V3.2", (128, 128, 128, 7168, 18432)),
    "qwen3.5": ("Qwen3.5", (16, 4, 256, 4096, 12288)),  # transformers' Qwen3_5TextConfig defaults
    "qwen3-next": ("Qwen3-Next", (16, 2, 256, 2048, 5632)),  # Qwen3NextConfig defaults (its dense width is unused)
    "qwen3.5-moe": ("Qwen3.5", (16, 2, 256, 2048, 512)),  # Qwen3_5MoeTextConfig (no dense width: the experts')
}
# ... and its Mixture of Experts: routing is kept exactly, expert width relative to the model width.
# (n_expert, top_k, n_shared, router, norm_topk, routed_scale, n_group, topk_group, expert_hidden,
# whether the first layers are dense)
REAL_MOE = {
    "mixtral": (8, 2, 0, "softmax", True, 1.0, 1, 1, 14336, False),
    "qwen3-moe": (128, 8, 0, "softmax", True, 1.0, 1, 1, 768, False),
    "deepseek-v3": (256, 8, 1, "sigmoid", True, 2.5, 8, 4, 2048, True),
    "deepseek-v3.2": (256, 8, 1, "sigmoid", True, 2.5, 8, 4, 2048, True),
    "gpt-oss": (32, 4, 0, "softmax", True, 1.0, 1, 1, 2880, False),
    "qwen3-next": (512, 10, 1, "softmax", True, 1.0, 1, 1, 512, False),
    "qwen3.5-moe": (256, 8, 1, "softmax", True, 1.0, 1, 1, 512, False),
}
SHARED_GATE = {"qwen3-next", "qwen3.5-moe"}  # a sigmoid gate on the shared expert (moe.shared_gate)
# ... and its Multi-head Latent Attention: (q_lora_rank, kv_lora_rank) as ratios to the width,
# (qk_nope_head_dim, qk_rope_head_dim, v_head_dim) as ratios to head_dim.
REAL_MLA = {"deepseek-v3": (1536, 512, 128, 64, 128), "deepseek-v3.2": (1536, 512, 128, 64, 128)}
# ... and DeepSeek Sparse Attention: index_topk / context (2048 of 128K), indexer heads / heads,
# indexer head size / head_dim
REAL_DSA = {"deepseek-v3.2": (2048 / 131072, 64 / 128, 128 / 128)}
# ... and its linear-attention layers: (full_every, q/k heads, value heads, q/k head size, value head
# size); the pattern and the head ratio are kept exactly, the key and value widths relative to the width.
REAL_LINEAR = {name: (4, 16, 32, 128, 128) for name in ("qwen3.5", "qwen3-next", "qwen3.5-moe")}
# Which layers use the sliding window, for a preset with n_layer layers.
LOCAL_PATTERN = {
    "mistral": lambda n: [True] * n,  # every layer
    "gemma2": lambda n: [True, False] * (n // 2),  # alternate, starting local
    "gpt-oss-dense": lambda n: [True, False] * (n // 2),
    "gpt-oss": lambda n: [True, False] * (n // 2),
    "olmo3": lambda n: ([True] * 3 + [False]) * (n // 4),  # 3 sliding : 1 full
    "gemma3": lambda n: ([True] * 5 + [False]) * (n // 6),  # 5 local : 1 global
}


def test_every_preset_is_checked():
    assert sorted(p.stem for p in PRESETS) == sorted(REAL)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_names_its_real_model(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and first[2:].strip(), f"{path.name}: first line must be a comment"
    name, _ = REAL[path.stem]
    assert name in first, f"{path.name}: first line should name {name}"
    assert re.search(r"arXiv:\d{4}\.\d{4,5}", first)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_keeps_the_real_ratios(path):
    m = load_config(path).model
    n_head, n_kv_head, head_dim, n_embd, mlp_hidden = REAL[path.stem][1]
    assert m.n_head / m.n_kv_head == n_head / n_kv_head
    assert m.n_head * m.head_dim / m.n_embd == pytest.approx(n_head * head_dim / n_embd, rel=0.01)
    assert m.attention == ("mla" if path.stem in REAL_MLA else "gqa")
    if path.stem in REAL_MLA:
        q_lora, kv_lora, nope, rope, v = REAL_MLA[path.stem]
        ours = m.mla
        assert [ours.q_lora_rank / m.n_embd, ours.kv_lora_rank / m.n_embd] == pytest.approx(
            [q_lora / n_embd, kv_lora / n_embd], rel=0.01)
        assert [ours.qk_nope_head_dim, ours.qk_rope_head_dim, ours.v_head_dim] == pytest.approx(
            [nope * m.head_dim / head_dim, rope * m.head_dim / head_dim, v * m.head_dim / head_dim])
    assert m.mlp_hidden / m.n_embd == pytest.approx(mlp_hidden / n_embd, rel=0.01)
    if path.stem in REAL_DSA:
        assert [m.mla.index_topk / m.block_size, m.mla.index_n_head / m.n_head,
                m.mla.index_head_dim / m.head_dim] == pytest.approx(REAL_DSA[path.stem])
    else:
        assert m.mla.index_topk == 0
    assert (m.linear_attention != "none") == (path.stem in REAL_LINEAR)
    if path.stem in REAL_LINEAR:
        full_every, k_heads, v_heads, dk, dv = REAL_LINEAR[path.stem]
        d = m.deltanet
        assert d.full_every == full_every and d.n_v_head / d.n_head == v_heads / k_heads
        assert [d.n_head * d.head_dim / m.n_embd, d.n_v_head * d.v_head_dim / m.n_embd] == pytest.approx(
            [k_heads * dk / n_embd, v_heads * dv / n_embd])
    local = [m.is_local(i) for i in range(m.n_layer)]
    assert local == LOCAL_PATTERN.get(path.stem, lambda n: [False] * n)(m.n_layer)
    assert load_config(path).data.tokenizer == "byte"  # trains offline
    if path.stem not in REAL_MOE:
        assert m.moe.n_expert == 0
        return
    *routing, expert_hidden, first_dense = REAL_MOE[path.stem]
    moe = m.moe
    assert [moe.n_expert, moe.top_k, moe.n_shared, moe.router, moe.norm_topk, moe.routed_scale, moe.n_group,
            moe.topk_group] == routing
    assert moe.expert_hidden / m.n_embd == pytest.approx(expert_hidden / n_embd, rel=0.01)
    assert (moe.first_dense > 0) == first_dense
    assert moe.shared_gate == (path.stem in SHARED_GATE)


# ----------------------------------------------------------------------------- learning
FIXED_TEXT = Path(__file__).read_bytes()[:65]  # 64 inputs + 1 target, deterministic


def shrink(cfg):
    """A quarter of the width and as few layers as the local/global pattern allows; every structural
    choice (norms, MLP kind, heads and KV heads, qk-norm, rope, windows, sinks, softcaps, routing) is
    kept. The window shrinks to 16 so that it bites inside the 64-token test sequence; a dense first
    layer stays, with one MoE layer after it. MLA's ranks and head sizes shrink by 4 too, and so do
    Gated DeltaNet's head sizes; a hybrid keeps one full pattern (3 linear : 1 full)."""
    moe = dataclasses.replace(cfg.moe, expert_hidden=cfg.moe.expert_hidden // 4,
                              first_dense=min(cfg.moe.first_dense, 1))
    mla = dataclasses.replace(cfg.mla, **{f.name: getattr(cfg.mla, f.name) // 4 for f in dataclasses.fields(cfg.mla)
                                          if f.name != "index_topk" and type(getattr(cfg.mla, f.name)) is int})
    deltanet = dataclasses.replace(cfg.deltanet, head_dim=cfg.deltanet.head_dim // 4,
                                   v_head_dim=cfg.deltanet.v_head_dim // 4)
    full_every = cfg.deltanet.full_every if cfg.linear_attention != "none" else 0
    return dataclasses.replace(
        cfg, n_embd=cfg.n_embd // 4, head_dim=cfg.head_dim // 4, mlp_hidden=cfg.mlp_hidden // 4,
        n_layer=max(2, cfg.global_every, full_every), window=16 if cfg.window else 0, moe=moe, mla=mla,
        deltanet=deltanet,
    )


def overfit(cfg, steps: int, lr: float, optimizer: str = "adamw") -> tuple[float, float]:
    """Train on one fixed (2, 64) batch of source text with `optimizer` (optim.name) on the whole
    objective, as the trainer does; return (first LM loss, last LM loss)."""
    torch.manual_seed(0)
    model = GPT(cfg)
    tokens = torch.tensor(list(FIXED_TEXT))
    x = torch.stack([tokens[:-1], tokens[:-1].roll(7)])
    y = torch.stack([tokens[1:], tokens[1:].roll(7)])
    opt = build_optimizer(model, OptimConfig(name=optimizer, lr=lr, weight_decay=0.0), "cpu")
    losses = []
    for _ in range(steps):
        _, terms = model(x, y)
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()  # the trainer's objective: the LM loss and the MoE, MTP, DSA terms
        loss = terms["loss"]
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def fewer_experts(cfg, most: int = 64):
    """At most `most` routed experts (top_k and the groups kept): learning one batch does not need
    Qwen3-Next's 512, and on a CPU each expert costs a matmul per layer and step."""
    return dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, n_expert=min(cfg.moe.n_expert, most)))


@pytest.mark.slow  # 1-10 s per config on 2 cores, the MoE and hybrid ones the slowest
@pytest.mark.parametrize("path", PRESETS + LADDER, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_overfits_one_batch(path, one_thread):
    run = load_config(path)
    first, last = overfit(fewer_experts(shrink(run.model)), steps=100, lr=3e-3, optimizer=run.optim.name)
    assert first == pytest.approx(5.55, abs=0.3)  # ~ln(257): an untrained model is near uniform
    assert last < 0.5, f"{path.name}: loss {first:.2f} -> {last:.2f} after 100 steps"


def leading_comment(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines[: next(i for i, s in enumerate(lines) if not s.startswith("#"))])
