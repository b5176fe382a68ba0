"""Benchmark generation: `python scripts/bench_decode.py CONFIG_OR_RUN_DIR [...] [options] [--section.key=value ...]`

For each config (random weights; model.block_size is raised to fit the context, up to 2**20 positions)
or training run (its newest checkpoint, or --step N; the context is capped by its block_size), prints
one column of:
  prefill tok/s       one forward over `--context` prompt tokens, batch 1
  decode tok/s        greedy new tokens per second after that prompt, batch 1 and 8, through the
                      cache and without it (the whole prefix recomputed per token), and their ratio
  KV bytes/token      what one more token of context costs in the cache, all layers, and its ratio
                      to plain multi-head attention at the same width (2 * n_layer * n_embd values)
  peak memory         CUDA: torch.cuda.max_memory_allocated; CPU: the cache's bytes at the full
                      context, batch 8 (the process's max RSS, which cannot be reset, is printed too)
Decode rates are differences: (time for 1 + N new tokens - time for 1 new token), so the prompt's
forward is not counted; each time is the best of `--repeat` runs, after one untimed run of each
length (compilation, a new cache size). When the N tokens are lost in timing noise both are timed
again, a few times; a rate that stays lost is printed as "not measured" (raise --new_tokens), never
as nan. The speculative speed-up is measured against plain greedy decoding through the same
full-precision cache, on the same prompt, back to back, and printed with the acceptance it came
from; one above the tokens per target forward (which bound it: a round costs at least one target
forward) is printed as a measurement error.

Options:
  --context N         prompt tokens (default 512)
  --new_tokens N      timed new tokens with the cache (default 32); --nocache_tokens N without (8)
  --kv_dtype D        int8 | int4 (the quantized cache of GPT.generate; default: the compute dtype)
  --compile           pass compile=True to GPT.generate (static cache + CUDA graphs where built)
  --quantize Q        int8 | int4 | w8a8: quantization (model/inference/quantize.py; --group_size N for
                      int4, default 128), applied to the target and the draft
  --draft RUN_DIR     speculative decoding with this draft (--n_draft K, default 4): acceptance
                      rate, tokens per target forward and speed-up over plain cached decoding (the
                      full-precision cache, whatever --kv_dtype and --compile say), batch 1;
                      --draft mtp drafts with the target's own MTP modules (model.mtp_depth >= 1,
                      at most one guess per module and round)
  --hf                also time HF's generate on the same weights, in the family train.export picks
                      (gpt2, llama, qwen3, ...; a model no family holds is refused in one line)
  --step N            the checkpoint of each training run among the targets (default: the newest)
  --device D, --dtype D   as for training: auto, cpu, cuda, cuda:N, mps; auto, fp32, bf16, fp16
                      (auto: cuda/bf16 when available, else cpu/fp32)
  --repeat N          (default 3)
"""

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model import GPT  # noqa: E402
from model.inference.speculative import speculative_generate  # noqa: E402
from train.cli import (add_quantize_options, argument_parser, check_quantize_options, parse_overrides,  # noqa: E402
                       quantized, run_cli)
from train.config import ConfigError, load_config  # noqa: E402
from train.export import choose_family  # noqa: E402
from train.decoding import check_decoding  # noqa: E402
from train.hardware import DTYPES, autocast, on_device, peak_memory_bytes, pick_device, pick_dtype  # noqa: E402
from train.hardware import sync  # noqa: E402
from train.run import load_run  # noqa: E402

# The most positions (prompt + new tokens) a benchmark may ask for: a config's block_size is raised to
# fit them, and the decode without a cache runs batch-8 forwards over all of them (logits included),
# so an absurd --context would be built first and killed for memory later with no message. 2**20 is
# 1024 times the largest block_size in configs/.
MAX_POSITIONS = 2**20
RETRIES = 3  # further timings of both lengths while a decode rate is lost in timing noise


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    usage = "%(prog)s CONFIG_OR_RUN_DIR [...] [options] [--section.key=value ...]"
    p = argument_parser("scripts/bench_decode.py", __doc__, usage=usage)
    p.add_argument("targets", nargs="+", metavar="CONFIG_OR_RUN_DIR")
    for name, default in (("--context", 512), ("--new_tokens", 32), ("--nocache_tokens", 8),
                          ("--n_draft", 4), ("--repeat", 3)):
        p.add_argument(name, type=int, default=default)
    p.add_argument("--kv_dtype", choices=["int8", "int4"], default=None)
    p.add_argument("--draft", default=None)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--hf", action="store_true")
    add_quantize_options(p)
    args, overrides = parse_overrides(p, argv)
    check_quantize_options(args)
    if args.hf and args.quantize:
        raise ConfigError("--hf times HF generate on the full-precision weights; run it without --quantize")
    for name in ("context", "new_tokens", "nocache_tokens", "n_draft", "repeat"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1")
    if positions(args) > MAX_POSITIONS:
        new = max(args.new_tokens, args.nocache_tokens)
        raise ConfigError(f"--context {args.context} with {new} new tokens needs {positions(args):,} positions; "
                          f"the benchmark allows at most {MAX_POSITIONS:,} (2**20)")
    if overrides and all(Path(target).is_dir() for target in args.targets):
        raise ConfigError(f"{overrides[0]}: overrides apply to the configs among the targets, and a run has its own")
    pick_device(args.device, "--device")  # a bad name fails here, before any work
    return args, overrides



def positions(args: argparse.Namespace) -> int:
    """The model.block_size a benchmark needs: the prompt, the first token and the timed new tokens."""
    return args.context + 1 + max(args.new_tokens, args.nocache_tokens)


def load_model(path: str, overrides: list[str], need: int, step: int | None = None) -> tuple[GPT, str]:
    """A run dir's newest checkpoint (or `step`), or a config's model with random weights -> (model, kind)."""
    p = Path(path)
    if p.is_dir():
        run = load_run(p, step)
        return run.model, f"run {run.checkpoint.name}"
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file or run directory")
    cfg = load_config(p, overrides)
    if cfg.model.block_size < need:
        cfg = load_config(p, [*overrides, f"--model.block_size={need}"])
    torch.manual_seed(0)
    return GPT(cfg.model), "config, random weights"


def timed(fn, device: torch.device) -> float:
    """Seconds one call of fn takes, the device's queue drained before and after it."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def best_time(fn, device: torch.device, repeat: int) -> float:
    return min(timed(fn, device) for _ in range(repeat))


def decode_rate(generate, idx: torch.Tensor, n: int, device, repeat: int) -> float | None:
    """New tokens per second, prompt excluded: B * n / (t(1 + n new) - t(1 new)), each t the best of
    its runs; None when the n tokens stay within timing noise (module docstring)."""
    for length in (1 + n, 1):  # warm-up: compilation and each length's cache, untimed
        generate(idx, length)
    t1 = tn = math.inf
    for _ in range(1 + RETRIES):
        t1 = min(t1, best_time(lambda: generate(idx, 1), device, repeat))
        tn = min(tn, best_time(lambda: generate(idx, 1 + n), device, repeat))
        if tn > t1:
            return idx.shape[0] * n / (tn - t1)
    return None


def rate_cell(rate: float | None, flag: str = "--new_tokens") -> str:
    return f"{rate:,.1f}" if rate is not None else f"not measured (within timing noise; raise {flag})"


def ratio_cell(a: float | None, b: float | None) -> str:
    return f"x{a / b:.2f}" if a is not None and b is not None else "n/a"


def our_generate(model: GPT, use_cache: bool, kv_dtype, compile: bool):
    """Greedy decoding through GPT.generate."""
    options = dict(use_cache=use_cache, kv_dtype=kv_dtype, compile=compile)
    return lambda idx, n: model.generate(idx, n, temperature=0, **options)


def bench(path: str, args, overrides: list[str], draft: GPT | None) -> dict[str, str]:
    device = pick_device(args.device, "--device")
    dtype = pick_dtype(args.dtype, device)
    model, kind = load_model(path, overrides, positions(args), args.step)
    check_decoding(model, kv_dtype=args.kv_dtype, compile=args.compile, draft=draft, draft_name=args.draft,
                   n_draft=args.n_draft)
    # --hf: the family train.export picks, or a one-line refusal before anything is timed
    family = choose_family(model.config) if args.hf else None
    quantized(on_device(model, device, dtype).eval(), args.quantize, args.group_size, path)
    cfg = model.config
    context = min(args.context, cfg.block_size - 1 - max(args.new_tokens, args.nocache_tokens))
    separate = draft is not None and draft != "mtp"  # a draft model of its own, with its own context
    if separate:
        context = min(context, draft.config.block_size - 1 - args.new_tokens)
    if context < 1:
        limit = f" and the draft's {draft.config.block_size}" if separate else ""
        raise ConfigError(f"{path}: block_size={cfg.block_size}{limit} leaves no room for a prompt")
    gen = torch.Generator().manual_seed(0)
    prompt = lambda B: torch.randint(0, cfg.vocab_size, (B, context), generator=gen).to(device)  # noqa: E731
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row = {"model": f"{Path(path).name} ({kind})",
           "shape": f"{cfg.n_layer}L {cfg.n_embd}d {cfg.n_head}h/{cfg.n_kv_head}kv, {model.num_params() / 1e6:.2f}M",
           "device, dtype": f"{device.type}, {dtype}" + (", compiled" if args.compile else "")
                            + (f", {args.quantize} weights" if args.quantize else ""),
           "context": f"{context}" + (" (capped by block_size)" if context < args.context else "")}
    with torch.no_grad(), autocast(device, dtype):
        idx = prompt(1)
        model(idx)  # warm-up
        t = best_time(lambda: model(idx), device, args.repeat)
        row["prefill tok/s (b=1)"] = f"{context / t:,.0f}"
        cached = our_generate(model, True, args.kv_dtype, args.compile)
        uncached = our_generate(model, False, None, False)
        rates = {}
        for B in (1, 8):
            idx = prompt(B)
            rates[B] = decode_rate(cached, idx, args.new_tokens, device, args.repeat)
            slow = decode_rate(uncached, idx, args.nocache_tokens, device, args.repeat)
            row[f"decode tok/s b={B} cache"] = rate_cell(rates[B])
            row[f"decode tok/s b={B} no cache"] = rate_cell(slow, "--nocache_tokens")
            row[f"cache speed-up b={B}"] = ratio_cell(rates[B], slow)
        cache = model.new_cache(8, context + args.new_tokens, kv_dtype=args.kv_dtype)
        per_token, allocated = cache.bytes_per_token(), cache.nbytes()
        del cache  # held, it would count in the peak memory of the runs below
        mha = 2 * cfg.n_layer * cfg.n_embd * DTYPES[dtype].itemsize
        row["KV bytes/token"] = f"{per_token:,}" + (f" ({args.kv_dtype})" if args.kv_dtype else "")
        row["KV bytes vs MHA"] = f"x{per_token / mha:.3f} (MHA: {mha:,})"
        if draft is not None:
            row.update(speculative_rows(model, draft, prompt(1), args, device, dtype))
        if args.hf:
            row.update(hf_rows(model, family, prompt(1), args, device, dtype, rates[1]))
    if device.type == "cuda":
        row["peak memory"] = f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB (CUDA max allocated)"
    else:
        row["peak memory"] = (f"{allocated / 2**10:,.0f} KiB (cache, b=8); "
                              f"{peak_memory_bytes(device) / 2**20:,.0f} MiB max RSS of the process")
    return row


def speculative_rows(model: GPT, draft, idx, args, device, dtype: str) -> dict[str, str]:
    """Acceptance, tokens per target forward, rate and speed-up (module docstring) of speculative
    decoding, all from the same greedy runs of 1 + --new_tokens tokens; draft: a model or "mtp"."""
    if draft == "mtp":
        draft = model.mtp_draft()
        n_draft = min(args.n_draft, draft.depth)
    else:
        quantized(on_device(draft, device, dtype).eval(), args.quantize, args.group_size, "--draft")
        n_draft = args.n_draft
    stats = {}  # new tokens -> SpeculativeStats (greedy: every run of one length does the same)

    def run(idx, n):
        out, stats[n] = speculative_generate(model, draft, idx, n, n_draft=n_draft, temperature=0)
        return out

    plain = decode_rate(our_generate(model, True, None, False), idx, args.new_tokens, device, args.repeat)
    rate = decode_rate(run, idx, args.new_tokens, device, args.repeat)
    s = stats[1 + args.new_tokens]
    per_forward = (1 + args.new_tokens) / s.rounds
    speed_up = ratio_cell(rate, plain)
    if rate is not None and plain is not None:
        speed_up += f" (at acceptance {s.acceptance_rate:.3f})"
        if rate / plain > per_forward:  # a round costs at least one target forward
            speed_up = (f"measurement error: x{rate / plain:.2f} exceeds the {per_forward:.2f} tokens per "
                        "target forward")
    return {f"speculative (k={n_draft}) acceptance": f"{s.acceptance_rate:.3f}",
            "speculative tokens/target fwd": f"{per_forward:.2f}",
            "speculative decode tok/s b=1": rate_cell(rate),
            "speculative speed-up b=1": speed_up}


def hf_rows(model: GPT, family: str, idx, args, device, dtype: str, our_rate: float | None) -> dict[str, str]:
    from model.hf import to_hf

    try:
        hf = to_hf(model, family)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"--hf: the {family} conversion failed ({e})") from None
    hf = hf.to(device=device, dtype=DTYPES[dtype])

    def run(idx, n):
        out = hf.generate(idx, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          attention_mask=torch.ones_like(idx), pad_token_id=0)
        assert out.shape[1] == idx.shape[1] + n, "HF generate stopped early"
        return out

    rate = decode_rate(run, idx, args.new_tokens, device, args.repeat)
    return {"HF generate tok/s b=1": f"{rate_cell(rate)} ({family})", "ours (cache) vs HF b=1": ratio_cell(our_rate, rate)}


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    draft = args.draft or None  # a run's model, or "mtp": the target drafts for itself
    if draft not in (None, "mtp"):
        draft, _ = load_model(draft, [], 1)
    columns = [bench(path, args, overrides, draft) for path in args.targets]
    names = list(dict.fromkeys(k for c in columns for k in c))
    width = max(map(len, names))
    cell = max(len(v) for c in columns for v in c.values())
    for name in names:
        print(f"{name:<{width}}  " + "  ".join(f"{c.get(name, '-'):<{cell}}" for c in columns).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
