"""Shared fixtures: a small text corpus, a config file and a finished tiny run."""

import os

import pytest
import torch

from tiny_run import TINY
from train.config import load_config
from train.trainer import Trainer

# HF models are the reference as their own modeling code computes them. transformers 5.25 swaps some
# layers for kernels fetched from the Hub by default (none on a CPU), and tests never download.
os.environ.setdefault("USE_HUB_KERNELS", "0")


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
