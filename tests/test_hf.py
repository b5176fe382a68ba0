"""Parity with HF transformers on tiny random models, via the production converter (model/hf.py).

CPU, fp32, no downloads. Every HF weight is randomized, norms included, so a missing copy shows up
as a logit mismatch (a LayerNorm left at ones/zeros would hide it).
"""

import dataclasses
import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from hf_parity import assert_same_tensors  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402
from model.hf import FAMILIES, concat, config_from_hf, config_to_hf, from_hf, to_hf  # noqa: E402
from tiny_run import tokens  # noqa: E402

ATOL = 1e-4
BATCH = dict(T=32, B=3, vocab=100, seed=1)  # tokens(**BATCH), in tiny_hf_config's vocabulary


def tiny_hf_config(**overrides) -> GPT2Config:
    kwargs = dict(
        n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32,  # 100: padding exercised
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )
    return GPT2Config(**{**kwargs, **overrides})


def random_hf_model(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_hf_config(**overrides))
    model.set_attn_implementation("eager")  # the reference computation, written out
    with torch.no_grad():
        for p in model.parameters():  # every weight, norm scales and biases included
            torch.nn.init.normal_(p, mean=0.0, std=0.1)
    return model.eval()


def random_gpt(seed: int = 0, **overrides) -> GPT:
    kwargs = dict(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64)
    torch.manual_seed(seed)
    gpt = GPT(ModelConfig(**{**kwargs, **overrides}))
    with torch.no_grad():
        for p in gpt.parameters():
            torch.nn.init.normal_(p, mean=0.0, std=0.1)
    return gpt.eval()


@pytest.mark.parametrize("tied", [True, False])
def test_from_hf_logits_match(tied):
    hf = random_hf_model(tie_word_embeddings=tied)
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == tied
    gpt = from_hf(hf)
    assert gpt.config.tie_embeddings == tied
    assert gpt.config.padded_vocab_size == 128 and gpt.config.vocab_size == 100
    idx = tokens(**BATCH)
    with torch.no_grad():
        ours, theirs = gpt(idx), hf(idx).logits
    assert ours.shape == theirs.shape == (3, 32, 100)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    # the padding rows of our embedding are zeros and the LM head reads the same table when tied
    assert torch.all(gpt.transformer.wte.weight[100:] == 0)
    assert (gpt.lm_head.weight is gpt.transformer.wte.weight) == tied


def test_from_hf_upcast_attention_and_eps_match():
    """reorder_and_upcast_attn computes the same function (fp32 scores), so it is accepted."""
    hf = random_hf_model(reorder_and_upcast_attn=True, layer_norm_epsilon=1e-3, n_inner=80)
    gpt = from_hf(hf)
    assert gpt.config.norm_eps == 1e-3 and gpt.config.mlp_hidden == 80
    idx = tokens(**BATCH)
    with torch.no_grad():
        torch.testing.assert_close(gpt(idx), hf(idx).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_to_hf_logits_match(tied):
    gpt = random_gpt(tie_embeddings=tied, mlp_hidden=96)  # n_inner != 4 * n_embd
    hf = to_hf(gpt)
    assert not hf.training and next(hf.parameters()).dtype == torch.float32
    assert hf.config.n_inner == 96 and hf.config.tie_word_embeddings == tied
    hf.set_attn_implementation("eager")
    idx = tokens(**BATCH)
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, gpt(idx), atol=ATOL, rtol=0)


def test_to_hf_writes_our_layer_norm_epsilon():
    """A GPT-2 model whose norm_eps is not HF's default 1e-5: the HF config holds it, and HF's
    LayerNorms, computing with it, give our logits."""
    gpt = random_gpt(norm_eps=1e-3)
    hf = to_hf(gpt)
    assert hf.config.layer_norm_epsilon == 1e-3
    assert all(m.eps == 1e-3 for m in hf.modules() if isinstance(m, torch.nn.LayerNorm))
    idx = tokens(**BATCH)
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, gpt(idx), atol=ATOL, rtol=0)


def test_the_saved_config_holds_n_ctx_which_llama_cpps_converter_reads(tmp_path):
    """GPT-2's own config.json has n_ctx beside n_positions; transformers 5 reads only the latter,
    llama.cpp's convert_hf_to_gguf.py only the former (a KeyError without it)."""
    config_to_hf(dataclasses.replace(ModelConfig(), block_size=96), "gpt2").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["n_ctx"] == saved["n_positions"] == 96


def test_to_hf_keeps_dtype():
    hf = to_hf(random_gpt().to(torch.bfloat16))
    assert {p.dtype for p in hf.parameters()} == {torch.bfloat16}


def test_from_hf_keeps_dtype():
    hf = random_hf_model().to(torch.bfloat16)
    gpt = from_hf(hf)
    assert {p.dtype for p in gpt.parameters()} == {torch.bfloat16}
    assert torch.equal(gpt.transformer.h[0].attn.c_attn.weight, hf.transformer.h[0].attn.c_attn.weight.t())


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_is_bit_identical(tied):
    gpt = random_gpt(tie_embeddings=tied)
    with torch.no_grad():
        gpt.transformer.wte.weight[100:] = 0  # padding rows cannot survive HF's (vocab_size) table
        gpt.lm_head.weight[100:] = 0
    back = from_hf(to_hf(gpt))
    assert back.config == gpt.config
    assert_same_tensors(gpt, back)


def test_from_pretrained_local_dir(tmp_path):
    hf = random_hf_model(seed=3)
    hf.save_pretrained(tmp_path)
    gpt = GPT.from_pretrained(str(tmp_path))
    idx = tokens(**BATCH)
    with torch.no_grad():
        torch.testing.assert_close(gpt(idx), hf(idx).logits, atol=ATOL, rtol=0)


def test_from_pretrained_missing_path_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a directory with an HF checkpoint"):
        GPT.from_pretrained(str(tmp_path / "no_such_checkpoint"))
    with pytest.raises(ValueError, match="not a directory with an HF checkpoint"):
        GPT.from_pretrained(str(tmp_path))  # a directory, but no checkpoint in it
    (tmp_path / "config.json").write_text(tiny_hf_config().to_json_string())
    with pytest.raises(ValueError, match="cannot load HF checkpoint"):
        GPT.from_pretrained(str(tmp_path))  # a config, but no weights


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(activation_function="relu"), "activation_function"),
        (dict(activation_function="gelu"), "activation_function"),  # exact erf GELU, not tanh
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (dict(scale_attn_weights=False), "scale_attn_weights"),
        (dict(add_cross_attention=True), "add_cross_attention"),
        (dict(attn_pdrop=0.1), "attn_pdrop"),
    ],
)
def test_unrepresentable_hf_config_raises(overrides, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(tiny_hf_config(**overrides))


def test_tanh_gelu_variants_accepted():
    for act in ("gelu_new", "gelu_pytorch_tanh"):
        cfg = config_from_hf(tiny_hf_config(activation_function=act, layer_norm_epsilon=1e-6))
        assert cfg.mlp == "gelu" and cfg.norm_eps == 1e-6 and cfg.block_size == 32


@pytest.mark.parametrize(
    "overrides, field",
    [(dict(bias=False), "bias"), (dict(pos="none"), "pos"), (dict(n_kv_head=2), "n_kv_head"),
     (dict(head_dim=8), "head_dim")],
)
def test_unrepresentable_model_config_raises(overrides, field):
    cfg = ModelConfig(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64, **overrides)
    with pytest.raises(ValueError, match=f"model.{field}"):
        config_to_hf(cfg)


@pytest.mark.parametrize("overrides", [dict(zero_init_proj=True), dict(vocab_multiple=128)])
def test_settings_that_do_not_change_the_function_do_not_block_export(overrides):
    """How the weights started (zero_init_proj) and our vocabulary padding leave the model's
    function as GPT-2's: its HF config is the one of the model without them."""
    base = dict(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64)
    expected = config_to_hf(ModelConfig(**base)).to_dict()
    assert config_to_hf(ModelConfig(**base, **overrides)).to_dict() == expected


def test_every_shared_field_goes_both_ways_under_gpt2s_names():
    """Each size and setting GPT2Config holds, at a value no default has, read and written."""
    ours = dict(vocab_size=101, block_size=48, n_layer=3, n_head=2, n_embd=40, norm_eps=3e-6,
                tie_embeddings=False, init_std=0.05, mlp_hidden=72)
    theirs = dict(vocab_size=101, n_positions=48, n_layer=3, n_head=2, n_embd=40,
                  layer_norm_epsilon=3e-6, tie_word_embeddings=False, initializer_range=0.05, n_inner=72)
    hf = config_to_hf(ModelConfig(**ours))
    assert {name: getattr(hf, name) for name in theirs} == theirs
    back = config_from_hf(tiny_hf_config(**theirs))
    assert {name: getattr(back, name) for name in ours} == ours


def test_unknown_family_raises():
    with pytest.raises(ValueError, match="not supported"):
        config_from_hf(transformers.GPTNeoXConfig(vocab_size=100, hidden_size=64))


@pytest.mark.parametrize("dropped", ["transformer.ln_f.bias", "transformer.h.{i}.mlp.c_fc.bias"])
def test_incomplete_weight_map_raises(monkeypatch, dropped):
    """The completeness check itself: a table missing one row must refuse to convert."""
    family = FAMILIES["gpt2"]
    rows = [row for row in family.weights if row[0] != dropped]
    assert len(rows) == len(family.weights) - 1
    monkeypatch.setitem(FAMILIES, "gpt2", dataclasses.replace(family, weights=rows))
    name = dropped.replace("{i}", "0")
    with pytest.raises(ValueError, match=re.escape(name)):
        from_hf(random_hf_model())
    with pytest.raises(ValueError, match=re.escape(name)):
        to_hf(random_gpt())


def test_concat_transform_round_trips():
    """The hook later families use to fuse q/k/v (or gate/up) into one of our matrices."""
    qkv = concat(lambda cfg: [8, 4, 4])
    q, k, v = torch.randn(8, 6), torch.randn(4, 6), torch.randn(4, 6)
    fused = qkv.load([q, k, v], None)
    assert fused.shape == (16, 6) and torch.equal(fused[8:12], k)
    for a, b in zip(qkv.save(fused, None), [q, k, v]):
        assert torch.equal(a, b)
