"""The ablation report's arithmetic (train/report.py) on runs made up in the test: seed spreads, deltas
against the baseline and the rung before, per-seed steps, wall clock and throughput, which runs count
as done, and which task scores are read."""

import statistics
from pathlib import Path

import pytest

from model.accounting import flops_per_token
from tiny_run import ROOT
from train.config import load_config


def finished_run(tmp_path: Path, seed: int, bpb: float, loss: float | None = None):
    """A finished run of the default config, evaluated once at val_bpb `bpb` (val_loss `loss`, or bpb)."""
    from train.report import RunData

    cfg = load_config(ROOT / "configs" / "default.toml", [f"--train.seed={seed}", f"--train.out_dir={tmp_path}"])
    record = {"step": 1, "val_loss": bpb if loss is None else loss, "val_bpb": bpb}
    return RunData(tmp_path, cfg, [record], {"state": "done"})


def test_seed_spread_is_the_sample_standard_deviation(tmp_path):
    """Mean ± the sample (n - 1) standard deviation over seeds, as the report says, and the
    spread test |delta| > std(variant) + std(baseline) decided with it: here the population
    deviation (smaller by sqrt(2/3)) would call b's step beyond the spread, the sample one does not."""
    from train.report import rows

    a, b = [3.0, 3.2, 3.4], [2.64, 2.84, 3.04]
    a_loss = [2.0, 2.5, 4.0]
    groups = {"a": [finished_run(tmp_path, s, x, y) for s, x, y in zip((1, 2, 3), a, a_loss)],
              "b": [finished_run(tmp_path, s, x) for s, x in zip((1, 2, 3), b)]}
    t = {r["variant"]: r for r in rows({"baseline": "a"}, groups)}
    assert t["a"]["val_bpb_std"] == pytest.approx(statistics.stdev(a)) == pytest.approx(0.2)
    assert t["b"]["val_bpb_std"] == pytest.approx(statistics.stdev(b))
    assert t["a"]["val_loss_std"] == pytest.approx(statistics.stdev(a_loss)) == pytest.approx(1.0408, abs=1e-4)
    assert t["a"]["val_loss_mean"] == pytest.approx(statistics.fmean(a_loss))
    delta = statistics.fmean(b) - statistics.fmean(a)  # -0.36: under 0.2 + 0.2, over 2 * 0.163
    assert t["b"]["delta_bpb"] == pytest.approx(delta)
    assert t["b"]["beyond_seed_spread"] is False and t["a"]["beyond_seed_spread"] is None


def test_deltas_are_against_the_named_baseline_not_the_first_row(tmp_path):
    """With baseline "b" listed second, each row's delta_bpb is its mean val bpb minus b's:
    a 3.0 - 2.5 = +0.5, b 0, c 2.0 - 2.5 = -0.5."""
    from train.report import rows

    groups = {v: [finished_run(tmp_path, 1, bpb)] for v, bpb in (("a", 3.0), ("b", 2.5), ("c", 2.0))}
    t = {r["variant"]: r for r in rows({"baseline": "b"}, groups)}
    assert [t[v]["delta_bpb"] for v in "abc"] == pytest.approx([0.5, 0.0, -0.5])


def test_steps_between_variants_are_paired_by_seed(tmp_path):
    """The per-seed step from the previous variant compares runs of equal seed (same batch order),
    whatever order the runs are listed in, and says whether every seed moved the same way."""
    from train.report import rows

    def run(seed: int, bpb: float):
        return finished_run(tmp_path, seed, bpb)

    groups = {"a": [run(1, 3.0), run(2, 3.2)], "b": [run(1, 2.9), run(2, 3.25)], "c": [run(2, 3.0), run(1, 2.5)]}
    t = {r["variant"]: r for r in rows({"baseline": "a", "delta_previous": True}, groups)}
    assert t["a"]["delta_bpb_previous_by_seed"] is None and t["a"]["previous_same_sign"] is None
    assert t["b"]["delta_bpb_previous_by_seed"] == "-0.1000;+0.0500" and t["b"]["previous_same_sign"] is False
    assert t["c"]["delta_bpb_previous_by_seed"] == "-0.4000;-0.2500" and t["c"]["previous_same_sign"] is True
    assert t["c"]["delta_bpb_previous"] == pytest.approx((2.5 + 3.0) / 2 - (2.9 + 3.25) / 2)
    one = rows({"baseline": "a", "delta_previous": True}, {"a": [run(1, 3.0)], "b": [run(1, 2.0)]})
    assert one[1]["delta_bpb_previous_by_seed"] == "-1.0000" and one[1]["previous_same_sign"] is None


def test_wall_clock_and_throughput_are_read_from_the_records(tmp_path):
    """Without `elapsed_s` the wall clock adds, at each record, the steps since the previous one x the tokens
    of a step / the last logged tokens_per_s; a logged `elapsed_s` is taken as it is. tok/s is the median
    over the logged steps after the first (warm-up) one."""
    from train.report import RunData

    cfg = load_config(ROOT / "configs" / "default.toml", ["--train.batch_size=4", "--train.grad_accum=2",
                                                           "--model.block_size=32"])  # 256 tokens a step
    records = [{"step": 2, "tokens_per_s": 512.0}, {"step": 4, "tokens_per_s": 256.0},
               {"step": 6, "val_loss": 2.0, "val_bpb": 1.5}, {"step": 8, "tokens_per_s": 1024.0},
               {"step": 10, "tokens_per_s": 2048.0, "val_loss": 1.8, "val_bpb": 1.25}]
    run = RunData(tmp_path, cfg, records, {"state": "done"})
    assert run.elapsed() == [1.0, 3.0, 5.0, 5.5, 5.75]
    assert run.evals() == [(6 * 256, 5.0, 2.0, 1.5), (10 * 256, 5.75, 1.8, 1.25)]
    assert run.tok_per_s() == 1024.0  # of 256, 1024 and 2048
    records[2] |= {"elapsed_s": 7.5, "tokens": 1000}
    assert run.evals()[0][:2] == (1000, 7.5)


def test_a_run_without_a_status_is_done_when_evaluated_at_max_steps_or_at_its_time_budget(tmp_path):
    from train.report import RunData

    cfg = load_config(ROOT / "configs" / "default.toml", ["--train.max_steps=5"])
    val = {"val_loss": 2.0, "val_bpb": 1.5}
    assert RunData(tmp_path, cfg, [{"step": 5, **val}], {}).done
    assert RunData(tmp_path, cfg, [{"step": 3, **val, "ended_by": "max_seconds"}], {}).done
    assert not RunData(tmp_path, cfg, [{"step": 3, **val}, {"step": 4, "loss": 2.0}], {}).done
    assert not RunData(tmp_path, cfg, [{"step": 5, "loss": 2.0}], {}).done  # never evaluated


def test_a_row_averages_the_finished_seeds_only(tmp_path):
    """b's second seed stopped and c's run has no readable config or metrics (status "done" or not): they
    count as unfinished. Wall s is the mean over seeds; the per-seed step compares val bpb, not val loss."""
    from train.report import RunData, _markdown, rows

    def run(seed: int, bpb: float, loss: float, elapsed: float, state: str = "done"):
        r = finished_run(tmp_path, seed, bpb, loss)
        r.records[0]["elapsed_s"], r.status["state"] = elapsed, state
        return r

    groups = {"a": [run(1, 3.0, 2.0, 5.0), run(2, 3.2, 2.2, 7.0)],
              "b": [run(1, 2.5, 2.9, 6.0), run(2, 2.0, 2.0, 1.0, state="stopped")],
              "c": [RunData(tmp_path, None, [], {"state": "done"})]}
    spec = {"baseline": "a", "delta_previous": True}
    t = {r["variant"]: r for r in rows(spec, groups)}
    assert [(t[v]["status"], t[v]["seeds_done"]) for v in "abc"] == [("ok", 2), ("1/2 seeds", 1), ("0/1 seeds", 0)]
    assert t["a"]["wall_s"] == 6.0 and t["b"]["wall_s"] == 6.0 and t["c"]["wall_s"] is None
    assert t["b"]["val_bpb_mean"] == 2.5 and t["b"]["delta_bpb_previous_by_seed"] == "-0.5000"
    cfg = groups["a"][0].cfg
    md = _markdown(spec, list(t.values()))
    assert f"| {flops_per_token(cfg.model, cfg.seq_len) / 1e6:.1f} M |" in md
    assert "| c | 0/1 seeds |" in md


def test_metrics_records_without_an_integer_step_are_skipped(tmp_path):
    from train.report import read_records

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.5}\n[1, 2]\n{"step": "2", "loss": 2.4}\n{"event": "resumed"}\n'
                    '{"step": 3, "lo\n')
    assert read_records(path) == [{"step": 1, "loss": 2.5}]
    assert read_records(tmp_path / "missing.jsonl") == []


def test_task_scores_come_only_from_a_record_of_the_ablations_tasks_settings_and_checkpoint():
    from train.report import task_scores

    spec = {"tasks": ["arithmetic", "stdlib-cloze"], "task_settings": {"limit": 4}}
    record = {"step": 6, "settings": {"limit": 4}, "aggregate": {"value": 0.25},
              "tasks": [{"task": "arithmetic", "headline": "pass@1", "metrics": {"pass@1": 0.5}},
                        {"task": "stdlib-cloze", "headline": "acc_norm", "metrics": {"acc": 0.5, "acc_norm": 0.75}}]}
    assert task_scores(spec, record, 6) == {"arithmetic": 0.5, "stdlib-cloze": 0.75, "aggregate": 0.25}
    assert task_scores(spec, record, 4) is None  # scored at another checkpoint
    assert task_scores(spec, record | {"settings": {"limit": 3}}, 6) is None
    assert task_scores(spec | {"tasks": ["arithmetic"]}, record, 6) is None
    assert task_scores({}, record, 6) is None and task_scores(spec, record, None) is None
