"""The dense rungs above GPT-2: RMSNorm and unit-offset norms, GLU / squared-ReLU MLPs, post and
sandwich norm placement, scaled embeddings, final logit soft-capping, untied embeddings.

Components are checked against HF transformers modules (random weights, norms included) or a
formula written out here; every combination of the toggles builds, counts its parameters as
expected, and overfits one batch. CPU, fp32 unless a test says otherwise.
"""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from model import GPT, ModelConfig
from model.block import Block, PostNormBlock, SandwichBlock, build_block
from model.ffn.mlp import build_mlp
from model.norm import RMSNorm, UnitOffsetLayerNorm, UnitOffsetRMSNorm, build_norm
from tiny_run import randomize_, tiny

transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=32, pos="none")
RANDOM = dict(std=0.5, ones="vectors")  # randomize_: biases and norm scales around 1, matrices N(0, 0.5)


def randn(*shape, seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ----------------------------------------------------------------------------- norms
def test_rmsnorm_matches_hf_llama():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    cfg = tiny(BASE, norm="rmsnorm", norm_eps=1e-6)
    ours, ref = randomize_(build_norm(cfg), **RANDOM), LlamaRMSNorm(32, eps=1e-6)
    assert isinstance(ours, RMSNorm) and not isinstance(ours, UnitOffsetRMSNorm)
    ref.weight.data.copy_(ours.weight.data)
    x = randn(2, 5, 32, scale=3.0)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)
    # bf16 input, fp32 weight (mixed precision): Llama casts to bf16, then multiplies -> fp32 out
    xb = x.bfloat16()
    assert ours(xb).dtype == ref(xb).dtype == torch.float32
    assert torch.equal(ours(xb), ref(xb))
    # everything bf16
    ours.bfloat16(), ref.bfloat16()
    assert ours(xb).dtype == torch.bfloat16
    assert torch.equal(ours(xb), ref(xb))


def test_unit_offset_rmsnorm_matches_hf_gemma2():
    from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm

    cfg = tiny(BASE, norm="rmsnorm", norm_unit_offset=True, norm_eps=1e-6)
    ours, ref = build_norm(cfg), Gemma2RMSNorm(32, eps=1e-6)
    assert isinstance(ours, UnitOffsetRMSNorm) and torch.all(ours.weight == 0)  # scale starts at 1
    randomize_(ours, **RANDOM)
    ref.weight.data.copy_(ours.weight.data)
    x = randn(2, 5, 32, scale=3.0)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)
    xb = x.bfloat16()  # Gemma multiplies in fp32 and casts the product: bf16 out
    assert ours(xb).dtype == ref(xb).dtype == torch.bfloat16
    assert torch.equal(ours(xb), ref(xb))
    ours.bfloat16(), ref.bfloat16()
    assert torch.equal(ours(xb), ref(xb))


@pytest.mark.parametrize("unit_offset", [False, True])
def test_rmsnorm_uses_the_configured_eps(unit_offset):
    """model.norm_eps reaches the RMSNorms: x / sqrt(mean(x^2) + eps), with an eps near the mean
    square so that it shows (scales at their identity init)."""
    norm = build_norm(tiny(BASE, norm="rmsnorm", norm_unit_offset=unit_offset, norm_eps=0.25))
    x = randn(2, 5, 32, scale=0.5)
    expected = x / torch.sqrt(x.square().mean(-1, keepdim=True) + 0.25)
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-6)


def test_llama_and_gemma_cast_orders_differ_in_bf16():
    """The two dtype orders are not interchangeable: with the same scale, results differ in bf16."""
    llama, gemma = RMSNorm(32, 1e-6), UnitOffsetRMSNorm(32, 1e-6)
    randomize_(llama, **RANDOM)
    gemma.weight.data.copy_(llama.weight.data - 1.0)  # the same effective scale
    x = randn(4, 16, 32, scale=3.0)
    torch.testing.assert_close(llama(x), gemma(x), atol=1e-6, rtol=0)
    llama.bfloat16()
    gemma.weight.data.copy_(llama.weight.data.float() - 1.0)
    assert not torch.equal(llama(x.bfloat16()), gemma(x.bfloat16()))


def test_unit_offset_layernorm():
    cfg = tiny(BASE, norm_unit_offset=True)
    norm = build_norm(cfg, 16)
    assert isinstance(norm, UnitOffsetLayerNorm) and torch.all(norm.weight == 0)
    randomize_(norm, **RANDOM)
    x = randn(3, 16, scale=2.0)
    expected = F.layer_norm(x, (16,), 1.0 + norm.weight, norm.bias, cfg.norm_eps)
    torch.testing.assert_close(norm(x), expected, atol=0, rtol=0)
    assert not torch.allclose(norm(x), F.layer_norm(x, (16,), norm.weight, norm.bias, cfg.norm_eps))


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("unit_offset", [False, True])
def test_init_weights_resets_norm_scales(norm, unit_offset):
    model = GPT(tiny(BASE, norm=norm, norm_unit_offset=unit_offset, norm_placement="sandwich"))
    scales = [m.weight for m in model.modules() if "Norm" in type(m).__name__]
    assert len(scales) == 2 * 4 + 1
    randomize_(model, **RANDOM)
    model.init_weights()
    for w in scales:
        assert torch.all(w == (0.0 if unit_offset else 1.0))


# ----------------------------------------------------------------------------- MLPs
def copy_glu(ours: nn.Module, ref: nn.Module) -> None:
    """HF gate_proj / up_proj -> our fused c_fc rows [gate; up]; down_proj -> c_proj."""
    with torch.no_grad():
        ours.c_fc.weight.copy_(torch.cat([ref.gate_proj.weight, ref.up_proj.weight], dim=0))
        ours.c_proj.weight.copy_(ref.down_proj.weight)


def test_swiglu_matches_hf_llama_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    ref = randomize_(LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=48, hidden_act="silu")), **RANDOM)
    ours = build_mlp(tiny(BASE, mlp="swiglu", mlp_hidden=48, bias=False))
    assert ours.c_fc.weight.shape == (2 * 48, 32)
    copy_glu(ours, ref)
    x = randn(2, 5, 32)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_geglu_matches_hf_gemma2_mlp():
    from transformers import Gemma2Config
    from transformers.models.gemma2.modeling_gemma2 import Gemma2MLP

    hf_cfg = Gemma2Config(hidden_size=32, intermediate_size=48, hidden_activation="gelu_pytorch_tanh")
    ref = randomize_(Gemma2MLP(hf_cfg), **RANDOM)
    ours = build_mlp(tiny(BASE, mlp="geglu", mlp_hidden=48, bias=False))
    copy_glu(ours, ref)
    x = randn(2, 5, 32)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    swapped = build_mlp(tiny(BASE, mlp="swiglu", mlp_hidden=48, bias=False))
    copy_glu(swapped, ref)
    assert not torch.allclose(swapped(x), ref(x), atol=1e-3)  # the activation matters


def test_relu2_matches_formula():
    mlp = randomize_(build_mlp(tiny(BASE, mlp="relu2", mlp_hidden=48)), **RANDOM)
    x = randn(2, 5, 32)
    h = x @ mlp.c_fc.weight.T + mlp.c_fc.bias
    expected = torch.clamp(h, min=0) ** 2 @ mlp.c_proj.weight.T + mlp.c_proj.bias
    torch.testing.assert_close(mlp(x), expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- blocks
MANUAL_BLOCKS = {
    "pre": lambda b, x, pos: (lambda x: x + b.mlp(b.ln_2(x)))(x + b.attn(b.ln_1(x), pos)),
    "post": lambda b, x, pos: (lambda x: x + b.ln_2(b.mlp(x)))(x + b.ln_1(b.attn(x, pos))),
    "sandwich": lambda b, x, pos: (lambda x: x + b.ln_2_post(b.mlp(b.ln_2(x))))(
        x + b.ln_1_post(b.attn(b.ln_1(x), pos))
    ),
}
BLOCK_NORMS = {
    "pre": (Block, ["ln_1", "ln_2"]),
    "post": (PostNormBlock, ["ln_1", "ln_2"]),
    "sandwich": (SandwichBlock, ["ln_1", "ln_1_post", "ln_2", "ln_2_post"]),
}


@pytest.mark.parametrize("placement", ["pre", "post", "sandwich"])
def test_block_placement_matches_manual_composition(placement):
    cfg = tiny(BASE, norm="rmsnorm", norm_placement=placement, mlp="swiglu")
    block = randomize_(build_block(cfg, 0), **RANDOM)
    cls, norms = BLOCK_NORMS[placement]
    assert type(block) is cls
    assert sorted(n for n, _ in block.named_children() if n.startswith("ln")) == sorted(norms)
    x, pos = randn(2, 7, 32), torch.arange(7)
    with torch.no_grad():
        out = block(x, pos)
        torch.testing.assert_close(out, MANUAL_BLOCKS[placement](block, x, pos), atol=0, rtol=0)
        for other, manual in MANUAL_BLOCKS.items():  # the placements really differ
            if other != placement and set(BLOCK_NORMS[other][1]) <= set(norms):
                assert not torch.allclose(out, manual(block, x, pos), atol=1e-3)


# ----------------------------------------------------------------------------- embeddings, logits
@pytest.mark.parametrize("n_embd", [32, 48])  # sqrt(48) is not exact in bf16
def test_embed_scale(n_embd):
    cfg = tiny(BASE, n_embd=n_embd, embed_scale=True)
    model = GPT(cfg).eval()
    seen = []
    model.transformer.h[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    idx = torch.randint(0, 64, (2, 9))
    model(idx)
    torch.testing.assert_close(seen[0], model.transformer.wte.weight[idx] * math.sqrt(n_embd))
    assert type(GPT(tiny(BASE, n_embd=n_embd)).transformer.wte) is nn.Embedding  # off by default
    # bf16: the factor is rounded to bf16 first, as HF Gemma does
    wte = model.transformer.wte.bfloat16()
    expected = wte.weight[idx] * torch.tensor(math.sqrt(n_embd), dtype=torch.bfloat16)
    assert torch.equal(wte(idx), expected)


def test_final_softcap():
    raw_model = GPT(tiny(BASE)).eval()
    idx, targets = torch.randint(0, 64, (2, 9)), torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        raw = raw_model(idx)
    cap = raw.abs().max().item() / 3  # a third of the largest logit: the cap must bite
    capped = GPT(tiny(BASE, final_softcap=cap)).eval()
    capped.load_state_dict(raw_model.state_dict())
    with torch.no_grad():
        logits, loss = capped(idx), capped(idx, targets)[1]["loss"]
    assert logits.abs().max() < cap
    assert logits.abs().max() > 0.9 * cap
    torch.testing.assert_close(logits, cap * torch.tanh(raw / cap), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), targets.flatten()))


def test_untied_embeddings():
    tied, untied = GPT(tiny(BASE)), GPT(tiny(BASE, tie_embeddings=False))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert untied.num_params() - tied.num_params() == 64 * 32


# ----------------------------------------------------------------------------- every combination
NORM_PLACEMENTS = {"pre": 2, "post": 2, "sandwich": 4}  # norms per block


def expected_params(cfg: ModelConfig) -> int:
    d, V, L, hidden = cfg.n_embd, cfg.padded_vocab_size, cfg.n_layer, cfg.mlp_hidden
    q, kv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    b = int(cfg.bias)
    norm = d * (1 + b * (cfg.norm == "layernorm"))  # RMSNorm never has a shift
    attn = d * (q + 2 * kv) + b * (q + 2 * kv) + q * d + b * d
    up = 2 * hidden if cfg.mlp in ("swiglu", "geglu", "swiglu_clamped") else hidden  # GLU: gate and up
    mlp = d * up + b * up + hidden * d + b * d
    block = attn + mlp + NORM_PLACEMENTS[cfg.norm_placement] * norm
    embeddings = V * d * (1 if cfg.tie_embeddings else 2) + cfg.block_size * d * (cfg.pos == "learned")
    return embeddings + L * block + norm


# (norm, norm_unit_offset, norm_placement, mlp, tie_embeddings, bias): every placement x mlp pair,
# every value of every field, and the named recipes (Llama, OLMo 2, Gemma 2, nanochat).
COMBOS = [
    ("layernorm", False, "pre", "gelu", True, True),  # GPT-2
    ("rmsnorm", False, "pre", "swiglu", False, False),  # Llama / Qwen3 / Mistral
    ("rmsnorm", False, "post", "swiglu", False, False),  # OLMo 2
    ("rmsnorm", True, "sandwich", "geglu", True, False),  # Gemma 2/3
    ("rmsnorm", False, "pre", "relu2", False, False),  # nanochat (its norm has no scale)
    ("layernorm", True, "pre", "geglu", True, True),
    ("layernorm", False, "post", "gelu", True, True),
    ("rmsnorm", True, "post", "relu2", True, True),
    ("layernorm", True, "post", "geglu", False, False),
    ("layernorm", False, "sandwich", "swiglu", True, True),
    ("rmsnorm", False, "sandwich", "gelu", False, True),
    ("layernorm", True, "sandwich", "relu2", False, False),
    ("rmsnorm", False, "pre", "swiglu_clamped", False, True),  # gpt-oss (its MLPs have biases)
]
COMBO_IDS = ["-".join(str(v) for v in c) for c in COMBOS]


def combo_cfg(norm, unit_offset, placement, mlp, tie, bias, **overrides) -> ModelConfig:
    return tiny(
        BASE, norm=norm, norm_unit_offset=unit_offset, norm_placement=placement, mlp=mlp,
        tie_embeddings=tie, bias=bias, **overrides,
    )


def test_combos_cover_every_choice():
    for i, field in enumerate(["norm", "norm_unit_offset", "norm_placement", "mlp"]):
        choices = {True, False} if field == "norm_unit_offset" else set(
            ModelConfig.__dataclass_fields__[field].type.__args__
        )
        assert {c[i] for c in COMBOS} == choices, field
    assert {(c[2], c[3]) for c in COMBOS} >= {
        (p, m) for p in NORM_PLACEMENTS for m in ("gelu", "swiglu", "geglu", "relu2")
    }


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("extra", [{}, dict(pos="learned", n_kv_head=2, mlp_hidden=40)], ids=["", "gqa"])
def test_param_count(combo, extra):
    cfg = combo_cfg(*combo, **extra)
    with torch.device("meta"):
        model = GPT(cfg)
    assert sum(p.numel() for p in model.parameters()) == expected_params(cfg)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
def test_every_combination_overfits_one_batch(combo):
    torch.manual_seed(0)
    cfg = combo_cfg(*combo, pos="learned", embed_scale=combo[1], final_softcap=30.0 * combo[1])
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    idx, targets = torch.randint(0, 64, (2, 32), generator=g), torch.randint(0, 64, (2, 32), generator=g)
    losses = []
    for _ in range(100):
        loss = model(idx, targets)[1]["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(64), rel=0.2)
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_sandwich_block_matches_hf_gemma2_decoder_layer():
    """A Gemma 2 layer with rotary embeddings switched off (cos = 1, sin = 0) and no attention
    softcap: checks the four norm names, unit-offset RMSNorm and GeGLU together in one layer."""
    from transformers import Gemma2Config
    from transformers.models.gemma2.modeling_gemma2 import Gemma2DecoderLayer

    hf_cfg = Gemma2Config(
        hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, query_pre_attn_scalar=8, attn_logit_softcapping=None, rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh", layer_types=["full_attention"], num_hidden_layers=1,
    )
    hf_cfg._attn_implementation = "eager"
    ref = randomize_(Gemma2DecoderLayer(hf_cfg, 0), **RANDOM)
    cfg = tiny(
        BASE, norm="rmsnorm", norm_unit_offset=True, norm_eps=1e-6, norm_placement="sandwich",
        mlp="geglu", mlp_hidden=48, n_kv_head=2, bias=False,
    )
    block = build_block(cfg, 0).eval()
    a, names = ref.self_attn, dict(
        ln_1="input_layernorm", ln_1_post="post_attention_layernorm",
        ln_2="pre_feedforward_layernorm", ln_2_post="post_feedforward_layernorm",
    )
    with torch.no_grad():
        block.attn.c_attn.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        block.attn.c_proj.weight.copy_(a.o_proj.weight)
        copy_glu(block.mlp, ref.mlp)
        for ours, theirs in names.items():
            getattr(block, ours).weight.copy_(getattr(ref, theirs).weight)
        B, T = 2, 7
        x = randn(B, T, 32)
        no_rotation = (torch.ones(B, T, 8), torch.zeros(B, T, 8))
        mask = torch.full((T, T), float("-inf")).triu(1)[None, None]  # (1, 1, T, T) additive
        expected = ref(x, position_embeddings=no_rotation, attention_mask=mask)
        torch.testing.assert_close(block(x, torch.arange(T)), expected, atol=1e-5, rtol=0)
