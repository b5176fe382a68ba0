"""Clear failures: non-finite steps, changed configs, bad input, out of memory, presets.

Every bad input gives one error line, a non-zero exit code, and leaves what is already on disk
unchanged. Most tests call the CLI's entry point in-process (fast).
"""

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import train.config
from tiny_run import TINY, all_saved_weights_finite, cli, error_line, files_at_most, fit, make, metrics, snapshot
from train import checkpoint as ckpt
from train import sample
from train.__main__ import _preset_argument
from train.__main__ import main as train_main
from train.cli import run_cli, split_args
from train.config import ConfigError, config_differences, load_config, to_toml
from train.data import TokenData, token_dtype
from train.guard import run_lock
from train.trainer import Trainer


# ---------------------------------------------------------------------------------------------
# non-finite loss, gradients and weights


def poison(trainer, steps):
    """Make the loss NaN at the given (1-based) steps."""
    forward = trainer.model.forward

    def poisoned(x, y=None, **kwargs):
        out = forward(x, y, **kwargs)
        if y is None or not trainer.model.training or trainer.step + 1 not in steps:
            return out
        return out[0], {**out[1], "loss": out[1]["loss"] * float("nan")}

    trainer.model.forward = poisoned


def test_nonfinite_loss_stops_by_default(tmp_path, corpus):
    trainer = Trainer(make(tmp_path, corpus, "n", "--train.max_steps=6", "--train.ckpt_interval=1",
                           "--train.eval_interval=0"))
    poison(trainer, {3})
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\).* at step 3; .*on_nonfinite=skip"):
        trainer.fit()
    assert ckpt.latest_checkpoint(tmp_path / "n").name == "step_00000002"
    assert all_saved_weights_finite(tmp_path / "n")


def test_nonfinite_steps_skipped_counted_and_capped(tmp_path, corpus):
    trainer = Trainer(make(tmp_path, corpus, "n", "--train.max_steps=20", "--train.ckpt_interval=1",
                           "--train.eval_interval=0", "--train.on_nonfinite=skip",
                           "--train.max_skipped_steps=2"))
    poison(trainer, {3, 6, 7, 9, 10, 11})
    with pytest.raises(FloatingPointError, match="3 non-finite steps in a row .*max_skipped_steps=2"):
        trainer.fit()
    records = metrics(tmp_path / "n")
    assert [r["step"] for r in records] == list(range(1, 11))
    assert [r["step"] for r in records if r["loss"] is None] == [3, 6, 7, 9, 10]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1, 1, 2, 3, 3, 4, 5]
    assert all(math.isfinite(r["loss"]) for r in records if r["loss"] is not None)
    assert all_saved_weights_finite(tmp_path / "n")
    state = json.loads((ckpt.latest_checkpoint(tmp_path / "n") / "state.json").read_text())
    assert state["skipped_steps"] == 5 and state["skipped_in_a_row"] == 2  # resumes the count


def test_nonfinite_model_is_never_checkpointed(tmp_path, corpus):
    trainer = Trainer(make(tmp_path, corpus, "w", "--train.max_steps=2", "--train.eval_interval=0"))
    trainer.fit()
    before = snapshot(tmp_path / "w" / "checkpoints")
    with torch.no_grad():
        trainer.model.transformer.h[0].attn.c_attn.weight[0, 0] = float("inf")
    trainer.step += 1
    with pytest.raises(FloatingPointError, match="non-finite weights at step 3; not writing a checkpoint"):
        trainer.save()
    assert snapshot(tmp_path / "w" / "checkpoints") == before


def test_overflowing_learning_rate_stops_with_finite_checkpoints(tmp_path, corpus, cfg_file, capsys):
    out = tmp_path / "lr"
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--optim.lr=1e30",
                       "--optim.warmup_steps=0", "--train.ckpt_interval=1", "--train.max_steps=10")
    assert code == 1 and "non-finite" in error_line(err)
    assert all_saved_weights_finite(out)


# ---------------------------------------------------------------------------------------------
# resuming with a different model, tokenizer or data


@pytest.mark.parametrize("change, difference", [("--model.n_layer=3", "model.n_layer: 2 -> 3"),
                                                ("--model.moe.n_expert=4", "model.moe.n_expert: 0 -> 4")])
def test_resume_with_changed_model_names_the_difference(base, corpus, cfg_file, capsys, change, difference):
    before = snapshot(base)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={base}", change, "--train.max_steps=6")
    line = error_line(err)
    assert code == 2 and difference in line and "--train.allow_config_change=true" in line
    assert snapshot(base) == before


def test_resume_with_changed_data_names_the_difference(base, corpus, cfg_file, capsys, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.py").write_text("x = 1\n" * 2000)
    before = snapshot(base)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--data.source={other}",
                       f"--train.out_dir={base}", "--train.max_steps=6")
    line = error_line(err)
    assert code == 2 and "data.source:" in line and "data fingerprint:" in line
    assert snapshot(base) == before


def test_config_differences_cover_tokenizer_and_ignore_train_settings():
    cfg = load_config(None, ["--model.n_layer=2"])
    saved = to_toml(cfg)
    assert config_differences(saved, load_config(None, ["--model.n_layer=2", "--optim.lr=1e-3",
                                                        "--train.max_steps=7", "--data.cache_dir=x"])) == []
    diffs = config_differences(saved, load_config(None, ["--model.n_layer=2", "--data.tokenizer=gpt2"]))
    assert 'data.tokenizer: "byte" -> "gpt2"' in diffs and "model.vocab_size: 257 -> 50257" in diffs
    # a sub-table is compared key by key (it was once formatted whole, which raised a TypeError)
    assert config_differences(saved, load_config(None, ["--model.n_layer=2", "--model.moe.n_expert=4"])) == [
        "model.moe.expert_hidden: 0 -> 3072", "model.moe.n_expert: 0 -> 4"]


def test_allow_config_change_resumes_or_names_the_architecture(tmp_path, corpus, cfg_file, capsys):
    out = tmp_path / "r"
    Trainer(make(tmp_path, corpus, "r", "--train.max_steps=2", "--train.eval_interval=0")).fit()
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--model.dropout=0.0",
                       "--train.allow_config_change=true", "--train.max_steps=3")
    assert code == 0, err
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]
    before = snapshot(out)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--model.n_embd=64",
                       "--train.allow_config_change=true", "--train.max_steps=6")
    line = error_line(err)
    assert code == 1 and "does not fit this model" in line and "architecture" in line
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit code != 0, nothing on disk changed


def _file(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_INPUT = {
    # case: (extra args built from tmp_path, expected exit code, expected text in the error line)
    "missing data": (lambda t: [f"--data.source={t / 'nope'}"], 1, "is not a file, a directory"),
    "empty data file": (lambda t: [f"--data.source={_file(t, 'e.txt', b'')}"], 1, "the corpus is empty"),
    "empty data dir": (lambda t: [f"--data.source={(t / 'd').mkdir() or t / 'd'}"], 1, "matches no files"),
    "binary data": (lambda t: [f"--data.source={_file(t, 'b.bin', bytes(range(256)) * 4)}"], 1,
                    "is not UTF-8 text (contains NUL bytes)"),
    "non-UTF-8 data": (lambda t: [f"--data.source={_file(t, 'l.txt', 'café '.encode('latin-1') * 50)}"], 1,
                       "is not UTF-8 text"),
    "corpus shorter than a block": (lambda t: [f"--data.source={_file(t, 's.txt', b'print(1)' * 4)}"], 1,
                                    "split has"),
    "val split shorter than a block": (lambda t: [f"--data.source={_file(t, 'v.txt', b'x = 1' * 200)}",
                                                  "--data.val_fraction=0.01"], 1,
                                       "the val split has 11 tokens but block_size=32 needs at least 33"),
    "batch larger than the data": (lambda t: ["--train.batch_size=4096"], 1,
                                   "one micro-batch (train.batch_size=4096 x seq_len=32) needs 131073 tokens"),
    "seq_len beyond the position table": (lambda t: ["--train.seq_len=64"], 2,
                                          "train.seq_len=64 exceeds model.block_size=32"),
    "n_head not divisible by n_kv_head": (lambda t: ["--model.n_kv_head=3"], 2,
                                          "model.n_head (2) must be divisible by model.n_kv_head (3)"),
    "top_k > n_expert": (lambda t: ["--model.moe.n_expert=4", "--model.moe.top_k=5"], 2,
                         "model.moe.top_k (5) must be <= model.moe.n_expert (4)"),
    "NaN learning rate": (lambda t: ["--optim.lr=nan"], 2, "optim.lr must be a finite number >= 0; got nan"),
    "infinite learning rate": (lambda t: ["--optim.lr=inf"], 2, "optim.lr must be a finite number"),
    "negative step count": (lambda t: ["--train.max_steps=-5"], 2, "train.max_steps must be >= 1; got -5"),
    "unknown nonfinite policy": (lambda t: ["--train.on_nonfinite=ignore"], 2,
                                 "train.on_nonfinite must be one of 'stop', 'skip'"),
    "negative seed": (lambda t: ["--train.seed=-1"], 2, "train.seed must be in [0, 2**63); got -1"),
    "seed beyond 64 bits": (lambda t: [f"--train.seed={2**64}"], 2, "train.seed must be in [0, 2**63)"),
    "cache_dir is a file": (lambda t: [f"--data.cache_dir={_file(t, 'c', b'x')}"], 1,
                            "data.cache_dir="),
    "not a device": (lambda t: ["--train.device=tpu"], 2, "train.device must be one of"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_nonzero_exit_and_writes_nothing(case, base, corpus, cfg_file, capsys, tmp_path):
    extra, expected_code, text = BAD_INPUT[case]
    before = snapshot(base)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={base}", "--train.max_steps=8",
                       *extra(tmp_path))
    assert code == expected_code
    assert text in error_line(err)
    assert snapshot(base) == before


def test_a_flag_missing_its_value_and_train_without_arguments(capsys):
    opts = {"--json": ""}
    with pytest.raises(ConfigError, match="--json needs a value"):
        split_args(["a.toml", "--json"], opts)
    assert split_args(["a.toml", "--json", "f.jsonl", "--x.y=1"], opts) == (["a.toml"], ["--x.y=1"])
    assert opts["--json"] == "f.jsonl"
    assert run_cli(train_main, []) == 2  # the usage goes to stderr, as for any other usage error
    out, err = capsys.readouterr()
    assert out == "" and "usage: python -m train" in err


def test_a_flag_takes_its_value_after_an_equals_sign_too():
    """`--json=f.jsonl` is `--json f.jsonl`: the next argument stays a positional argument."""
    opts = {"--json": ""}
    assert split_args(["--json=f.jsonl", "a.toml", "--x.y=1"], opts) == (["a.toml"], ["--x.y=1"])
    assert opts["--json"] == "f.jsonl"


def test_out_dir_that_is_a_file(tmp_path, corpus, cfg_file, capsys):
    target = _file(tmp_path, "run", b"precious")
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={target}")
    assert code == 1 and "is a file, not a directory" in error_line(err)
    assert target.read_bytes() == b"precious"


def test_out_dir_with_files_no_run_wrote_is_refused_untouched(tmp_path, corpus, cfg_file, capsys):
    """A directory of the user's own config.toml / metrics.jsonl is not a run to restart: a run
    would overwrite both. A run killed before its first checkpoint is one, and restarts."""
    target = tmp_path / "mine"
    target.mkdir()
    (target / "config.toml").write_text("# my notes\n")
    (target / "metrics.jsonl").write_text('{"step": 7}\n')
    before = snapshot(target)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={target}", "--train.max_steps=2")
    assert code == 2 and "holds config.toml, metrics.jsonl but no run" in error_line(err)
    assert snapshot(target) == before

    killed = tmp_path / "killed"
    code, _, _ = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={killed}", "--train.max_steps=2")
    assert code == 0
    ckpt.checkpoint_dir(killed).rename(tmp_path / "gone")  # as if killed before its first checkpoint
    code, _, _ = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={killed}", "--train.max_steps=2")
    assert code == 0 and ckpt.latest_checkpoint(killed).name == "step_00000002"


def test_folders_in_checkpoints_that_are_not_steps_are_ignored(base, capsys):
    newest = ckpt.latest_checkpoint(base)
    stray = ckpt.checkpoint_dir(base) / f"{ckpt.PREFIX}foo"
    stray.mkdir()
    (stray / ckpt.MARKER).write_text("")
    try:
        assert ckpt.latest_checkpoint(base) == newest
    finally:
        (stray / ckpt.MARKER).unlink()
        stray.rmdir()


def test_unwritable_out_dir(tmp_path, corpus, cfg_file, capsys):
    target = tmp_path / "ro"
    target.mkdir()
    os.chmod(target, 0o555)
    if os.access(target, os.W_OK):  # root ignores permissions; sysfs refuses even root
        target = Path("/sys/gpt-ladder-test-run")
        if not Path("/sys").is_dir() or os.path.exists(target):
            pytest.skip("no unwritable directory available")
    try:
        code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={target}")
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    assert code == 1 and "is not writable" in error_line(err)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, corpus, cfg_file, capsys,
                                                                      monkeypatch):
    out = tmp_path / "full"
    Trainer(make(tmp_path, corpus, "full", "--train.max_steps=2", "--train.eval_interval=0")).fit()
    before = snapshot(out / "checkpoints")
    save_file = ckpt.save_file

    def write_half_then_fail(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(Path(filename).read_bytes()[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "save_file", write_half_then_fail)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=4",
                       "--train.eval_interval=0")
    line = error_line(err)
    assert code == 1 and "could not write checkpoint" in line and "No space left on device" in line
    assert snapshot(out / "checkpoints") == before  # no temp dir left, step 2 untouched
    monkeypatch.undo()
    resumed = fit(Trainer(make(tmp_path, corpus, "full", "--train.max_steps=3", "--train.eval_interval=0")))
    assert resumed[0]["step"] == 3  # step 2 still loads


@pytest.mark.parametrize("limit, raised", [(50_000, "SafetensorError"), (200_000, "RuntimeError")],
                         ids=["model.safetensors", "train_state.pt"])
def test_a_real_write_failure_while_checkpointing_is_one_line(tmp_path, corpus, cfg_file, capsys, limit, raised):
    """The libraries' own errors, not a stand-in: with files limited to `limit` bytes (150 kB of
    weights, 320 kB of optimizer state) safetensors raises its SafetensorError and torch.save a
    RuntimeError. Each is the checkpoint's one-line OSError, and step 2 stays as it was."""
    out = tmp_path / "limited"
    Trainer(make(tmp_path, corpus, "limited", "--train.max_steps=2", "--train.eval_interval=0")).fit()
    before = snapshot(out / "checkpoints")
    with files_at_most(limit):
        code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=4",
                           "--train.eval_interval=0")
    line = error_line(err)
    assert code == 1 and "could not write checkpoint" in line and raised in line, line
    assert snapshot(out / "checkpoints") == before


def test_a_second_process_on_a_busy_out_dir_is_refused_and_writes_nothing(tmp_path, corpus, cfg_file, capsys):
    """While one trainer holds train.out_dir (here: this process's lock on another open file, as a
    second command would meet it), another stops in one line before touching the run; once the
    first ends, the run resumes."""
    out = tmp_path / "busy"
    Trainer(make(tmp_path, corpus, "busy", "--train.max_steps=2", "--train.eval_interval=0")).fit()
    before = snapshot(out)
    with run_lock(out, "the first"):
        code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=4")
    assert code == 1 and f"is in use by another process (pid {os.getpid()})" in error_line(err)
    assert snapshot(out) == before
    resumed = fit(Trainer(make(tmp_path, corpus, "busy", "--train.max_steps=3", "--train.eval_interval=0")))
    assert resumed[0]["step"] == 3


def test_vocab_larger_than_token_dtype(tmp_path):
    assert token_dtype(257) == np.uint16 and token_dtype(2**16 + 1) == np.uint32
    with pytest.raises(ValueError, match="does not fit the uint32 token files"):
        token_dtype(2**32 + 1)
    (tmp_path / "train.bin").write_bytes(np.zeros(100, np.uint16).tobytes())
    (tmp_path / "val.bin").write_bytes(np.zeros(100, np.uint16).tobytes())
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 70000, "dtype": "uint16"}))
    with pytest.raises(ValueError, match="70000 tokens does not fit its uint16 token files"):
        TokenData.open(tmp_path)


def test_sampled_ids_stay_inside_the_vocabulary():
    """The embedding is padded (257 -> 320 rows); sampling must never return a padding id."""
    from model import GPT, ModelConfig
    from model.inference.generate import generate
    from train.tokenizer import ByteTokenizer

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=257, block_size=64, n_layer=1, n_head=2, n_embd=32, init_std=1.0))
    out = generate(model, torch.zeros(8, 1, dtype=torch.long), 60, temperature=10.0, top_k=0,
                   generator=torch.Generator().manual_seed(0))
    assert int(out.max()) < 257 and model.config.padded_vocab_size == 320
    assert ByteTokenizer().decode([104, 105, 300]) == "hi\ufffd"  # an id outside the vocabulary


def test_sample_prompt_beyond_block_size(base, capsys):
    code, _, err = cli(capsys, base, "--prompt", "x" * 40, entry=sample.main)
    assert code == 2 and "the prompt (40 tokens) fills model.block_size=32" in error_line(err)


def test_cuda_out_of_memory_suggests_smaller_micro_batch(tmp_path, corpus, cfg_file, capsys, monkeypatch):
    def oom(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "train_step", oom)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={tmp_path / 'oom'}")
    assert code == 1
    assert error_line(err) == ("error: out of memory on cpu with train.batch_size=4, train.grad_accum=2; "
                               "try --train.batch_size=2 --train.grad_accum=4 "
                               "(the same tokens per step in smaller micro-batches)")


def test_oom_advice_splits_by_the_smallest_factor_and_only_a_cpu_run_warns_of_threads():
    from train.guard import oom_message, thread_warning

    assert "try --train.batch_size=1 --train.grad_accum=6 (" in oom_message(3, 2, "cuda")  # 3 x 2 = 1 x 6
    assert "try --train.batch_size=3 --train.grad_accum=3 (" in oom_message(9, 1, "cuda")
    assert "train.batch_size is already 1" in oom_message(1, 4, "cuda")
    other = torch.get_num_threads() + 1  # a checkpoint written with another thread count
    assert f"written with {other} CPU threads" in thread_warning(Path("step_00000003"), other, torch.device("cpu"))
    assert thread_warning(Path("step_00000003"), other, torch.device("cuda")) is None  # GPU sums: no threads


# ---------------------------------------------------------------------------------------------
# presets


def test_presets_resolve_and_unknown_names_list_the_available(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train.config, "PRESETS_DIR", tmp_path / "presets")
    with pytest.raises(ConfigError, match=r"unknown preset 'tiny'; available presets: none yet"):
        load_config("preset:tiny")
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "tiny.toml").write_text("[model]\nn_layer = 1\n")
    (tmp_path / "presets" / "small.toml").write_text("[model]\nn_layer = 2\n")
    cfg = load_config("preset:tiny", ["--model.n_head=4"])
    assert cfg.model.n_layer == 1 and cfg.model.n_head == 4 and cfg.train.out_dir == str(Path("runs") / "tiny")
    assert _preset_argument(["--preset", "tiny", "--train.max_steps=3"]) == ["preset:tiny", "--train.max_steps=3"]
    assert _preset_argument(["--train.max_steps=3", "--preset=tiny"]) == ["preset:tiny", "--train.max_steps=3"]
    for argv in (["--preset", "../tiny"], ["preset:nope"]):
        code, _, err = cli(capsys, *argv)
        assert code == 2
        assert error_line(err).endswith("available presets: small, tiny")
