"""train.ablate: a micro ablation end to end (two tiny variants, one seed, a few steps), a broken
variant beside them, re-running, an interrupted grid, and the report regenerated from the files."""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_run import ROOT, TINY, cli, error_line, metrics, snapshot
from train.ablate import load_spec, main as ablate_main, plan
from train.config import load_config
from train.guard import run_lock
from train.plot import main as plot_main
from model.accounting import flops_per_token, kv_bytes_per_token, param_count

TOKENS_PER_STEP = 4 * 2 * 32  # TINY: batch 4, grad_accum 2, block 32


def ablation_file(tmp_path: Path, corpus: list[str], variants: str, budget: str = "tokens = 1536",
                  extra: str = "") -> Path:
    """An ablation of TINY models on the test corpus, evaluated and checkpointed every 3 steps."""
    lines = []
    for item in [*TINY, *corpus]:
        key, _, value = item.lstrip("-").partition("=")
        if key not in ("model.dropout", "optim.decay_steps"):
            lines.append(f"{key} = {value if value[0].isdigit() else repr(value)}")
    (tmp_path / "base.toml").write_text("# the defaults; every run's settings are in [overrides]\n")
    path = tmp_path / "micro.toml"
    path.write_text(f'name = "micro"\nbase = "base.toml"\nout_dir = "{tmp_path / "out"}"\nseeds = [1]\nparallel = 2\n'
                    f'threads = 2\n{extra}\n[budget]\n{budget}\n\n[overrides]\n' + "\n".join(lines) +
                    f'\ntrain.eval_interval = 3\ntrain.ckpt_interval = 3\n\n{variants}')
    return path


VARIANTS = """
[variants.wide]
[variants.narrow]
model.n_embd = 16
[variants.typo]
model.n_heads = 2
[variants.no-data]
data.source = "/nonexistent/corpus/dir"
"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory, corpus):
    tmp = tmp_path_factory.mktemp("ablate")
    path = ablation_file(tmp, corpus, VARIANTS, extra='note = "Six steps: a smoke test, not a measurement."\n'
                         'tasks = ["stdlib-cloze", "arithmetic"]\ntask_options = {limit = 4}')
    code = ablate_main([str(path)])
    return path, tmp / "out", code


def table(out: Path) -> dict[str, dict]:
    return {row["variant"]: row for row in csv.DictReader((out / "results.csv").open())}


def test_micro_ablation_report_matches_the_runs(grid):
    path, out, code = grid
    assert code == 1  # two variants failed; the report is still written
    rows = table(out)
    assert list(rows) == ["wide", "narrow", "typo", "no-data"]
    for label in ("wide", "narrow"):
        row, run = rows[label], out / label / "seed1"
        recs = metrics(run)
        final = [r for r in recs if "val_loss" in r][-1]
        assert final["step"] == 6 == recs[-1]["step"]  # 1,536 tokens / 256 per step
        assert row["status"] == "ok" and row["seeds_done"] == "1"
        assert float(row["val_loss_mean"]) == final["val_loss"]
        assert float(row["val_bpb_mean"]) == final["val_bpb"]
        assert int(row["tokens"]) == 6 * TOKENS_PER_STEP
        cfg = load_config(run / "config.toml")
        assert cfg.train.seed == 1 and cfg.train.max_steps == 6
        assert int(row["params"]) == param_count(cfg.model)
        assert float(row["flops_per_token"]) == flops_per_token(cfg.model, cfg.seq_len)
        assert int(row["kv_bytes_per_token"]) == kv_bytes_per_token(cfg.model)
    assert rows["narrow"]["params"] != rows["wide"]["params"]
    assert float(rows["wide"]["delta_bpb"]) == 0.0
    delta = float(rows["narrow"]["val_bpb_mean"]) - float(rows["wide"]["val_bpb_mean"])
    assert float(rows["narrow"]["delta_bpb"]) == pytest.approx(delta)
    assert rows["narrow"]["beyond_seed_spread"] == ""  # one seed: undecided
    md = (out / "results.md").read_text()
    assert "| wide | ok |" in md and "| narrow | ok |" in md
    assert "\nSix steps: a smoke test, not a measurement.\n" in md  # the file's note, under the heading
    assert (out / "curves.png").stat().st_size > 0


def test_finished_runs_are_scored_on_the_tasks(grid):
    """Each finished run's last checkpoint is scored by train.eval into tasks/<variant>/seed<k>.json,
    outside the run; the report's task columns are those records' headline scores."""
    _, out, _ = grid
    rows, md = table(out), (out / "results.md").read_text()
    assert "| stdlib-cloze | arithmetic | aggregate |" in md and "python -m train.eval RUN --task" in md
    for label in ("wide", "narrow"):
        record = json.loads((out / "tasks" / label / "seed1.json").read_text())
        assert record["step"] == 6 and record["settings"]["limit"] == 4
        cloze, arithmetic = record["tasks"]
        assert (cloze["task"], cloze["n"], arithmetic["task"]) == ("stdlib-cloze", 4, "arithmetic")
        assert float(rows[label]["task:stdlib-cloze_mean"]) == cloze["metrics"]["acc_norm"]
        assert float(rows[label]["task:arithmetic_mean"]) == arithmetic["metrics"]["pass@1"]
        assert float(rows[label]["task:aggregate_mean"]) == record["aggregate"]["value"]
        assert rows[label]["tasks_scored"] == "1" and rows[label]["task:stdlib-cloze_std"] == ""
        assert "$ python -m train.eval " in (out / "tasks" / label / "seed1.log").read_text()
    assert rows["typo"]["task:stdlib-cloze_mean"] == "" and not (out / "tasks" / "typo").exists()


def test_broken_variants_are_reported_and_the_others_complete(grid):
    _, out, _ = grid
    rows = table(out)
    assert rows["typo"]["status"] == "failed"
    assert "model.n_heads" in rows["typo"]["error"] and "model.n_head" in rows["typo"]["error"]
    assert rows["no-data"]["status"] == "failed"
    assert "/nonexistent/corpus/dir" in rows["no-data"]["error"]
    assert "\n" not in rows["no-data"]["error"]
    assert json.loads((out / "typo" / "seed1" / "status.json").read_text())["state"] == "failed"
    assert rows["wide"]["status"] == rows["narrow"]["status"] == "ok"


def test_rerun_does_not_retrain_and_report_regenerates_identically(grid, capsys):
    path, out, _ = grid
    before = {p: p.stat().st_mtime_ns for v in ("wide", "narrow") for p in (out / v / "seed1").rglob("*")}
    files = {name: (out / name).read_bytes() for name in ("results.md", "results.csv", "curves.png")}
    code, stdout, _ = cli(capsys, path, entry=ablate_main)
    assert code == 1 and "(2 done, 1 to run, 1 invalid), 0 done but not scored" in stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before  # no run touched
    assert "score " not in stdout  # nor scored again
    for name in files:
        (out / name).unlink()
    code, stdout, _ = cli(capsys, "--report", out, entry=ablate_main)
    assert code == 0
    assert {name: (out / name).read_bytes() for name in files} == files


def test_plot_cli(grid, capsys, tmp_path):
    _, out, _ = grid
    png = tmp_path / "c.png"
    code, _, _ = cli(capsys, out / "wide" / "seed1", out / "narrow", "-o", png, entry=plot_main)
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = cli(capsys, out / "typo", "-o", png, entry=plot_main)
    assert code == 2 and "no run with a config.toml" in error_line(err)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "ablations").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_ablations_plan_without_errors(path):
    spec = load_spec(path)
    spec["overrides"].append("--train.init_from=")  # post-cpu's source run is not trained in a fresh clone
    runs = plan(spec)
    assert [r.error for r in runs if r.error] == []
    assert len(runs) == len(spec["variants"]) * len(spec["seeds"]) and len(spec["seeds"]) >= 2
    budgets = {load_config(r.config, r.overrides).train.max_steps for r in runs}
    assert len(budgets) == 1  # every variant gets the same number of steps of the same size


def test_budget_in_flops_and_bad_ablation_files(tmp_path, corpus, capsys):
    path = ablation_file(tmp_path, corpus, "[variants.a]\n", budget="flops = 1e9")
    run, = plan(load_spec(path))
    cfg = load_config(run.config, run.overrides)
    assert run.max_steps == round(1e9 / flops_per_token(cfg.model, 32) / TOKENS_PER_STEP)
    run, = plan(load_spec(ablation_file(tmp_path, corpus, "[variants.a]\n", budget="steps = 7")))
    assert run.max_steps == 7 and load_config(run.config, run.overrides).train.max_steps == 7
    for budget, message in (("tokens = 0", "budget.tokens must be a finite number > 0"),
                            ("steps = 2.5", "budget.steps must be an integer >= 1"),
                            ("tokens = 1\nseconds = 2", "exactly one of")):
        bad = ablation_file(tmp_path, corpus, "[variants.a]\n", budget=budget)
        code, _, err = cli(capsys, bad, entry=ablate_main)
        assert code == 2 and message in error_line(err)
    code, _, err = cli(capsys, path, "--note=3", entry=ablate_main)
    assert code == 2 and "note must be a string" in error_line(err)
    code, _, err = cli(capsys, path, "--seeds=[1, 1]", entry=ablate_main)
    assert code == 2 and "distinct" in error_line(err)
    code, _, err = cli(capsys, tmp_path / "missing.toml", entry=ablate_main)
    assert code == 2 and "not found" in error_line(err)


def test_changed_tasks_rescore_without_retraining(grid, tmp_path, capsys):
    """Other task settings make the records stale: the next call scores again and trains nothing;
    a task that cannot be built is a bad ablation file, refused before anything runs."""
    path, out, _ = grid
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    text = path.read_text().replace(str(out), str(copy))
    changed = tmp_path / "changed.toml"
    changed.write_text(text.replace("task_options = {limit = 4}", "task_options = {limit = 3}")
                       .replace("[overrides]\n", "[overrides]\ntrain.tensorboard = true\n"))
    shutil.copy(path.parent / "base.toml", tmp_path / "base.toml")
    before = {p: p.stat().st_mtime_ns for p in (copy / "wide" / "seed1").rglob("*")}
    code, stdout, _ = cli(capsys, changed, entry=ablate_main)
    assert code == 1 and "2 done but not scored" in stdout and "score  wide/seed1" in stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert json.loads((copy / "tasks" / "wide" / "seed1.json").read_text())["tasks"][0]["n"] == 3
    assert list((copy / "wide" / "seed1" / "tensorboard").glob("events.out.tfevents.*"))  # a run with train.tensorboard
    for tasks, message in (('["cloze"]', "unknown task 'cloze'"), ('["arithmetic:digits=0"]', "digits"),
                           ('"arithmetic"', "tasks must be a list")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text.replace('tasks = ["stdlib-cloze", "arithmetic"]', f"tasks = {tasks}")
                       .replace(str(copy), str(tmp_path / "never")))
        code, _, err = cli(capsys, bad, entry=ablate_main)
        assert code == 2 and message in error_line(err), err
        assert not (tmp_path / "never").exists()
    bad.write_text(text.replace("task_options = {limit = 4}", "task_options = {limit = 0}"))
    code, _, err = cli(capsys, bad, entry=ablate_main)
    assert code == 2 and "--limit must be an integer >= 1" in error_line(err)
    bad.write_text(text.replace("task_options = {limit = 4}", "task_options = {tensorboard = true}"))
    code, _, err = cli(capsys, bad, entry=ablate_main)  # --tensorboard follows each run's train.tensorboard
    assert code == 2 and "a table of shots, limit, samples, temperature, top_k, seed; got" in error_line(err)


def test_a_seconds_budget_ends_runs_with_an_evaluation(tmp_path, corpus, capsys):
    """A wall-clock budget becomes train.max_seconds: the run stops after the step that spends it,
    evaluated and checkpointed like a run that reached max_steps, and the report counts it."""
    path = ablation_file(tmp_path, corpus, "[variants.a]\n", budget="seconds = 0.5",
                         extra="parallel = 1").resolve()
    path.write_text(path.read_text().replace("parallel = 2\n", "", 1))
    run, = plan(load_spec(path))
    assert "--train.max_seconds=0.5" in run.overrides
    code, _, err = cli(capsys, path, "--overrides.train.max_steps=100000", entry=ablate_main)
    assert code == 0, err
    last = metrics(tmp_path / "out" / "a" / "seed1")[-1]
    assert last["ended_by"] == "max_seconds" and "val_bpb" in last and last["step"] < 100000
    assert last["elapsed_s"] >= 0.5
    assert float(table(tmp_path / "out")["a"]["val_bpb_mean"]) == last["val_bpb"]


@pytest.mark.slow  # four training subprocesses and a signal: ~30 s on a quiet 2-core machine
def test_interrupted_grid_resumes(tmp_path, corpus):
    """Ctrl-C stops the running children with a checkpoint (exit 130); the next call resumes them."""
    path = ablation_file(tmp_path, corpus, "[variants.a]\n[variants.b]\nmodel.n_layer = 1\n",
                         budget=f"tokens = {60 * TOKENS_PER_STEP}").resolve()
    path.write_text(path.read_text().replace("train.ckpt_interval = 3", "train.ckpt_interval = 5")
                    .replace("train.eval_interval = 3", "train.eval_interval = 100"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "train.ablate", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("a/seed1/checkpoints/step_*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "re-run the same command to resume" in err
    # "a" (the run waited on) stopped part-way; the faster 1-layer "b" may have finished first
    assert metrics(out / "a" / "seed1")[-1]["step"] < 60
    assert json.loads((out / "a" / "seed1" / "status.json").read_text())["state"] == "stopped"
    partial = table(out)  # the report of a stopped grid counts no unfinished run
    assert partial["a"]["status"] == "0/1 seeds" and partial["a"]["val_bpb_mean"] == ""
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resumed from step" in (out / "a" / "seed1" / "train.log").read_text()
    for v in ("a", "b"):
        assert metrics(out / v / "seed1")[-1]["step"] == 60
        assert json.loads((out / v / "seed1" / "status.json").read_text())["state"] == "done"


@pytest.mark.parametrize("name", ["ladder-cpu", "ladder-cpu-long", "ladder-gpu"])
def test_ladder_ablations_cover_every_rung(name):
    spec = load_spec(ROOT / "configs" / "ablations" / f"{name}.toml")
    rungs = sorted(p.stem for p in (ROOT / "configs" / "ladder").glob("*.toml"))
    assert list(spec["variants"]) == rungs
    assert [Path(v["config"]).stem for v in spec["variants"].values()] == rungs


# ----- bad input: one line on stderr, exit 2, nothing written is lost --------------------------------
def test_non_finite_budgets_and_bad_ablation_arguments(tmp_path, corpus, capsys):
    for budget in ("tokens = inf", "tokens = nan", "flops = inf", "seconds = inf"):
        bad = ablation_file(tmp_path, corpus, "[variants.a]\n", budget=budget)
        code, _, err = cli(capsys, bad, entry=ablate_main)
        assert code == 2 and "must be a finite number > 0" in error_line(err)
    path = ablation_file(tmp_path, corpus, "[variants.a]\n")
    code, _, err = cli(capsys, path, "--parallel", entry=ablate_main)
    assert code == 2 and "'--parallel' must look like --key=value" in error_line(err)
    (tmp_path / "a file").write_text("")
    code, _, err = cli(capsys, path, f"--out_dir={str(tmp_path / 'a file')!r}", entry=ablate_main)
    assert code == 1 and "out_dir" in error_line(err) and "cannot create it" in error_line(err)
    (tmp_path / "base.toml").unlink()
    code, _, err = cli(capsys, path, entry=ablate_main)
    assert code == 2 and "base: config file not found" in error_line(err) and "base.toml" in err
    assert not (tmp_path / "out").exists()  # nothing started


def test_an_out_dir_of_other_files_or_of_another_ablation_is_refused(tmp_path, corpus, capsys):
    """A re-run resumes in the ablation's own folder, but a folder of other files, one another
    ablation made, or one a runner is working in now, is refused before anything is written into it."""
    path = ablation_file(tmp_path, corpus, "[variants.a]\n")
    notes = tmp_path / "out" / "results.md"
    notes.parent.mkdir()
    notes.write_text("my notes")
    code, _, err = cli(capsys, path, entry=ablate_main)
    assert code == 2 and "is not empty and holds no ablation.json" in error_line(err)
    assert list(notes.parent.iterdir()) == [notes] and notes.read_text() == "my notes"
    notes.unlink()
    (notes.parent / "ablation.json").write_text('{"name": "other"}')
    code, _, err = cli(capsys, path, entry=ablate_main)
    assert code == 2 and "holds the ablation 'other', not 'micro'" in error_line(err)
    assert [p.name for p in notes.parent.iterdir()] == ["ablation.json"]
    (notes.parent / "ablation.json").write_text('{"name": "micro"}')
    with run_lock(notes.parent, "the first runner"):  # the same grid started twice
        code, _, err = cli(capsys, path, entry=ablate_main)
    assert code == 1 and "is in use by another process" in error_line(err)
    assert sorted(p.name for p in notes.parent.iterdir()) == [".lock", "ablation.json"]
    assert (notes.parent / "ablation.json").read_text() == '{"name": "micro"}'


def test_invalid_variant_reason_is_printed(tmp_path, corpus, capsys):
    path = ablation_file(tmp_path, corpus, "[variants.typo]\nmodel.n_heads = 2\n")
    code, _, err = cli(capsys, path, entry=ablate_main)
    assert code == 1 and "1 of 1 runs failed" in error_line(err)
    reason, = [line for line in err.splitlines() if line.startswith("invalid typo: ")]
    assert "model.n_heads" in reason


def test_no_arguments_print_the_usage_on_stderr(capsys):
    for entry, name in ((ablate_main, "train.ablate"), (plot_main, "train.plot")):
        code, out, err = cli(capsys, entry=entry)
        assert code == 2 and out == "" and f"usage: python -m {name}" in error_line(err)


@pytest.mark.parametrize("spec, status, message", [
    ('{"runs": [{"label": "a"}]}', None, "ablation.json: runs must be a list of"),
    ('{"runs": 5}', None, "ablation.json: runs must be a list of"),
    ('[1]', None, "ablation.json: must hold a JSON object; got list"),
    ('{"runs": [{"label": "a", "dir": "a/seed1"}]}', "[1]", "status.json: must hold a JSON object"),
    ('{"runs": [{"label": "a", "dir": "a/seed1"}]}', "{", "status.json: not valid JSON"),
])
def test_report_rejects_corrupt_json_files(tmp_path, capsys, spec, status, message):
    (tmp_path / "a" / "seed1").mkdir(parents=True)
    (tmp_path / "ablation.json").write_text(spec)
    if status is not None:
        (tmp_path / "a" / "seed1" / "status.json").write_text(status)
    code, _, err = cli(capsys, "--report", tmp_path, entry=ablate_main)
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "results.md").exists()


def copy_run(src: Path, dst: Path) -> Path:
    """A run directory's config and metrics (a plain run: no status.json, no checkpoints)."""
    dst.mkdir(parents=True)
    for name in ("config.toml", "metrics.jsonl"):
        shutil.copy(src / name, dst / name)
    return dst


def test_report_writes_only_into_a_directory_the_runner_made(grid, base, tmp_path, capsys):
    """A folder holding a copied run and the user's own results.md, that run itself, a plain
    training run and an empty folder: each refused in one line, nothing in it written."""
    _, out, _ = grid
    run = copy_run(out / "wide" / "seed1", tmp_path / "plain" / "wide" / "seed1")
    (tmp_path / "plain" / "results.md").write_text("my own notes\n")
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "plain", run, base, tmp_path / "empty"):
        before = snapshot(folder)
        code, _, err = cli(capsys, "--report", folder, entry=ablate_main)
        assert code == 2 and "not made by python -m train.ablate" in error_line(err)
        assert snapshot(folder) == before


def test_variant_with_a_missing_config_file_is_invalid_like_a_misspelt_key(tmp_path, corpus, capsys):
    """Neither stops the grid: the variant is recorded as failed with its reason, the others plan."""
    variants = '[variants.ok]\n[variants.gone]\nconfig = "missing.toml"\n[variants.typo]\nmodel.n_heads = 2\n'
    runs = {r.label: r for r in plan(load_spec(ablation_file(tmp_path, corpus, variants)))}
    assert runs["ok"].error == "" and runs["ok"].max_steps == 6
    assert "config file not found" in runs["gone"].error and "missing.toml" in runs["gone"].error
    assert "model.n_heads" in runs["typo"].error
    (tmp_path / "alone").mkdir()  # only invalid variants: nothing trains, so this end-to-end run is quick
    path = ablation_file(tmp_path / "alone", corpus, '[variants.gone]\nconfig = "missing.toml"\n')
    code, _, err = cli(capsys, path, entry=ablate_main)
    assert code == 1 and "1 of 1 runs failed" in error_line(err)
    reason, = [line for line in err.splitlines() if line.startswith("invalid gone: ")]
    assert "missing.toml" in reason
    status = json.loads((tmp_path / "alone" / "out" / "gone" / "seed1" / "status.json").read_text())
    assert status["state"] == "failed" and "missing.toml" in status["error"]
    assert table(tmp_path / "alone" / "out")["gone"]["status"] == "failed"


def test_stop_message_says_what_the_children_did(tmp_path):
    """After a second Ctrl-C a child stops without its checkpoint; its own log says so, and so must
    the runner's last line. The log lines are the ones the trainer and its signal guard write."""
    from train.ablate_procs import checkpoint_saved, stop_message
    from train.guard import StopSignals
    from train.trainer import _summary_line

    clean = f"$ python -m train ...\n{_summary_line({'signal': 'SIGINT', 'steps': 3}, tmp_path)}\n"
    guard = StopSignals()
    guard._handle(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt) as twice:
        guard._handle(signal.SIGINT, None)
    abrupt = f"$ python -m train ...\nerror: {twice.value}\n"
    assert checkpoint_saved(clean, 130) == {"checkpoint_saved": True}
    lost = checkpoint_saved(abrupt, 130)
    assert lost["checkpoint_saved"] is False and "without a final checkpoint" in lost["error"]
    assert checkpoint_saved("$ python -m train ...\n", -9) == {"checkpoint_saved": False, "error": "killed by SIGKILL"}
    a = {"label": "a", "seed": 1, "state": "stopped", "checkpoint_saved": True}
    b = {"label": "b", "seed": 2, "state": "stopped", **lost}
    assert "checkpoints saved" in stop_message(signal.SIGINT, [a])
    message = stop_message(signal.SIGINT, [a, b])
    assert "checkpoints saved" not in message and "1 of 2" in message and "b/seed2" in message
    assert "a/seed1" not in message and "re-run the same command to resume" in message


def test_plot_output_path_is_the_file_written(grid, tmp_path, capsys):
    _, out, _ = grid
    run = out / "wide" / "seed1"
    code, _, err = cli(capsys, run, "-o", tmp_path, entry=plot_main)
    assert code == 2 and "is a directory" in error_line(err)
    assert not (tmp_path.parent / f"{tmp_path.name}.png").exists()
    code, _, err = cli(capsys, run, "-o", tmp_path / "c.xyz", entry=plot_main)
    assert code == 2 and "unknown image format '.xyz'" in error_line(err)
    code, stdout, _ = cli(capsys, run, "-o", tmp_path / "curves", entry=plot_main)
    assert code == 0 and stdout.strip() == f"wrote {tmp_path / 'curves.png'}"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_draws_training_loss_before_any_evaluation(grid, tmp_path, capsys):
    """A run not yet evaluated is plotted by its training loss (so are the runs beside it)."""
    from train.plot import _series
    from train.report import load_run

    _, out, _ = grid
    run = copy_run(out / "wide" / "seed1", tmp_path / "early")
    recs = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in metrics(run)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    for dirs in ([run], [run, out / "narrow"]):
        code, _, err = cli(capsys, *dirs, "-o", tmp_path / "c.png", entry=plot_main)
        assert code == 0 and "plotting training loss" in err and str(run) in err
        assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    _, _, _, mid, _, _ = _series([load_run(run)], "loss")
    assert mid == [r["loss"] for r in recs if r.get("loss") is not None]


def test_plot_into_a_missing_directory_names_the_option(grid, tmp_path, capsys):
    _, out, _ = grid
    png = tmp_path / "nowhere" / "c.png"
    code, _, err = cli(capsys, out / "wide" / "seed1", "-o", png, entry=plot_main)
    assert code == 2 and f"-o {png}" in error_line(err) and "does not exist" in error_line(err)
    assert not png.parent.exists()


def test_plot_skips_non_finite_points(grid, tmp_path, capsys):
    """A diverged run (NaN validation loss) still plots, up to where it diverged."""
    from train.plot import _series
    from train.report import load_run

    _, out, _ = grid
    run = copy_run(out / "wide" / "seed1", tmp_path / "diverged")
    recs = metrics(run)
    last = max(i for i, r in enumerate(recs) if "val_loss" in r)
    recs[last] |= {"val_loss": float("nan"), "val_bpb": float("nan")}
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    code, _, err = cli(capsys, run, "-o", tmp_path / "c.png", entry=plot_main)
    assert code == 0, err
    tokens, _, _, mid, _, _ = _series([load_run(run)])
    assert len(mid) == len(load_run(run).evals()) - 1 and tokens[-1] < recs[last]["step"] * TOKENS_PER_STEP
