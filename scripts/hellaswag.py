"""`python scripts/hellaswag.py HELLASWAG_VAL.jsonl MODEL [--limit N] [--device D] [--dtype fp32|bf16|fp16|auto]
[--step N] [--tokenizer_path PATH] [--json OUT]`

GPT-2 124M's HellaSwag anchor, scored by our own multiple-choice code (train/evals/hellaswag.py)
in the two styles its figures are quoted in, on the raw validation file (10,042 items):
  completion  llm.c's dev/data/hellaswag.py: ctx, then " " + ending; acc = lowest summed loss,
              acc_norm = lowest mean loss per ending token. HF gpt2, fp32: acc 0.2859,
              acc_norm 0.2955; expect acc_norm 0.2955 +- 0.003 (llm.c ran in TF32 on a GPU, and
              the summation order differs).
  harness     lm-evaluation-harness 0.4's hellaswag task: activity_label + ": " + ctx_a + " " +
              ctx_b.capitalize(), "[title]" markup cleaned; acc_norm = lowest loss per character.
              HF gpt2: acc 0.2892, acc_norm 0.3114 (acc_bytes, per UTF-8 byte, is printed too).

MODEL is a training run's directory (its newest checkpoint, or --step N; gpt2 runs whose ranks
file moved take --tokenizer_path) or an HF model directory (config.json), converted with our
production converter (GPT.from_pretrained) and read with the directory's own tokenizer, or with
the gpt2 ranks file --tokenizer_path names. --limit N scores the file's first N items;
--dtype defaults to fp32, the precision of the figures above; --json OUT also writes every
item's log-likelihoods and token counts to OUT, a new file.

Neither the file nor the weights ship with this repository, and the tests never download them
(they run this script on a few items written by hand and a tiny random GPT-2), so the figures
above are the published ones, not checked here. To check them:
    wget https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl
    huggingface-cli download gpt2 --local-dir gpt2
    python scripts/hellaswag.py hellaswag_val.jsonl gpt2 --device cuda
Both styles forward every ending once each: about 80k sequences of ~100 tokens for the full
file, minutes on a GPU, an hour or more on a CPU.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import GPT  # noqa: E402
from train.cli import argument_parser, run_cli  # noqa: E402
from train.errors import ConfigError, one_line  # noqa: E402
from train.evals.hellaswag import STYLES, HellaSwagTask, headline, parse_row  # noqa: E402
from train.evals.jsonl import read_items  # noqa: E402
from train.evals.suite import Settings, run_task  # noqa: E402
from train.hardware import on_device, pick_device, pick_dtype  # noqa: E402
from train.run import load_run  # noqa: E402
from train.tokenizer import GPT2Tokenizer, for_run  # noqa: E402

PUBLISHED = {"completion": "GPT-2 124M in llm.c: acc 0.2859, acc_norm 0.2955",
             "harness": "GPT-2 124M in lm-eval: acc 0.2892, acc_norm 0.3114"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser("python scripts/hellaswag.py", __doc__)
    p.add_argument("file", help="HellaSwag's raw validation JSONL (hellaswag_val.jsonl)")
    p.add_argument("model", help="a training run's directory, or an HF model directory")
    p.add_argument("--limit", type=int, default=None, help="score the file's first N items (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast dtype (default fp32; auto: bf16 or fp16 on a GPU)")
    p.add_argument("--step", type=int, default=None, help="a run's checkpoint at this step (default: the newest)")
    p.add_argument("--tokenizer_path", default="", help="a gpt2 ranks file (gpt2.tiktoken)")
    p.add_argument("--json", default=None, help="also write the results to this new file")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be an integer >= 1; got {args.limit}")
    if args.json is not None:
        out = Path(args.json)
        if out.exists() or out.is_symlink():
            raise ConfigError(f"--json {out} already exists; name a new file")
        if not out.parent.is_dir():
            raise ConfigError(f"--json {out}: no such directory {str(out.parent)!r}")
    return args


class HFTokenizer:
    """An HF model directory's own tokenizer, with what the scorer calls: `encode` (no special
    tokens added) and `eot`."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot load its tokenizer ({one_line(e)}); "
                              "or pass --tokenizer_path a gpt2 ranks file") from None
        self.eot = self._tok.eos_token_id
        self.n_vocab = len(self._tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)


def load_model(args: argparse.Namespace) -> tuple[GPT, object, str]:
    """(model on the CPU in fp32, tokenizer, a description) from a run or an HF directory."""
    path = Path(args.model).expanduser()
    if (path / "config.toml").is_file():
        run = load_run(path, args.step)
        return run.model, for_run(path, args.tokenizer_path), f"{run.checkpoint.name} of {path}"
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: neither a training run (config.toml) nor an HF model directory (config.json)")
    if args.step is not None:
        raise ConfigError(f"--step picks a checkpoint of a training run; {path} is an HF model directory")
    try:
        model = GPT.from_pretrained(str(path)).float()
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    tok = GPT2Tokenizer(args.tokenizer_path, "--tokenizer_path") if args.tokenizer_path else HFTokenizer(path)
    if tok.n_vocab > model.config.vocab_size:
        raise ConfigError(f"{path}: the tokenizer has {tok.n_vocab} tokens, the model {model.config.vocab_size}")
    return model, tok, f"HF model {path}"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    items = read_items(Path(args.file), parse_row)[:args.limit]  # the file first: the cheaper mistake to find
    device = pick_device(args.device, "--device")
    dtype = pick_dtype(args.dtype, device)
    model, tok, what = load_model(args)
    on_device(model, device, dtype)
    settings = Settings(limit=len(items))
    results = {style: run_task(HellaSwagTask(style, items, source=args.file), model, tok, settings, device, dtype)
               for style in STYLES}
    print(f"{args.file}: {len(items)} items; {what} ({device.type}, {dtype})")
    for style, r in results.items():
        scores = ", ".join(f"{k} {v:.4f}" for k, v in headline(style, r).items())
        notes = [f"{r['seconds']:.1f} s"]
        if r["truncated"]:
            notes.append(f"{r['truncated']} cut from the left to fit the context")
        if r["skipped"]:
            notes.append(f"{r['skipped']} skipped (an ending longer than the context)")
        print(f"{style:<10} n {r['n']}: {scores} ({', '.join(notes)}; {PUBLISHED[style]})")
    if args.json is not None:
        record = {"file": args.file, "model": what, "device": str(device), "dtype": dtype, "n_items": len(items),
                  **{style: {"n": r["n"], **headline(style, r), "truncated": r["truncated"], "skipped": r["skipped"],
                             "seconds": r["seconds"], "items": r["items"]} for style, r in results.items()}}
        with open(args.json, "x", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
