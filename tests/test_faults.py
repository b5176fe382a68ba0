"""Runs that survive faults: kill -9 at random moments, SIGTERM / SIGINT, damaged checkpoints.

Modelled on how torchtitan and PyTorch Distributed Checkpoint test themselves: kill a training
process at random moments, resume, and demand the same losses bit for bit; damage a checkpoint and
demand a fall-back to the previous one. The `slow` tests run real subprocesses.
"""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from model import GPT
from tiny_run import ROOT, TINY, cli, error_line, fit, make, metrics, numerics, records_written, snapshot, tiny
from train import checkpoint as ckpt
from train.config import load_config
from train.errors import ConfigError
from train.parallel import Dist, full_model_state
from train.tokenizer import recorded
from train.trainer import Trainer


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
    straight = fit(Trainer(make(tmp_path, corpus, "a", "--train.max_steps=6", "--train.eval_interval=0")))
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
    resumed = fit(Trainer(make(tmp_path, corpus, "b", "--train.max_steps=6", "--train.eval_interval=0")))
    err = capsys.readouterr().err
    assert f"warning: skipping checkpoint {newest}" in err
    assert resumed[0]["step"] == 3  # resumed from step 2
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight][2:]


def test_only_a_damaged_checkpoint_falls_back_and_a_mismatched_one_is_an_error(tmp_path):
    """load_newest tries step 4, then step 2, when step 4 is corrupt; a checkpoint that is whole but
    written for another model is not skipped: its CheckpointMismatch reaches the caller."""
    for step in (2, 4):
        (ckpt.checkpoint_dir(tmp_path) / f"step_{step:08d}").mkdir(parents=True)
        (ckpt.checkpoint_dir(tmp_path) / f"step_{step:08d}" / ckpt.MARKER).write_text("{}")
    tried = []

    def load(path, error):
        tried.append(path.name)
        if path.name == "step_00000004":
            raise error(path.name)
        return "loaded"

    assert ckpt.load_newest(tmp_path, lambda p: load(p, ckpt.CheckpointCorrupt)) == (
        ckpt.checkpoint_dir(tmp_path) / "step_00000002", "loaded")
    tried.clear()
    with pytest.raises(ckpt.CheckpointMismatch):
        ckpt.load_newest(tmp_path, lambda p: load(p, ckpt.CheckpointMismatch))
    assert tried == ["step_00000004"]


def test_pruning_unmarks_an_old_checkpoint_before_deleting_it(tmp_path, monkeypatch):
    """An old checkpoint whose deletion never finishes (here: never starts) is no longer listed, so a
    half-deleted directory is never loaded."""
    monkeypatch.setattr(ckpt.shutil, "rmtree", lambda *args, **kwargs: None)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, ({"w": torch.full((2,), float(step))}, {}), {}, {"step": step}, "",
                             keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]


def test_a_checkpoint_missing_some_of_the_models_tensors_does_not_fit(tmp_path):
    """Weights load strictly: a one-layer checkpoint in a two-layer model is a CheckpointMismatch, not a
    model whose second layer keeps its initial weights."""
    path = ckpt.save_checkpoint(tmp_path, 1, full_model_state(GPT(tiny(n_layer=1)), Dist()), {}, {"step": 1}, "")
    with pytest.raises(ckpt.CheckpointMismatch, match="does not fit this model"):
        ckpt.load_checkpoint(path, GPT(tiny(n_layer=2)))


@pytest.mark.parametrize("marker", ['{"files": []}', '{"files": {"model.safetensors": 5}}', "[]"])
def test_a_marker_of_another_shape_is_a_damaged_checkpoint(tmp_path, marker):
    """Valid JSON that is not the manifest's shape makes the checkpoint damaged (load_newest then
    falls back), not an AttributeError."""
    path = ckpt.save_checkpoint(tmp_path, 1, ({"w": torch.zeros(2)}, {}), {}, {"step": 1}, "")
    (path / ckpt.MARKER).write_text(marker)
    with pytest.raises(ckpt.CheckpointCorrupt):
        ckpt.verify_checkpoint(path)


def test_a_tokenizer_record_of_another_shape_is_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text("[]")
    with pytest.raises(ConfigError, match="tokenizer.json: unreadable \\(not a JSON object\\)"):
        recorded(tmp_path)


def test_verifier_refuses_a_file_of_another_size_or_content(tmp_path, base):
    """A checkpoint file that grew by 3 bytes is refused for its size (the manifest's count plus 3
    named), and one with a byte changed at the same size for its SHA-256."""
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt.latest_checkpoint(base), copy)
    path = copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data + b"\0\0\0")
    grown = f"model.safetensors has {len(data) + 3} bytes, expected {len(data)}"
    with pytest.raises(ckpt.CheckpointCorrupt, match=grown):
        ckpt.verify_checkpoint(copy)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ckpt.CheckpointCorrupt, match="model.safetensors does not match its SHA-256"):
        ckpt.verify_checkpoint(copy)
    path.write_bytes(data)
    ckpt.verify_checkpoint(copy)


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
        for banned in (r"pickle\.loads?\(", r"(?<![\w.])(?<!def )eval\(", r"(?<![\w.])exec\(", r"yaml\.load\("):
            assert not re.search(banned, text), f"{path.name} matches {banned}"


# ---------------------------------------------------------------------------------------------
# signals: finish the step, save, exit cleanly, resume bit for bit


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_finishes_step_saves_and_resumes_exactly(tmp_path, corpus, capsys, monkeypatch, sig):
    straight = fit(Trainer(make(tmp_path, corpus, "a", "--train.max_steps=10", "--train.eval_interval=5")))
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
    with records_written(first.out_dir) as first_log:
        summary = first.fit()
    assert signal.getsignal(sig) is before  # handlers restored
    assert summary["signal"] == sig.name and summary["exit_code"] == 128 + sig
    assert f"stopped by {sig.name} at step 4; checkpoint saved" in capsys.readouterr().out
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step_00000004"
    monkeypatch.setattr(Trainer, "train_step", step)
    second = fit(Trainer(make(tmp_path, corpus, "b", "--train.max_steps=10", "--train.eval_interval=5")))
    assert numerics(first_log + second) == numerics(straight)


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


def test_stale_temps_of_this_process_and_of_unnamed_writers_are_removed_but_not_a_live_writers(tmp_path):
    """A temp named after this process's own pid cannot be one it is writing now (it would not be
    asking), so it is a killed writer's whose pid came back; one without a pid has no writer."""
    root = ckpt.checkpoint_dir(tmp_path)
    mine, unnamed = root / f".tmp-step_00000003-{os.getpid()}", root / ".tmp-step_00000003-x"
    live = root / f".tmp-step_00000003-{os.getppid()}"
    for d in (mine, unnamed, live):
        d.mkdir(parents=True)
    ckpt.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == [live.name]
