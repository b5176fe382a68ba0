"""Helpers for tests that train tiny models end to end and call the CLI in-process."""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train import checkpoint as ckpt
from train.__main__ import main as train_main
from train.cli import run_cli
from train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
# GPT-2's ranks file for offline use, in the shared/ folder beside the checkout; tests that need it skip without it
GPT2_RANKS = str((ROOT.parent / "shared" / "data" / "gpt2.tiktoken").resolve())  # as runs record it
needs_gpt2_ranks = pytest.mark.skipif(not Path(GPT2_RANKS).is_file(),
                                      reason=f"offline GPT-2 vocabulary not found at {GPT2_RANKS}")

TINY = [
    "--model.block_size=32", "--model.n_layer=2", "--model.n_head=2", "--model.n_embd=32",
    "--model.dropout=0.1",  # dropout draws from the RNG: resume must restore it
    "--train.batch_size=4", "--train.grad_accum=2", "--train.eval_batches=2",
    "--train.log_interval=1", "--train.device=cpu", "--train.dtype=fp32",
    "--optim.lr=3e-3", "--optim.warmup_steps=3", "--optim.decay_steps=20",
]


def make(tmp_path, corpus, name, *extra):
    return load_config(None, [*TINY, *corpus, f"--train.out_dir={tmp_path / name}", *extra])


def load_script(name: str):
    """scripts/NAME.py imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snapshot(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def cli(capsys, *args, entry=train_main):
    code = run_cli(entry, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The single `error: ...` line of a failed command (progress bars may precede it)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def numerics(records: list[dict]) -> list[dict]:
    """Metrics without the timing fields: what must be identical between runs."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


TIMING = ("tokens_per_s", "mfu", "elapsed_s")


def all_saved_weights_finite(out_dir: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for path in ckpt.list_checkpoints(out_dir)
               for t in load_file(path / "model.safetensors").values())
