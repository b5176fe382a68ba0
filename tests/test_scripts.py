"""scripts/: the benchmark and the ladder cost table run, and report what they claim to (no timings
are asserted, only that they are measured and consistent)."""

import json
import re

import pytest
import torch

from tiny_run import ROOT, TINY, cli, error_line, load_script, metrics
from train.cli import run_cli
from train.errors import ConfigError
from train.hardware import Peak, peak_memory_bytes, pick_dtype

LADDER = sorted((ROOT / "configs" / "ladder").glob("*.toml"))


def test_bench_reports_throughput_and_active_parameters(corpus):
    bench = load_script("bench").bench
    moe = [*TINY, *corpus, "--model.mlp=swiglu", "--model.moe.n_expert=4", "--model.moe.top_k=1"]
    r = bench(str(ROOT / "configs" / "default.toml"), moe, steps=2, warmup=1)
    assert r["tokens_per_step"] == 4 * 32 * 2  # batch x seq_len x grad_accum from TINY
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] <= 1
    assert r["active_params"] < r["params"]  # 1 of 4 experts per token
    assert r["flops_per_s"] == pytest.approx(r["mfu"] * r["peak_flops_per_s"])
    assert r["kernels"] == {"transformer.h.0.attn": "sdpa", "transformer.h.0.mlp.experts": "loop",
                            "transformer.h.1.attn": "sdpa", "transformer.h.1.mlp.experts": "loop"}


def test_bench_json_record_and_compare(tmp_path, corpus, capsys):
    bench = load_script("bench")
    record = tmp_path / "bench.jsonl"
    args = [str(ROOT / "configs" / "default.toml"), *TINY, *corpus, "--steps", "1", "--warmup", "0"]
    assert bench.main([*args, "--json", str(record)]) == 0
    assert bench.main([*args, "--json", str(record), "--compare", str(record)]) == 0
    out = capsys.readouterr().out
    assert "kernels: attn: sdpa x2" in out
    first, second = map(json.loads, record.read_text().splitlines())
    assert {"machine", "torch", "commit", "kernels", "tokens_per_s"} <= set(first)
    ratio = second["tokens_per_s"] / first["tokens_per_s"]
    assert f"{ratio:.3f}x the {first['tokens_per_s']:.0f} tok/s" in out


def test_mfu_never_exceeds_one_when_the_peak_was_under_measured():
    peak = Peak(torch.device("cpu"), "fp32")
    peak.flops_per_s = 1e9  # as if the start-up matmuls had got a sliver of a busy machine
    assert peak.mfu(0.5e9) == 0.5
    assert peak.mfu(3e9) == 1.0  # faster than the "peak": the peak was wrong, not the step
    assert peak.flops_per_s == 3e9 and peak.mfu(1.5e9) == 0.5  # later steps are measured against it


def test_auto_dtype_is_bf16_on_gpus_that_have_it_else_fp16_and_fp32_off_cuda(monkeypatch):
    """train.dtype=auto: bf16 on a CUDA GPU with bf16, fp16 (loss-scaled) on an older one, fp32 on
    CPU and MPS; a named dtype is kept as given."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("auto", cuda) == "fp16"
    assert [pick_dtype("auto", torch.device(d)) for d in ("cpu", "mps")] == ["fp32", "fp32"]
    assert [pick_dtype(name, torch.device("cpu")) for name in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]


def test_peak_memory_on_a_cpu_is_in_bytes():
    """The process's peak resident set: at least the 256 MiB a tensor just filled (Linux reports KiB)."""
    x = torch.ones(64 * 2**20)
    assert x.nbytes <= peak_memory_bytes(torch.device("cpu")) < 2**40


def test_ladder_table_has_a_row_per_rung_with_matching_counts():
    rows = load_script("ladder_table").table(LADDER, None).splitlines()
    body = [r for r in rows if r.startswith("| ") and r[2:4].isdigit()]
    assert [r.split(" | ")[0][2:] for r in body] == [p.stem for p in LADDER]
    for row in body:
        formula, measured = row.split(" | ")[1:3]
        assert formula == measured  # the accounting formula equals the built model
    moe = body[-1].split(" | ")
    assert int(moe[4].replace(",", "")) < int(moe[1].replace(",", ""))  # active < total for 11-moe


def test_ladder_table_cache_columns_follow_from_the_head_counts():
    """04-gqa keeps keys and values for 2 of its 4 heads: half of MHA's cache. 09-sliding-window (4
    layers of 2 KV heads of 64 channels, in bf16 512 bytes a layer per token) keeps every key of a
    32-token sequence, and of a 256-token one only the last 64 in its local layers 0 and 2:
    512 (64 + 256 + 64 + 256) / 256 = 1,280 bytes per token. "vs previous" is the step between
    the two rows' parameter counts."""
    ladder = ROOT / "configs" / "ladder"
    for seq_len, needed in ((32, "2,048 |"), (256, "1,280 |")):
        table = load_script("ladder_table").table([ladder / "04-gqa.toml", ladder / "09-sliding-window.toml"], seq_len)
        gqa, window = (row.split(" | ") for row in table.splitlines()[2:4])
        assert (gqa[7], window[7], window[8]) == ("0.500", "0.500", needed)
        params = [int(row[1].replace(",", "")) for row in (gqa, window)]
        assert window[3] == f"{params[1] - params[0]:+,}"


def test_ladder_md_shows_the_measured_effects_printed_from_the_committed_reports(capsys, tmp_path):
    """docs/ladder.md's two measured-effect tables are what scripts/ladder_effect.py prints from
    docs/results, not numbers typed by hand; a file that is not a results.csv is one line, exit 2."""
    effect, results = load_script("ladder_effect").main, ROOT / "docs" / "results"
    assert effect([str(results / grid / "results.csv") for grid in ("ladder-cpu", "ladder-cpu-long")]) == 0
    tables = capsys.readouterr().out.strip().split("\n\n")
    doc = (ROOT / "docs" / "ladder.md").read_text()
    assert len(tables) == 2 and all(table in doc for table in tables)
    assert "| 01-rope |" in tables[0] and tables[1].startswith("| rung | val bpb | stdlib-cloze |")
    (tmp_path / "empty.csv").write_text("variant,val_bpb_mean\n")
    header, *rows = (results / "ladder-cpu" / "results.csv").read_text().splitlines()
    (tmp_path / "no_std.csv").write_text("\n".join([header.replace(",task:arithmetic_std", ",other"), *rows]) + "\n")
    for argv, message in (([], "usage:"), ([str(tmp_path / "no.csv")], "no such file"),
                          ([str(tmp_path / "empty.csv")], "not an ablation's results.csv"),
                          ([str(tmp_path / "no_std.csv")], "no task:arithmetic_std column beside its mean"),
                          ([str(results / "ladder-cpu" / "results.csv")] * 3, "usage:")):
        assert run_cli(effect, argv) == 2 and message in error_line(capsys.readouterr().err)

BENCH_DECODE_ROWS = [
    "model", "shape", "device, dtype", "context", "prefill tok/s (b=1)",
    "decode tok/s b=1 cache", "decode tok/s b=1 no cache", "cache speed-up b=1",
    "decode tok/s b=8 cache", "decode tok/s b=8 no cache", "cache speed-up b=8",
    "KV bytes/token", "KV bytes vs MHA",
    "speculative (k=2) acceptance", "speculative tokens/target fwd", "speculative decode tok/s b=1",
    "speculative speed-up b=1", "HF generate tok/s b=1", "ours (cache) vs HF b=1", "peak memory",
]


def test_bench_decode_prints_every_row(base, capsys):
    main = load_script("bench_decode").main
    tiny = ["--model.n_layer=1", "--model.n_head=2", "--model.n_embd=32"]
    argv = [str(ROOT / "configs" / "default.toml"), str(base), "--context=12", "--new_tokens=3",
            "--nocache_tokens=2", "--repeat=1", "--device=cpu", "--dtype=fp32", f"--draft={base}",
            "--n_draft=2", "--hf", *tiny]
    assert run_cli(main, argv) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err, err  # the run's own config.toml keys are not the user's to hear about
    lines = out.splitlines()
    assert [line[:len(r)] for line, r in zip(lines, BENCH_DECODE_ROWS)] == BENCH_DECODE_ROWS
    rows = {r: lines[i][len(r):].split() for i, r in enumerate(BENCH_DECODE_ROWS)}
    assert rows["context"] == ["12", "12"]  # two columns: the config and the run
    # 1 layer x (k + v) x n_embd 32 x fp32 for the config; the base run has 2 layers of MHA
    assert rows["KV bytes/token"] == ["256", "512"]
    assert rows["KV bytes vs MHA"][0] == "x1.000"
    assert 0 <= float(rows["speculative (k=2) acceptance"][0]) <= 1


def test_bench_decode_help_and_bad_input(base, capsys, tmp_path):
    main = load_script("bench_decode").main
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--draft" in capsys.readouterr().out
    for argv in ([str(tmp_path / "missing")], [str(tmp_path)], [], [str(ROOT / "configs/default.toml"), "--context=0"],
                 [str(ROOT / "configs/default.toml"), "--nonsense"]):
        assert run_cli(main, argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert run_cli(main, [str(base), "--model.n_layer=1"]) == 2  # a run has its own config
    assert "--model.n_layer=1: overrides apply to the configs among the targets" in capsys.readouterr().err


def no_work(*args, **kwargs):
    pytest.fail("the script started working before it had checked its command line")


RECORD = '{"config": "c", "machine": "m", "commit": "x"'  # a bench.py --json record, less tokens_per_s


@pytest.mark.parametrize("content, problem", [
    ("[1, 2]\n", "line 1 is a list, not a record of bench.py --json"),
    (RECORD + ', "tokens_per_s": 0}\n', "line 1: tokens_per_s must be a number > 0, got 0"),
    (RECORD + "}\n", "line 1 has no 'tokens_per_s'"),
    (RECORD + ', "tokens_per_s": 5}\nnot json\n', "line 2 is not JSON (expected the records bench.py --json writes)"),
])
def test_bench_checks_the_compare_file_before_running(tmp_path, capsys, monkeypatch, content, problem):
    bench = load_script("bench")
    monkeypatch.setattr(bench, "bench", no_work)
    (path := tmp_path / "old.jsonl").write_text(content)
    code, _, err = cli(capsys, ROOT / "configs" / "default.toml", "--compare", path, entry=bench.main)
    assert code == 2 and error_line(err) == f"error: --compare {path}: {problem}"
    assert path.read_text() == content


def test_bench_checks_the_json_path_before_running(tmp_path, capsys, monkeypatch):
    bench = load_script("bench")
    monkeypatch.setattr(bench, "bench", no_work)
    for path, problem in ((tmp_path, "is a directory"), (tmp_path / "no" / "r.jsonl", "no such directory")):
        code, _, err = cli(capsys, ROOT / "configs" / "default.toml", "--json", path, entry=bench.main)
        assert code == 2 and error_line(err).startswith(f"error: --json {path}: {problem}")


@pytest.mark.parametrize("script, option, value, minimum", [
    ("bench", "--steps", "0", 1), ("bench", "--steps", "-1", 1), ("bench", "--steps", "abc", 1),
    ("bench", "--warmup", "-1", 0), ("bench", "--warmup", "1.5", 0),
    ("vs_nanogpt", "--steps", "0", 1), ("vs_nanogpt", "--rounds", "0", 1), ("vs_nanogpt", "--rounds", "-1", 1),
    ("vs_nanogpt", "--rounds", "abc", 1), ("vs_nanogpt", "--warmup", "-2", 0),
])
def test_bench_scripts_check_their_counts(capsys, monkeypatch, script, option, value, minimum):
    module = load_script(script)
    monkeypatch.setattr(module, "bench" if script == "bench" else "load_nanogpt", no_work)
    code, _, err = cli(capsys, ROOT / "configs" / "default.toml", option, value, entry=module.main)
    assert code == 2 and error_line(err) == f"error: {option} must be an integer >= {minimum}, got {value!r}"


def test_bench_mixers_prints_a_row_per_length_with_the_layers_rates_and_their_ratio(capsys):
    """On a CPU (no fla): attention and the chunked Gated DeltaNet per length, tok/s and peak MiB each,
    and the second rate over the first."""
    code, out, _ = cli(capsys, "--seq_lens", "16,48", "--repeats", "1", "--batch", "2", "--dtype", "bf16",
                       entry=load_script("bench_mixers").main)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("one layer, batch 2, bf16, forward + backward")
    assert lines[1] == "| T | full attention | Gated DeltaNet, chunked | Gated DeltaNet, chunked / attention |"
    cells = [re.fullmatch(r"\| (\d+) \| ([\d,.]+) \(([\d,]+)\) \| ([\d,.]+) \(([\d,]+)\) \| ([\d.]+) \|", line)
             for line in lines[3:]]
    assert [int(c.group(1)) for c in cells] == [16, 48]
    for c in cells:
        attention, deltanet = (float(c.group(i).replace(",", "")) for i in (2, 4))
        assert attention > 0 and deltanet > 0 and float(c.group(6)) == pytest.approx(deltanet / attention, abs=0.01)


def test_bench_mixers_times_the_forward_alone_and_names_a_kernel_that_refuses(capsys, monkeypatch):
    """--forward_only times the forward with no gradient. A second kernel that raises (as fla 0.6.0's
    backward does on Hopper with Triton < 3.7.1) gets "refused" in its cells and its first line below the
    table, and the chunked form is still timed."""
    import model.mixer.deltanet as deltanet

    mixers = load_script("bench_mixers")
    grad_seen = []

    def backward_refused(*args):
        grad_seen.append(torch.is_grad_enabled())
        if torch.is_grad_enabled():
            raise RuntimeError("no backward on this GPU\nsecond line")
        return deltanet.RULES["torch"](*args)

    monkeypatch.setitem(deltanet.RULES, "fla", backward_refused)
    monkeypatch.setattr(mixers, "kernels_on", lambda device: ["torch", "fla"])
    rows = {}
    for forward_only in (True, False):
        code, out, _ = cli(capsys, "--seq_lens", "16", "--repeats", "1", *["--forward_only"] * forward_only,
                           entry=mixers.main)
        assert code == 0
        rows[forward_only] = out.splitlines()
    forward, both = rows[True], rows[False]
    assert forward[0].startswith("one layer, batch 1, fp32, forward, ") and both[0].startswith(
        "one layer, batch 1, fp32, forward + backward, ")
    rate = r"[\d,]+ \([\d,]+\)"  # tok/s (peak MiB)
    assert len(forward) == 4 and re.fullmatch(rf"\| 16 \| {rate} \| {rate} \| {rate} \| [\d.]+ \| [\d.]+ \|",
                                              forward[3])
    assert re.fullmatch(rf"\| 16 \| {rate} \| {rate} \| refused \| [\d.]+ \| - \|", both[3])
    assert both[4:] == ["fla: no backward on this GPU"]
    assert grad_seen == [False, False, True]  # warm-up + 1 repeat without gradient, then the refusal


def test_bench_parallel_and_bench_mixers_refuse_counts_they_cannot_run(capsys, tmp_path):
    parallel = load_script("bench_parallel")  # checked before any process group is needed
    for option, value, minimum in [("--steps", "0", 1), ("--steps", "abc", 1), ("--warmup", "-1", 0)]:
        code, _, err = cli(capsys, "--tiny", "--out", tmp_path / "r.jsonl", option, value,
                           entry=parallel.main)
        assert code == 2
        assert error_line(err) == f"error: {option} must be an integer >= {minimum}, got {value!r}"
    assert not (tmp_path / "r.jsonl").exists()
    mixers = load_script("bench_mixers")
    for argv in (["--repeats", "0"], ["--seq_lens", "256,0"], ["--threads", "-1"], ["--batch", "0"]):
        code, out, err = cli(capsys, *argv, entry=mixers.main)
        assert code == 2 and not out and "--seq_lens, --repeats and --batch must be >= 1" in error_line(err), argv
    for argv, message in ((["--dtype", "fp16"], "--dtype must be fp32 or bf16, got 'fp16'"),
                          (["--device", "tpu"], "--device='tpu' is not a device")):
        code, out, err = cli(capsys, *argv, entry=mixers.main)
        assert code == 2 and not out and error_line(err).startswith(f"error: {message}"), argv


@pytest.mark.parametrize("name, content, reason", [
    ("model.py", "def broken(:\n", "has a syntax error at line 1"),
    ("model.py", "x = 1\n", "defines no GPT, GPTConfig"),
    ("model.py", "raise RuntimeError('needs a GPU')\n", "importing it raised RuntimeError: needs a GPU"),
    ("model.txt", "class GPT: pass\n", "not a Python file"),
])
def test_vs_nanogpt_explains_a_model_file_it_cannot_use(tmp_path, name, content, reason):
    (path := tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: .*{re.escape(reason)}") as e:
        load_script("vs_nanogpt").load_nanogpt(str(path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("argv, message", [
    (["--device=tpu"], "--device='tpu' is not a device (auto, cpu, cuda, cuda:N, mps)"),
    (["--device=cuda:x"], "--device='cuda:x' is not a device"),
    (["--device=cuda:99"], "--device='cuda:99' but "),  # CUDA is not available, or not 100 GPUs
    (["--dtype=fp8"], "argument --dtype: invalid choice: 'fp8'"),
    (["--context=100000000"], "--context 100000000 with 32 new tokens needs 100,000,033 positions"),
    (["--nonsense", "--model.n_layer=2"], "unrecognized arguments: --nonsense"),  # an override has a dot
])
def test_bench_decode_checks_device_dtype_and_context_first(capsys, monkeypatch, argv, message):
    module = load_script("bench_decode")
    monkeypatch.setattr(module, "GPT", no_work)
    code, _, err = cli(capsys, ROOT / "configs" / "default.toml", *argv, entry=module.main)
    assert code == 2 and error_line(err).startswith(f"error: {message}")


@pytest.mark.parametrize("argv, message", [
    (["--device=tpu"], "--device='tpu' is not a device (auto, cpu, cuda, cuda:N, mps)"),
    (["--dtype=fp8"], "argument --dtype: invalid choice: 'fp8'"),
    (["--batches=x"], "argument --batches: invalid int value: 'x'"),
    (["--nonsense"], "unrecognized arguments: --nonsense"),
])
def test_eval_kv_cache_usage_errors_are_one_line(base, capsys, monkeypatch, argv, message):
    module = load_script("eval_kv_cache")
    monkeypatch.setattr(module, "prepare", no_work)
    code, _, err = cli(capsys, base, *argv, entry=module.main)
    assert code == 2 and error_line(err).startswith(f"error: {message}")
    code, _, err = cli(capsys, entry=module.main)  # no run directory at all
    assert code == 2 and "run_dir" in error_line(err)


@pytest.mark.parametrize("script", ["bench_decode", "eval_kv_cache"])
def test_kv_scripts_point_from_a_checkpoint_to_its_run(base, capsys, script):
    step = base / "checkpoints" / "step_00000004"
    code, _, err = cli(capsys, step, entry=load_script(script).main)
    assert code == 2
    assert error_line(err) == f"error: {step} is inside the run directory {base}; pass that directory with --step 4"


def test_eval_kv_cache_reads_a_run_without_warnings(base, capsys):
    code, out, err = cli(capsys, base, "--batches=1", "--step=2", "--device=cpu",
                         entry=load_script("eval_kv_cache").main)
    assert code == 0 and "warning" not in err, err
    assert out.startswith(f"# step_00000002 of {base}: 1 val batches")
    assert [line.split(" | ")[0] for line in out.splitlines()[3:]] == ["| none", "| int8", "| int4"]


def test_eval_kv_cache_scores_the_runs_validation_batches_against_the_uncached_loss(base, capsys, monkeypatch):
    """The plain forward reproduces the val loss the run logged at its last step (the trainer's
    validation batches); each format's change is its loss over the compute-dtype cache's, in percent."""
    module = load_script("eval_kv_cache")
    losses = {None: 2.0, "int8": 2.02, "int4": 2.5}
    monkeypatch.setattr(module, "cached_loss", lambda model, x, y, chunk, kv_dtype, **options: losses[kv_dtype])
    code, out, _ = cli(capsys, base, "--device=cpu", entry=module.main)
    assert code == 0 and f"plain forward: val loss {metrics(base)[-1]['val_loss']:.4f}" in out
    assert [line.split(" | ")[3] for line in out.splitlines()[3:]] == ["+0.000 %", "+1.000 %", "+25.000 %"]


def test_think_budget_forces_the_answer_mark_when_the_budget_runs_out(tmp_path):
    """A scripted model that always works the steps right but, when forced, answers 0: pass@1 is 1
    from the budget at which its own answer mark fits, 0 below it, with every answer forced."""
    from types import SimpleNamespace

    from train.evals.tasks import TaskEnv, build_task
    from train.post.chat_format import ChatTokenizer
    from train.tokenizer import get_tokenizer

    tb = load_script("think_budget")
    tok = ChatTokenizer(get_tokenizer("byte"))
    task = build_task("arithmetic:op=add,digits=2,steps", TaskEnv(tok, 128, None))
    items = task.items("test", 5, 1234)
    mark = tok.encode(" #### ")

    class Scripted:
        config = SimpleNamespace(block_size=128)
        transformer = SimpleNamespace(ln_f=SimpleNamespace(weight=torch.zeros(1)))

        def parameters(self):
            yield torch.zeros(1)

        def generate(self, idx, n, temperature, **options):
            rows = []
            for row in idx.tolist():
                if row[-len(mark):] == mark:  # forced: a wrong answer
                    new = tok.encode("0")
                else:
                    item = next(it for it in items if tok.encode(it.prompt) == row[-len(it.prompt) - 2:-2])
                    new = tok.encode(item.target) + [tok.eot]
                rows.append(row + (new + [tok.eot] * n)[:n])
            return torch.tensor(rows)

    shortest = min(len(tok.encode(it.target.split(" ####")[0])) for it in items)
    longest = max(len(tok.encode(it.target.split("####")[0])) + 4 for it in items)
    rows = tb.scores(Scripted(), tok, task, items, [0, shortest - 1, longest])
    assert rows == [(0, 0.0, 5), (shortest - 1, 0.0, 5), (longest, 1.0, 0)]
    assert tb.answer_within(tok, tok.encode("3+5=8 #### 8") + [tok.eot], 3) == tok.encode("3+5")
    tb.plot({"scripted": rows}, tmp_path / "budget.png", "arithmetic")
    assert (tmp_path / "budget.png").stat().st_size > 0


def test_think_budget_refuses_a_plot_it_cannot_draw_before_scoring(base, tmp_path, capsys, monkeypatch):
    tb = load_script("think_budget")
    monkeypatch.setattr(tb, "load_run", lambda *args: pytest.fail("loaded a run for a plot it cannot draw"))
    for plot, message in ((tmp_path / "budget.txt", "unknown image format '.txt'"),
                          (tmp_path / "no" / "budget.png", "does not exist")):
        code, _, err = cli(capsys, base, "--plot", plot, entry=tb.main)
        assert code == 2 and f"--plot {plot}: " in error_line(err) and message in err


def test_think_budget_sorts_the_budgets_and_refuses_a_negative_one():
    tb = load_script("think_budget")
    assert tb.parse_args(["run", "--budgets", "8,0,4,4"]).budgets == [0, 4, 8]
    with pytest.raises(ConfigError, match="--budgets must be >= 0"):
        tb.parse_args(["run", "--budgets", "8,-1"])


def test_think_budget_refuses_a_budget_the_context_cannot_hold():
    """The longest prompt, the largest budget, the forced " #### " (6 bytes) and 6 answer tokens
    must fit in model.block_size."""
    from types import SimpleNamespace

    from train.evals.tasks import TaskEnv, build_task
    from train.tokenizer import get_tokenizer

    tb, tok = load_script("think_budget"), get_tokenizer("byte")
    task = build_task("arithmetic:op=add,digits=2,steps", TaskEnv(tok, 128, None))
    items = task.items("test", 5, 1234)
    need = max(len(tb.prompt_ids(tok, item, [])) for item in items) + 10 + 6 + 6
    model = SimpleNamespace(config=SimpleNamespace(block_size=need - 1))
    with pytest.raises(ConfigError, match=f"the largest budget needs {need} positions; model.block_size is {need - 1}"):
        tb.scores(model, tok, task, items, [0, 10])


def test_gsm8k_jsonl_writes_sft_chats_and_rl_prompts(tmp_path, capsys):
    script = load_script("gsm8k_jsonl")
    src = tmp_path / "train.jsonl"
    src.write_text(json.dumps({"question": "Tom has 3 apples and buys 1,200 more. How many?",
                               "answer": "3 + 1200 = <<3+1200=1203>>1203\n#### 1,203"}) + "\n")
    assert script.main([str(src), str(tmp_path / "gsm")]) == 0
    sft = json.loads((tmp_path / "gsm-sft.jsonl").read_text())
    rl = json.loads((tmp_path / "gsm-rl.jsonl").read_text())
    assert sft["messages"][1]["content"] == "3 + 1200 = 1203\n#### 1,203"  # calculator notes dropped
    assert rl == {"prompt": "Tom has 3 apples and buys 1,200 more. How many?", "answer": "1203"}
    from train.post.prompts import CHECKERS
    assert CHECKERS["answer-mark"](sft["messages"][1]["content"]) == rl["answer"]
    code, _, err = cli(capsys, str(src), str(tmp_path / "gsm"), entry=script.main)
    assert code == 2 and "exists" in error_line(err)  # nothing overwritten
    src.write_text('{"question": "no answer"}\n')
    code, _, err = cli(capsys, str(src), str(tmp_path / "other"), entry=script.main)
    assert code == 2 and f"{src}:1: expected" in error_line(err)
    src.write_text("\n")
    code, out, err = cli(capsys, str(src), str(tmp_path / "other"), entry=script.main)
    assert code == 2 and "holds no records" in error_line(err) and not list(tmp_path.glob("other-*"))


def test_triton_first_configs_keeps_each_autotuners_first_configs(monkeypatch):
    """The plugin wraps Triton's Autotuner (a stand-in here: Triton needs a GPU build) so that each
    keeps its first AUTOTUNE_KEEP configs, passed by position or by name; it refuses a count < 1 and
    loads as a no-op where Triton does not import."""
    import sys
    import types

    class Autotuner:
        def __init__(self, fn, arg_names, configs, key, **options):
            self.configs, self.key, self.options = configs, key, options

    autotuner = types.ModuleType("triton.runtime.autotuner")
    autotuner.Autotuner = Autotuner
    runtime = types.ModuleType("triton.runtime")
    runtime.autotuner = autotuner
    for name, module in (("triton", types.ModuleType("triton")), ("triton.runtime", runtime),
                         ("triton.runtime.autotuner", autotuner)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("AUTOTUNE_KEEP", "2")
    load_script("triton_first_configs")
    tuner = Autotuner(len, ["x"], ["c0", "c1", "c2", "c3"], ["n"], warmup=5)
    assert (tuner.configs, tuner.key, tuner.options) == (["c0", "c1"], ["n"], {"warmup": 5})
    assert Autotuner(len, ["x"], key=["n"], configs=("c0", "c1", "c2")).configs == ["c0", "c1"]
    assert Autotuner(len, ["x"], ["c0"], ["n"]).configs == ["c0"]
    monkeypatch.setenv("AUTOTUNE_KEEP", "0")
    with pytest.raises(ValueError, match="AUTOTUNE_KEEP must be >= 1, got 0"):
        load_script("triton_first_configs")
    monkeypatch.setenv("AUTOTUNE_KEEP", "3")
    for name in ("triton", "triton.runtime", "triton.runtime.autotuner"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: its import fails
    assert load_script("triton_first_configs").autotuner is None
