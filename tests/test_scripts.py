"""scripts/: the benchmark and the ladder cost table run, and report what they claim to (no timings
are asserted, only that they are measured and consistent)."""

import importlib.util

import pytest

from tiny_run import ROOT, TINY

LADDER = sorted((ROOT / "configs" / "ladder").glob("*.toml"))


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_reports_throughput_and_active_parameters(corpus):
    bench = load("bench").bench
    moe = [*TINY, *corpus, "--model.mlp=swiglu", "--model.moe.n_expert=4", "--model.moe.top_k=1"]
    r = bench(str(ROOT / "configs" / "default.toml"), moe, steps=2, warmup=1)
    assert r["tokens_per_step"] == 4 * 32 * 2  # batch x seq_len x grad_accum from TINY
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"]
    assert r["active_params"] < r["params"]  # 1 of 4 experts per token
    assert r["flops_per_s"] == pytest.approx(r["mfu"] * r["peak_flops_per_s"])


def test_ladder_table_has_a_row_per_rung_with_matching_counts():
    rows = load("ladder_table").table(LADDER, None).splitlines()
    body = [r for r in rows if r.startswith("| ") and r[2:4].isdigit()]
    assert [r.split(" | ")[0][2:] for r in body] == [p.stem for p in LADDER]
    for row in body:
        formula, measured = row.split(" | ")[1:3]
        assert formula == measured  # the accounting formula equals the built model
    moe = body[-1].split(" | ")
    assert int(moe[4].replace(",", "")) < int(moe[1].replace(",", ""))  # active < total for 11-moe
