"""The ablation runner's child processes (train/ablate_procs.py) and the loss-curve series
(train/plot.py), on hand-built runs and logs: no training, no child actually started."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tiny_run import ROOT
from train import ablate_procs, plot
from train.report import RunData


def fake_run(out_dir: Path) -> SimpleNamespace:
    return SimpleNamespace(out_dir=out_dir, label="wide", seed=1, max_steps=4, config="c.toml", overrides=[])


def child(tmp_path: Path, monkeypatch, code: int, new_log: str, old_log: str = "") -> ablate_procs.Child:
    """A Child whose process (never started) exits with `code` after writing `new_log` to train.log,
    which already holds an earlier launch's `old_log`."""
    run = fake_run(tmp_path / "run")
    run.out_dir.mkdir(parents=True)
    (run.out_dir / "train.log").write_text(old_log)
    monkeypatch.setattr(ablate_procs, "_spawn", lambda args, log, threads: SimpleNamespace(returncode=code))
    c = ablate_procs.Child(run, threads=1)
    with open(run.out_dir / "train.log", "a") as f:
        f.write(new_log)
    return c


@pytest.mark.parametrize("code", [130, 143])
def test_a_child_ended_by_sigint_or_sigterm_is_stopped_not_failed(tmp_path, monkeypatch, code):
    """Exit codes 130 (SIGINT) and 143 (SIGTERM) mean a clean stop, whether or not the runner was
    interrupted; the status file says so, with the checkpoint the log announces."""
    c = child(tmp_path, monkeypatch, code, "stopped by SIGTERM at step 3; checkpoint saved\n")
    assert c.finish(interrupted=False) == ("stopped", "")
    assert c.status["state"] == "stopped" and c.status["checkpoint_saved"] is True
    assert c.status["exit_code"] == code


def test_a_failed_childs_error_is_the_last_error_line_of_its_own_launch(tmp_path, monkeypatch):
    """The error recorded is the last `error: ` line this launch wrote; an earlier launch's lines
    in the same train.log are not read."""
    c = child(tmp_path, monkeypatch, 1, "error: first\nstep 1\nerror: last\n", old_log="error: old launch\n")
    assert c.finish(interrupted=False) == ("failed", "last")
    c = child(tmp_path / "again", monkeypatch, 1, "step 1\n", old_log="error: old launch\n")
    assert c.finish(interrupted=False) == ("failed", "exit code 1 (see train.log)")


def test_spawn_gives_the_child_its_thread_budget_and_this_repository(tmp_path, monkeypatch):
    """`python -m ARGS` with OMP and MKL limited to `threads`, the repository first on PYTHONPATH,
    the command line written to the log first."""
    seen = {}
    monkeypatch.setattr(ablate_procs.subprocess, "Popen", lambda cmd, **kw: seen.update(cmd=cmd, **kw))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    with open(tmp_path / "log", "w") as log:
        ablate_procs._spawn(["train", "c.toml"], log, 3)
    env = seen["env"]
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/elsewhere"]
    assert seen["cmd"][1:] == ["-m", "train", "c.toml"] and seen["start_new_session"] is True
    assert (tmp_path / "log").read_text() == "$ python -m train c.toml\n"


def records(values: list[float], tokens_per_step: int) -> list[dict]:
    return [{"step": 10 * (i + 1), "tokens": 10 * (i + 1) * tokens_per_step, "elapsed_s": 2.0 * (i + 1),
             "val_bpb": v, "loss": v + 1} for i, v in enumerate(values)]


def test_series_is_drawn_against_tokens_with_a_band_from_lowest_to_highest(tmp_path):
    """Two seeds: x is the mean of the logged token counts (not the step), the band runs from the
    lower to the higher value at each shared record, and the line is their mean."""
    runs = [RunData(tmp_path, None, records([3.0, 2.0, 1.5], 100), {}),
            RunData(tmp_path, None, records([2.0, 1.0], 300), {})]
    tokens, seconds, lo, mid, hi, n = plot._series(runs)
    assert tokens == [2000, 4000] and seconds == [2.0, 4.0] and n == 2
    assert lo == [2.0, 1.0] and hi == [3.0, 2.0] and mid == [2.5, 1.5]


def test_plot_cli_draws_training_loss_when_a_run_has_no_evaluation(tmp_path, monkeypatch, capsys):
    """One quantity per figure: validation bpb when every run has been evaluated, else training
    loss for all of them."""
    evaluated = [dict(r, val_loss=r["val_bpb"]) for r in records([2.0, 1.0], 100)]
    fresh = [{"step": 10, "tokens": 1000, "loss": 5.0}]
    runs = {"a": RunData(tmp_path / "a", object(), evaluated, {}), "b": RunData(tmp_path / "b", object(), fresh, {})}
    metrics = []
    monkeypatch.setattr(plot, "find_runs", lambda d: [d])
    monkeypatch.setattr(plot, "load_run", lambda p: runs[p.name])
    monkeypatch.setattr(plot, "plot_curves", lambda groups, out, metric="val_bpb": metrics.append(metric) or out)
    for name in runs:
        (tmp_path / name).mkdir()
    assert plot.main([str(tmp_path / "a"), "-o", str(tmp_path / "c.png")]) == 0
    assert plot.main([str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "c.png")]) == 0
    assert metrics == ["val_bpb", "loss"]
    assert "plotting training loss" in capsys.readouterr().err
