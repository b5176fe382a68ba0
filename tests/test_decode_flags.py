"""The decoding flags on the command line against what the model can do: the generation defaults,
the caps train.sample announces, the flags a model refuses (exit 2, one line, in the flags' words,
before any work) and `--draft mtp`."""

import inspect

import pytest

from model import GPT
from model.config import DeltaNetConfig
from model.inference.generate import generate
from tiny_run import ROOT, cli, error_line, load_script, make, metrics, snapshot, tiny, without_torch_logs
from train import sample
from train.decoding import check_decoding
from train.errors import ConfigError
from train.trainer import Trainer


def trained(tmp_path_factory, corpus, name, *extra):
    out = tmp_path_factory.mktemp(name) / "run"
    Trainer(make(out.parent, corpus, "run", "--train.max_steps=2", "--train.ckpt_interval=2",
                 "--train.eval_interval=0", *extra)).fit()
    return out


@pytest.fixture(scope="module")
def mla_mtp(tmp_path_factory, corpus):
    """MLA with one MTP module, and a context of 16: shorter than `base`'s 32."""
    return trained(tmp_path_factory, corpus, "mla_mtp", "--model.attention=mla", "--model.mtp_depth=1",
                   "--model.block_size=16")


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory, corpus):
    """Gated DeltaNet at layer 0 (no static cache), MLA at layer 1, one MTP module."""
    return trained(tmp_path_factory, corpus, "hybrid", "--model.linear_attention=gated_deltanet",
                   "--model.deltanet.full_every=2", "--model.attention=mla", "--model.mtp_depth=1")


def test_the_cli_samples_with_generates_defaults():
    args = sample.parse_args(["RUN"])
    for function in (GPT.generate, generate):
        defaults = inspect.signature(function).parameters
        assert (args.temperature, args.top_k) == (defaults["temperature"].default, defaults["top_k"].default)
    assert (args.temperature, args.top_k) == (0.8, 50)  # what README shows


GREEDY = ["--prompt", "ab", "--temperature", "0", "--no_stop"]


def test_sample_refuses_what_the_layers_cannot_serve_in_the_flags_words(base, mla_mtp, hybrid, capsys):
    cases = [
        (base, ["--draft", "mtp", "--n_draft", "2"], "--draft mtp drafts with the model's multi-token-prediction "
                                                     "modules, and this run has none (model.mtp_depth = 0)"),
        (base, ["--compile", "--kv_dtype", "int8"], "--compile decodes through a static cache in the compute dtype"),
    ]
    for run, flags, message in cases:
        before = snapshot(run)
        code, out, err = cli(capsys, run, *GREEDY, *flags, entry=sample.main)
        assert code == 2 and message in error_line(err), (flags, err)
        assert err.count("\n") == 1 and out == "" and snapshot(run) == before, flags
        assert "=None" not in err and "=False" not in err and "=True" not in err


def test_sample_quantizes_mlas_latent_cache(mla_mtp, hybrid, capsys, monkeypatch):
    """--kv_dtype on MLA layers (alone, and beside Gated DeltaNet ones): a quantized latent cache,
    rc 0, and the full-precision greedy tokens (these contexts end before kv_residual + kv_group
    tokens, when quantizing starts; tests/test_generate.py and tests/test_mla.py measure the error)."""
    import model.inference.cache

    built = []

    class Recorded(model.inference.cache.QuantizedKV):
        def __init__(self, spec, heads, layouts, bits):
            super().__init__(spec, heads, layouts, bits)
            built.append((bits, [type(t).__name__ for t in layouts]))

    monkeypatch.setattr(model.inference.cache, "QuantizedKV", Recorded)
    for run, kv_dtype, bits in ((mla_mtp, "int8", 8), (hybrid, "int4", 4)):
        built.clear()
        plain = cli(capsys, run, *GREEDY, "--max_new_tokens", "10", entry=sample.main)
        code, out, err = cli(capsys, run, *GREEDY, "--max_new_tokens", "10", "--kv_dtype", kv_dtype, entry=sample.main)
        assert code == plain[0] == 0 and err == "", err
        assert out == plain[1] and len(out.splitlines()[1]) >= 2
        assert built and all(entry == (bits, ["Columns"]) for entry in built), built  # MLA's latent rows


def test_a_shorter_draft_caps_the_new_tokens_with_a_note(base, mla_mtp, capsys):
    code, out, err = cli(capsys, base, *GREEDY, "--max_new_tokens", "20", "--draft", mla_mtp, entry=sample.main)
    assert code == 0, err
    assert err == (f"note: --max_new_tokens 20 capped to 14: the prompt (2 tokens) and the new tokens must fit "
                   f"the draft's (--draft {mla_mtp}) model.block_size=16\n")
    assert "up to 14 new tokens" in out.splitlines()[0]
    code, _, err = cli(capsys, base, "--prompt", "x" * 20, "--draft", mla_mtp, entry=sample.main)
    assert code == 2 and error_line(err) == (f"error: the prompt (20 tokens) fills the draft's "
                                             f"(--draft {mla_mtp}) model.block_size=16")


def test_a_hybrid_drafts_and_is_drafted_for_with_its_own_greedy_output(base, hybrid, capsys):
    """Gated DeltaNet states roll back after a rejected guess: a hybrid target with a plain draft, a
    plain target with a hybrid draft, and the hybrid's own MTP module all decode the target's greedy
    tokens, as does --compile (all refused before)."""
    for target, flags in ((hybrid, ["--draft", base, "--n_draft", "3"]), (base, ["--draft", hybrid, "--n_draft", "3"]),
                          (hybrid, ["--draft", "mtp"]), (hybrid, ["--compile"])):  # --compile: static state buffers
        plain = cli(capsys, target, *GREEDY, "--max_new_tokens", "12", entry=sample.main)
        code, out, err = cli(capsys, target, *GREEDY, "--max_new_tokens", "12", *flags, entry=sample.main)
        assert code == plain[0] == 0 and without_torch_logs(err) == plain[2] == "", err
        assert out == plain[1] and len(out.splitlines()[1]) >= 2


def test_draft_mtp_is_the_models_own_greedy_output(mla_mtp, capsys):
    plain = cli(capsys, mla_mtp, *GREEDY, "--max_new_tokens", "12", entry=sample.main)
    drafted = cli(capsys, mla_mtp, *GREEDY, "--max_new_tokens", "12", "--draft", "mtp", "--n_draft", "2",
                  entry=sample.main)
    assert plain[0] == drafted[0] == 0 and plain[2] == drafted[2] == ""
    assert drafted[1] == plain[1] and len(plain[1].splitlines()[1]) >= 2


# layer 0 Gated DeltaNet; the MTP module's block, layer 1, attention with a Canon convolution
CONV_PAST_THE_STACK = dict(n_layer=1, linear_attention="gated_deltanet", deltanet=DeltaNetConfig(full_every=2),
                           attn_conv=4, mtp_depth=1)
CONV = "the Canon convolution's state of attention"
ROLLED_BACK = "cannot be rolled back after a rejected guess, as speculative decoding needs: leave out --draft"


@pytest.mark.parametrize("target, draft, flags, message", [
    (dict(attn_conv=4), dict(n_layer=1), dict(n_draft=1),
     f"--draft RUN: {CONV} (layer 0, model.attn_conv) of the model {ROLLED_BACK}"),
    ({}, dict(n_layer=1, attn_conv=4), {},
     f"--draft RUN: {CONV} (layer 0, model.attn_conv) of the draft {ROLLED_BACK}"),
    (CONV_PAST_THE_STACK, "mtp", {}, f"--draft mtp: {CONV} (layer 1, model.attn_conv) of the model {ROLLED_BACK}"),
    (dict(n_embd=36, n_head=4, n_kv_head=2, pos="learned"), None, dict(kv_dtype="int4"),  # int4 pairs 9 channels
     "--kv_dtype int4 does not apply to attention's key/value cache (layer 0): leave out --kv_dtype"),
], ids=["target", "draft", "mtp-block", "kv_dtype"])
def test_check_decoding_names_the_layer_and_the_model_that_refuse(target, draft, flags, message):
    """Each layer of the target and of the draft is asked (with --draft mtp, the MTP modules' blocks
    too), for a rollback of n_draft positions, which a rejected guess needs even at n_draft = 1."""
    if isinstance(draft, dict):
        flags = {**flags, "draft": GPT(tiny(**draft)), "draft_name": "RUN"}
    elif draft == "mtp":
        flags = {**flags, "draft": "mtp"}
    with pytest.raises(ConfigError) as refusal:
        check_decoding(GPT(tiny(**target)), **flags)
    assert str(refusal.value) == message


def no_work(*args, **kwargs):
    pytest.fail("the benchmark started timing a combination it should have refused")


@pytest.mark.parametrize("rung, flags, message", [
    ("09-sliding-window", ["--compile", "--model.attn_conv=4"],
     "--compile has no static cache for the Canon convolution's state of attention (layer 0, model.attn_conv)"),
    ("00-gpt2", ["--compile", "--kv_dtype=int8"],
     "--compile decodes through a static cache in the compute dtype: leave out --kv_dtype or --compile"),
])
def test_bench_decode_refuses_the_same_way(capsys, monkeypatch, rung, flags, message):
    module = load_script("bench_decode")
    monkeypatch.setattr(module, "best_time", no_work)
    code, out, err = cli(capsys, ROOT / "configs" / "ladder" / f"{rung}.toml", "--context=8", *flags,
                         entry=module.main)
    assert code == 2 and error_line(err).startswith(f"error: {message}") and out == ""


def test_eval_kv_cache_prints_every_format_for_a_hybrid_with_mla(hybrid, capsys):
    code, out, err = cli(capsys, hybrid, "--batches=1", "--device=cpu", entry=load_script("eval_kv_cache").main)
    assert code == 0 and err == "", err
    rows = [line.split(" | ") for line in out.splitlines()[3:]]
    assert [row[0] for row in rows] == ["| none", "| int8", "| int4"]
    loss, bpb, change = map(float, [rows[0][1], rows[0][2], rows[0][3].split()[0]])
    assert loss > 0 and bpb > 0 and change == 0
    sizes = [float(row[4].split()[0]) for row in rows]
    assert sizes[0] == 1.0 and 0 < sizes[2] < sizes[1] < 1  # int8 and int4 latents, scales included
    for row in rows[1:]:
        assert float(row[1]) > 0 and float(row[2]) > 0


def test_eval_kv_cache_scores_the_batches_the_trainer_evaluates(tmp_path, corpus, capsys):
    """A run with its own train.eval_seed: the script's plain forward is the trainer's val loss."""
    out_dir = tmp_path / "seeded"
    Trainer(make(tmp_path, corpus, "seeded", "--train.max_steps=2", "--train.eval_interval=2",
                 "--train.seed=1", "--train.eval_seed=7")).fit()
    val_loss = [r["val_loss"] for r in metrics(out_dir) if "val_loss" in r][-1]
    code, out, err = cli(capsys, out_dir, "--device=cpu", entry=load_script("eval_kv_cache").main)
    assert code == 0 and f"plain forward: val loss {val_loss:.4f}" in out, (val_loss, out)
