"""`python -m train.export RUN_DIR OUT_DIR [--family auto|gpt2|llama|...] [--dtype fp32|bf16|fp16] [--step N]`

Writes a training run's model as a Hugging Face directory (config.json, model.safetensors,
generation_config.json and the tokenizer files) that loads with no extra arguments:

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(OUT_DIR)
    tokenizer = AutoTokenizer.from_pretrained(OUT_DIR)

--family auto (the default) picks the HF family that can represent every rung of the run's
model; when several can (a Llama-style model is also a valid Mistral), the first of the list
below. When none can, the error names, per family, the settings that block it.
"""

import argparse
import sys
from pathlib import Path

import torch

from model.hf import FAMILIES, config_to_hf, to_hf

from .cli import run_cli
from .errors import ConfigError, make_dir
from .hf_tokenizer import save_hf_tokenizer
from .run import load_run
from .tokenizer import for_run

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def choose_family(model_cfg, family: str = "auto") -> str:
    """`family` if it can represent `model_cfg`; for "auto" the first that can (FAMILIES order)."""
    if family != "auto":
        if family not in FAMILIES:
            raise ConfigError(f"--family must be auto or one of {', '.join(FAMILIES)}; got {family!r}")
        try:
            config_to_hf(model_cfg, family)
        except ValueError as e:
            raise ConfigError(f"cannot export as {family}: {e}") from None
        return family
    blocked = {}
    for name in FAMILIES:
        try:
            config_to_hf(model_cfg, name)
            return name
        except ValueError as e:
            blocked[name] = str(e).removeprefix(f"HF {name} ").removeprefix("cannot represent ")
    why = "; ".join(f"{name}: {reason}" for name, reason in blocked.items())
    raise ConfigError(f"no HF family can represent this model ({why})")


def export(run_dir: str | Path, out_dir: str | Path, family: str = "auto", dtype: str = "fp32",
           step: int | None = None, tokenizer_path: str = "") -> str:
    """Write the run's model (newest checkpoint, or `step`) as an HF directory; return the family."""
    run = load_run(run_dir, step)
    tok = for_run(run.run_dir, tokenizer_path)
    family = choose_family(run.model.config, family)
    special = dict(bos_token_id=tok.eot, eos_token_id=tok.eot)
    hf_model = to_hf(run.model.to(DTYPES[dtype]), family, **special)
    hf_model.generation_config.update(**special, pad_token_id=tok.eot)
    out = make_dir(Path(out_dir), f"OUT_DIR {out_dir}")
    hf_model.save_pretrained(str(out))
    save_hf_tokenizer(tok, out)
    return family


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = _usage_error  # one line, exit 2
    p.add_argument("run_dir", help="a training run's directory (train.out_dir)")
    p.add_argument("out_dir", help="where to write the HF model directory")
    p.add_argument("--family", default="auto", help=f"auto, or one of: {', '.join(FAMILIES)}")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="dtype of the saved weights")
    p.add_argument("--step", type=int, default=None, help="export this checkpoint (default: the newest)")
    p.add_argument("--tokenizer_path", default="", help="gpt2 runs: the ranks file, if the run's is elsewhere now")
    return p.parse_args(argv)


def _usage_error(message: str):
    raise ConfigError(f"{message} (see python -m train.export --help)")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty directory; choose a new OUT_DIR")
    family = export(args.run_dir, out, args.family, args.dtype, args.step, args.tokenizer_path)
    print(f"wrote {out} (HF {family}, {args.dtype}); load it with "
          f"AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
