"""`python -m train.sample RUN_DIR --prompt "..." --max_new_tokens N --temperature T --top_k K --seed S`

Samples from the latest checkpoint of a training run (its config.toml says how to rebuild the model
and the tokenizer).
"""

import argparse
import sys
from pathlib import Path

import torch

from model import GPT
from model.generate import generate

from .checkpoint import load_checkpoint, load_newest, verify_checkpoint
from .cli import run_cli
from .config import ConfigError, load_config
from .hardware import autocast, pick_device, pick_dtype
from .tokenizer import get_tokenizer


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.sample", description=__doc__.splitlines()[2])
    p.add_argument("run_dir", help="a training run's out_dir")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_k", type=int, default=200)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1 or args.num_samples < 1:
        raise ConfigError("--max_new_tokens and --num_samples must be >= 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(f"{run_dir} is not a training run (no config.toml); train one with python -m train")
    found = load_newest(run_dir, _load)  # a damaged newest checkpoint falls back to the previous
    if found is None:
        raise ConfigError(f"{run_dir} has no complete checkpoint yet")
    path, (cfg, model) = found
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    model.to(device)
    tok = get_tokenizer(cfg.data.tokenizer, cfg.data.tokenizer_path)
    prompt = tok.encode(args.prompt) if args.prompt else [tok.eot]
    max_new = min(args.max_new_tokens, cfg.model.block_size - len(prompt))
    if max_new < 1:
        raise ConfigError(f"the prompt ({len(prompt)} tokens) fills model.block_size={cfg.model.block_size}")
    idx = torch.tensor([prompt] * args.num_samples, device=device)
    gen = torch.Generator(device).manual_seed(args.seed)
    with autocast(device, dtype):
        out = generate(model, idx, max_new, args.temperature, args.top_k, gen)
    print(f"# {path.name} of {run_dir}, {max_new} new tokens, temperature {args.temperature}, top_k {args.top_k}")
    for row in out.tolist():
        print(tok.decode(row[len(prompt) if not args.prompt else 0:]))
        print("-" * 40)
    return 0


def _load(path: Path) -> tuple:
    """The checkpoint's config (data, never executed) and its model with the saved weights."""
    verify_checkpoint(path)
    cfg = load_config(path / "config.toml")
    model = GPT(cfg.model)
    load_checkpoint(path, model, verify=False)
    return cfg, model


if __name__ == "__main__":
    sys.exit(run_cli(main))
