"""scripts/bench_decode.py on a tiny run: every rate it prints is a finite number or says why it is
not, and the speculative rows agree with each other (no timings are asserted)."""

import math
import re

from tiny_run import cli, load_script

SPECULATIVE = ["speculative (k=2) acceptance", "speculative tokens/target fwd", "speculative decode tok/s b=1",
               "speculative speed-up b=1"]


def bench(capsys, base, *extra, module=None):
    module = module or load_script("bench_decode")
    code, out, err = cli(capsys, base, "--context=8", "--new_tokens=4", "--nocache_tokens=2", "--repeat=2",
                         "--device=cpu", "--dtype=fp32", f"--draft={base}", "--n_draft=2", *extra,
                         entry=module.main)
    assert code == 0 and err == "", err
    assert not re.search(r"\b(nan|inf)\b", out, re.IGNORECASE), out
    rows = {}
    for line in out.splitlines():
        name = next(n for n in sorted(ROW_NAMES, key=len, reverse=True) if line.startswith(n))
        rows[name] = line[len(name):].strip()
    return rows


ROW_NAMES = ["model", "shape", "device, dtype", "context", "prefill tok/s (b=1)", "KV bytes/token",
             "KV bytes vs MHA", "peak memory", "HF generate tok/s b=1", "ours (cache) vs HF b=1", *SPECULATIVE,
             *(f"{what} b={B}" for B in (1, 8) for what in ("decode tok/s", "cache speed-up")),
             *(f"decode tok/s b={B} {c}" for B in (1, 8) for c in ("cache", "no cache"))]


def number(cell: str) -> float:
    value = float(cell.split()[0].lstrip("x").replace(",", ""))
    assert math.isfinite(value) and value > 0, cell
    return value


# a rate a busy CPU lost in timing noise, and the ratios made from it (see the test below)
LOST = re.compile(r"not measured \(within timing noise; raise --\w+\)|n/a")


def test_every_rate_is_finite_and_the_speculative_rows_agree(base, capsys):
    rows = bench(capsys, base, "--hf")
    rates = [cell for name, cell in rows.items()
             if "tok/s" in name or "speed-up" in name and name != SPECULATIVE[3] or "vs HF" in name]
    measured = [number(cell) for cell in rates if not LOST.fullmatch(cell)]
    assert len(measured) > len(rates) // 2, rates
    acceptance, per_forward = float(rows[SPECULATIVE[0]]), number(rows[SPECULATIVE[1]])
    assert acceptance == 1.0  # the run drafts for itself: every greedy guess is the target's
    assert 1 <= per_forward <= 1 + 2 * acceptance + 0.005  # a round adds its accepted guesses and one token
    speed_up = rows[SPECULATIVE[3]]  # a busy CPU can time the plain decode slow: then it says so
    if not speed_up.startswith("measurement error: "):
        assert speed_up.endswith(f"(at acceptance {acceptance:.3f})") and number(speed_up) <= per_forward


def test_a_rate_lost_in_timing_noise_is_named_not_nan(base, capsys, monkeypatch):
    module = load_script("bench_decode")
    monkeypatch.setattr(module, "best_time", lambda fn, device, repeat: 1.0)  # as if every run took 1 s
    rows = bench(capsys, base, module=module)
    assert rows["decode tok/s b=1 cache"] == "not measured (within timing noise; raise --new_tokens)"
    assert rows["decode tok/s b=8 no cache"] == "not measured (within timing noise; raise --nocache_tokens)"
    assert rows["cache speed-up b=1"] == rows[SPECULATIVE[3]] == "n/a"
    assert rows["prefill tok/s (b=1)"] == "8"


def test_a_speed_up_the_acceptance_cannot_explain_is_a_measurement_error(base, capsys, monkeypatch):
    module = load_script("bench_decode")
    rates = {"run": 100.0}  # the speculative runs, ten times the plain ones: more than k + 1 = 3 tokens a round
    def decode_rate(generate, idx, n, device, repeat):
        generate(idx, 1 + n)  # the speculative rows read the acceptance of this run
        return rates.get(generate.__name__, 10.0)

    monkeypatch.setattr(module, "decode_rate", decode_rate)
    rows = bench(capsys, base, module=module)
    per_forward = rows[SPECULATIVE[1]]
    assert rows[SPECULATIVE[3]] == f"measurement error: x10.00 exceeds the {per_forward} tokens per target forward"


def test_the_mtp_self_draft_is_benchmarked_like_a_draft_run(tmp_path, capsys):
    config = tmp_path / "mtp.toml"
    config.write_text("[model]\nblock_size = 64\nn_layer = 2\nn_head = 2\nn_embd = 32\nmtp_depth = 1\n")
    module = load_script("bench_decode")
    code, out, err = cli(capsys, config, "--context=8", "--new_tokens=4", "--nocache_tokens=2", "--repeat=2",
                         "--device=cpu", "--dtype=fp32", "--draft=mtp", "--n_draft=3", entry=module.main)
    assert code == 0 and err == "", err
    rows = dict(line.split("  ", 1) for line in out.splitlines() if line.startswith("speculative"))
    assert "speculative (k=1) acceptance" in rows  # one guess per MTP module and round
    assert 0.0 <= float(rows["speculative (k=1) acceptance"]) <= 1.0
    assert 1.0 <= number(rows["speculative tokens/target fwd"]) <= 2.0


def test_hf_generate_is_timed_in_the_family_export_picks(tmp_path, capsys):
    """--hf on a Llama-shaped config (RoPE, RMSNorm, SwiGLU, GQA): HF's LlamaForCausalLM; a
    model no family holds (rung 16) is refused in one line before anything is timed."""
    config = tmp_path / "llama.toml"
    config.write_text('[model]\nblock_size = 64\nn_layer = 2\nn_head = 2\nn_kv_head = 1\nn_embd = 32\n'
                      'pos = "rope"\nnorm = "rmsnorm"\nmlp = "swiglu"\nbias = false\n')
    module = load_script("bench_decode")
    code, out, err = cli(capsys, config, "--context=8", "--new_tokens=4", "--nocache_tokens=2", "--repeat=2",
                         "--device=cpu", "--dtype=fp32", "--hf", entry=module.main)
    assert code == 0 and err == "", err
    line = next(line for line in out.splitlines() if line.startswith("HF generate tok/s b=1"))
    assert line.rstrip().endswith("(llama)")
    code, out, err = cli(capsys, "configs/ladder/16-muon.toml", "--context=8", "--hf", entry=module.main)
    assert code == 2 and "no HF family can represent this model" in err and err.count("\n") == 1


def test_best_time_is_the_fastest_of_the_repeats(monkeypatch):
    module = load_script("bench_decode")
    took = iter([0.3, 0.1, 0.2])
    monkeypatch.setattr(module, "timed", lambda fn, device: next(took))
    assert module.best_time(None, "cpu", 3) == 0.1
