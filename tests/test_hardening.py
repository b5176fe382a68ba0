"""A trainer that does not lose runs: kills, signals, NaNs, damaged checkpoints and bad input.

Modelled on how torchtitan and PyTorch Distributed Checkpoint test themselves: kill a training
process at random moments, resume, and demand the same losses bit for bit; damage a checkpoint and
demand a fall-back to the previous one; and for every bad input, one error line, a non-zero exit
and nothing already on disk changed. Most tests call the CLI's entry point in-process (fast); the
`slow` ones run real subprocesses.
"""

import errno
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train.config
from train import checkpoint as ckpt
from train import sample
from train.__main__ import _preset_argument
from train.__main__ import main as train_main
from train.cli import run_cli
from train.config import ConfigError, config_differences, load_config, to_toml
from train.data import TokenData, token_dtype
from train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--model.block_size=32", "--model.n_layer=2", "--model.n_head=2", "--model.n_embd=32",
    "--model.dropout=0.1",  # dropout draws from the RNG: resume must restore it
    "--train.batch_size=4", "--train.grad_accum=2", "--train.eval_batches=2",
    "--train.log_interval=1", "--train.device=cpu", "--train.dtype=fp32",
    "--optim.lr=3e-3", "--optim.warmup_steps=3", "--optim.decay_steps=20",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    src = root / "src"
    src.mkdir()
    for i in range(12):
        body = "".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}  # é\n" for j in range(60))
        (src / f"m{i:02d}.py").write_text(body)
    return ["--data.source=" + str(src), "--data.cache_dir=" + str(root / "cache"), "--data.val_fraction=0.2"]


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text("[train]\nmax_steps = 4\n")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, corpus):
    """A finished 4-step run (checkpoints at steps 2 and 4) that bad commands must leave alone."""
    out = tmp_path_factory.mktemp("base") / "run"
    Trainer(load_config(None, [*TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=4",
                               "--train.ckpt_interval=2", "--train.eval_interval=0"])).fit()
    return out


def make(tmp_path, corpus, name, *extra):
    return load_config(None, [*TINY, *corpus, f"--train.out_dir={tmp_path / name}", *extra])


def snapshot(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def cli(capsys, *args, entry=train_main):
    code = run_cli(entry, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The single `error: ...` line of a failed command (progress bars may precede it)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def numerics(records: list[dict]) -> list[dict]:
    """Metrics without the timing fields: what must be identical between runs."""
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu")} for r in records]


def all_saved_weights_finite(out_dir: Path) -> bool:
    from safetensors.torch import load_file
    return all(bool(torch.isfinite(t).all()) for path in ckpt.list_checkpoints(out_dir)
               for t in load_file(path / "model.safetensors").values())


# ---------------------------------------------------------------------------------------------
# checkpoints: atomic, verified, pruned, cleaned up, never executed


def test_checkpoint_has_manifest_and_keeps_last_k(tmp_path, corpus):
    Trainer(make(tmp_path, corpus, "k", "--train.max_steps=6", "--train.ckpt_interval=1",
                 "--train.keep_checkpoints=3", "--train.eval_interval=0")).fit()
    kept = ckpt.list_checkpoints(tmp_path / "k")
    assert [p.name for p in kept] == ["step_00000004", "step_00000005", "step_00000006"]
    manifest = json.loads((kept[-1] / ckpt.MARKER).read_text())
    assert set(manifest["files"]) == set(ckpt.FILES)
    data = (kept[-1] / "model.safetensors").read_bytes()
    assert manifest["files"]["model.safetensors"] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert not list(ckpt.checkpoint_dir(tmp_path / "k").glob(".tmp-*"))


def test_stale_temp_dirs_of_killed_writers_are_removed(tmp_path, corpus):
    root = ckpt.checkpoint_dir(tmp_path / "s")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = root / f".tmp-step_00000002-{dead}"
    live = root / f".tmp-step_00000002-{os.getppid()}"  # a running process may still be writing
    for d in (stale, live):
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"half a file")
    Trainer(make(tmp_path, corpus, "s", "--train.max_steps=2", "--train.eval_interval=0")).fit()
    assert not stale.exists() and live.exists()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "s")] == ["step_00000002"]


@pytest.mark.parametrize("damage", ["truncate model.safetensors", "truncate train_state.pt",
                                    "flip a byte of model.safetensors", "delete state.json"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, corpus, capsys, damage):
    straight = Trainer(make(tmp_path, corpus, "a", "--train.max_steps=6", "--train.eval_interval=0"))
    straight.fit()
    Trainer(make(tmp_path, corpus, "b", "--train.max_steps=4", "--train.ckpt_interval=2",
                 "--train.eval_interval=0")).fit()
    newest = ckpt.latest_checkpoint(tmp_path / "b")
    action, _, name = damage.partition(" ")
    path = newest / name.split(" of ")[-1]
    data = path.read_bytes() if path.exists() else b""
    if action == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif action == "flip":
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    else:
        path.unlink()
    capsys.readouterr()
    resumed = Trainer(make(tmp_path, corpus, "b", "--train.max_steps=6", "--train.eval_interval=0"))
    resumed.fit()
    err = capsys.readouterr().err
    assert f"warning: skipping checkpoint {newest}" in err
    assert resumed.log[0]["step"] == 3  # resumed from step 2
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in straight.log][2:]


def test_no_loadable_checkpoint_is_one_line_error(tmp_path, corpus, cfg_file, capsys):
    out = tmp_path / "c"
    Trainer(make(tmp_path, corpus, "c", "--train.max_steps=4", "--train.ckpt_interval=2",
                 "--train.eval_interval=0")).fit()
    for path in ckpt.list_checkpoints(out):
        (path / "train_state.pt").write_bytes(b"")
    before = snapshot(out)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=6")
    assert code == 1
    assert error_line(err).startswith(f"error: no checkpoint in {out / 'checkpoints'} could be loaded")
    assert snapshot(out) == before


def test_loading_never_executes_code(tmp_path, corpus):
    """A train_state.pt that would run code when unpickled is refused (weights_only=True), even
    when an attacker also rewrote the manifest to match; configs are parsed, never executed."""
    Trainer(make(tmp_path, corpus, "x", "--train.max_steps=2", "--train.eval_interval=0")).fit()
    path = ckpt.latest_checkpoint(tmp_path / "x")
    witness = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    torch.save({"optimizer": Payload()}, path / "train_state.pt")
    manifest = json.loads((path / ckpt.MARKER).read_text())
    manifest["files"]["train_state.pt"] = ckpt._describe(path / "train_state.pt")
    (path / ckpt.MARKER).write_text(json.dumps(manifest))
    cfg = make(tmp_path, corpus, "x")
    with pytest.raises(ckpt.CheckpointCorrupt, match="weights_only=True"):
        ckpt.load_checkpoint(path, Trainer(cfg).model)
    assert not witness.exists()
    toml = tmp_path / "evil.toml"
    toml.write_text(f"[data]\nsource = \"__import__('os').system('touch {witness}')\"\n")
    assert "__import__" in load_config(toml).data.source  # a string, nothing more
    assert not witness.exists()


def test_sources_use_only_safe_loaders():
    """Every torch.load in the project passes weights_only=True; nothing uses pickle, eval or exec."""
    for path in [*(ROOT / "train").glob("*.py"), *(ROOT / "model").glob("*.py")]:
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"
        for banned in (r"pickle\.loads?\(", r"(?<![\w.])eval\(", r"(?<![\w.])exec\(", r"yaml\.load\("):
            assert not re.search(banned, text), f"{path.name} matches {banned}"


# ---------------------------------------------------------------------------------------------
# signals: finish the step, save, exit cleanly, resume bit for bit


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_finishes_step_saves_and_resumes_exactly(tmp_path, corpus, capsys, monkeypatch, sig):
    straight = Trainer(make(tmp_path, corpus, "a", "--train.max_steps=10", "--train.eval_interval=5"))
    straight.fit()
    step = Trainer.train_step

    def step_then_signal(self):
        record = step(self)
        if self.step == 4:
            os.kill(os.getpid(), sig)
        return record

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    before = signal.getsignal(sig)
    first = Trainer(make(tmp_path, corpus, "b", "--train.max_steps=10", "--train.eval_interval=5",
                         "--train.ckpt_interval=3"))
    summary = first.fit()
    assert signal.getsignal(sig) is before  # handlers restored
    assert summary["signal"] == sig.name and summary["exit_code"] == 128 + sig
    assert f"stopped by {sig.name} at step 4; checkpoint saved" in capsys.readouterr().out
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step_00000004"
    monkeypatch.setattr(Trainer, "train_step", step)
    second = Trainer(make(tmp_path, corpus, "b", "--train.max_steps=10", "--train.eval_interval=5"))
    second.fit()
    assert numerics(first.log + second.log) == numerics(straight.log)


HARNESS = """
import sys, time
import torch
from train import trainer
delay, stall = float(sys.argv[1]), int(sys.argv[2])
step = trainer.Trainer.train_step
def slow_step(self):  # stretch each step so that a kill lands at a random point inside the loop
    time.sleep(delay)
    return step(self)
trainer.Trainer.train_step = slow_step
save = torch.save
def stalling_save(obj, path, *args, **kwargs):  # hang half-way through writing checkpoint `stall`
    save(obj, path, *args, **kwargs)
    if stall and f"step_{stall:08d}" in str(path):
        time.sleep(600)
torch.save = stalling_save
from train.__main__ import main
from train.cli import run_cli
sys.exit(run_cli(main, sys.argv[3:]))
"""
FAULT_ARGS = ["--train.max_steps=24", "--train.ckpt_interval=1", "--train.keep_checkpoints=2",
              "--train.eval_interval=8"]


def launch(cfg_file, corpus, out_dir, log, delay=0.0, stall=0):
    return subprocess.Popen([sys.executable, "-c", HARNESS, str(delay), str(stall), str(cfg_file), *TINY, *corpus,
                             *FAULT_ARGS, f"--train.out_dir={out_dir}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_for_progress(proc, out_dir, timeout=120.0):
    """Wait until the process logs a step beyond the checkpoint it started from (or exits)."""
    start = ckpt.latest_checkpoint(out_dir)
    start = int(start.name[len(ckpt.PREFIX):]) if start else 0
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        lines = (out_dir / "metrics.jsonl").read_text().splitlines() if (out_dir / "metrics.jsonl").exists() else []
        if any(line.endswith("}") and json.loads(line)["step"] > start for line in lines[-1:]):
            return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, cfg_file):
    """An uninterrupted run with the fault tests' settings, in a subprocess like theirs."""
    out = tmp_path_factory.mktemp("ref") / "run"
    with open(out.parent / "log.txt", "w") as log:
        assert launch(cfg_file, corpus, out, log).wait(timeout=300) == 0
    return out


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_exact(tmp_path, corpus, cfg_file, reference):
    rng = random.Random(20260101)
    out = tmp_path / "run"
    log = open(tmp_path / "log.txt", "w")
    # first, a kill in the middle of writing checkpoint 5 (deterministic): step 4 must survive
    proc = launch(cfg_file, corpus, out, log, delay=0.03, stall=5)
    root = ckpt.checkpoint_dir(out)
    deadline = time.monotonic() + 120
    while not list(root.glob(".tmp-step_00000005-*/train_state.pt")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert ckpt.latest_checkpoint(out).name == "step_00000004" and list(root.glob(".tmp-*"))
    # then kills at random moments
    kills = []
    for _ in range(4):
        proc = launch(cfg_file, corpus, out, log, delay=0.03)
        wait_for_progress(proc, out)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
        latest = ckpt.latest_checkpoint(out)
        kills.append(int(latest.name[len(ckpt.PREFIX):]) if latest else 0)
    assert kills[-1] < 24, f"the runs finished before their kills (checkpoints at kills: {kills})"
    assert launch(cfg_file, corpus, out, log).wait(timeout=300) == 0
    assert numerics(metrics(out)) == numerics(metrics(reference))
    assert [r["step"] for r in metrics(out) if "loss" in r] == list(range(1, 25))
    a, b = ckpt.latest_checkpoint(out), ckpt.latest_checkpoint(reference)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert not list(ckpt.checkpoint_dir(out).glob(".tmp-*"))


@pytest.mark.slow
def test_sigterm_from_outside_exits_143_and_resumes_exactly(tmp_path, corpus, cfg_file, reference):
    out = tmp_path / "run"
    with open(tmp_path / "log.txt", "w") as log:
        proc = launch(cfg_file, corpus, out, log, delay=0.05)
        wait_for_progress(proc, out)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    text = (tmp_path / "log.txt").read_text()
    step = ckpt.latest_checkpoint(out).name[len(ckpt.PREFIX):]
    assert f"stopped by SIGTERM at step {int(step)}; checkpoint saved" in text
    assert "Traceback" not in text
    with open(tmp_path / "log.txt", "w") as log:
        assert launch(cfg_file, corpus, out, log).wait(timeout=300) == 0
    assert numerics(metrics(out)) == numerics(metrics(reference))


# ---------------------------------------------------------------------------------------------
# non-finite loss, gradients and weights


def poison(trainer, steps):
    """Make the loss NaN at the given (1-based) steps."""
    forward = trainer.model.forward

    def poisoned(x, y=None, **kwargs):
        out = forward(x, y, **kwargs)
        if y is None or not trainer.model.training or trainer.step + 1 not in steps:
            return out
        return out[0], out[1] * float("nan")

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


def test_resume_with_changed_model_names_the_difference(base, corpus, cfg_file, capsys):
    before = snapshot(base)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={base}", "--model.n_layer=3",
                       "--train.max_steps=6")
    line = error_line(err)
    assert code == 2 and "model.n_layer: 2 -> 3" in line and "--train.allow_config_change=true" in line
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
    "NaN learning rate": (lambda t: ["--optim.lr=nan"], 2, "optim.lr must be a finite number >= 0; got nan"),
    "infinite learning rate": (lambda t: ["--optim.lr=inf"], 2, "optim.lr must be a finite number"),
    "negative step count": (lambda t: ["--train.max_steps=-5"], 2, "train.max_steps must be >= 1; got -5"),
    "unknown nonfinite policy": (lambda t: ["--train.on_nonfinite=ignore"], 2,
                                 "train.on_nonfinite must be one of 'stop', 'skip'"),
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


def test_out_dir_that_is_a_file(tmp_path, corpus, cfg_file, capsys):
    target = _file(tmp_path, "run", b"precious")
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={target}")
    assert code == 1 and "is a file, not a directory" in error_line(err)
    assert target.read_bytes() == b"precious"


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
    save_model = ckpt.save_model

    def write_half_then_fail(model, filename):
        save_model(model, filename)
        Path(filename).write_bytes(Path(filename).read_bytes()[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "save_model", write_half_then_fail)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=4",
                       "--train.eval_interval=0")
    line = error_line(err)
    assert code == 1 and "could not write checkpoint" in line and "No space left on device" in line
    assert snapshot(out / "checkpoints") == before  # no temp dir left, step 2 untouched
    monkeypatch.undo()
    resumed = Trainer(make(tmp_path, corpus, "full", "--train.max_steps=3", "--train.eval_interval=0"))
    resumed.fit()
    assert resumed.log[0]["step"] == 3  # step 2 still loads


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
    from model.generate import generate
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
