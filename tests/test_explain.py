"""`python -m train.explain`: the code a config's change runs, its papers and its measured effect."""

import csv
import re
import subprocess
import sys
from pathlib import Path

from train.cli import run_cli
from train.explain import explain, main, render
from train.model_diff import where

ROOT = Path(__file__).resolve().parents[1]
LADDER = sorted((ROOT / "configs" / "ladder").glob("*.toml"))

# The code each rung brings, read in model/ and train/optim.py: (name, new). New: the rung before
# never runs it. Otherwise the rung runs it with other shapes or settings (what the comment says).
ADDS = {
    "01-rope": ("Rotary", True),
    "02-rmsnorm": ("RMSNorm", True),
    "03-swiglu": ("GatedMLP", True),
    "04-gqa": ("CausalSelfAttention", False),  # c_attn emits 2 key/value heads instead of 4
    "05-no-bias": ("CausalSelfAttention", False),  # its c_attn and c_proj lose their biases
    "06-untied": ("GPT", False),  # lm_head.weight is no longer wte.weight
    "07-rope-theta": ("Rotary", False),  # other cos/sin tables
    "08-qk-norm": ("RMSNorm", False),  # attn.q_norm and attn.k_norm: Identity -> RMSNorm
    "09-sliding-window": ("CausalSelfAttention", False),  # window = 64 on layers 0 and 2
    "10-attn-sinks": ("AttentionKernels.softmax_attention", True),  # the kernel that takes sinks
    "11-moe": ("MoE", True),
    "12-mla": ("MultiHeadLatentAttention", True),
    "13-gated-attn": ("OutputGate", True),
    "14-hybrid-deltanet": ("GatedDeltaNet", True),
    "15-mtp": ("MTP", True),
    "16-muon": ("Muon", True),
}


def test_every_rung_names_the_code_it_adds():
    assert sorted(ADDS) == [p.stem for p in LADDER[1:]], "a new rung needs its entry in ADDS"
    for before, rung in zip(LADDER, LADDER[1:]):
        e = explain(str(rung), vs=str(before))
        by_name = {c.name: c for c in e.code}
        name, new = ADDS[rung.stem]
        assert name in by_name, (rung.stem, e.names)
        assert by_name[name].new is new, (rung.stem, name)
        file, line, _ = where(by_name[name].obj)
        assert f"{'+' if new else '~'} {name}  {file}:{line}" in render(e, source=False)
        assert len(e.fields) >= 1, rung.stem  # the field it changes is listed


def test_a_new_class_is_printed_with_its_source_and_paper():
    text = render(explain(str(LADDER[1]), vs=str(LADDER[0])))
    assert "  model.pos: \"learned\" -> \"rope\"" in text
    assert re.search(r"^\s+\d+\| class Rotary\(nn\.Module\):$", text, re.M)
    assert "arXiv:2104.09864" in text.split("3. Papers")[1]
    # the changed class shows only the lines that use what changed: GPT's wpe
    gpt = text.split("~ GPT")[1].split("+ Rotary")[0]
    assert "wpe" in gpt and "def forward" not in gpt


def test_the_default_is_gpt2_to_read_in_one_sitting():
    e = explain(str(ROOT / "configs" / "default.toml"))
    assert e.code == [] and e.fields == []
    text = render(e)
    assert "the same model, the baseline: GPT-2" in text
    lines, files = map(int, re.search(r"total: (\d+) lines in (\d+) files", text).groups())
    assert lines == sum(where(c)[2] for c in e.runs) and 100 < lines <= 600
    assert files <= 8
    names = [c.__name__ for c in e.runs]
    assert names[0] == "GPT" and {"Block", "CausalSelfAttention", "MLP"} <= set(names)
    assert "no measurement" in text


def test_the_measured_effect_is_the_csv_row():
    with (ROOT / "docs" / "results" / "ladder-cpu" / "results.csv").open(newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["variant"] == "01-rope")
    text = render(explain(str(LADDER[1]), vs=str(LADDER[0])), source=False)
    line = next(t for t in text.splitlines() if "docs/results/ladder-cpu/results.csv [01-rope]" in t)
    assert f"val bpb {float(row['val_bpb_mean']):.4f} ± {float(row['val_bpb_std']):.4f}" in line
    assert f"vs 00-gpt2 {float(row['delta_bpb']):+.4f}" in line


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.toml"
    proc = subprocess.run([sys.executable, "-m", "train.explain", str(missing)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not found" in proc.stderr and str(missing) in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nn_layerz = 2\n")
    for argv in ([str(bad)], [str(LADDER[1]), "--vs", str(bad)]):
        assert run_cli(main, argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "n_layerz" in err


def test_a_changed_class_is_located_at_its_class_line_and_its_layers_are_folded():
    """09-sliding-window (4 layers, global_every = 2) makes layers 0 and 2 local: one line for both,
    and the class's location is the line of `class CausalSelfAttention(` in its file."""
    text = render(explain(str(LADDER[9]), vs=str(LADDER[8])), source=False)
    assert "      transformer.h.{0,2}.attn: window 0 -> 64" in text.splitlines()
    file = ROOT / "model" / "mixer" / "attention.py"
    line = next(i for i, s in enumerate(file.read_text().splitlines(), 1) if s.startswith("class CausalSelfAttention("))
    assert f"  ~ CausalSelfAttention  model/mixer/attention.py:{line}" in text.splitlines()
