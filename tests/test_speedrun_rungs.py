"""The speedrun rungs (docs/speedrun.md): value embeddings, x0 lambdas, U-net skips, zero-initialised
residual projections and Canon-B's causal conv on attention's q, k, v.

Each is checked against the formula of its module docstring written out here (one attention layer
recomputed with the value embedding or the convolution added by hand; the whole stream recomputed
block by block), counts its parameters as model/accounting.py says, trains every parameter, decodes
through the cache as without it, and, switched off, leaves the model as it was before the rungs:
the same parameter names, the same draws from the generator, the same logits. CPU, fp32.
Also train.eval_seed: the validation batches' own seed, so runs of different seeds are scored alike.
"""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from model import GPT
from model.accounting import param_count
from model.config import DeltaNetConfig, MoEConfig
from tiny_run import chunked_logits, randomize_, tiny, tokens
from train.config import ConfigError, load_config
from train.data import get_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TOGGLES = {
    "value_embeds": dict(value_embeds=True),
    "x0_lambdas": dict(x0_lambdas=True),
    "unet_skips": dict(unet_skips=True),
    "zero_init_proj": dict(zero_init_proj=True),
    "attn_conv": dict(attn_conv=4),
    "all": dict(value_embeds=True, x0_lambdas=True, unet_skips=True, zero_init_proj=True, attn_conv=3),
}
OFF = dict(value_embeds=False, x0_lambdas=False, unet_skips=False, zero_init_proj=False, attn_conv=0)
DELTANET = dict(n_layer=4, linear_attention="gated_deltanet", deltanet=DeltaNetConfig(full_every=2))
STACKS = {  # tiny() is GQA: 4 query heads, 2 key/value heads
    "gqa": {},
    "mha": dict(n_kv_head=4),
    "mtp": dict(mtp_depth=1),
    "deltanet": DELTANET,
    "odd": dict(n_layer=5),
}
TOL = dict(atol=1e-5, rtol=1e-5)


def grid():
    return [pytest.param({**toggle, **stack}, id=f"{t}-{s}") for t, toggle in TOGGLES.items()
            for s, stack in STACKS.items()]


# ----------------------------------------------------------------------------- every toggle
@pytest.mark.parametrize("overrides", grid())
def test_shapes_gradients_and_parameter_count(overrides):
    """Logits (B, T, vocab); a finite loss whose backward reaches every parameter (MTP's term
    included); as many parameters as model/accounting.py counts."""
    cfg = tiny(**overrides)
    model = randomize_(GPT(cfg), std=0.2).train()
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    idx = tokens(12)
    with torch.no_grad():
        assert model.eval()(idx).shape == (2, 12, 97)
    loss = sum(model.train()(idx[:, :-1], idx[:, 1:])[1].values())
    assert torch.isfinite(loss)
    loss.backward()
    idle = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not idle, idle


TINY_NAMES = ["transformer.wte.weight"] + [
    f"transformer.h.{i}.{name}" for i in range(2)
    for name in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias")
] + ["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"]


def test_off_adds_no_parameter_to_gpt2():
    assert list(GPT(tiny()).state_dict()) == TINY_NAMES
    assert list(GPT(tiny(**OFF)).state_dict()) == TINY_NAMES


@pytest.mark.parametrize("stack", ["gqa", "mtp", "deltanet"])
def test_off_is_the_model_as_before(stack):
    """The toggles written out as off build the model of the config that does not name them: the
    same weights from the same draws, the generator left in the same state, the same logits.
    (Before these rungs, torch.manual_seed(0); GPT(tiny()) gave bit-identical weights and logits.)"""
    def build(**fields):
        torch.manual_seed(0)
        model = GPT(tiny(**STACKS[stack], **fields)).eval()
        return model, torch.get_rng_state()

    (default, rng), (off, rng_off) = build(), build(**OFF)
    assert torch.equal(rng, rng_off)
    assert default.config == off.config
    a, b = default.state_dict(), off.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert default.value_embeds is None and default.streams is None
    assert all(getattr(m, "canon", None) is None and getattr(m, "ve_gate", None) is None for m in default.modules())
    with torch.no_grad():
        assert torch.equal(default(tokens(16)), off(tokens(16)))


@pytest.mark.parametrize("field, value", [("value_embeds", True), ("attn_conv", 3)])
def test_mla_is_refused(field, value):
    with pytest.raises(ValueError, match=f"model.{field}") as err:
        tiny(attention="mla", n_kv_head=4, **{field: value})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, value", [
    (dict(value_embeds=1), 1), (dict(x0_lambdas="yes"), "yes"), (dict(unet_skips=0), 0),
    (dict(zero_init_proj=None), None)])
def test_switches_must_be_booleans(overrides, value):
    with pytest.raises(ValueError, match=f"model.{next(iter(overrides))} must be true or false"):
        tiny(**overrides)


def test_attn_conv_width_is_checked():
    with pytest.raises(ValueError, match="model.attn_conv"):
        tiny(attn_conv=-1)


# ----------------------------------------------------------------------------- value embeddings
@pytest.mark.parametrize("overrides, layers", [
    (dict(n_layer=4), [1, 3]),
    (dict(n_layer=5), [0, 2, 4]),
    (dict(n_layer=1), [0]),
    (DELTANET, [1, 3]),  # full attention at 1 and 3
    (dict(n_layer=6, linear_attention="gated_deltanet", deltanet=DeltaNetConfig(full_every=3)), [5]),  # 2 skipped
    (dict(n_layer=4, mtp_depth=2), [1, 3]),  # never an MTP block
])
def test_value_embeddings_sit_on_alternate_attention_layers_from_the_last(overrides, layers):
    model = GPT(tiny(value_embeds=True, **overrides))
    names = [n for n, _ in model.named_parameters()]
    assert model.value_embeds.layers == layers
    assert [n for n in names if n.startswith("value_embeds.")] == [f"value_embeds.tables.{i}.weight" for i in layers]
    assert [n for n in names if "ve_gate" in n] == [f"transformer.h.{i}.attn.ve_gate.weight" for i in layers]
    assert all(model.value_embeds.tables[str(i)].weight.shape == (128, 2 * 8) for i in layers)  # padded vocab
    assert all(model.transformer.h[i].attn.ve_gate.weight.shape == (2, 32) for i in layers)
    assert all(not m.ve_gate.weight.any() for m in model.modules() if getattr(m, "ve_gate", None) is not None)


class PlusColumns(nn.Module):
    """A linear layer's output plus a fixed tensor: the attention's c_attn with the values moved by hand."""

    def __init__(self, linear: nn.Linear, extra: torch.Tensor):
        super().__init__()
        self.linear, self.extra = linear, extra

    def forward(self, x):
        return self.linear(x) + self.extra


@pytest.mark.parametrize("weights", ["init", "random"])
def test_value_embedding_is_added_to_the_values_through_its_gate(weights):
    """v <- v + 2 sigmoid(W_g x[..., :32]) * ve, one gate per key/value head: one attention layer
    (n_embd 64, so the gate reads half the channels) against the same layer without a value
    embedding whose c_attn output has the gated table rows added to its v columns by hand. At init
    W_g = 0, so the gate is exactly 1 and v is v + ve."""
    torch.manual_seed(0)
    model = GPT(tiny(n_embd=64, value_embeds=True)).eval()
    if weights == "random":
        randomize_(model)
    attn = model.transformer.h[1].attn
    idx, x = tokens(9), torch.randn(2, 9, 64, generator=torch.Generator().manual_seed(1))
    ve = model.value_embeds.tables["1"].weight[idx]  # (B, T, n_kv_head * head_dim)
    assert torch.equal(model.value_embeds(idx)[1], ve) and model.value_embeds(idx)[0] is None
    if weights == "init":
        assert not attn.ve_gate.weight.any()
        gate = torch.ones(2, 9, 2)
    else:
        gate = 2 * torch.sigmoid(x[..., :32] @ attn.ve_gate.weight.T)  # (B, T, n_kv_head)
    extra = torch.cat([torch.zeros(2, 9, 64 + 32), gate.repeat_interleave(16, dim=-1) * ve], dim=-1)
    by_hand = copy.deepcopy(attn)
    by_hand.ve_gate, by_hand.c_attn = None, PlusColumns(attn.c_attn, extra)
    positions = torch.arange(9)
    with torch.no_grad():
        got, want = attn(x, positions, None, ve), by_hand(x, positions)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(got, attn(x, positions), atol=1e-3)  # the embedding matters


def test_zero_value_tables_give_the_model_without_them():
    """The value embeddings reach the logits only through the tables: zeroed, the model computes
    what the same weights compute without the rung."""
    plain = randomize_(GPT(tiny(n_layer=3)))
    model = GPT(tiny(n_layer=3, value_embeds=True)).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    new = ["value_embeds.tables.0.weight", "value_embeds.tables.2.weight",
           "transformer.h.0.attn.ve_gate.weight", "transformer.h.2.attn.ve_gate.weight"]
    assert not unexpected and sorted(missing) == sorted(new)
    with torch.no_grad():
        for table in model.value_embeds.tables.values():
            table.weight.zero_()
        torch.testing.assert_close(model(tokens(10)), plain(tokens(10)), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- x0 lambdas, U-net skips
@torch.no_grad()
def stream_by_hand(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """GPT's logits with the blocks run one by one: x0 the embedding; before block i,
    x = a_i x + b_i x0 (a = 1, b = 0 without x0 lambdas); a block i of the second half also gets
    w_j times the output of its mirror j = n - 1 - i of the first half."""
    t, s = model.transformer, model.streams
    n, T = len(t.h), idx.shape[1]
    a = s.resid_lambdas if s.resid_lambdas is not None else torch.ones(n)
    b = s.x0_lambdas if s.x0_lambdas is not None else torch.zeros(n)
    x0 = t.wte(idx)
    x, outputs = x0, []
    for i, block in enumerate(t.h):
        x = a[i] * x + b[i] * x0
        mirror = n - 1 - i
        if s.skip_weights is not None and mirror < n // 2:
            x = x + s.skip_weights[mirror] * outputs[mirror]
        x = block(x, torch.arange(T))
        outputs.append(x)
    return model.lm_head(t.ln_f(x))[..., : model.config.vocab_size]


@pytest.mark.parametrize("n_layer", [4, 5])
@pytest.mark.parametrize("routes", ["x0_lambdas", "unet_skips", "both"])
def test_streams_equal_the_blocks_run_by_hand(routes, n_layer):
    on = dict(x0_lambdas=True, unet_skips=True) if routes == "both" else {routes: True}
    torch.manual_seed(0)
    model = GPT(tiny(n_layer=n_layer, **on)).eval()
    s = model.streams
    if "x0_lambdas" in on:  # nanochat's init: a = 1, b = 0.1
        assert torch.equal(s.resid_lambdas, torch.ones(n_layer))
        assert torch.equal(s.x0_lambdas, torch.full((n_layer,), 0.1))
    else:
        assert s.resid_lambdas is None and s.x0_lambdas is None
    if "unet_skips" in on:
        assert torch.equal(s.skip_weights, torch.ones(n_layer // 2))
    else:
        assert s.skip_weights is None
    idx = tokens(11)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), stream_by_hand(model, idx), atol=1e-6, rtol=0)
    randomize_(model)  # the scalars too: every route's weight away from its init
    with torch.no_grad():
        torch.testing.assert_close(model(idx), stream_by_hand(model, idx), atol=1e-5, rtol=1e-5)


def test_x0_lambdas_at_init_scale_the_embedding_into_the_first_block():
    """Before block 0, x = a_0 x0 + b_0 x0 = 1.1 x0 at init: the 1-block model equals the plain one
    fed 1.1 times the embedding."""
    torch.manual_seed(0)
    plain = GPT(tiny(n_layer=1)).eval()
    model = GPT(tiny(n_layer=1, x0_lambdas=True)).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    idx = tokens(7)
    with torch.no_grad():
        x = plain.transformer.h[0](1.1 * plain.transformer.wte(idx), torch.arange(7))
        want = plain.lm_head(plain.transformer.ln_f(x))[..., :97]
        torch.testing.assert_close(model(idx), want, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- zero-initialised projections
@pytest.mark.parametrize("stack", [
    pytest.param(dict(), id="gqa"),
    pytest.param(DELTANET, id="deltanet"),
    pytest.param(dict(n_layer=3, moe=MoEConfig(n_expert=4, top_k=2, expert_hidden=16, n_shared=1)), id="moe"),
    pytest.param(dict(mtp_depth=1, attn_gate=True), id="mtp-gate"),
    pytest.param(dict(attention="mla", n_kv_head=4), id="mla"),
])
def test_zero_init_proj_starts_every_block_as_the_identity(stack):
    """Every residual output projection (attention's and the MLP's c_proj, the DeltaNet's out_proj,
    the experts' stacked c_proj) is exactly 0, everything else as before, so the logits are
    lm_head(ln_f(embedding))."""
    torch.manual_seed(0)
    model = GPT(tiny(zero_init_proj=True, **stack)).eval()
    torch.manual_seed(0)
    before = GPT(tiny(**stack))
    residual = [n for n, _ in model.named_parameters()
                if n.endswith(("c_proj.weight", "out_proj.weight", "experts.c_proj"))]
    assert residual and len(residual) >= 2 * model.config.n_layer
    ref = dict(before.named_parameters())
    for name, p in model.named_parameters():
        if name in residual:
            assert not p.any(), name
            assert ref[name].std() > 0, name
        else:
            assert torch.equal(p, ref[name]), name
    idx = tokens(10)
    with torch.no_grad():
        want = model.lm_head(model.transformer.ln_f(model.transformer.wte(idx)))[..., :97]
        torch.testing.assert_close(model(idx), want, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- Canon-B
class ShiftedTaps(nn.Module):
    """h + sum_{j < K} w_j * h_{t-j} on a linear layer's output h, written with explicit shifts:
    w_j is conv1d's tap K - 1 - j (PyTorch's conv1d is a cross-correlation)."""

    def __init__(self, linear: nn.Linear, weight: torch.Tensor):
        super().__init__()
        self.linear, self.weight = linear, weight  # weight: (dim, 1, K)

    def forward(self, x):
        h = self.linear(x)  # (B, T, dim)
        K, T = self.weight.shape[-1], h.shape[1]
        out = h.clone()
        for j in range(K):
            shifted = torch.cat([h.new_zeros(h.shape[0], j, h.shape[2]), h[:, : T - j]], dim=1)[:, :T]
            out = out + self.weight[:, 0, K - 1 - j] * shifted
        return out


@pytest.mark.parametrize("width", [1, 2, 4])
def test_attn_conv_is_a_causal_depthwise_conv_with_a_residual_on_qkv(width):
    model = randomize_(GPT(tiny(attn_conv=width)))
    attn = model.transformer.h[0].attn
    assert attn.canon.conv1d.weight.shape == (4 * 8 + 2 * 2 * 8, 1, width)
    by_hand = copy.deepcopy(attn)
    by_hand.canon, by_hand.c_attn = None, ShiftedTaps(attn.c_attn, attn.canon.conv1d.weight)
    x, positions = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1)), torch.arange(7)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, positions), by_hand(x, positions), atol=1e-5, rtol=1e-5)
        # causal: the future leaves the past alone
        y = x.clone()
        y[:, 4:] += 1.0
        assert torch.equal(attn(y, positions)[:, :4], attn(x, positions)[:, :4])


@pytest.mark.parametrize("overrides", [
    pytest.param(dict(attn_conv=4), id="attn_conv"),
    pytest.param(dict(attn_conv=4, window=8, global_every=2), id="attn_conv-window"),
    pytest.param(dict(value_embeds=True, n_layer=3), id="value_embeds"),
    pytest.param(dict(x0_lambdas=True, unet_skips=True, n_layer=5), id="x0_lambdas-unet_skips"),
    pytest.param({**TOGGLES["all"], **DELTANET}, id="all-deltanet"),
])
def test_cached_decode_equals_the_full_forward(overrides):
    """Prefill, then single tokens (fewer than the conv's width), then a chunk: the full forward's
    logits; greedy generation gives the same tokens with and without the cache."""
    model = randomize_(GPT(tiny(**overrides)), std=0.2)
    idx = tokens(40)
    with torch.no_grad():
        full = model(idx)
    torch.testing.assert_close(chunked_logits(model, idx, [6, 1, 1, 1, 2] + [1] * 20 + [9]), full, **TOL)
    prompt = idx[:, :5]
    cached = model.generate(prompt, 25, temperature=0.0)
    assert torch.equal(cached, model.generate(prompt, 25, temperature=0.0, use_cache=False))


def test_attn_conv_decodes_through_a_quantized_cache():
    """int8 keys and values: the conv's past lives beside the quantized cache. Within the
    full-precision residual, greedy tokens equal the uncached ones; past it (groups of 16,
    residual 8), the logits stay near the full forward's."""
    model = randomize_(GPT(tiny(attn_conv=4)), std=0.2)
    prompt = tokens(5)
    cached = model.generate(prompt, 20, temperature=0.0, kv_dtype="int8")
    assert torch.equal(cached, model.generate(prompt, 20, temperature=0.0, use_cache=False))
    idx = tokens(48)
    with torch.no_grad():
        full = model(idx)
    got = chunked_logits(model, idx, [20] + [1] * 28, kv_dtype="int8", kv_group=16, kv_residual=8)
    torch.testing.assert_close(got, full, atol=0.05, rtol=0)
    assert (got.argmax(-1) == full.argmax(-1)).float().mean() > 0.95


def test_attn_conv_refuses_a_static_cache_in_one_line():
    model = GPT(tiny(attn_conv=4))
    for attempt in (lambda: model.new_cache(1, static=True),
                    lambda: model.generate(tokens(3, B=1), 2, temperature=0.0, compile=True)):
        with pytest.raises(ValueError, match="model.attn_conv") as err:
            attempt()
        assert "\n" not in str(err.value)


def test_attn_conv_refuses_speculative_decoding_in_one_line():
    """The conv's past cannot be rolled back past a rejected guess, like a recurrent state."""
    model = randomize_(GPT(tiny(attn_conv=4)), std=0.2)
    draft = randomize_(GPT(tiny(n_layer=1)), seed=3, std=0.2)
    with pytest.raises(ValueError, match="model.attn_conv") as err:
        model.generate(tokens(5, B=1), 20, temperature=0.0, draft=draft)
    assert "\n" not in str(err.value)


def test_attn_conv_refuses_the_mtp_draft_in_one_line():
    model = randomize_(GPT(tiny(attn_conv=4, mtp_depth=1)), std=0.2)
    with pytest.raises(ValueError, match="model.attn_conv"):
        model.generate(tokens(5, B=1), 20, temperature=0.0, draft="mtp")


# ----------------------------------------------------------------------------- train.eval_seed
class Recorder(nn.Module):
    """Stands in for the model in evaluate(): keeps the batches it is given."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x, y):
        self.batches.append((x, y))
        return None, {"loss": x.float().mean()}


def evaluated_batches(*overrides: str) -> list:
    from train.trainer import evaluate

    cfg = load_config(None, ["--model.block_size=16", "--train.batch_size=3", "--train.eval_batches=4", *overrides])
    recorder = Recorder()
    evaluate(recorder, VAL, cfg, torch.device("cpu"), "fp32")
    return recorder.batches


VAL = SimpleNamespace(val=np.arange(5000, dtype=np.uint16) % 257, bytes_per_token=lambda split: 1.0)


def test_eval_seed_picks_the_validation_batches_whatever_the_run_seed():
    """Batch i of an evaluation is get_batch's batch (eval_seed, 1, i); eval_seed -1 keeps train.seed."""
    expected = [get_batch(VAL.val, 3, 16, (7, 1, i)) for i in range(4)]
    runs = [evaluated_batches("--train.seed=1", "--train.eval_seed=7"),
            evaluated_batches("--train.seed=2", "--train.eval_seed=7"),
            evaluated_batches("--train.seed=7")]  # eval_seed -1, the default
    for batches in runs:
        assert len(batches) == 4
        assert all(torch.equal(x, ex) and torch.equal(y, ey) for (x, y), (ex, ey) in zip(batches, expected))
    other = evaluated_batches("--train.seed=7", "--train.eval_seed=8")
    assert not torch.equal(other[0][0], expected[0][0])


def test_runs_of_different_seeds_score_one_model_alike_with_one_eval_seed():
    from train.trainer import evaluate

    model = randomize_(GPT(tiny(vocab_size=257, block_size=16)), std=0.1)

    def val_loss(*overrides: str) -> float:
        cfg = load_config(None, ["--model.block_size=16", "--train.batch_size=3", "--train.eval_batches=3", *overrides])
        return evaluate(model, VAL, cfg, torch.device("cpu"), "fp32")["val_loss"]

    same = val_loss("--train.seed=1", "--train.eval_seed=5")
    assert val_loss("--train.seed=2", "--train.eval_seed=5") == same == val_loss("--train.seed=5")
    assert val_loss("--train.seed=1") != same


def test_eval_seed_below_minus_one_is_refused():
    with pytest.raises(ConfigError, match="train.eval_seed must be in") as err:
        load_config(None, ["--train.eval_seed=-2"])
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- sequence-length warm-up
def test_sequence_length_grows_linearly_over_the_warm_up():
    cfg = load_config(None, ["--model.block_size=256", "--train.seq_warmup_steps=4", "--train.seq_warmup_start=64"])
    assert [cfg.seq_len_at(s) for s in range(6)] == [64, 112, 160, 208, 256, 256]
    off = load_config(None, ["--model.block_size=256"])
    assert {off.seq_len_at(s) for s in range(10)} == {256}  # off: every step at seq_len
    with pytest.raises(ConfigError, match="train.seq_warmup_start must be >= 8"):
        load_config(None, ["--train.seq_warmup_start=4"])


def test_batch_size_grows_linearly_over_its_warm_up():
    cfg = load_config(None, ["--train.batch_size=16", "--train.batch_warmup_steps=4", "--train.batch_warmup_start=4"])
    assert [cfg.rows_at(s) for s in range(6)] == [4, 7, 10, 13, 16, 16]
    assert {load_config(None, ["--train.batch_size=16"]).rows_at(s) for s in range(10)} == {16}  # off
    with pytest.raises(ConfigError, match="train.batch_warmup_start must be >= 1"):
        load_config(None, ["--train.batch_warmup_start=0"])


@pytest.mark.parametrize("warm, tokens", [
    (["--train.seq_warmup_steps=2", "--train.seq_warmup_start=8"], [4 * 8, 4 * 16, 4 * 32, 4 * 32]),
    (["--train.batch_warmup_steps=2", "--train.batch_warmup_start=1"], [1 * 32, 2 * 32, 4 * 32, 4 * 32]),
], ids=["sequence", "batch"])
def test_a_warm_up_trains_small_batches_first_counts_their_tokens_and_resumes_exactly(tmp_path, corpus, warm, tokens,
                                                                                     monkeypatch):
    from tiny_run import TINY, metrics, numerics
    from train import trainer as trainer_module
    from train.trainer import Trainer

    shapes, get_batch = [], trainer_module.get_batch
    monkeypatch.setattr(trainer_module, "get_batch", lambda data, rows, seq_len, key: (
        shapes.append(rows * seq_len) if key[1] == 0 else None, get_batch(data, rows, seq_len, key))[1])

    def run(out, *extra):
        Trainer(load_config(None, [*TINY, *corpus, *warm, "--train.eval_interval=0", f"--train.out_dir={out}",
                                   *extra])).fit()
        return metrics(out)

    straight = run(tmp_path / "straight", "--train.max_steps=4")
    # rows x length per micro-batch (4 x 32 after the warm-up), x accum 2, summed over the steps
    assert [r["tokens"] for r in straight] == [2 * sum(tokens[:s + 1]) for s in range(4)]
    assert shapes == [n for n in tokens for _ in range(2)]  # the micro-batches as trained
    run(tmp_path / "cut", "--train.max_steps=1", "--train.ckpt_interval=1")  # inside the warm-up

    def trained(records):  # the cut run's step 1 was its last, so it also evaluated
        return [{k: v for k, v in r.items() if not k.startswith("val_")} for r in numerics(records)]

    assert trained(run(tmp_path / "cut", "--train.max_steps=4")) == trained(straight)
