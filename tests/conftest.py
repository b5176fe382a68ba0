"""Shared fixtures: a small text corpus, a config file and a finished tiny run."""

import importlib.util
import inspect
import os

import pytest
import torch

from tiny_run import TINY
from train.config import load_config
from train.trainer import Trainer

# HF models are the reference as their own modeling code computes them. transformers 5.25 swaps some
# layers for kernels fetched from the Hub by default (none on a CPU), and tests never download.
os.environ.setdefault("USE_HUB_KERNELS", "0")


@pytest.fixture(scope="session", autouse=True)
def hf_gated_deltanet_in_torch():
    """With flash-linear-attention or causal-conv1d installed (the `fla` extra), transformers 5.19 to
    5.24 swap HF's torch Gated DeltaNet functions for those packages' GPU kernels whatever the inputs'
    device; 5.25 keeps CPU inputs on torch. The HF models here run on the CPU: point their modules back
    at the torch functions, which the swap keeps as `__wrapped__`."""
    if not any(importlib.util.find_spec(package) for package in ("fla", "causal_conv1d")):
        return
    for family in ("qwen3_next", "qwen3_5", "qwen3_5_moe"):
        try:
            module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
        except ImportError:
            continue
        for name in ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule", "causal_conv1d_fn",
                     "causal_conv1d_update"):
            if name in vars(module):
                setattr(module, name, inspect.unwrap(getattr(module, name)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    src = root / "src"
    src.mkdir()
    for i in range(12):
        body = "".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}  # é\n" for j in range(60))
        (src / f"m{i:02d}.py").write_text(body)
    return ["--data.source=" + str(src), "--data.cache_dir=" + str(root / "cache"), "--data.val_fraction=0.2"]


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text("[train]\nmax_steps = 4\n")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, corpus):
    """A finished 4-step run (checkpoints at steps 2 and 4) that bad commands must leave alone."""
    out = tmp_path_factory.mktemp("base") / "run"
    Trainer(load_config(None, [*TINY, *corpus, f"--train.out_dir={out}", "--train.max_steps=4",
                               "--train.ckpt_interval=2", "--train.eval_interval=0"])).fit()
    return out


@pytest.fixture
def one_thread():
    """Models this small are dominated by per-op overhead, which extra threads only add to."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
