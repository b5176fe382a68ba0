"""The trainer end to end on a tiny model: exact resume, checkpoints, metrics, sampling, CLI."""

import json
import math
import subprocess
import sys

import pytest
import torch

from model import GPT
from scripts.device_reads import DeviceReads
from train import checkpoint as ckpt
from train.config import load_config
from train.data import get_batch
from train.trainer import Trainer, evaluate

from tiny_run import ROOT, TINY, cli, fit, make, metrics  # the `corpus` and `cfg_file` fixtures come from conftest.py


def losses(records):
    return [r["loss"] for r in records]


def test_resume_is_bit_exact(tmp_path, corpus):
    straight = fit(Trainer(make(tmp_path, corpus, "a", "--train.max_steps=20", "--train.eval_interval=5")))
    first = fit(Trainer(make(tmp_path, corpus, "b", "--train.max_steps=10", "--train.eval_interval=5")))
    second = fit(Trainer(make(tmp_path, corpus, "b", "--train.max_steps=20", "--train.eval_interval=5")))
    assert second[0]["step"] == 11  # resumed, not restarted
    assert losses(first) + losses(second) == losses(straight)  # bit-identical floats
    val_a = [r["val_loss"] for r in straight if "val_loss" in r]
    val_b = [r["val_loss"] for r in first + second if "val_loss" in r]
    assert val_a == val_b
    a = ckpt.latest_checkpoint(tmp_path / "a")
    b = ckpt.latest_checkpoint(tmp_path / "b")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    # metrics.jsonl of the resumed run holds each step exactly once
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))


def test_a_cpu_resume_with_another_thread_count_warns(tmp_path, corpus, capsys):
    """A CPU kernel splits its sums across its threads, so a resume under another thread count
    leaves the uninterrupted run's losses in float rounding. The checkpoint records its count; a
    resume with another one says so, a resume with the same one says nothing."""
    before = torch.get_num_threads()
    run = lambda steps: fit(Trainer(make(tmp_path, corpus, "t", f"--train.max_steps={steps}",  # noqa: E731
                                         "--train.eval_interval=0")))
    try:
        torch.set_num_threads(2)
        run(2)
        state = json.loads((ckpt.latest_checkpoint(tmp_path / "t") / "state.json").read_text())
        assert state["cpu_threads"] == 2
        capsys.readouterr()
        run(3)
        assert "CPU threads" not in capsys.readouterr().err
        torch.set_num_threads(1)
        run(4)
        err = capsys.readouterr().err
        assert "warning: checkpoint step_00000003 was written with 2 CPU threads and this process has 1" in err
        assert "OMP_NUM_THREADS=2 resumes it bit for bit" in err
    finally:
        torch.set_num_threads(before)


def test_checkpoint_round_trip_and_pruning(tmp_path, corpus):
    trainer = Trainer(make(tmp_path, corpus, "c", "--train.max_steps=6", "--train.ckpt_interval=2",
                           "--train.keep_checkpoints=2", "--train.eval_interval=0"))
    trainer.fit()
    kept = ckpt.list_checkpoints(tmp_path / "c")
    assert [p.name for p in kept] == ["step_00000004", "step_00000006"]
    fresh = GPT(trainer.cfg.model)
    ckpt.load_checkpoint(kept[-1], fresh)
    for (name, p), q in zip(trainer.model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(p, q), name
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # tying survives loading
    state = json.loads((kept[-1] / "state.json").read_text())
    assert state["step"] == 6
    # an incomplete checkpoint (no marker) is never picked up
    partial = ckpt.checkpoint_dir(tmp_path / "c") / "step_00000008"
    partial.mkdir()
    assert ckpt.latest_checkpoint(tmp_path / "c") == kept[-1]


def test_metrics_and_config_written(tmp_path, corpus):
    trainer = Trainer(make(tmp_path, corpus, "d", "--train.max_steps=4", "--train.eval_interval=2",
                           "--train.log_interval=2"))
    summary = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert {"step", "loss", "lr", "tokens_per_s", "val_loss", "val_bpb"} <= r.keys()
        assert r["tokens_per_s"] > 0
    # bits per byte = nats per token / ln 2 / (UTF-8 bytes per token); byte-level, the
    # end-of-text tokens carry no bytes, so a little over loss / ln 2
    per_token = trainer.data.bytes_per_token("val")
    assert 0.95 < per_token < 1.0
    assert records[-1]["val_bpb"] == pytest.approx(records[-1]["val_loss"] / math.log(2) / per_token, rel=1e-12)
    assert load_config(tmp_path / "d" / "config.toml") == trainer.cfg
    assert summary["steps"] == 4 and "val_bpb" in summary


def test_loss_decreases(tmp_path, corpus):
    records = fit(Trainer(make(tmp_path, corpus, "e", "--train.max_steps=40", "--train.eval_interval=0",
                               "--model.dropout=0.0", "--optim.decay_steps=0")))
    assert losses(records)[-1] < 0.6 * losses(records)[0]


def test_cli_trains_then_samples(tmp_path, corpus):
    out = tmp_path / "cli"
    args = [f"--train.out_dir={out}", "--train.max_steps=3", "--train.eval_interval=0"]
    proc = subprocess.run([sys.executable, "-m", "train", "-", *TINY, *corpus, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "config file not found" in proc.stderr  # '-' is not a file
    cfg_file = tmp_path / "tiny.toml"
    cfg_file.write_text("[train]\nmax_steps = 3\n")
    proc = subprocess.run([sys.executable, "-m", "train", str(cfg_file), *TINY, *corpus, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "done: 3 steps" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "train.sample", str(out), "--prompt", "def ",
                           "--max_new_tokens", "20", "--seed", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.splitlines()[1]
    assert text.startswith("def ") and len(text.encode()) >= 4
    again = subprocess.run([sys.executable, "-m", "train.sample", str(out), "--prompt", "def ",
                            "--max_new_tokens", "20", "--seed", "1"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.stdout == proc.stdout  # seeded sampling is reproducible
    missing = subprocess.run([sys.executable, "-m", "train.sample", str(tmp_path / "nope")],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_default_config_overfits_one_batch():
    """The model of configs/default.toml, with its optimizer settings, memorises one real batch
    (2 x 128 bytes: 219 steps to a loss under 0.05, a quarter of the work of 4 x 256 per step)."""
    from train.data import get_batch, prepare
    from train.optim import build_optimizer

    cfg = load_config(ROOT / "configs" / "default.toml")
    data = prepare(cfg.data, progress=False)
    x, y = get_batch(data.train, 2, 128, key=(0, 0, 0))
    torch.manual_seed(0)
    model = GPT(cfg.model).train()
    opt = build_optimizer(model, cfg.optim, "cpu")
    losses = []
    for _ in range(300):
        loss = model(x, y)[1]["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
    assert losses[0] > 4.0  # starts near uniform over 257 symbols (ln 257 = 5.55)
    assert losses[-1] < 0.1, f"loss {losses[-1]:.3f} after {len(losses)} steps"


def test_a_training_step_reads_the_device_once(tmp_path, corpus):
    """One host read of device values per optimizer step, whatever grad_accum: the loss terms and
    the gradient norm in one copy. On a GPU each read waits for the queued work, so every extra one
    leaves the device idle while the host prepares the next launches (scripts/device_reads.py)."""
    trainer = Trainer(make(tmp_path, corpus, "run"))  # grad_accum = 2
    trainer.train_step()
    with DeviceReads() as seen:
        record = trainer.train_step()
    assert seen.reads == 1 and seen.by_name["Tensor.tolist"] == 1, seen.report()
    assert math.isfinite(record["loss"]) and record["grad_norm"] > 0


@pytest.mark.parametrize("dtype, rtol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_a_step_logs_the_mean_loss_and_gradient_norm_of_its_micro_batches(tmp_path, corpus, dtype, rtol):
    """With grad_accum 2, a step's loss is the mean of its two micro-batches' losses and its
    gradient norm is that of the mean loss's gradient, recomputed here in fp32 on a copy of the
    model; under fp16 loss scaling the norm is of the unscaled gradient."""
    trainer = Trainer(make(tmp_path, corpus, "run", "--model.dropout=0", f"--train.dtype={dtype}"))
    cfg = trainer.cfg
    model = GPT(cfg.model)
    model.load_state_dict(trainer.model.state_dict())
    batches = [get_batch(trainer.data.train, cfg.train.batch_size, cfg.seq_len, (cfg.train.seed, 0, 0, m, 0)) for m in (0, 1)]
    micro = [model(x, y)[1]["loss"] for x, y in batches]
    mean = (micro[0] + micro[1]) / 2
    mean.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    record = trainer.train_step()
    assert record["loss"] == pytest.approx(mean.item(), rel=rtol)
    assert record["grad_norm"] == pytest.approx(norm.item(), rel=rtol)


def test_evaluation_is_the_mean_loss_of_the_fixed_val_batches_in_bits_per_byte(tmp_path, corpus):
    """val_loss is the mean over train.eval_batches of the loss on the val split's batches
    (val_seed, 1, i), and val_bpb is val_loss / ln 2 divided by the val split's bytes per token."""
    trainer = Trainer(make(tmp_path, corpus, "run", "--train.eval_batches=3"))
    cfg, data, model = trainer.cfg, trainer.data, trainer.model.eval()
    scores = evaluate(model, data, cfg, trainer.device, "fp32")
    batches = [get_batch(data.val, cfg.train.batch_size, cfg.seq_len, (cfg.train.val_seed, 1, i)) for i in range(3)]
    with torch.no_grad():
        losses = [float(model(x, y)[1]["loss"]) for x, y in batches]
    want = sum(losses) / 3
    counts = data.meta["splits"]["val"]
    assert scores["val_loss"] == pytest.approx(want, rel=1e-6)
    assert scores["val_bpb"] == pytest.approx(want / math.log(2) * counts["tokens"] / counts["bytes"], rel=1e-6)


def test_max_seconds_ends_the_run_as_a_finished_one(tmp_path, corpus, cfg_file, capsys, one_thread):
    """A budget that runs out after step 1 ends the run there, as max_steps would (evaluated,
    checkpointed, exit 0), marked in its last metrics line and checkpoint; a re-run is done."""
    out = tmp_path / "timed"
    run = [cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=50",
           "--train.eval_interval=0", "--train.ckpt_interval=0", "--train.log_interval=10"]
    code, stdout, _ = cli(capsys, *run, "--train.max_seconds=1e-6")
    assert code == 0 and "done: 1 steps (1 this run)" in stdout and "train.max_seconds reached" in stdout
    last = metrics(out)[-1]
    assert last["step"] == 1 and last["ended_by"] == "max_seconds" and "val_bpb" in last
    newest = ckpt.latest_checkpoint(out)
    assert newest.name == "step_00000001" and ckpt.read_state(newest)["ended_by"] == "max_seconds"
    code, stdout, _ = cli(capsys, *run, "--train.max_seconds=1e-6")
    assert code == 0 and "done: 1 steps (0 this run)" in stdout  # it is done: no further step
    assert len(metrics(out)) == 1 and ckpt.list_checkpoints(out) == [newest]
    code, stdout, _ = cli(capsys, *run, "--train.max_seconds=0", "--train.max_steps=2")  # limit removed
    assert code == 0 and "done: 2 steps (1 this run)" in stdout and "reached" not in stdout
    assert [r["step"] for r in metrics(out)] == [1, 2] and "ended_by" not in metrics(out)[-1]
    assert "ended_by" not in ckpt.read_state(ckpt.latest_checkpoint(out))


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "true"])
def test_max_seconds_must_be_a_finite_number(value):
    with pytest.raises(ValueError, match=r"^train\.max_seconds must be") as e:
        load_config(None, [f"--train.max_seconds={value}"])
    assert "\n" not in str(e.value)


def test_warmup_as_long_as_the_run_warns_when_it_starts(tmp_path, corpus, capsys):
    cfg = make(tmp_path, corpus, "w", "--train.max_steps=2", "--optim.warmup_steps=5", "--train.eval_interval=0")
    assert capsys.readouterr().err == ""  # not when the config is read (finished runs are read too)
    Trainer(cfg).fit()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warnings == ["warning: optim.warmup_steps=5 >= train.max_steps=2: the learning rate never reaches "
                        "optim.lr=0.003 before the last step (which takes 0.0012) and never decays; "
                        "lower optim.warmup_steps"]


def test_truncate_keeps_the_steps_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    """Resuming from step 2: the lines of steps 1 and 2 stay; step 3 and a line a kill cut short go."""
    from train.metrics_log import MetricsLog

    log = MetricsLog(tmp_path)
    lines = ['{"step": 1, "loss": 3.0}', '{"step": 2, "loss": 2.5}', '{"step": 3, "loss": 2.0}', '{"step": 4, "lo']
    log.path.write_text("\n".join(lines))
    log.truncate(2)
    assert log.path.read_text() == lines[0] + "\n" + lines[1] + "\n"
