"""Run configs: every shipped file loads and builds; bad keys and values fail with clear messages."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import GPT
from tiny_run import cli, error_line
from train.config import ConfigError, RunConfig, apply_override, config_differences, load_config, read_toml, to_toml
from train.config import _toml_value

ROOT = Path(__file__).resolve().parents[1]
# Run configs; configs/ablations/ holds ablation files (grids of runs), checked in test_ablate.py.
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.toml") if "ablations" not in p.parts)


def test_configs_exist():
    assert (ROOT / "configs" / "default.toml") in CONFIGS
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_loads_and_builds(path):
    # a post-training config starts from a run (train.init_from, maybe through its base) that a
    # fresh clone has not trained
    cfg = load_config(path, ["--train.init_from="])
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
        # an epsilon or a scale of 0 divides by zero or zeroes a branch; a cap of inf is no cap
        ("--model.norm_eps=0", "model.norm_eps must be a positive finite number; got 0"),
        ("--model.rope.theta=0", "model.rope.theta must be a positive finite number; got 0"),
        ("--model.moe.routed_scale=0", "model.moe.routed_scale must be a positive finite number; got 0"),
        ("--model.attn_softcap=inf", "model.attn_softcap must be >= 0 (0 = off/default); got inf"),
        ("--model.moe.aux_loss_coef=inf", "model.moe.aux_loss_coef must be >= 0 (0 = off); got inf"),
        ("--model.mla.index_loss_coef=inf", "model.mla.index_loss_coef must be >= 0 (0 = off); got inf"),
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


# ----------------------------------------------------------------------------- base = FILE
def test_base_file_is_read_first_and_this_files_keys_over_it(tmp_path):
    """A chain of two bases, each relative to the file naming it: every key comes from the nearest
    file that sets it, tables ([model], [model.rope]) merged key by key; the result is the config
    that names all the keys itself."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "shared" / "other.toml").write_text(
        '[model]\nn_layer = 3\nn_head = 2\nn_embd = 64\npos = "rope"\n'
        '[model.rope]\ntheta = 1000.0\nscaling = "linear"\nfactor = 2.0\n'
        '[train]\nmax_steps = 7\nseed = 11\n')
    (tmp_path / "mid.toml").write_text('base = "shared/other.toml"\n[model]\nn_head = 4\n[model.rope]\nfactor = 4.0\n')
    (tmp_path / "sub" / "top.toml").write_text('base = "../mid.toml"\n[train]\nseed = 3\n')
    cfg = load_config(tmp_path / "sub" / "top.toml")
    expected = load_config(None, ["--model.n_layer=3", "--model.n_head=4", "--model.n_embd=64", "--model.pos=rope",
                                  "--model.rope.theta=1000.0", "--model.rope.scaling=linear",
                                  "--model.rope.factor=4.0", "--train.max_steps=7", "--train.seed=3"])
    assert cfg.model == expected.model and cfg.optim == expected.optim and cfg.data == expected.data
    assert (cfg.train.max_steps, cfg.train.seed) == (7, 3)
    assert cfg.train.out_dir == str(Path("runs") / "top")  # the run is named after the file given


def flat(tables: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tables.items():
        out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return out


def test_speedrun_config_is_the_default_with_its_own_keys_over_it():
    """configs/speedrun.toml is configs/default.toml with each key it names given on the command
    line (the run's name and directory aside)."""
    own = flat(read_toml(ROOT / "configs" / "speedrun.toml", "config"))
    assert own.pop("base") == "default.toml"
    overrides = [f"--{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in own.items()]
    speedrun = load_config(ROOT / "configs" / "speedrun.toml")
    expected = load_config(ROOT / "configs" / "default.toml", overrides)
    assert dataclasses.replace(speedrun, train=dataclasses.replace(speedrun.train, out_dir="")) == \
        dataclasses.replace(expected, train=dataclasses.replace(expected.train, out_dir=""))


@pytest.mark.parametrize("files, message", [
    ({"a.toml": 'base = "nope.toml"\n'}, "config file not found: "),
    ({"a.toml": 'base = "a.toml"\n'}, "a.toml: base 'a.toml' includes itself"),
    ({"a.toml": 'base = "b.toml"\n', "b.toml": 'base = "./a.toml"\n'}, "base './a.toml' includes itself"),
    ({"a.toml": "base = 3\n"}, "a.toml: base must be a file name (a string); got 3"),
    ({"a.toml": 'base = "b.toml"\n', "b.toml": "[model\n"}, "b.toml: not valid TOML"),
], ids=["missing", "itself", "cycle", "not a string", "bad base"])
def test_bad_base_is_a_one_line_error_and_exit_2(files, message, tmp_path, capsys):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config(tmp_path / "a.toml")
    assert "\n" not in str(err.value)
    code, _, stderr = cli(capsys, tmp_path / "a.toml", f"--train.out_dir={tmp_path / 'run'}")
    assert code == 2 and message in error_line(stderr)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- warm-up ramps
def test_warm_up_ramps_round_down_sequences_to_multiples_of_8_and_rows_to_whole_numbers():
    """Ramps whose steps are fractional: seq 64 -> 256 over 5 steps is 64 + 38.4 s (64, 102.4,
    140.8, 179.2, 217.6), floored to a multiple of 8; rows 1 -> 8 over 3 steps is 1 + 7 s / 3
    (1, 3.33, 5.67), floored."""
    cfg = load_config(None, ["--model.block_size=256", "--train.seq_warmup_steps=5", "--train.seq_warmup_start=64",
                             "--train.batch_size=8", "--train.batch_warmup_steps=3", "--train.batch_warmup_start=1"])
    assert [cfg.seq_len_at(s) for s in range(6)] == [64, 96, 136, 176, 216, 256]
    assert [cfg.rows_at(s) for s in range(5)] == [1, 3, 5, 8, 8]


# ----------------------------------------------------------------------------- overrides, keys
def test_an_override_value_may_contain_an_equals_sign():
    """Only the first `=` separates the key from the value: a path with `=` in it stays whole."""
    assert load_config(None, ["--data.source=/runs/lr=3e-4/data"]).data.source == "/runs/lr=3e-4/data"


def test_a_key_missing_from_a_saved_config_counts_as_its_default():
    """A checkpoint written before a [model] field existed: the field reads as its default (0 for
    attn_conv), so only a run that sets it to something else differs."""
    saved = "\n".join(line for line in to_toml(load_config(None, [])).splitlines() if not line.startswith("attn_conv"))
    assert "attn_conv" not in saved
    assert config_differences(saved, load_config(None, [])) == []
    assert config_differences(saved, load_config(None, ["--model.attn_conv=3"])) == ["model.attn_conv: 0 -> 3"]


@pytest.mark.parametrize("overrides, ignored", [
    (["--optim.muon_momentum=0.9", "--optim.muon_ns=polar_express", "--optim.normuon=true",
      "--optim.cautious_wd=true"],
     ["optim.muon_momentum", "optim.muon_ns", "optim.normuon", "optim.cautious_wd"]),
    (["--optim.name=muon", "--optim.muon_momentum=0.9", "--optim.cautious_wd=true"], []),
    (["--model.pos=rope", "--model.rope.scaling=llama3", "--model.rope.factor=8.0",
      "--model.rope.original_max_pos=512", "--model.rope.low_freq_factor=2.0",
      "--model.rope.high_freq_factor=8.0"], []),
    (["--model.pos=rope", "--model.rope.scaling=linear", "--model.rope.original_max_pos=512"],
     ["model.rope.original_max_pos"]),
    (["--model.pos=rope", "--model.rope.local_theta=10000.0"], ["model.rope.local_theta"]),
    (["--model.pos=rope", "--model.rope.local_theta=10000.0", "--model.window=16"], []),
], ids=["muon-keys-with-adamw", "muon-keys-with-muon", "llama3-keys", "llama3-key-with-linear",
        "local-theta-without-window", "local-theta-with-window"])
def test_ignored_keys_are_exactly_those_the_settings_never_read(overrides, ignored, capsys):
    """The Muon settings do nothing with AdamW; llama3 scaling reads factor, original_max_pos and
    both frequency factors, linear scaling only factor; local_theta needs sliding-window layers."""
    load_config(None, overrides)
    warned = [line.split()[1] for line in capsys.readouterr().err.splitlines()]
    assert warned == ignored


def test_a_string_with_control_characters_round_trips_through_the_saved_config(tmp_path):
    """TOML forbids raw control characters (but tab) in a string; written escaped, an out_dir holding
    one reads back as it was, so its run can be resumed."""
    texts = ["a\x01b", "tab\there", "line\nnext", 'quote " and \\ back', "del\x7f", "é"]
    path = tmp_path / "strings.toml"
    path.write_text("".join(f"k{i} = {_toml_value(text)}\n" for i, text in enumerate(texts)), encoding="utf-8")
    assert list(read_toml(path, "config").values()) == texts
    cfg = load_config(None, ["--train.out_dir=runs/ctl\x01"])
    path.write_text(to_toml(cfg), encoding="utf-8")
    assert read_toml(path, "config")["train"]["out_dir"] == "runs/ctl\x01"
