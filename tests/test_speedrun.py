"""scripts/speedrun.py: both sides trained in one invocation, timed from their own metrics, scored
on the same validation batches; bad command lines are one line and exit 2 before anything runs."""

import json

import pytest

from tiny_run import ROOT, TINY, cli, error_line, load_script
from train.config import read_toml

speedrun = load_script("speedrun")
SHORT = ["--train.max_steps=4", "--train.eval_interval=2", "--train.ckpt_interval=0"]


@pytest.fixture(scope="module")
def race(tmp_path_factory, corpus):
    """The record with two seeds and the baseline, tiny and short, every evaluation under the target."""
    out = tmp_path_factory.mktemp("race") / "out"
    code = speedrun.main(["--out", str(out), "--seeds", "1,2", "--target", "100", *TINY, *corpus, *SHORT])
    return code, out, json.loads((out / "speedrun.json").read_text())


def first_eval(run_dir):
    return next(r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "val_bpb" in r)


def test_times_are_each_runs_own_first_evaluation_under_the_target(race):
    code, out, summary = race
    assert code == 0 and set(summary["runs"]) == {"record-seed1", "baseline", "record-seed2"}
    base = summary["runs"]["baseline"]
    for name, r in summary["runs"].items():
        hit = first_eval(out / name)
        assert (r["seconds"], r["step"], r["reached"]) == (hit["elapsed_s"], 2, True)
        if name != "baseline":
            assert r["ratio"] == pytest.approx(base["seconds"] / r["seconds"])
    assert base["ratio"] is None


def test_every_run_is_scored_on_the_baselines_batches(race):
    _, out, summary = race
    seeds = {}
    for name in summary["runs"]:
        train = read_toml(out / name / "config.toml", "config")["train"]
        seeds[name] = (train["seed"], train["eval_seed"] if train["eval_seed"] >= 0 else train["seed"])
    assert seeds == {"record-seed1": (1, 1337), "record-seed2": (2, 1337), "baseline": (1337, 1337)}
    record = read_toml(out / "record-seed1" / "config.toml", "config")["model"]
    assert record["linear_attention"] == "gated_deltanet"  # configs/speedrun.toml, not the default


def test_a_target_no_run_reaches_is_exit_1_with_no_time(race, corpus, tmp_path, capsys):
    _, out, _ = race
    args = ["--out", tmp_path / "again", "--seeds", "1", "--target", "0.001", "--baseline_run",
            out / "baseline", *TINY, *corpus, *SHORT]
    code, printed, _ = cli(capsys, *args, entry=speedrun.main)
    summary = json.loads((tmp_path / "again" / "speedrun.json").read_text())
    assert code == 1 and not any(r["reached"] for r in summary["runs"].values())
    assert summary["runs"]["baseline"]["reused"] and "| baseline | 1337 | - |" in printed


@pytest.mark.parametrize("argv, problem", [
    (["--seeds", "1,x"], "--seeds must be integers"),
    (["--target", "-1"], "--target must be > 0"),
    (["stray"], "unrecognized arguments: stray"),
    (["--record", "nope.toml"], "config file not found: nope.toml"),
    (["--baseline_run", "."], "no metrics.jsonl there"),
])
def test_bad_command_lines_are_one_line_and_exit_2(capsys, tmp_path, argv, problem):
    code, _, err = cli(capsys, "--out", tmp_path / "out", *argv, entry=speedrun.main)
    assert code == 2 and problem in error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_run_that_fails_stops_the_speedrun_in_one_line(capsys, tmp_path):
    """The run's own error goes to the terminal; the speedrun adds one line naming the command."""
    code, _, err = cli(capsys, "--out", tmp_path / "out", "--seeds", "1", "--data.source=/nonexistent/corpus",
                       entry=speedrun.main)
    assert code == 1 and "-m train configs/speedrun.toml" in error_line(err) and " exited 1" in error_line(err)


def test_a_record_that_evaluates_other_batches_is_refused(capsys, tmp_path):
    record = tmp_path / "record.toml"
    record.write_text(f'base = "{ROOT / "configs" / "speedrun.toml"}"\n[train]\nbatch_size = 8\n')
    code, _, err = cli(capsys, "--out", tmp_path / "out", "--record", record, entry=speedrun.main)
    assert code == 2 and "evaluates batches of 8 x 256 tokens, the baseline 16 x 256" in error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_used_out_dir_is_refused_and_left_alone(capsys, tmp_path):
    (tmp_path / "out").mkdir()
    kept = tmp_path / "out" / "speedrun.json"
    kept.write_text("{}")
    code, _, err = cli(capsys, "--out", tmp_path / "out", entry=speedrun.main)
    assert code == 2 and "is not empty" in error_line(err) and kept.read_text() == "{}"


def test_the_record_names_only_what_it_changes_from_the_default():
    raw = read_toml(ROOT / "configs" / "speedrun.toml", "config")
    assert raw["base"] == "default.toml"
    assert "block_size" not in raw["model"] and "n_layer" not in raw["model"]  # the default's


def test_time_to_target_is_the_first_evaluation_at_or_under_it(tmp_path):
    """The target is reached at an evaluation equal to it; the rate is the median of the logged
    tokens_per_s (100, 110, 120, 400: 115), which one slow or fast step does not move."""
    records = [{"step": 1, "tokens_per_s": 100.0}, {"step": 2, "tokens_per_s": 400.0, "val_bpb": 2.5, "elapsed_s": 3.0},
               {"step": 3, "tokens_per_s": 110.0}, {"step": 4, "tokens_per_s": 120.0, "val_bpb": 2.0, "elapsed_s": 7.0},
               {"step": 6, "val_bpb": 1.5, "elapsed_s": 9.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert speedrun.time_to_target(tmp_path / "metrics.jsonl", 2.0) == {
        "reached": True, "seconds": 7.0, "step": 4, "val_bpb_at": 2.0, "final_step": 6, "final_val_bpb": 1.5,
        "final_elapsed_s": 9.0, "median_tok_s": 115.0}


def test_the_table_gives_the_mean_of_the_record_seeds_ratios():
    run = {"reached": True, "seconds": 10.0, "step": 4, "final_step": 6, "final_val_bpb": 2.0, "median_tok_s": 100.0}
    runs = {"baseline": {**run, "seed": 0, "ratio": None},
            **{f"record-seed{s}": {**run, "seed": s, "ratio": ratio} for s, ratio in ((1, 1.0), (2, 1.5), (3, 3.5))}}
    rows = speedrun.table({"target": 2.0, "eval_seed": 0, "runs": runs}).splitlines()
    assert [row.split(" | ")[-1] for row in rows[4:7]] == ["1.00x |", "1.50x |", "3.50x |"]
    assert rows[-1] == "mean ratio over 3 record seed(s): 2.00x"
