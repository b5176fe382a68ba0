"""README's support matrix is the one scripts/support_matrix.py computes from the rungs and presets."""

import re

from tiny_run import ROOT, load_script


def test_readme_holds_the_support_matrix_as_computed():
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- support matrix -->\n(.*?)<!-- /support matrix -->", readme, re.S)
    assert found, "README.md lost its support-matrix markers"
    computed = load_script("support_matrix").table()
    assert found.group(1) == computed, "README's support matrix is stale: paste python scripts/support_matrix.py"
    rows = [line for line in computed.splitlines() if line.startswith("| rung") or line.startswith("| preset")]
    assert len(rows) == 17 + 16 and all(line.count("|") == 11 for line in rows)
    assert "| rung 00-gpt2 | ✓ | n/a | ✓ | ✓ | ✓ | ✓ | n/a | ✓ gpt2 | ✓ gpt2 |" in rows
    assert "| rung 12-mla | ✓ | ✓ (64) | ✓ | ✓ | ✓ | ✓ | n/a | ✗ 4 | ✗ |" in rows


def test_it_refuses_arguments_in_one_line(capsys):
    from tiny_run import error_line
    from train.cli import run_cli

    main = load_script("support_matrix").main
    assert run_cli(main, ["--bogus"]) == 2 and "takes no arguments" in error_line(capsys.readouterr().err)
    assert run_cli(main, ["--help"]) == 0 and "which inference feature" in capsys.readouterr().out
