"""Run configuration: typed dataclasses filled from a TOML file plus dotted command-line overrides.

A run config has one section per dataclass: `[model]` (model.ModelConfig), `[data]`
(train.data.DataConfig), `[train]` and `[optim]` (below). Every key is checked against the field
annotations: an unknown key or a value of the wrong type raises ConfigError naming the key and,
for typos, the closest valid keys. Configs are data: they are parsed, never executed.
"""

import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from model import ModelConfig

from .data import DataConfig
from .errors import ConfigError, at_least
from .init_from import FREE_KEYS, NEWEST, check_tokenizer, model_source
from .post.config import PostConfig, chat_vocab_size
from .tokenizer import tokenizer_vocab_size


CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
PRESETS_DIR = CONFIGS_DIR / "presets"
PRESET_PREFIX = "preset:"


@dataclass
class TrainConfig:
    out_dir: str = ""  # "" = runs/<config file name>
    max_steps: int = 1000  # optimizer steps
    # A wall-clock budget, for comparing runs at equal time. The run ends after the first step at
    # which its training time (elapsed_s, carried across resumes) has reached max_seconds, as a
    # finished run: evaluated, checkpointed, exit 0; its last metrics.jsonl line and that
    # checkpoint's state.json say "ended_by": "max_seconds", and re-running it trains no further
    # unless the limit is raised. The learning-rate schedule still spans max_steps.
    max_seconds: float = 0.0  # 0 = no limit
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 0  # tokens per sequence; 0 = model.block_size
    # sequence-length warm-up (a speedrun rung): the first seq_warmup_steps steps train on shorter
    # sequences, growing linearly from seq_warmup_start tokens to seq_len (RunConfig.seq_len_at)
    seq_warmup_steps: int = 0  # 0 = off: every step at seq_len
    seq_warmup_start: int = 64
    # batch-size warm-up (the same, in sequences per micro-batch): from batch_warmup_start to
    # batch_size over the first batch_warmup_steps steps (RunConfig.rows_at)
    batch_warmup_steps: int = 0  # 0 = off: every step at batch_size
    batch_warmup_start: int = 4
    eval_interval: int = 250  # steps between evaluations (0 = only at the end)
    eval_batches: int = 20  # micro-batches of validation data per evaluation
    ckpt_interval: int = 250  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # how many recent checkpoints to keep on disk
    log_interval: int = 10  # steps between metrics.jsonl lines
    # TensorBoard: rank 0 also writes the numbers of every metrics.jsonl line as scalars in
    # <out_dir>/tensorboard/ (`tensorboard --logdir runs`); metrics.jsonl stays the record of the
    # run. Needs the tensorboard extra; see train/metrics_log.py.
    tensorboard: bool = False
    seed: int = 1337
    # the validation batches' seed; -1 = train.seed. A fixed value compares runs of different seeds
    # on the same batches (scripts/speedrun.py: every run is scored as the default's 1337 is)
    eval_seed: int = -1
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient: stop, or skip the step
    max_skipped_steps: int = 3  # on_nonfinite="skip": stop when more steps than this in a row are skipped
    allow_config_change: bool = False  # resume even if [model] or [data] differ from the checkpoint's
    # Several processes (torchrun; train/parallel.py). batch_size stays the per-rank micro-batch:
    # tokens per step = batch_size x seq_len x grad_accum x world size.
    parallel: Literal["ddp", "fsdp2"] = "ddp"  # replicate the model (DDP) or shard it (FSDP2)
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: NCCL on CUDA, gloo on CPU
    dist_timeout_s: int = 600  # a rank that waits this long for another stops with an error
    activation_checkpointing: bool = False  # recompute each block in backward instead of storing it
    # Fine-tuning (train/init_from.py): start from the weights of a training run's directory (its
    # checkpoint init_step; -1 = the newest) or of a Hugging Face model directory. [model] is taken
    # from there, and a [model] key set here must agree with it, but for the few that only shape
    # training (init_from.FREE_KEYS: dropout, auxiliary loss weights). Optimizer, step, schedule and
    # seed are this run's own; once the run has a checkpoint of its own, it resumes from that.
    init_from: str = ""
    init_step: int = NEWEST

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "eval_batches", "log_interval",
                     "max_skipped_steps", "dist_timeout_s", "batch_warmup_start"):
            at_least(getattr(self, name), f"train.{name}", 1)
        for name in ("seq_len", "eval_interval", "ckpt_interval", "keep_checkpoints",
                     "seq_warmup_steps", "batch_warmup_steps"):
            at_least(getattr(self, name), f"train.{name}", 0)
        at_least(self.seq_warmup_start, "train.seq_warmup_start", 8)
        _require(0 <= self.seed < 2**63, f"train.seed must be in [0, 2**63); got {self.seed}")
        _require(-1 <= self.eval_seed < 2**63, f"train.eval_seed must be in [0, 2**63), or -1; got {self.eval_seed}")
        _require(self.init_step >= NEWEST,
                 f"train.init_step must be a checkpoint's step, or -1 for the newest; got {self.init_step}")
        _require(math.isfinite(self.max_seconds) and self.max_seconds >= 0,
                 f"train.max_seconds must be a finite number >= 0 (0 = no limit); got {self.max_seconds}")

    @property
    def val_seed(self) -> int:
        """The seed of the validation batches: eval_seed, or seed when eval_seed is -1."""
        return self.seed if self.eval_seed < 0 else self.eval_seed


@dataclass
class OptimConfig:
    name: Literal["adamw", "muon"] = "adamw"  # muon: Muon on hidden matrices, AdamW on the rest (train/optim.py)
    lr: float = 6e-4  # peak learning rate (Muon's too: its update is scaled to AdamW's RMS)
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 100
    decay_steps: int = 0  # length of the schedule; 0 = train.max_steps
    decay_fraction: float = 0.2  # wsd: the last fraction of the schedule decays linearly
    weight_decay: float = 0.1  # applied to weight matrices only (>= 2-D parameters)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    muon_momentum: float = 0.95  # name = "muon": momentum of the Muon matrices (Nesterov)
    muon_ns: Literal["jordan", "polar_express"] = "jordan"  # Newton-Schulz coefficients (train/optim.py)
    normuon: bool = False  # NorMuon: per-neuron second moment (decay beta2) on Muon's update
    cautious_wd: bool = False  # Muon decays only entries whose update has the parameter's sign

    def __post_init__(self) -> None:
        _require(self.name in ("adamw", "muon"), f"optim.name must be 'adamw' or 'muon'; got {self.name!r}")
        for name, choices in (("schedule", ("cosine", "wsd", "constant")), ("muon_ns", ("jordan", "polar_express"))):
            _require(getattr(self, name) in choices, f"optim.{name} must be one of {choices}; got {getattr(self, name)!r}")
        for name in ("lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "eps", "grad_clip",
                     "decay_fraction", "muon_momentum"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, f"optim.{name} must be a finite number >= 0; got {value}")
        _require(self.lr > 0, f"optim.lr must be > 0; got {self.lr}")
        _require(self.beta1 < 1 and self.beta2 < 1, "optim.beta1 and optim.beta2 must be < 1")
        _require(self.muon_momentum < 1, f"optim.muon_momentum must be < 1; got {self.muon_momentum}")
        _require(self.min_lr_ratio <= 1, f"optim.min_lr_ratio must be <= 1; got {self.min_lr_ratio}")
        _require(self.decay_fraction <= 1, f"optim.decay_fraction must be <= 1; got {self.decay_fraction}")
        for name in ("warmup_steps", "decay_steps"):
            at_least(getattr(self, name), f"optim.{name}", 0)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    post: PostConfig = field(default_factory=PostConfig)  # post-training (train/post/)

    @property
    def seq_len(self) -> int:
        return self.train.seq_len or self.model.block_size

    def seq_len_at(self, step: int) -> int:
        """The sequence length of optimizer step `step` (0-based): seq_len, or during the warm-up
        (train.seq_warmup_steps) a length growing linearly from train.seq_warmup_start, a multiple of 8."""
        t = self.train
        if step >= t.seq_warmup_steps:
            return self.seq_len
        return min(self.seq_len, max(8, int(ramp(t.seq_warmup_start, self.seq_len, step, t.seq_warmup_steps)) // 8 * 8))

    def rows_at(self, step: int) -> int:
        """Sequences per micro-batch at optimizer step `step` (0-based): train.batch_size, or during
        the warm-up (train.batch_warmup_steps) a count growing linearly from train.batch_warmup_start."""
        t = self.train
        if step >= t.batch_warmup_steps:
            return t.batch_size
        return min(t.batch_size, int(ramp(t.batch_warmup_start, t.batch_size, step, t.batch_warmup_steps)))


def ramp(start: float, end: float, step: int, steps: int) -> float:
    """A warm-up's linear value at `step` of `steps`: from `start` (step 0) towards `end`."""
    return start + (end - start) * step / steps


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's tables, or a one-line ConfigError: `what` not found, or not valid TOML."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def read_config_file(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's tables. A top-level `base = "FILE"` (relative to this file) reads FILE first
    and then this file's keys over it, table by table: a config can name only what it changes
    (configs/speedrun.toml names what it changes from configs/default.toml)."""
    raw = read_toml(path, "config file")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a file name (a string); got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: base {base!r} includes itself")
    return _merged(read_config_file(base_path, (*seen, path.resolve())), raw)


def load_config(path: str | Path | None, overrides: list[str] = (), warn_ignored: bool = True,
                resolved: bool = False) -> RunConfig:
    """Read a TOML run config, apply `section.key=value` overrides, validate, resolve defaults.

    `path` may be `preset:NAME` for configs/presets/NAME.toml. With `warn_ignored`, a key that the
    chosen rungs never read (`model.rope.theta` with learned positions, ...) prints a one-line
    warning when the user set it: in an override, or in a config file outside this project's
    configs/ (whose files may list such keys to document them). With train.init_from, [model] comes
    from the source, unless `resolved`: a config a run wrote, whose [model] already is the source's
    (which is then not read again, and may be gone).
    """
    raw: dict[str, Any] = {}
    name = "default"
    explicit: set[str] = set()
    if path is not None:
        path = config_path(path)
        raw = read_config_file(path)
        name = path.stem
        if not path.resolve().is_relative_to(CONFIGS_DIR):
            explicit |= set(_flat(raw))
    for item in overrides:
        explicit |= set(_flat(apply_override({}, item)))
        apply_override(raw, item)
    # With train.init_from, [model] is the source's; the keys set here are checked against it.
    train = raw.get("train", {})
    mine = raw.pop("model", {}) if isinstance(train, dict) and train.get("init_from") and not resolved else None
    cfg = from_dict(RunConfig, raw, prefix="")
    if not cfg.train.out_dir:
        cfg.train.out_dir = str(Path("runs") / name)
    # The model's vocabulary follows the tokenizer unless the config sets it explicitly.
    n_vocab = tokenizer_vocab_size(cfg.data.tokenizer)
    if mine is not None:
        cfg.model = _model_of_source(cfg, mine)
    elif "vocab_size" not in raw.get("model", {}):
        cfg.model = dataclasses.replace(cfg.model, vocab_size=n_vocab)
    elif cfg.model.vocab_size < n_vocab:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the "
                          f"{cfg.data.tokenizer!r} tokenizer's {n_vocab} tokens")
    if cfg.post.chat:  # the chat format's tokens take padded rows of the embedding (train/post/)
        cfg.model = dataclasses.replace(cfg.model, vocab_size=chat_vocab_size(n_vocab, cfg.model))
    if warn_ignored:
        for key, why in ignored_keys(cfg).items():
            if key in explicit:
                print(f"warning: {key} is ignored: {why}", file=sys.stderr)
    _require(cfg.seq_len <= cfg.model.block_size,
             f"train.seq_len={cfg.seq_len} exceeds model.block_size={cfg.model.block_size}")
    return cfg


def _model_of_source(cfg: RunConfig, mine: dict) -> ModelConfig:
    """train.init_from: the source's [model] with the keys of `mine` (the [model] table the user
    set) applied; a key that then differs from the source's, other than FREE_KEYS, is refused."""
    t = cfg.train
    _require(isinstance(mine, dict), "model must be a table of keys")
    _require(not Path(t.out_dir).resolve().is_relative_to(Path(t.init_from).expanduser().resolve()),
             f"train.out_dir={t.out_dir!r} is inside train.init_from={t.init_from!r}, which a run "
             "only reads: choose another train.out_dir")
    source = model_source(t.init_from, t.init_step, t.out_dir)
    check_tokenizer(source, cfg.data.tokenizer, cfg.data.tokenizer_path)
    theirs = from_dict(ModelConfig, source.model, "model.")
    merged = from_dict(ModelConfig, _merged(source.model, mine), "model.")
    a, b = _flat(dataclasses.asdict(theirs)), _flat(dataclasses.asdict(merged))
    for key in a:
        if a[key] != b[key] and key not in FREE_KEYS:
            raise ConfigError(f"model.{key} = {_toml_value(b[key])} differs from {_toml_value(a[key])} in "
                              f"train.init_from={t.init_from!r}, whose [model] this run takes "
                              f"(only model.{', model.'.join(FREE_KEYS)} may differ)")
    return merged


def _merged(base: dict, update: dict) -> dict:
    """`base` with the keys of `update` written over it, into sub-tables."""
    out = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _flat(table: dict, prefix: str = "") -> dict:
    """{"moe": {"top_k": 2}} -> {"moe.top_k": 2}"""
    out = {}
    for key, value in table.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return out


def ignored_keys(cfg: RunConfig) -> dict[str, str]:
    """Dotted keys of `cfg` that have no effect with its other settings, with the reason."""
    out = cfg.model.ignored_keys()
    if cfg.data.tokenizer != "gpt2":
        out["data.tokenizer_path"] = f"data.tokenizer is {cfg.data.tokenizer!r} (the ranks file is for 'gpt2')"
    if cfg.optim.name != "muon":
        for key in ("muon_momentum", "muon_ns", "normuon", "cautious_wd"):
            out[f"optim.{key}"] = f"optim.name is {cfg.optim.name!r}"
    if not cfg.train.init_from:
        out["train.init_step"] = "train.init_from is not set"
    return out


def schedule_warning(cfg: RunConfig) -> str | None:
    """Why the learning-rate schedule of `cfg` cannot do what its settings suggest, or None. The
    trainer prints it when a run starts (not here in load_config, which also reads finished runs)."""
    o, steps = cfg.optim, cfg.train.max_steps
    if o.warmup_steps >= steps:
        return (f"optim.warmup_steps={o.warmup_steps} >= train.max_steps={steps}: the learning rate "
                f"never reaches optim.lr={o.lr:g} before the last step (which takes "
                f"{o.lr * steps / o.warmup_steps:.3g}) and never decays; lower optim.warmup_steps")
    return None


def config_path(path: str | Path) -> Path:
    """A config file's path: `path`, or configs/presets/NAME.toml for "preset:NAME"."""
    text = str(path)
    return preset_path(text[len(PRESET_PREFIX):]) if text.startswith(PRESET_PREFIX) else Path(path)


def preset_path(name: str) -> Path:
    """configs/presets/NAME.toml; an unknown name lists the presets there are."""
    available = sorted(p.stem for p in PRESETS_DIR.glob("*.toml")) if PRESETS_DIR.is_dir() else []
    if name not in available:
        listing = ", ".join(available) if available else f"none yet (add TOML files to {PRESETS_DIR})"
        raise ConfigError(f"unknown preset {name!r}; available presets: {listing}")
    return PRESETS_DIR / f"{name}.toml"


# [data] keys that say where things are stored, not what the tokens are: free to change on resume.
_DATA_LOCATION_KEYS = {"cache_dir", "tokenizer_path"}


def config_differences(saved_toml: str, current: RunConfig) -> list[str]:
    """The [model] and [data] keys in which a checkpoint's config.toml and `current` differ.

    Each difference reads `section.key: <saved> -> <current>`, sub-tables key by key
    (`model.moe.top_k: 2 -> 4`). A key missing from the saved file (a field added since) counts as
    its default. [train] and [optim] may change freely.
    """
    try:
        saved = _flat(tomllib.loads(saved_toml))
    except tomllib.TOMLDecodeError as e:
        return [f"config.toml of the checkpoint is not valid TOML ({e})"]
    now, defaults = (_flat(tomllib.loads(to_toml(cfg))) for cfg in (current, RunConfig()))
    out = []
    for section in ("model", "data"):
        for key in sorted(k for k in saved.keys() | now.keys() if k.startswith(section + ".")):
            if section == "data" and key.partition(".")[2] in _DATA_LOCATION_KEYS:
                continue
            a, b = saved.get(key, defaults.get(key)), now.get(key, defaults.get(key))
            if a != b:
                out.append(f"{key}: {_toml_value(a) if a is not None else '(unset)'} -> "
                           f"{_toml_value(b) if b is not None else '(unset)'}")
    return out


def apply_override(raw: dict, item: str) -> dict:
    """Apply one `--section.key=value` (leading dashes optional) to the raw TOML dict.

    The value is read as a TOML value when it parses as one (`4`, `2e-3`, `true`, `"x"`, `[1, 2]`),
    else as a bare string, so `--data.source=/path/to/dir` needs no quotes. Returns `raw`.
    """
    item = item.lstrip("-")
    key, sep, text = item.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"override {item!r} must look like --section.key=value")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[leaf] = override_value(text)
    return raw


def override_value(text: str) -> object:
    """An override's value: a TOML value when the text parses as one, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def from_dict(cls: type, data: dict, prefix: str) -> Any:
    """Build dataclass `cls` from a dict, checking keys and value types against its annotations."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table of keys")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        where = prefix + key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key {where!r}{hint}")
        kwargs[key] = _coerce(hints[key], value, where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where + ".")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where} must be one of {allowed}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where} must be {_type_name(tp)}; got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is type(None) or not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {_type_name(tp)}; got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def to_toml(cfg: Any) -> str:
    """Serialise a config of nested dataclasses as TOML (sections mirror the dataclasses)."""
    lines: list[str] = []

    def emit(obj: Any, section: str) -> None:
        scalars = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
        tables = [(k, v) for k, v in scalars if dataclasses.is_dataclass(v)]
        if section:
            lines.append(f"[{section}]")
        for key, value in scalars:
            if not dataclasses.is_dataclass(value) and value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
        for key, value in tables:
            emit(value, f"{section}.{key}" if section else key)

    emit(cfg, "")
    return "\n".join(lines).lstrip("\n")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # a basic string; the control characters TOML forbids in one as \uXXXX
        text = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return '"' + re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", lambda m: f"\\u{ord(m[0]):04x}", text) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
