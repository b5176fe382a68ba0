"""`python -m train.sample RUN_DIR [--prompt TEXT] [--max_new_tokens N] [--temperature T] [--top_k K] ...`

Samples from the newest complete checkpoint of a training run (or --step N); the run's
config.toml says how to rebuild the model and tokenizer.json which tokenizer it trained with.

Each sample stops at the end-of-text token (printed as <|endoftext|>) unless --no_stop is given.
Decoding goes through `GPT.generate`: a KV cache in the compute dtype (the run's training dtype
unless --dtype says otherwise), or an int8/int4 cache (--kv_dtype), a static cache compiled with
CUDA graphs (--compile), or speculative decoding with a smaller run of the same tokenizer as the
draft (--draft RUN_DIR, --n_draft K; one sample at a time), or with the model's own multi-token-
prediction modules (--draft mtp, model.mtp_depth >= 1). --quantize int8|int4 stores the weights
(the draft's too) in 8 or 4 bits for decoding, w8a8 also rounds each Linear's input rows to 8 bits
(model/inference/quantize.py; --group_size for int4). A flag the
model's layers cannot serve (--compile or --draft with Canon convolutions, model.attn_conv) is
refused before any work, in one line (exit 2).
The prompt and the new tokens together must fit the model's context (model.block_size), and the
draft's: a larger --max_new_tokens is capped, with a note on stderr saying so. Without --prompt a
sample starts a new document (the prompt is the end-of-text token). One sample is printed as its
tokens are decided; several (--num_samples) are decoded as one batch and printed at the end.
"""

import argparse
import sys

import torch

from model.inference.sampling import TEMPERATURE, TOP_K

from .cli import (add_quantize_options, argument_parser, at_least, check_quantize_options, check_sampling, quantized,
                  run_cli)
from .decoding import check_decoding
from .errors import ConfigError
from .hardware import autocast, on_device, pick_device, pick_dtype
from .run import load_run
from .tokenizer import for_run


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser("python -m train.sample", __doc__)
    p.add_argument("run_dir", help="a training run's directory (train.out_dir)")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    p.add_argument("--max_new_tokens", type=int, default=256, help="tokens to generate per sample (default 256)")
    p.add_argument("--temperature", type=float, default=TEMPERATURE,
                   help=f"softmax temperature; 0 = greedy (default {TEMPERATURE}, as GPT.generate)")
    p.add_argument("--top_k", type=int, default=TOP_K,
                   help=f"sample among the k most likely tokens; 0 = all (default {TOP_K}, as GPT.generate)")
    p.add_argument("--top_p", type=float, default=1.0,
                   help="sample among the most likely tokens holding this probability; 1 = all (default 1)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default 1337)")
    p.add_argument("--num_samples", type=int, default=1, help="independent samples (default 1)")
    p.add_argument("--no_stop", action="store_true", help="keep generating past end-of-text")
    p.add_argument("--step", type=int, default=None, help="sample this checkpoint (default: the newest)")
    p.add_argument("--tokenizer_path", default="",
                   help="gpt2 runs: the ranks file, if the one the run recorded has moved")
    p.add_argument("--kv_dtype", default=None, choices=["int8", "int4"],
                   help="quantize the KV cache (KIVI; default: the compute dtype)")
    add_quantize_options(p)
    p.add_argument("--compile", action="store_true",
                   help="decode through a static cache with torch.compile (CUDA graphs on a GPU)")
    p.add_argument("--draft", default="", help="a smaller run with the same tokenizer: speculative decoding; "
                   "mtp: the model's own multi-token-prediction modules (model.mtp_depth)")
    p.add_argument("--n_draft", type=int, default=None, help="tokens the draft proposes per step (default 4)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="", choices=["", "auto", "fp32", "bf16", "fp16"],
                   help="compute dtype (default: the run's train.dtype)")
    args = p.parse_args(argv)
    check_sampling(args)
    check_quantize_options(args)
    at_least(args.num_samples, "--num_samples", 1)
    if args.n_draft is not None and not args.draft:
        raise ConfigError("--n_draft sets how many tokens --draft RUN_DIR|mtp proposes; give a draft run too")
    args.n_draft = 4 if args.n_draft is None else args.n_draft
    at_least(args.n_draft, "--n_draft", 1)
    if args.draft and (args.kv_dtype or args.compile):
        raise ConfigError("--draft decodes through full-precision caches: drop --kv_dtype and --compile")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    device = pick_device(args.device, "--device")
    run = load_run(args.run_dir, args.step)
    tok = for_run(run.run_dir, args.tokenizer_path)
    draft_run = args.draft not in ("", "mtp")  # else no draft, or the model's own MTP modules
    draft = _draft(args.draft, run, tok) if draft_run else args.draft or None
    check_decoding(run.model, kv_dtype=args.kv_dtype, compile=args.compile, draft=draft, draft_name=args.draft,
                   n_draft=args.n_draft)
    prompt = tok.encode(args.prompt) if args.prompt else [tok.eot]
    block_size, whose = run.model.config.block_size, ""
    if draft_run and draft.config.block_size < block_size:
        block_size, whose = draft.config.block_size, f"the draft's (--draft {args.draft}) "
    max_new = _capped(args.max_new_tokens, len(prompt), block_size, whose)
    dtype = pick_dtype(args.dtype or run.cfg.train.dtype, device)
    model = quantized(on_device(run.model, device, dtype), args.quantize, args.group_size, run.run_dir)
    if draft_run:
        quantized(on_device(draft, device, dtype), args.quantize, args.group_size, f"--draft {args.draft}")
    print(f"# {run.checkpoint.name} of {run.run_dir}, up to {max_new} new tokens, "
          f"temperature {args.temperature}, top_k {args.top_k}", flush=True)
    stop = None if args.no_stop else tok.eot
    # a sample's text starts with the prompt's, or with nothing when it starts a new document
    printer = Printer(tok, prompt if args.prompt else [], stop) if args.num_samples == 1 else None
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, kv_dtype=args.kv_dtype,
                   compile=args.compile, draft=draft, n_draft=args.n_draft, stream=printer, stop_token=stop,
                   generator=torch.Generator(device).manual_seed(args.seed))
    with autocast(device, dtype):
        rows = sample(model, torch.tensor([prompt] * args.num_samples, device=device), max_new, options, stop)
    for row in rows:
        text = tok.decode(row if args.prompt else row[len(prompt):])
        print(text[len(printer.shown):] if printer else text)
        print("-" * 40)
    return 0


class Printer:
    """Prints one sample's text as its tokens come (GPT.generate's `stream`), up to `stop`: each
    time, what the text decoded so far adds, held back while it ends inside a character."""

    def __init__(self, tok, ids: list[int], stop: int | None):
        self.tok, self.ids, self.stop, self.shown, self.done = tok, list(ids), stop, "", False
        self(torch.tensor([[]], dtype=torch.long))

    def __call__(self, new: torch.Tensor) -> None:
        for t in new[0].tolist():
            if not self.done:
                self.ids.append(t)
                self.done = t == self.stop
        text = self.tok.decode(self.ids)
        if not text.endswith("\ufffd"):
            print(text[len(self.shown):], end="", flush=True)
            self.shown = text


def _capped(requested: int, prompt: int, block_size: int, whose: str) -> int:
    """--max_new_tokens within `whose` model.block_size (the target's, or the draft's when smaller):
    a ConfigError when the prompt fills it, a note on stderr when it caps the request."""
    room = block_size - prompt
    if room < 1:
        raise ConfigError(f"the prompt ({prompt} tokens) fills {whose}model.block_size={block_size}")
    if room < requested:
        print(f"note: --max_new_tokens {requested} capped to {room}: the prompt ({prompt} tokens) and the new "
              f"tokens must fit {whose}model.block_size={block_size}", file=sys.stderr)
    return min(requested, room)


def sample(model, idx: torch.Tensor, max_new_tokens: int, options: dict, stop: int | None) -> list[list[int]]:
    """Each row of `idx` extended by up to `max_new_tokens` tokens (`GPT.generate` with `options`);
    with `stop`, a row ends at its first new `stop` token, which is kept (it decodes as
    <|endoftext|>, so a sample visibly ends). Speculative decoding takes one row at a time."""
    batches = idx.split(1) if options.get("draft") is not None else [idx]
    rows = [row for b in batches for row in model.generate(b, max_new_tokens, **options).tolist()]
    for row in rows:
        if stop in row[idx.shape[1]:]:
            del row[row.index(stop, idx.shape[1]) + 1:]
    return rows


def _draft(run_dir: str, target, tok):
    """The draft run's model, refused unless it was trained with the target's tokenizer."""
    draft = load_run(run_dir)
    theirs = for_run(draft.run_dir)
    if (theirs.name, theirs.n_vocab) != (tok.name, tok.n_vocab):
        raise ConfigError(f"--draft {run_dir} uses the {theirs.name} tokenizer ({theirs.n_vocab} ids); "
                          f"{target.run_dir} uses {tok.name} ({tok.n_vocab}): they must share one")
    target_ids, draft_ids = target.model.config.vocab_size, draft.model.config.vocab_size
    if draft_ids != target_ids:  # e.g. a chat run's special tokens, which the other run lacks
        raise ConfigError(f"--draft {run_dir} has {draft_ids} token ids and {target.run_dir} {target_ids}: "
                          "they must share one vocabulary")
    return draft.model


if __name__ == "__main__":
    sys.exit(run_cli(main))
