"""Shared command-line plumbing: user mistakes become one line on stderr and a non-zero exit."""

import argparse
import math
import sys
from collections.abc import Callable

import torch

from model.inference.quantize import GROUP_SIZE, GROUP_SIZES, KINDS, quantize

from .errors import ConfigError, DistributedError, at_least

USAGE_ERROR = 2  # bad command line or config
RUN_ERROR = 1  # the run could not proceed (bad data, non-finite loss, I/O, out of memory)
# A run stopped by SIGTERM / SIGINT after saving a checkpoint exits with 128 + the signal number
# (143 / 130), like a shell; see train/guard.py.


def asked_for_help(argv: list[str], doc: str, usage: str) -> bool:
    """No arguments: the usage, as a one-line error. `-h`/`--help` first: the module's docstring and
    the usage are printed, and True tells the command to stop there (exit 0)."""
    if not argv:
        raise ConfigError(usage)
    if argv[0] in ("-h", "--help"):
        print(doc.strip() + "\n\n" + usage)
        return True
    return False


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run `main(argv)`; print expected failures as `error: ...` (a traceback only with --debug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        try:
            return main(argv) or 0
        except RuntimeError as e:  # the CPU allocator's failure is a RuntimeError, not a MemoryError
            if "can't allocate memory" not in str(e):
                raise
            raise torch.OutOfMemoryError(str(e)) from e
    except (ValueError, FloatingPointError, OSError, MemoryError, torch.OutOfMemoryError,
            KeyboardInterrupt, DistributedError) as e:
        if debug:
            raise
        # torch's (outside the trainer, which adds a hint), and Python's, which says nothing itself
        if isinstance(e, torch.OutOfMemoryError) or (type(e) is MemoryError and not str(e)):
            e = MemoryError(f"out of memory ({str(e).splitlines()[0] if str(e) else 'no details'})")
        code = USAGE_ERROR if isinstance(e, ConfigError) else 130 if isinstance(e, KeyboardInterrupt) else RUN_ERROR
        print(f"error: {(str(e) or type(e).__name__).splitlines()[0]}", file=sys.stderr)
        return code


def argument_parser(prog: str, doc: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """An argparse parser whose usage errors are one line, exit 2 (a ConfigError naming `--help`),
    described by the body of the docstring `doc` (after its first paragraph) when given."""
    if doc is not None:
        kwargs |= {"description": doc.split("\n\n", 1)[1], "formatter_class": argparse.RawDescriptionHelpFormatter}
    p = argparse.ArgumentParser(prog=prog, **kwargs)

    def usage_error(message: str):
        raise ConfigError(f"{message} (see {prog} --help)")

    p.error = usage_error
    return p


def parse_overrides(p: argparse.ArgumentParser, argv: list[str]
                    ) -> tuple[argparse.Namespace, list[str]]:
    """`argv` parsed by `p`, the arguments it does not know returned as config overrides; anything
    else left over (not `--section.key=value`) is a usage error."""
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if not (o.startswith("--") and "." in o.split("=")[0])]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    return args, overrides


def split_args(argv: list[str], opts: dict) -> tuple[list[str], list[str]]:
    """A script's command line -> (positional arguments, `--section.key=value` overrides); the flags
    named in `opts` (as `--flag V` or `--flag=V`) are written into `opts` in place."""
    positional, overrides = [], []
    it = iter(argv)
    for arg in it:
        key, _, value = arg.partition("=")
        if key in opts:
            opts[key] = value or next(it, None)
            if not opts[key]:
                raise ConfigError(f"{key} needs a value ({key} VALUE or {key}=VALUE)")
        elif arg.startswith("--"):
            overrides.append(arg)
        else:
            positional.append(arg)
    return positional, overrides


def int_option(opts: dict, name: str, minimum: int) -> int:
    """The integer flag `name` of `opts` (as `split_args` filled it), at least `minimum`, or a
    ConfigError naming it."""
    value = str(opts[name])
    try:
        if int(value) >= minimum:
            return int(value)
    except ValueError:
        pass
    raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_temperature(t: float, name: str = "--temperature") -> float:
    if not (math.isfinite(t) and t >= 0):
        raise ConfigError(f"{name} must be a number >= 0 (0 = greedy); got {t}")
    return t


def check_sampling(args) -> None:
    """The sampling flags of sample and chat, checked the same way: --max_new_tokens, --temperature,
    --top_k, --seed and, where the command has it, --top_p."""
    at_least(args.max_new_tokens, "--max_new_tokens", 1)
    check_temperature(args.temperature)
    at_least(args.top_k, "--top_k", 0, " (0 = the whole vocabulary)")
    if not 0.0 < getattr(args, "top_p", 1.0) <= 1.0:
        raise ConfigError(f"--top_p must be in (0, 1]; got {args.top_p}")
    if not 0 <= args.seed < 2**63:  # torch.Generator's range
        raise ConfigError(f"--seed must be in [0, 2**63); got {args.seed}")
    for flag in ("prompt", "once"):
        if not is_utf8(getattr(args, flag, None) or ""):
            raise ConfigError(f"--{flag} is not valid UTF-8 text")


def is_utf8(text: str) -> bool:
    """False for text holding bytes that were not UTF-8, which argv and input() hand over as lone
    surrogates (a tokenizer cannot encode them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def add_quantize_options(p) -> None:
    """`--quantize int8|int4|w8a8` and `--group_size N` on an argparse parser (sample, eval, bench_decode);
    `check_quantize_options` then checks the parsed pair."""
    p.add_argument("--quantize", default=None, choices=list(KINDS),
                   help="quantization for decoding: int8 or int4 weights, or int8 weights and inputs "
                        "(model/inference/quantize.py; default: none)")
    p.add_argument("--group_size", type=int, default=None,
                   help=f"int4: inputs sharing a scale and zero, one of {', '.join(map(str, GROUP_SIZES))} "
                        f"(default {GROUP_SIZE})")


def check_quantize_options(args) -> None:
    """A --group_size that would do nothing (int8 has one scale per output; no --quantize, no groups)
    is refused rather than ignored."""
    if args.group_size is not None and args.quantize != "int4":
        raise ConfigError(f"--group_size sets the groups of --quantize int4; it does nothing with "
                          f"{'--quantize ' + args.quantize if args.quantize else 'no --quantize'}")


def quantized(model, kind: str | None, group_size: int | None, what: str = "the model"):
    """`model` quantized in place as the flags ask (unchanged without --quantize; int4 in groups of
    `GROUP_SIZE` unless `group_size`); a request the model cannot take is a ConfigError naming the
    flag (exit 2)."""
    if kind is None:
        return model
    try:
        return quantize(model, kind, GROUP_SIZE if group_size is None else group_size)
    except ValueError as e:
        flags = f"--quantize {kind}" + ("" if group_size is None else f" --group_size {group_size}")
        raise ConfigError(f"{flags} on {what}: {e}") from None
