"""`python -m train.explain`: the code a config's change runs, its papers and its measured effect."""

import csv
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tiny_run import tiny
from train.cli import run_cli
from train.explain import MAX_USES, explain, main, render
from train.model_diff import compare, where

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


def test_a_change_in_one_layer_names_that_layer_and_nothing_else():
    """Two layers, a window on layer 0 only (global_every = 2): one class changed, on one path,
    unfolded."""
    from model import GPT

    a, b = GPT(tiny(window=16, global_every=2)), GPT(tiny())
    code = {c.name: c for c in compare(a, b)}
    assert list(code) == ["CausalSelfAttention"] and not code["CausalSelfAttention"].new
    assert code["CausalSelfAttention"].change_lines() == ["transformer.h.0.attn: local False -> True",
                                                          "transformer.h.0.attn: window 0 -> 16"]


def test_new_code_comes_before_changed_code_at_the_same_module():
    """10-attn-sinks: the kernel that takes sinks is new where CausalSelfAttention changes; the new
    one is listed first."""
    lines = render(explain(str(LADDER[10]), vs=str(LADDER[9])), source=False).splitlines()
    new = lines.index(next(s for s in lines if s.startswith("  + AttentionKernels.softmax_attention")))
    assert lines[new + 1].startswith("  ~ CausalSelfAttention")


def test_a_changed_class_shows_its_first_uses_and_counts_the_rest():
    """04-gqa: CausalSelfAttention uses what changed on more lines than are shown; the listing shows
    MAX_USES source lines, then how many more there are."""
    lines = render(explain(str(LADDER[4]), vs=str(LADDER[3]))).splitlines()
    start = next(i for i, s in enumerate(lines) if s.startswith("  ~ CausalSelfAttention"))
    end = next(i for i, s in enumerate(lines[start + 1:], start + 1) if re.match(r"  [+~] |$", s))
    block = "\n".join(lines[start:end])
    shown = re.findall(r"^\s+\d+\| ", block, re.M)
    more = re.search(r"\.\.\. (\d+) more lines use them", block)
    assert len(shown) == MAX_USES and more and int(more.group(1)) >= 1


def test_the_default_listing_counts_its_files():
    e = explain(str(ROOT / "configs" / "default.toml"))
    files = int(re.search(r"total: \d+ lines in (\d+) files", render(e)).group(1))
    assert files == len({where(c)[0] for c in e.runs}) >= 2
    assert "AttentionKernels" in [c.__name__ for c in e.runs]  # a base class of CausalSelfAttention


def test_a_class_without_a_citation_borrows_its_modules():
    """13-gated-attn: OutputGate's docstring cites nothing; model/mixer/gate.py's module docstring
    cites the paper."""
    papers = render(explain(str(LADDER[13]), vs=str(LADDER[12])), source=False).split("3. Papers")[1]
    assert "model.mixer.gate: " in papers and "arXiv:2505.06708" in papers


def test_out_dir_and_an_ablations_overridden_variants_are_not_differences(tmp_path):
    """A copy of GPT-2's config with its own out_dir is GPT-2; rung 11's measured effect lists the
    moe-balancing variant that ran it unchanged, not the three that override it, with each CSV's
    seed count."""
    copy = tmp_path / "gpt2.toml"
    copy.write_text(LADDER[0].read_text().replace("[train]\n", '[train]\nout_dir = "runs/elsewhere"\n'))
    assert "out_dir" in copy.read_text() and "out_dir" not in LADDER[0].read_text()
    e = explain(str(copy), vs=str(LADDER[0]))
    assert e.fields == e.elsewhere == e.code == []
    spec = tomllib.loads((ROOT / "configs" / "ablations" / "moe-balancing.toml").read_text())
    unchanged = [name for name, changes in spec["variants"].items() if not changes]
    found = explain(str(LADDER[11])).measurements
    assert [m.variant for m in found if m.results.endswith("moe-balancing/results.csv")] == unchanged == ["switch"]
    for m in explain(str(LADDER[14])).measurements:
        n = m.row["seeds_done"]
        assert f", {n} seed{'' if n == '1' else 's'}: " in m.line()
    assert any(m.row["seeds_done"] == "1" for m in explain(str(LADDER[14])).measurements)


def test_a_schedule_field_alone_lists_the_schedule(tmp_path):
    copy = tmp_path / "warm.toml"
    copy.write_text(LADDER[0].read_text().replace("warmup_steps = 50\n", "warmup_steps = 7\n"))
    assert "warmup_steps = 7" in copy.read_text()
    e = explain(str(copy), vs=str(LADDER[0]))
    assert [c.name for c in e.code] == ["lr_at"]
    assert e.code[0].change_lines() == ["optim.warmup_steps: 50 -> 7"]
