"""Fine-tuning: a run that starts from the weights of another model (`train.init_from`).

The source is a training run's directory (its checkpoint `train.init_step`, by default the newest
complete one) or a Hugging Face model directory (config.json and weights, read by the converter in
model/hf/). The new run is an ordinary run with its own out_dir, optimizer, step 0, learning-rate
schedule and seed; only the weights come from the source, which is only ever read.

* When the config is loaded (train/config.py), `find_source` checks the source and returns its
  [model]: the checkpoint's config, or the HF config converted to ours. That is the new run's
  [model]; a key the run's config sets must agree with it, except those in `FREE_KEYS`.
  `check_tokenizer` refuses a tokenizer other than the source's. A run that has a checkpoint of
  its own takes all that from itself (`model_source`).
* When the trainer builds its model, `initial_weights` loads the weights and describes where they
  came from (path, step, SHA-256 of the weights files). The run records that in its first
  metrics.jsonl line (step 0: the source's validation loss on this run's data). A run with a
  checkpoint of its own resumes from it and never reads the source again, except to rebuild a
  frozen reference (post.method dpo, or grpo with a KL term).
"""

import dataclasses
import json
from pathlib import Path

import torch

from model import GPT, ModelConfig
from model.config import MLAConfig, MoEConfig

from . import checkpoint as ckpt
from .errors import ConfigError
from .tokenizer import get_tokenizer, ranks_sha256, recorded, tokenizer_vocab_size

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

NEWEST = -1  # train.init_step: the source run's newest complete checkpoint
# [model] keys a run may set differently from its source: they change how the model trains
# (dropout, the weights of auxiliary losses, the init, MoE capacity and bias updates), not the shapes of its
# weights or what they compute; model/hf drops the same MoE and MLA keys from an HF config.
FREE_KEYS = ("dropout", "mtp_loss_weight", "zero_init_proj", *(f"moe.{k}" for k in MoEConfig.TRAINING_ONLY),
             *(f"mla.{k}" for k in MLAConfig.TRAINING_ONLY))
# vocabulary sizes of an HF model that our tokenizers can feed (train/tokenizer.py)
HF_VOCABS = {tokenizer_vocab_size(name): name for name in ("byte", "gpt2")}


@dataclasses.dataclass
class Source:
    path: Path
    model: dict  # its [model] table, spelled as in a run's config.toml
    checkpoint: Path | None = None  # a run: the checkpoint directory the weights come from
    tokenizer: dict | None = None  # a run: its tokenizer.json (name, ranks_sha256)


def find_source(init_from: str, init_step: int = NEWEST) -> Source:
    """The run or HF model directory `init_from`, checked, or a ConfigError naming the setting."""
    where = f"train.init_from={init_from!r}"
    path = Path(init_from).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{where}: {'not a directory' if path.exists() else 'no such directory'}")
    if (path / "config.json").is_file():
        if init_step != NEWEST:
            raise ConfigError(f"train.init_step={init_step} picks a checkpoint of a training run; "
                              f"{where} is a Hugging Face model directory")
        return _hf_source(path, where)
    if (path / "config.toml").is_file() and ckpt.checkpoint_dir(path).is_dir():
        return _run_source(path, init_step, where)
    raise ConfigError(f"{where} is neither a training run (config.toml and checkpoints/) nor a "
                      "Hugging Face model directory (config.json)")


def model_source(init_from: str, init_step: int, out_dir: str) -> Source:
    """Where a run's [model] comes from: `init_from`, or, once the run has a checkpoint of its own,
    the run itself, which resumes from that (the source may have moved on, or be gone, since)."""
    return find_source(out_dir) if ckpt.list_checkpoints(out_dir) else find_source(init_from, init_step)


def _run_source(path: Path, init_step: int, where: str) -> Source:
    found = {ckpt.step_of(p): p for p in ckpt.list_checkpoints(path)}
    if not found:
        raise ConfigError(f"{where} has no complete checkpoint yet")
    if init_step != NEWEST and init_step not in found:
        raise ConfigError(f"{where} has no complete checkpoint at train.init_step={init_step}; "
                          f"it has: {', '.join(map(str, found))}")
    checkpoint = found[max(found) if init_step == NEWEST else init_step]
    try:
        config = tomllib.loads((checkpoint / "config.toml").read_text())
    except (OSError, ValueError) as e:  # tomllib's decode errors are ValueErrors
        raise ConfigError(f"{where}: unreadable {checkpoint.name}/config.toml ({str(e).splitlines()[0]})") from None
    return Source(path, config.get("model", {}), checkpoint, recorded(path))


def _hf_source(path: Path, where: str) -> Source:
    from transformers import AutoConfig

    from model.hf import config_from_hf

    try:
        model = config_from_hf(AutoConfig.from_pretrained(str(path)))
    except (OSError, ValueError, KeyError) as e:  # unreadable, an unknown model_type, a setting we lack
        raise ConfigError(f"{where}: {(str(e) or type(e).__name__).splitlines()[0]}") from None
    if not _weight_files(path):
        raise ConfigError(f"{where} has a config.json but no weights (*.safetensors or pytorch_model*.bin)")
    return Source(path, dataclasses.asdict(model))


def check_tokenizer(source: Source, name: str, tokenizer_path: str = "") -> None:
    """Refuse a data.tokenizer other than the source's: every token id the model learned would mean
    another token. An HF directory is checked by its vocabulary size: 50257 is GPT-2's, 257 the byte
    vocabulary of a run exported by train/export.py."""
    where = f"train.init_from={str(source.path)!r}"
    if source.tokenizer is None:
        n_vocab = source.model["vocab_size"]
        if HF_VOCABS.get(n_vocab) != name:
            fix = (f'set data.tokenizer = "{HF_VOCABS[n_vocab]}"' if n_vocab in HF_VOCABS else
                   "only vocabularies of 50257 (GPT-2's, data.tokenizer = \"gpt2\") or 257 "
                   "(data.tokenizer = \"byte\") can be fed here")
            raise ConfigError(f"{where} has a vocabulary of {n_vocab} tokens, data.tokenizer={name!r} "
                              f"one of {tokenizer_vocab_size(name)}; {fix}")
        return
    theirs = source.tokenizer.get("tokenizer")
    if theirs != name:
        raise ConfigError(f"{where} was trained with data.tokenizer={theirs!r}, this run has "
                          f"{name!r}; set data.tokenizer = \"{theirs}\"")
    want = source.tokenizer.get("ranks_sha256")
    if name == "gpt2" and want and ranks_sha256(get_tokenizer(name, tokenizer_path)) != want:
        raise ConfigError(f"data.tokenizer_path: its ranks differ from those {where} was trained with; "
                          "use the same ranks file")


def initial_weights(init_from: str, init_step: int, model_cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """The source's weights as a state dict of `GPT(model_cfg)` (on the CPU), and where they came
    from: {"path", "step" (None for an HF directory), "sha256": {weights file: SHA-256}}."""
    source = find_source(init_from, init_step)
    # Building a model draws initial weights; the trainer's RNG stream stays as a fresh run's.
    with torch.random.fork_rng(devices=[]):
        if source.checkpoint is None:
            from model.hf import load_pretrained

            model, checkpoint = load_pretrained(str(source.path)), None
            files = {f.name: ckpt.sha256_of(f) for f in _weight_files(source.path)}
        else:
            model = GPT(model_cfg)
            if init_step == NEWEST:  # a damaged newest checkpoint falls back to the one before, as on resume
                checkpoint, _ = ckpt.load_newest(source.path, lambda p: ckpt.load_checkpoint(p, model))
            else:
                checkpoint = source.checkpoint
                ckpt.load_checkpoint(checkpoint, model)
            manifest = json.loads((checkpoint / ckpt.MARKER).read_text())  # verified by the load
            files = {"model.safetensors": manifest["files"]["model.safetensors"]["sha256"]}
    step = ckpt.step_of(checkpoint) if checkpoint else None
    return model.state_dict(), {"path": str(source.path.resolve()), "step": step, "sha256": files}


def _weight_files(path: Path) -> list[Path]:
    return sorted([*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")])
