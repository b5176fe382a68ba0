"""`python scripts/support_matrix.py`: which inference feature each rung and preset supports.

For every config of configs/ladder/ and configs/presets/, the model is built (random weights, on
the CPU) and each feature asked for the way the command line asks: `train.sample` flags through
train/decoding.py `check_decoding`, HF export through train/export.py `choose_family`. A feature a
model cannot serve gets a ✗ with a numbered reason, the refusal's own words. The table is printed
as Markdown; README.md holds a copy, which tests/test_support_matrix.py keeps equal to it.

Columns: cache (the KV cache/state of `generate`), rolling (windowed layers keep only their
window, quantized too under `--kv_dtype`), int8 / int4 (`--kv_dtype`), compile (`--compile`: static caches), draft (`--draft RUN`,
speculative decoding with a separate draft), MTP draft (`--draft mtp`), HF export
(`train.export`, the family it picks), GGUF (`--format gguf`, the architecture it picks; a ✗ has
no number: the export's refusal names the closest architecture and the settings that block it).
"""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import GPT  # noqa: E402
from train.cli import asked_for_help, run_cli  # noqa: E402
from train.config import load_config  # noqa: E402
from train.decoding import check_decoding, refusing_layer  # noqa: E402
from train.errors import ConfigError  # noqa: E402
from train.export import choose_family  # noqa: E402
from train.gguf_export import choose_gguf_family  # noqa: E402

USAGE = "usage: python scripts/support_matrix.py"
COLUMNS = ("cache", "rolling", "int8", "int4", "compile", "draft", "MTP draft", "HF export", "GGUF")


def configs() -> list[tuple[str, Path]]:
    ladder = sorted((ROOT / "configs" / "ladder").glob("*.toml"))
    presets = sorted((ROOT / "configs" / "presets").glob("*.toml"))
    return [(f"rung {p.stem}", p) for p in ladder] + [(f"preset {p.stem}", p) for p in presets]


def cells(path: Path) -> dict[str, str | ConfigError]:
    """Each column's verdict: a short text for a supported feature, the refusal otherwise."""
    cfg = load_config(path).model
    torch.manual_seed(0)
    model = GPT(cfg)
    out: dict[str, str | ConfigError] = {}
    layer = refusing_layer(model)
    out["cache"] = "✓" if layer is None else ConfigError(f"{layer} builds no cache")
    out["rolling"] = f"✓ ({cfg.window})" if cfg.window > 0 else "n/a"
    for column, request in (("int8", {"kv_dtype": "int8"}), ("int4", {"kv_dtype": "int4"}),
                            ("compile", {"compile": True}), ("draft", {"draft": model, "draft_name": "RUN"}),
                            ("MTP draft", {"draft": "mtp"})):
        try:
            check_decoding(model, **request)
            out[column] = "✓"
        except ConfigError as e:
            out[column] = e
    if cfg.mtp_depth == 0 and isinstance(out["MTP draft"], ConfigError):
        out["MTP draft"] = "n/a"  # nothing to draft with: not a limitation of the decoder
    try:
        out["HF export"] = f"✓ {choose_family(cfg)}"
    except ConfigError as e:
        out["HF export"] = e
    try:
        out["GGUF"] = f"✓ {choose_gguf_family(cfg)}"
    except ConfigError:
        out["GGUF"] = "✗"
    return out


def short(refusal: str) -> str:
    """An export refusal without its tally of the other families (train.export prints it whole)."""
    return refusal.split(" (settings the others")[0].replace("no HF family can represent this model; ", "no HF family; ")


def table() -> str:
    reasons: dict[str, int] = {}  # a refusal's text -> its number, in the order first met
    lines = ["| config | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, path in configs():
        row = []
        for verdict in cells(path).values():
            if isinstance(verdict, ConfigError):
                verdict = f"✗ {reasons.setdefault(short(str(verdict)), len(reasons) + 1)}"
            row.append(verdict)
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    notes = [f"{i}. {text}" for text, i in reasons.items()]
    return "\n".join(lines + [""] + notes) + "\n"


def main(argv: list[str]) -> int:
    if argv:
        if asked_for_help(argv, __doc__, USAGE):
            return 0
        raise ConfigError(f"it takes no arguments; {USAGE}")
    print(table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
