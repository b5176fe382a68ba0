"""Helpers shared by the tests: tiny model configs, random weights and token batches; and, for tests
that train tiny models end to end, the CLI called in-process and the files a run writes."""

import hashlib
import importlib.util
import json
import re
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from model import GPT, ModelConfig
from train import checkpoint as ckpt
from train.__main__ import main as train_main
from train.cli import run_cli
from train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
# GPT-2's ranks file for offline use, in the shared/ folder beside the checkout; tests that need it skip without it
GPT2_RANKS = str((ROOT.parent / "shared" / "data" / "gpt2.tiktoken").resolve())  # as runs record it
needs_gpt2_ranks = pytest.mark.skipif(not Path(GPT2_RANKS).is_file(),
                                      reason=f"offline GPT-2 vocabulary not found at {GPT2_RANKS}")

# ----------------------------------------------------------------------------- tiny models
# rotary GQA: 4 query heads and 2 key/value heads of 8 channels, a prime vocabulary, context 64
TINY_MODEL = dict(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, pos="rope")


def tiny(base: dict = TINY_MODEL, /, **overrides) -> ModelConfig:
    """A small ModelConfig: `base` (TINY_MODEL, or a test file's own) with `overrides` on top."""
    return ModelConfig(**{**base, **overrides})


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, std: float = 0.3,
               ones: Literal["norm scales", "vectors"] = "norm scales") -> nn.Module:
    """Every parameter drawn anew from N(0, std), in parameter order from one generator seeded
    `seed`, so that no weight keeps its init (a norm left at ones hides a missing copy). Centred
    on 1 instead: the norm scales (1-D `weight`s; biases stay around 0), or with ones="vectors"
    every 1-D parameter (norm scales, biases, sinks), which keeps the residual stream's size and
    an RMSNorm scale's sign, as the HF parity tests want; unit-offset scales (Gemma) then sit
    around 2, which is as good a test. Returns the module in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        one = p.ndim == 1 and (ones == "vectors" or name.endswith("weight"))
        p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if one else 0.0))
    return module.eval()


@torch.no_grad()
def jittered(cfg: ModelConfig, seed: int = 0, matrix_std: float = 0.0, vector_std: float = 0.0) -> GPT:
    """GPT(cfg) initialised under torch.manual_seed(seed), then every parameter moved off its init
    by N(0, matrix_std) noise (>= 2-D) or N(0, vector_std) (1-D: norm scales, biases, sinks), drawn
    from the same global generator; a std of 0 draws nothing. Returns the model in eval mode."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    for p in model.parameters():
        std = vector_std if p.ndim == 1 else matrix_std
        if std:
            p.add_(torch.randn_like(p) * std)
    return model.eval()


def tokens(T: int, B: int = 2, vocab: int = 97, seed: int = 0) -> torch.Tensor:
    """(B, T) token ids drawn uniformly from [0, vocab) by a generator seeded `seed`."""
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def chunked_logits(model: GPT, idx: torch.Tensor, chunks: list[int], **cache_options) -> torch.Tensor:
    """Teacher-forced logits of idx fed through one cache in chunks of the given sizes."""
    cache = model.new_cache(idx.shape[0], **cache_options)
    out, t = [], 0
    for n in chunks:
        out.append(model(idx[:, t : t + n], cache=cache))
        t += n
    return torch.cat(out, dim=1)


# ----------------------------------------------------------------------------- tiny runs
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


# torch's own log lines, not a command's: glog style (`W1203 08:32:14.175000 ...`, which a CUDA build
# of torch 2.14 writes under --compile on a machine without CUDA) and Gloo's (torch 2.9 and 2.10
# print "[Gloo] Rank 1 is connected to 1 peer ranks" on each rank's stdout)
TORCH_LOG = re.compile(r"[IWEF]\d{4} \d\d:\d\d:|\[Gloo\] ")


def without_torch_logs(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not TORCH_LOG.match(line))


def metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


@contextmanager
def records_written(out_dir: Path) -> Iterator[list[dict]]:
    """`with records_written(out) as new: trainer.fit()`: then `new` holds the metrics.jsonl
    records that run wrote. A resumed run keeps the file's lines up to its checkpoint and appends
    its own, which differ from every earlier line in their timings (tokens_per_s, elapsed_s)."""
    path = Path(out_dir) / "metrics.jsonl"
    before = path.read_text().splitlines() if path.exists() else []
    new: list[dict] = []
    yield new
    after = path.read_text().splitlines()
    kept = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
    new += [json.loads(line) for line in after[kept:]]


def fit(trainer) -> list[dict]:
    """Run `trainer.fit()`; return the metrics.jsonl records that run wrote (see records_written)."""
    with records_written(trainer.out_dir) as new:
        trainer.fit()
    return new


def numerics(records: list[dict]) -> list[dict]:
    """Metrics without the timing fields: what must be identical between runs."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


TIMING = ("tokens_per_s", "mfu", "elapsed_s", "t_rollout_s", "t_reward_s", "t_loss_s")


def all_saved_weights_finite(out_dir: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for path in ckpt.list_checkpoints(out_dir)
               for t in load_file(path / "model.safetensors").values())


@contextmanager
def files_at_most(limit: int) -> Iterator[None]:
    """Until the block ends, a write past `limit` bytes of any file fails with OSError (EFBIG), as a
    full disk fails it: RLIMIT_FSIZE, with its signal ignored so that the write returns the error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
