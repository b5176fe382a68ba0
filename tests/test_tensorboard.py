"""train.tensorboard: the real event files, read back with TensorBoard's own reader, hold the numbers
of metrics.jsonl at its steps, also after a resume that re-runs steps."""

import shutil
import sys

import pytest

from train import checkpoint as ckpt
from train.metrics_log import INSTALL, TENSORBOARD_DIR, MetricsLog, add_scalars, scalars
from train.trainer import Trainer

from tiny_run import TINY, cli, error_line, make, metrics

pytest.importorskip("tensorboard")
import numpy as np  # noqa: E402 (a dependency of tensorboard)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

# what a dense model's metrics.jsonl lines carry as numbers (besides `step`)
TAGS = {"loss", "lr", "grad_norm", "skipped_steps", "tokens", "tokens_per_s", "mfu", "elapsed_s"}


def event_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows them (all event files, purges applied)."""
    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_scalars(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The same from metrics.jsonl, each value rounded as TensorBoard stores it (float32)."""
    out = {}
    for r in records:
        for tag in TAGS | {"val_loss", "val_bpb"}:
            if tag in r:
                out.setdefault(tag, []).append((r["step"], float(np.float32(r[tag]))))
    return out


def test_event_files_hold_the_metrics(tmp_path, corpus, one_thread):
    out = tmp_path / "tb"
    args = ["--train.max_steps=3", "--train.eval_interval=2", "--train.ckpt_interval=2", "--train.tensorboard=true"]
    Trainer(make(tmp_path, corpus, "tb", *args)).fit()
    seen = event_scalars(out)
    assert set(seen) == TAGS | {"val_loss", "val_bpb"}
    assert seen == jsonl_scalars(metrics(out))
    assert [step for step, _ in seen["val_bpb"]] == [2, 3]
    # a run killed after logging step 3 but before its checkpoint: the re-run resumes from step 2,
    # and TensorBoard shows the re-run step's numbers (new timings), not the lost ones, as metrics.jsonl does
    shutil.rmtree(ckpt.latest_checkpoint(out))
    Trainer(make(tmp_path, corpus, "tb", *args)).fit()
    assert event_scalars(out) == jsonl_scalars(metrics(out))
    add_scalars(out, 3, {"task/stdlib-cloze/acc_norm": 0.3})  # as the evaluation code will
    assert event_scalars(out)["task/stdlib-cloze/acc_norm"] == [(3, float(np.float32(0.3)))]


def test_without_the_package_the_run_fails_at_start(tmp_path, corpus, cfg_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    out = tmp_path / "none"
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={out}", "--train.tensorboard=true")
    assert code == 2 and error_line(err) == f"error: {INSTALL}"
    assert not out.exists()  # before any work


def test_eval_adds_task_scores_to_the_run_only_when_asked(base, tmp_path, capsys):
    """train.eval --task ... --tensorboard adds every metric and the aggregate at the checkpoint's
    step; without the flag it writes nothing into the run."""
    from train import eval as train_eval

    run = tmp_path / "run"
    shutil.copytree(base, run)
    code, _, err = cli(capsys, run, "--task", "arithmetic", "--limit", "2", entry=train_eval.main)
    assert code == 0, err
    assert not (run / TENSORBOARD_DIR).exists()
    code, _, err = cli(capsys, run, "--task", "arithmetic", "--limit", "2", "--tensorboard", entry=train_eval.main)
    assert code == 0, err
    seen = event_scalars(run)
    assert seen["task/arithmetic/pass@1"] == [(4, 0.0)] and set(seen) == {"task/arithmetic/pass@1", "task/aggregate"}
    code, _, err = cli(capsys, run, "--tensorboard", entry=train_eval.main)
    assert code == 2 and "add --task" in error_line(err)


def test_scalars_are_the_records_numbers_by_tag_and_readable_before_the_log_closes(tmp_path):
    """Numbers only (not bools, not the step), a list's elements as key/0, key/1; an evaluation's
    numbers can be read before the log is closed."""
    record = {"step": 5, "loss": 1.5, "tokens": 7, "skipped": True, "moe_max_load": [1.0, 2.5], "status": "ok"}
    assert scalars(record) == {"loss": 1.5, "tokens": 7.0, "moe_max_load/0": 1.0, "moe_max_load/1": 2.5}
    log = MetricsLog(tmp_path, tensorboard=True)
    log.open(0)
    log.append({"step": 1, "loss": 2.0})
    log.append({"step": 2, "loss": 1.9, "val_loss": 1.8})
    assert event_scalars(tmp_path)["val_loss"] == [(2, pytest.approx(1.8))]  # not closed yet
    log.close()
