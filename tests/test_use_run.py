"""Using a trained run: load it, evaluate it, sample it; its tokenizer; the config warnings; the
metrics fields; the scripts' command lines."""

import json
import os
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

import train.config
from model import GPT, ModelConfig
from tiny_run import load_script as load
from tiny_run import GPT2_RANKS, TINY, cli, error_line, make, metrics, needs_gpt2_ranks, snapshot
from train import checkpoint as ckpt
from train import eval as train_eval
from train import export as train_export
from train import sample
from train.cli import run_cli
from train.config import ConfigError, load_config
from train.data import _check_length
from train.tokenizer import GPT2_ENV_VAR, for_run, get_tokenizer
from train.run import load_run
from train.trainer import Trainer



# ---------------------------------------------------------------------------------------------
# loading


def test_load_run_loads_the_newest_or_the_asked_checkpoint(base):
    model = load_run(str(base)).model
    saved = load_file(ckpt.latest_checkpoint(base) / "model.safetensors")
    assert not model.training and all(torch.equal(saved[k], v) for k, v in model.state_dict().items() if k in saved)
    step2 = load_run(str(base), step=2).model
    assert not torch.equal(step2.lm_head.weight, model.lm_head.weight)
    with pytest.raises(ValueError, match="not a directory with an HF checkpoint.*load_run"):
        GPT.from_pretrained(str(base))  # the model package reads no run directory
    with pytest.raises(ConfigError, match="no complete checkpoint at step 3; it has: 2, 4"):
        load_run(str(base), step=3)
    tok = for_run(base)
    assert tok.name == "byte" and tok.decode(tok.encode("é")) == "é"


def test_load_run_names_the_checkpoint_it_loaded(base):
    asked, newest = load_run(str(base), step=2), load_run(str(base))
    assert (asked.step, asked.checkpoint.name) == (2, "step_00000002")
    assert (newest.step, newest.checkpoint.name) == (4, "step_00000004")


def test_a_run_without_tokenizer_json_is_refused_in_one_line(base, corpus, cfg_file, tmp_path, capsys):
    """tokenizer.json records the tokenizer a run trained with: without it, sampling, evaluating,
    starting from the run and resuming it each stop in one line, and nothing is written."""
    bare = tmp_path / "bare"
    shutil.copytree(base, bare)
    (bare / "tokenizer.json").unlink()
    before = snapshot(bare)
    missing = f"{bare} has no tokenizer.json, the record of the tokenizer it trained with"
    for entry in (sample.main, train_eval.main):
        code, _, err = cli(capsys, bare, entry=entry)
        assert code == 2 and error_line(err).startswith(f"error: {missing}"), err
    for out, extra in [(tmp_path / "ft", [f"--train.init_from={bare}"]), (bare, [])]:  # init_from, resume
        code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=6",
                           "--train.ckpt_interval=2", "--train.eval_interval=0", *extra)
        assert code == 2 and error_line(err).startswith(f"error: {missing}"), err
    assert snapshot(bare) == before


def test_sample_eval_and_bench_decode_switch_to_the_device_kernels(base, capsys, monkeypatch):
    """As in training, each layer runs its kernel for the device and compute dtype (model/kernels.py):
    sampling, evaluation and the decoding benchmark switch the model, and a draft, once it is there."""
    import train.hardware

    calls = []

    def record(model, device, dtype):
        calls.append((next(model.parameters()).device.type, device.type, dtype))
        return {}
    monkeypatch.setattr(train.hardware, "use_device_kernels", record)
    bench_decode = load("bench_decode").main
    timing = ["--context=8", "--new_tokens=2", "--nocache_tokens=2", "--repeat=1", "--device=cpu", "--n_draft=2"]
    for entry, args, models in [(sample.main, ["--max_new_tokens", "2", "--draft", base], 2),
                                (train_eval.main, [], 1), (bench_decode, [*timing, f"--draft={base}"], 2)]:
        calls.clear()
        code, _, err = cli(capsys, base, *args, entry=entry)
        assert code == 0, err
        assert calls == [("cpu", "cpu", torch.float32)] * models, (entry.__module__, calls)


# ---------------------------------------------------------------------------------------------
# evaluation


def test_eval_reproduces_the_runs_val_loss_and_writes_nothing(base, capsys, tmp_path):
    before = snapshot(base)
    code, out, err = cli(capsys, base, entry=train_eval.main)
    assert code == 0, err
    last = metrics(base)[-1]
    assert f"val loss {last['val_loss']:.4f}, val {last['val_bpb']:.4f} bits/byte" in out
    other = tmp_path / "other.txt"
    other.write_text("".join(f"line {i}: the quick brown fox\n" for i in range(400)))
    code, out, err = cli(capsys, base, f"--data.source={other}", "--train.eval_batches=1",
                         "--data.val_fraction=0.5", f"--data.cache_dir={tmp_path / 'cache'}",
                         entry=train_eval.main)
    assert code == 0, err
    assert "(1 batches of 4 x 32 tokens)" in out and "other.txt" in out
    assert snapshot(base) == before
    code, _, err = cli(capsys, base, "--model.n_layer=3", entry=train_eval.main)
    assert code == 2 and "unexpected argument '--model.n_layer=3'" in error_line(err)


# ---------------------------------------------------------------------------------------------
# sampling


def eot_model() -> GPT:
    """A model whose every next token is end-of-text (256): ln_f outputs a constant vector v and
    the eot row of the (tied) embedding is v, so its logit wins by a wide margin."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        v = torch.randn(16)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(v)
        model.transformer.wte.weight[256] = 10 * v
    return model.eval()


def test_sampling_stops_at_end_of_text_unless_told_not_to():
    model, idx = eot_model(), torch.tensor([[97, 98]])
    assert sample.sample(model, idx, 6, dict(temperature=0.0), stop=256) == [[97, 98, 256]]
    assert sample.sample(model, idx, 6, dict(temperature=0.0), stop=None) == [[97, 98] + [256] * 6]


def test_sample_cli_decodes_through_the_cache_options_and_a_draft(base, capsys):
    """Greedy samples are the same whatever the cache format or decoder, since the tiny model's
    logits are far from ties; each option runs end to end through the CLI."""
    plain = cli(capsys, base, "--prompt", "ab", "--temperature", "0", "--no_stop", "--max_new_tokens", "12",
                entry=sample.main)
    assert plain[0] == 0
    for extra in (["--kv_dtype", "int8"], ["--draft", str(base), "--n_draft", "3"], ["--top_p", "0.5"]):
        code, out, err = cli(capsys, base, "--prompt", "ab", "--temperature", "0", "--no_stop",
                             "--max_new_tokens", "12", *extra, entry=sample.main)
        assert code == 0, err
        assert out.splitlines()[1:] == plain[1].splitlines()[1:], extra


def test_sample_cli_caps_with_a_note_and_rejects_bad_arguments_in_one_line(base, capsys):
    code, out, err = cli(capsys, base, "--prompt", "ab", "--max_new_tokens", "100", "--no_stop",
                         entry=sample.main)
    assert code == 0 and "note: --max_new_tokens 100 capped to 30: the prompt (2 tokens)" in err
    assert len(out.splitlines()[1].encode()) >= 2
    for bad, message in [(["--temperature", "-1"], "--temperature must be a number >= 0"),
                         (["--top_k", "-3"], "--top_k must be >= 0"),
                         (["--max_new_tokens", "abc"], "argument --max_new_tokens: invalid int value"),
                         (["--bogus"], "unrecognized arguments: --bogus"),
                         (["--step", "3"], "no complete checkpoint at step 3"),
                         (["--top_p", "0"], "--top_p must be in (0, 1]"),
                         (["--kv_dtype", "fp8"], "argument --kv_dtype: invalid choice: 'fp8'"),
                         (["--draft", str(base), "--n_draft", "0"], "--n_draft must be >= 1"),
                         (["--n_draft", "3"], "give a draft run too"),
                         (["--tokenizer_path", "/nowhere"], "--tokenizer_path is for gpt2 runs"),
                         (["--draft", str(base), "--kv_dtype", "int8"], "--draft decodes through full-precision"),
                         (["--seed", "-1"], "--seed must be in [0, 2**63); got -1"),
                         (["--seed", str(2**63)], f"--seed must be in [0, 2**63); got {2**63}"),
                         (["--prompt", "ab\udcff"], "--prompt is not valid UTF-8 text")]:  # argv's form of byte 0xff
        code, _, err = cli(capsys, base, *bad, entry=sample.main)
        assert code == 2 and message in error_line(err), (bad, err)
    code, _, err = cli(capsys, ckpt.latest_checkpoint(base), entry=sample.main)
    assert code == 2 and f"is inside the run directory {base}; pass that directory with --step 4" in error_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_sample_and_eval_name_their_own_flags(base, capsys):
    for entry in (sample.main, train_eval.main):
        code, _, err = cli(capsys, base, "--device", "cuda", entry=entry)
        assert code == 2 and "--device='cuda' but CUDA is not available" in error_line(err)
    code, _, err = cli(capsys, base, "--data.tokenizer=gpt2", entry=train_eval.main)
    assert code == 2 and "data.tokenizer is the run's" in error_line(err)


def test_a_cpu_allocation_failure_is_one_line(capsys):
    def main(argv):
        torch.empty(2**62, dtype=torch.uint8)  # the CPU allocator raises RuntimeError, not MemoryError

    assert run_cli(main, []) == 1
    assert error_line(capsys.readouterr().err).startswith("error: out of memory (")


def test_python_memory_error_says_out_of_memory(capsys):
    def main(argv):
        raise MemoryError  # a Python allocation (a list, a string) that failed says nothing itself

    assert run_cli(main, []) == 1
    assert error_line(capsys.readouterr().err) == "error: out of memory (no details)"


def test_sample_help_is_whole(capsys):
    with pytest.raises(SystemExit) as e:
        sample.parse_args(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "unless --no_stop is given." in out and "the prompt is the end-of-text token)." in out
    assert "--tokenizer_path" in out


# ---------------------------------------------------------------------------------------------
# tokenizer: checked before training, recorded in the run, found again when sampling


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, corpus):
    """A 2-step run whose gpt2 ranks file came from the environment variable only."""
    if not os.path.isfile(GPT2_RANKS):
        pytest.skip(f"offline GPT-2 vocabulary not found at {GPT2_RANKS}")
    out = tmp_path_factory.mktemp("gpt2") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv(GPT2_ENV_VAR, GPT2_RANKS)
    try:
        Trainer(load_config(None, [*TINY, *corpus, "--data.tokenizer=gpt2", f"--train.out_dir={out}",
                                   "--train.max_steps=2", "--train.eval_interval=0"])).fit()
    finally:
        mp.undo()
    return out


def test_run_records_the_resolved_ranks_and_samples_without_the_variable(gpt2_run, capsys, monkeypatch):
    monkeypatch.delenv(GPT2_ENV_VAR, raising=False)
    recorded = json.loads((gpt2_run / "tokenizer.json").read_text())
    assert recorded["path"] == GPT2_RANKS and len(recorded["ranks_sha256"]) == 64
    code, out, err = cli(capsys, gpt2_run, "--prompt", "def", "--max_new_tokens", "3", entry=sample.main)
    assert code == 0, err
    assert out.splitlines()[1].startswith("def")


def moved_run(gpt2_run, tmp_path, monkeypatch):
    """gpt2_run as seen after its ranks file moved: tokenizer.json records /gone/gpt2.tiktoken."""
    monkeypatch.delenv(GPT2_ENV_VAR, raising=False)
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "tokenizer.json").write_text((gpt2_run / "tokenizer.json").read_text().replace(GPT2_RANKS, "/gone/gpt2.tiktoken"))
    for name in ("config.toml", "checkpoints"):
        (moved / name).symlink_to(gpt2_run / name)
    return moved


def test_a_moved_ranks_file_says_how_to_fix_it(gpt2_run, capsys, monkeypatch, tmp_path):
    moved = moved_run(gpt2_run, tmp_path, monkeypatch)
    for entry in (sample.main, train_eval.main):
        code, _, err = cli(capsys, moved, entry=entry)
        assert code == 2 and "'/gone/gpt2.tiktoken' does not exist; pass --tokenizer_path PATH" in error_line(err)
    code, _, err = cli(capsys, moved, "--max_new_tokens", "2", "--tokenizer_path", GPT2_RANKS, entry=sample.main)
    assert code == 0, err
    import tiktoken

    def offline(name):  # the ranks must come from the file given, never from a download
        raise ConnectionError("offline")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    code, out, err = cli(capsys, moved, "--tokenizer_path", GPT2_RANKS, "--train.eval_batches=1",
                         f"--data.cache_dir={tmp_path / 'cache'}", entry=train_eval.main)
    assert code == 0 and "val loss" in out, err  # the val loss tokenizes its data with the ranks given
    wrong = swapped_ranks(tmp_path / "wrong.tiktoken")
    code, _, err = cli(capsys, moved, "--tokenizer_path", wrong, entry=sample.main)
    assert code == 2 and "differ from those the run" in error_line(err)


def swapped_ranks(path):
    """A ranks file of the right size whose first two ranks are swapped: valid, but other tokens."""
    lines = open(GPT2_RANKS, "rb").read().splitlines()
    path.write_bytes(b"\n".join([lines[1].split()[0] + b" 0", lines[0].split()[0] + b" 1", *lines[2:]]) + b"\n")
    return path


@needs_gpt2_ranks
def test_ranks_files_that_would_crash_tiktoken_are_refused(tmp_path):
    lines = open(GPT2_RANKS, "rb").read().splitlines()
    repeated = tmp_path / "repeated.tiktoken"  # the right size, but rank 1 twice and no rank 0
    repeated.write_bytes(b"\n".join([lines[0].split()[0] + b" 1", *lines[1:]]) + b"\n")
    for path, message in [(repeated, "its ranks are not each of 0..50255 once"), (tmp_path, "a directory (expected a gpt2.tiktoken ranks file)")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            get_tokenizer("gpt2", str(path))


def test_resuming_with_other_ranks_is_refused(gpt2_run, corpus, tmp_path):
    cfg = load_config(None, [*TINY, *corpus, "--data.tokenizer=gpt2", f"--train.out_dir={gpt2_run}",
                             f"--data.tokenizer_path={swapped_ranks(tmp_path / 'w.tiktoken')}",
                             "--train.max_steps=3"])
    with pytest.raises(ConfigError, match="differ from those this run trained with"):
        Trainer(cfg).fit()
    assert [r["step"] for r in metrics(gpt2_run)] == [1, 2]  # nothing trained or written


def test_exported_gpt2_run_has_the_gpt2_tokenizer(gpt2_run, tmp_path, capsys, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.delenv(GPT2_ENV_VAR, raising=False)
    code, _, err = cli(capsys, gpt2_run, tmp_path / "hf", entry=train_export.main)
    assert code == 0, err
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["vocab_size"] == 50257 and config["eos_token_id"] == 50256
    hf = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "def f(x):\n    return x  # é"
    assert hf.encode(text, add_special_tokens=False) == for_run(gpt2_run).encode(text)


def test_a_moved_ranks_file_exports_with_tokenizer_path(gpt2_run, capsys, monkeypatch, tmp_path):
    """export reads the ranks from --tokenizer_path when the recorded file is gone, and refuses
    without it; the exported tokenizer encodes as tiktoken does with those ranks."""
    from transformers import AutoTokenizer

    moved = moved_run(gpt2_run, tmp_path, monkeypatch)
    code, _, err = cli(capsys, moved, tmp_path / "refused", entry=train_export.main)
    assert code == 2 and "'/gone/gpt2.tiktoken' does not exist; pass --tokenizer_path PATH" in error_line(err)
    code, _, err = cli(capsys, moved, tmp_path / "hf", "--tokenizer_path", GPT2_RANKS, entry=train_export.main)
    assert code == 0, err
    text = "def f(x):\n    return x  # é"
    hf = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf.encode(text, add_special_tokens=False) == get_tokenizer("gpt2", GPT2_RANKS).encode(text)


def test_bad_ranks_file_fails_before_training_even_on_a_cache_hit(gpt2_run, corpus, cfg_file, tmp_path, capsys):
    # gpt2_run tokenized this corpus already, so the token cache is a hit for the same [data]
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not base64 at all\n")
    for path, message in [(tmp_path / "none.tiktoken", "no such file"), (bad, "not a tiktoken ranks file")]:
        out = tmp_path / "r"
        code, _, err = cli(capsys, cfg_file, *TINY, *corpus, "--data.tokenizer=gpt2",
                           f"--data.tokenizer_path={path}", f"--train.out_dir={out}")
        assert code == 2 and message in error_line(err)
        assert not (out / "metrics.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# config keys that the chosen rungs ignore


def test_ignored_keys_warn_when_set_by_the_user_only(tmp_path, capsys, monkeypatch):
    load_config(None, ["--model.rope.theta=5e5", "--model.moe.aux_loss_coef=0.01", "--model.n_layer=2"])
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: model.rope.theta is ignored: model.pos is 'learned', not 'rope'",
                   "warning: model.moe.aux_loss_coef is ignored: model.moe.n_expert is 0 (no Mixture of Experts)"]
    load_config(None, ["--model.pos=rope", "--model.rope.theta=5e5", "--model.rope.beta_fast=16"])
    assert capsys.readouterr().err == "warning: model.rope.beta_fast is ignored: model.rope.scaling is 'none'\n"
    mine = tmp_path / "mine.toml"
    mine.write_text("[model.rope]\ntheta = 500000.0\n")
    load_config(mine)
    assert "model.rope.theta is ignored" in capsys.readouterr().err  # the user's own file
    monkeypatch.setattr(train.config, "CONFIGS_DIR", tmp_path)
    load_config(mine)  # the same file inside configs/, where keys may be listed as documentation
    assert capsys.readouterr().err == ""
    load_config(mine, ["--model.rope.theta=1e6"])  # ... but not on the command line
    assert "model.rope.theta is ignored" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# metrics.jsonl


def test_every_record_has_elapsed_and_tokens_across_a_resume(tmp_path, corpus):
    first = Trainer(make(tmp_path, corpus, "m", "--train.max_steps=3", "--train.ckpt_interval=3",
                         "--train.eval_interval=2"))
    first.fit()
    saved = json.loads((ckpt.latest_checkpoint(tmp_path / "m") / "state.json").read_text())["elapsed_s"]
    Trainer(make(tmp_path, corpus, "m", "--train.max_steps=6", "--train.eval_interval=2")).fit()
    records = metrics(tmp_path / "m")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["tokens"] for r in records] == [r["step"] * first.tokens_per_step for r in records]
    elapsed = [r["elapsed_s"] for r in records]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert elapsed[3] > saved >= elapsed[2]  # the resumed run counts on from the checkpoint


# ---------------------------------------------------------------------------------------------
# smaller items


def test_split_too_small_advice_points_the_right_way():
    with pytest.raises(ValueError, match="a smaller data.val_fraction"):
        _check_length(5, 32, "the train split")
    with pytest.raises(ValueError, match="a larger data.val_fraction"):
        _check_length(5, 32, "the val split")


def test_scripts_help_exits_0_and_bad_paths_are_one_line(capsys):
    for name in ("bench", "ladder_table"):
        assert run_cli(load(name).main, ["--help"]) == 0
        assert f"scripts/{name}.py" in capsys.readouterr().out
    assert run_cli(load("ladder_table").main, ["nope.toml"]) == 2
    assert error_line(capsys.readouterr().err) == "error: config file not found: nope.toml"
    assert run_cli(load("ladder_table").main, ["--seq_len", "x"]) == 2
    assert re.match(r"error: --seq_len takes a positive integer", error_line(capsys.readouterr().err))


def test_sample_cli_draws_from_its_seed_and_its_top_p(base, capsys):
    """--seed picks the random stream (the same seed, the same text; another seed, another text, at
    temperature 1 over the whole vocabulary), and a tiny --top_p keeps only the most likely token:
    the greedy text."""
    def text(*extra):
        code, out, err = cli(capsys, base, "--prompt", "ab", "--no_stop", "--max_new_tokens", "24",
                             "--top_k", "0", *extra, entry=sample.main)
        assert code == 0, err
        return out.splitlines()[1:]

    one = text("--temperature", "1", "--seed", "1")
    assert text("--temperature", "1", "--seed", "1") == one
    assert text("--temperature", "1", "--seed", "2") != one
    assert text("--temperature", "1", "--top_p", "1e-6") == text("--temperature", "0")


def test_sample_cli_decodes_in_the_dtype_it_is_given(base, capsys, monkeypatch):
    """--dtype overrides the run's train.dtype for the model's weights and cache."""
    dtypes = []
    on_device = sample.on_device
    monkeypatch.setattr(sample, "on_device",
                        lambda m, device, dtype: dtypes.append(dtype) or on_device(m, device, dtype))
    for flags in ([], ["--dtype", "bf16"]):
        code, _, err = cli(capsys, base, "--prompt", "ab", "--max_new_tokens", "2", "--device", "cpu", *flags,
                           entry=sample.main)
        assert code == 0, err
    assert dtypes == ["fp32", "bf16"]  # the run trained in fp32
