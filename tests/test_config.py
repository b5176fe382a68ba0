"""Run configs: every shipped file loads and builds; bad keys and values fail with clear messages."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import GPT
from train.config import ConfigError, RunConfig, apply_override, load_config, to_toml

ROOT = Path(__file__).resolve().parents[1]
# Run configs; configs/ablations/ holds ablation files (grids of runs), checked in test_ablate.py.
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.toml") if "ablations" not in p.parts)


def test_configs_exist():
    assert (ROOT / "configs" / "default.toml") in CONFIGS
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_loads_and_builds(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    # Shapes only, on meta tensors: a 124M model builds in milliseconds. An MoE layer dispatches by
    # the values of its routing (tokens per expert), which meta tensors lack: MoE configs, all
    # CPU-sized, run for real.
    device = "cpu" if cfg.model.moe.n_expert else "meta"
    with torch.device(device):
        model = GPT(cfg.model)
    x = torch.zeros(1, 8, dtype=torch.long, device=device)
    assert model(x).shape == (1, 8, cfg.model.vocab_size)


def test_defaults_and_resolution(tmp_path):
    cfg = load_config(ROOT / "configs" / "default.toml")
    assert cfg.train.out_dir == str(Path("runs") / "default")
    assert cfg.model.vocab_size == 257  # byte tokenizer: 256 bytes + end-of-text
    assert cfg.model.padded_vocab_size == 320


def test_overrides_are_typed():
    cfg = load_config(None, ["--model.n_layer=3", "--optim.lr=1e-3", "--optim.weight_decay=0",
                             "--train.compile=true", "--data.source=/some/dir", "--model.pos=none"])
    assert cfg.model.n_layer == 3
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.weight_decay, float)
    assert cfg.train.compile is True
    assert cfg.data.source == "/some/dir"
    assert cfg.model.pos == "none"


@pytest.mark.parametrize(
    "override, message",
    [
        ("--model.n_layr=3", "unknown config key 'model.n_layr'; did you mean model.n_layer"),
        ("--trian.max_steps=3", "unknown config key 'trian'; did you mean train"),
        ("--model.n_layer=abc", "model.n_layer must be int; got 'abc'"),
        ("--model.n_layer=2.5", "model.n_layer must be int; got 2.5"),
        ("--train.compile=1", "train.compile must be bool; got 1"),
        ("--model.norm=batchnorm", "model.norm must be one of"),
        ("--train.dtype=fp64", "train.dtype must be one of 'auto', 'fp32', 'bf16', 'fp16'; got 'fp64'"),
        ("--model.n_head=5", "model.n_embd (768) must be divisible by model.n_head (5)"),
        ("--optim.lr=nan", "optim.lr must be a finite number"),
        ("--train.max_steps=-1", "train.max_steps must be >= 1"),
        ("model.n_layer", "must look like --section.key=value"),
    ],
)
def test_bad_overrides_raise_clear_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_toml_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nn_layer = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_vocab_smaller_than_tokenizer_is_rejected():
    with pytest.raises(ConfigError, match="smaller than the 'byte' tokenizer's 257 tokens"):
        load_config(None, ["--model.vocab_size=100", "--data.tokenizer=byte"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs" / "default.toml", ["--optim.lr=0.0025", "--data.source=a \"quoted\" path"])
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    again = load_config(path)
    assert again == cfg


def test_apply_override_nested():
    raw = {}
    apply_override(raw, "--model.rope.theta=500000.0")
    assert raw == {"model": {"rope": {"theta": 500000.0}}}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.n_layr=2"], "error: unknown config key 'model.n_layr'; did you mean model.n_layer?"),
        (["--train.max_steps=ten"], "error: train.max_steps must be int; got 'ten'"),
    ],
)
def test_cli_one_line_error_and_exit_2(args, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "train", str(ROOT / "configs" / "default.toml"), *args,
         f"--train.out_dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == message
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a rejected config
