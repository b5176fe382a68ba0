"""train.init_from: a run that starts from the weights of another run or of an HF model directory."""

import dataclasses
import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from hf_parity import random_hf_model
from model.hf import from_hf
from tiny_run import GPT2_RANKS, TINY, cli, error_line, fit, metrics, needs_gpt2_ranks, numerics, snapshot
from train import checkpoint as ckpt
from train import export
from train.config import ConfigError, load_config
from train.data import get_batch
from train.init_from import NEWEST, Source, check_tokenizer, initial_weights
from train.run import load_run
from train.trainer import Trainer, evaluate

# the tiny run's settings without its [model] keys, which come from the source
TRAIN = [arg for arg in TINY if not arg.startswith("--model.")]


def start(tmp_path, corpus, source, name, *extra):
    return load_config(None, [*TRAIN, *corpus, f"--train.out_dir={tmp_path / name}",
                              f"--train.init_from={source}", *extra])


def test_a_run_starts_from_the_checkpoint_of_another(tmp_path, corpus, base):
    source = tmp_path / "source"
    shutil.copytree(base, source)
    before = snapshot(source)
    cfg = start(tmp_path, corpus, source, "ft", "--model.dropout=0.0", "--train.max_steps=2")
    loaded = load_run(source)  # its newest checkpoint, step 4
    assert cfg.model == dataclasses.replace(loaded.cfg.model, dropout=0.0)  # dropout may differ
    trainer = Trainer(cfg)
    weights = trainer.model.state_dict()
    for name, tensor in load_file(loaded.checkpoint / "model.safetensors").items():
        assert torch.equal(weights[name], tensor), name
    trainer.fit()
    manifest = json.loads((loaded.checkpoint / ckpt.MARKER).read_text())
    where = {"path": str(source.resolve()), "step": 4,
             "sha256": {"model.safetensors": manifest["files"]["model.safetensors"]["sha256"]}}
    # step 0: the source's validation loss on this run's data, and where the weights came from
    expected = evaluate(loaded.model, trainer.data, cfg, torch.device("cpu"), "fp32")
    records = metrics(tmp_path / "ft")
    assert records[0] == {"step": 0, "tokens": 0, **expected, "init_from": where,
                          "elapsed_s": records[0]["elapsed_s"]}
    # step 1: the source model's loss on this run's first batch (2 micro-batches, dropout 0)
    parts = [loaded.model(*get_batch(trainer.data.train, 4, cfg.seq_len, (cfg.train.seed, 0, 0, m, 0)))[1]["loss"]
             for m in range(2)]
    assert records[1]["step"] == 1 and records[1]["loss"] == ((parts[0] + parts[1]) / 2).item()
    assert snapshot(source) == before  # only read
    shutil.rmtree(source)  # a finished run no longer needs its source
    assert load_run(tmp_path / "ft").step == 2
    shutil.move(tmp_path / "ft", tmp_path / "moved")  # nor its own first place
    assert load_run(tmp_path / "moved").step == 2
    # train.init_step picks an older checkpoint
    older = Trainer(start(tmp_path, corpus, base, "ft2", "--train.init_step=2"))
    saved = load_file(ckpt.checkpoint_dir(base) / "step_00000002" / "model.safetensors")
    assert all(torch.equal(older.model.state_dict()[name], t) for name, t in saved.items())
    assert older.init_source["step"] == 2


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_run_starts_from_an_hf_model_directory(tmp_path, corpus, base, family, capsys):
    from transformers import AutoModelForCausalLM

    hf_dir = tmp_path / "hf"
    if family == "gpt2":  # a run exported by train.export
        assert cli(capsys, base, hf_dir, entry=export.main)[0] == 0
        hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    else:  # a tiny Llama with every weight random, for the byte vocabulary
        hf = random_hf_model("llama", dict(vocab_size=257, max_position_embeddings=64))
        with torch.no_grad():  # matrices at N(0, 0.15): logits of std ~1, where fp32 rounds below 1e-5
            for p in hf.parameters():
                p.mul_(0.5 if p.ndim == 2 else 1.0)
        hf.save_pretrained(hf_dir)
    before = snapshot(hf_dir)
    trainer = Trainer(start(tmp_path, corpus, hf_dir, "ft", "--train.max_steps=1"))
    x, _ = get_batch(trainer.data.val, 2, trainer.cfg.seq_len, (0,))
    imported = from_hf(hf).state_dict()  # the production converter's import, bit for bit
    assert all(torch.equal(t, imported[name]) for name, t in trainer.model.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(trainer.model.eval()(x), hf(x).logits, atol=1e-5, rtol=0)
    sha = {"model.safetensors": hashlib.sha256((hf_dir / "model.safetensors").read_bytes()).hexdigest()}
    assert trainer.init_source == {"path": str(hf_dir.resolve()), "step": None, "sha256": sha}
    trainer.fit()
    assert trainer.step == 1 and snapshot(hf_dir) == before


@pytest.fixture(scope="module")
def hf_130(tmp_path_factory):
    """An HF model directory whose vocabulary is neither GPT-2's nor the byte tokenizer's."""
    path = tmp_path_factory.mktemp("hf130") / "model"
    random_hf_model("llama", {}).save_pretrained(path)
    return path


BAD = {  # train.init_from and other overrides -> the one-line error
    "missing": (["--train.init_from={tmp}/nope"], "no such directory"),
    "neither": (["--train.init_from={tmp}/plain"], "is neither a training run"),
    "no-checkpoint": (["--train.init_from={tmp}/empty-run"], "has no complete checkpoint yet"),
    "no-such-step": (["--train.init_from={base}", "--train.init_step=3"],
                     "has no complete checkpoint at train.init_step=3; it has: 2, 4"),
    "model-key": (["--train.init_from={base}", "--model.n_embd=64"], "model.n_embd = 64 differs from 32 in"),
    "tokenizer": (["--train.init_from={base}", "--data.tokenizer=gpt2"],
                  "was trained with data.tokenizer='byte', this run has 'gpt2'"),
    "hf-vocab": (["--train.init_from={hf}"], "has a vocabulary of 130 tokens"),
    "hf-step": (["--train.init_from={hf}", "--train.init_step=2"], "is a Hugging Face model directory"),
    "out-dir-inside": (["--train.init_from={base}", "--train.out_dir={base}/ft"], "is inside train.init_from"),
    "hf-no-weights": (["--train.init_from={tmp}/hf-config-only"], "has a config.json but no weights"),
    "hf-unknown-type": (["--train.init_from={tmp}/hf-nosuch"], "nosuchmodel"),
    "broken-config": (["--train.init_from={tmp}/broken"], "unreadable step_00000004/config.toml ("),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sources_are_one_line_errors_and_write_nothing(tmp_path, corpus, cfg_file, base, hf_130, capsys, case):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a model")
    ckpt.checkpoint_dir(tmp_path / "empty-run").mkdir(parents=True)
    (tmp_path / "empty-run" / "config.toml").write_text("[train]\n")
    (tmp_path / "hf-config-only").mkdir()
    shutil.copy(hf_130 / "config.json", tmp_path / "hf-config-only")
    (tmp_path / "hf-nosuch").mkdir()
    (tmp_path / "hf-nosuch" / "config.json").write_text('{"model_type": "nosuchmodel"}')
    shutil.copytree(base, tmp_path / "broken")
    (ckpt.latest_checkpoint(tmp_path / "broken") / "config.toml").write_text("[model\n")
    overrides, message = BAD[case]
    overrides = [o.format(tmp=tmp_path, base=base, hf=hf_130) for o in overrides]
    before = snapshot(base)
    code, _, err = cli(capsys, cfg_file, *TRAIN, *corpus, f"--train.out_dir={tmp_path / 'out'}", *overrides)
    assert code == 2 and message in error_line(err), err
    assert not (tmp_path / "out").exists() and not (base / "ft").exists()
    assert snapshot(base) == before


def test_resume_is_bit_exact_and_never_reads_the_source_again(tmp_path, corpus, base):
    every3 = ["--train.eval_interval=3", "--train.ckpt_interval=3", "--train.init_step=2"]
    straight = Trainer(start(tmp_path, corpus, base, "a", *every3, "--train.max_steps=6"))
    straight.fit()
    source = tmp_path / "source"
    shutil.copytree(base, source)
    Trainer(start(tmp_path, corpus, source, "b", *every3, "--train.max_steps=3")).fit()
    shutil.rmtree(source)  # the resumed run loads its own checkpoint: its source may be gone
    resumed = fit(Trainer(start(tmp_path, corpus, source, "b", *every3, "--train.max_steps=6")))
    assert resumed[0]["step"] == 4  # resumed from its own step 3
    records = numerics(metrics(tmp_path / "b"))
    assert records[0]["init_from"]["path"] == str(source.resolve())
    records[0]["init_from"]["path"] = str(base.resolve())
    assert records == numerics(metrics(tmp_path / "a"))  # bit-identical, step 0 included
    a, b = (ckpt.latest_checkpoint(tmp_path / name) / "model.safetensors" for name in "ab")
    assert a.read_bytes() == b.read_bytes()


def test_init_step_without_init_from_warns(capsys):
    load_config(None, ["--train.init_step=2"])
    assert "warning: train.init_step is ignored: train.init_from is not set" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("--model.window=8", "model.window = 8 differs from 0 in"),
    ("--model.attn_softcap=30.0", "model.attn_softcap = 30.0 differs from 0.0 in"),
    ("--model.norm_eps=1e-06", "model.norm_eps = 1e-06 differs from 1e-05 in"),
])
def test_a_key_that_keeps_the_shapes_but_changes_the_function_is_refused(tmp_path, corpus, base, override, message):
    """A sliding window, a logit cap or another norm epsilon fit the source's weights but change what
    they compute: only training-time keys (dropout, auxiliary loss weights) may differ."""
    with pytest.raises(ConfigError, match=message):
        start(tmp_path, corpus, base, "ft", override)


def test_building_the_source_model_leaves_the_random_stream_as_a_fresh_runs(base):
    """initial_weights builds a model (which draws an init) inside a forked RNG: the draws after it
    are those after the seed alone."""
    cfg = load_run(base).cfg.model
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    initial_weights(str(base), NEWEST, cfg)
    assert torch.equal(torch.rand(4), expected)


def test_an_hf_vocabulary_feeds_only_the_tokenizer_of_its_size(tmp_path):
    byte_sized = Source(tmp_path, {"vocab_size": 257})
    check_tokenizer(byte_sized, "byte")
    with pytest.raises(ConfigError, match='257 tokens, data.tokenizer=.gpt2. one of 50257; set data.tokenizer = "byte"'):
        check_tokenizer(byte_sized, "gpt2")


@needs_gpt2_ranks
def test_a_gpt2_source_refuses_a_ranks_file_other_than_its_own(tmp_path):
    """A run records the SHA-256 of its ranks, written as a tiktoken file: the same file passes,
    another digest is refused."""
    own = hashlib.sha256(open(GPT2_RANKS, "rb").read()).hexdigest()
    check_tokenizer(Source(tmp_path, {}, None, {"tokenizer": "gpt2", "ranks_sha256": own}), "gpt2", GPT2_RANKS)
    other = Source(tmp_path, {}, None, {"tokenizer": "gpt2", "ranks_sha256": "0" * 64})
    with pytest.raises(ConfigError, match="its ranks differ from those"):
        check_tokenizer(other, "gpt2", GPT2_RANKS)
