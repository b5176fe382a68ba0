"""`python -m train.export RUN_DIR OUT_DIR [--format hf|gguf] [--family auto|gpt2|llama|...]
[--dtype fp32|bf16|fp16]
[--gguf_type f32|f16|bf16|q8_0|q6_k|q5_k_m|q5_k|q5_1|q5_0|q4_k_m|q4_k|q4_1|q4_0|q3_k_l|q3_k_m|q3_k|q2_k|iq4_nl|iq4_xs]
[--step N]`

--format hf (the default) writes a training run's model as a Hugging Face directory (config.json,
model.safetensors, generation_config.json and the tokenizer files) that loads with no extra arguments:

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(OUT_DIR)
    tokenizer = AutoTokenizer.from_pretrained(OUT_DIR)

A chat run's directory (`[post] method = "sft"`) also holds the chat format: the tokenizer has its
four special tokens and a chat template (train/hf_tokenizer.py), and <|end|> is the eos of the
tokenizer, config.json and generation_config.json, so `generate` stops where an answer ends, as
`python -m train.chat` does; bos stays <|endoftext|>, and pad is the eos:

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    answer = model.generate(**prompt, max_new_tokens=100)  # ends with <|end|>, or at the limit

--family auto (the default) picks the HF family that can represent every rung of the run's
model; when several can (a Llama-style model is also a valid Mistral), the first of the list
below. When none can, the error names, per family, the settings that block it.

--format gguf writes one file, OUT_DIR/model.gguf, for llama.cpp and transformers
(train/gguf_export.py): architectures gpt2, llama, qwen3, qwen3_moe, qwen3_5_text,
qwen3_5_moe_text, gemma2, gemma3_text, and gpt_neox, mixtral, deepseek_v3, deepseek_v32, gpt_oss,
olmo2, olmo3 and qwen3_next (llama.cpp only; llama too when it has biases), the tokenizer inside.
--gguf_type f16 (the default, as llama.cpp's converter) stores matrices in fp16 and norms and biases
in fp32; f32 stores everything in fp32, bf16 the matrices in bf16; q8_0, q5_1, q5_0, q4_1 and q4_0
quantize the matrices whose rows are a multiple of 32 long and name the others (kept in fp16); the
k-quants q6_k, q5_k, q4_k, q3_k and q2_k take rows a multiple of 256 and name the others (kept in
q8_0, q5_1, q5_0 or q4_0, as llama.cpp does), and q5_k_m, q4_k_m, q3_k_l and q3_k_m are
llama-quantize's mixes of them; iq4_nl and
iq4_xs map each weight to one of 16 non-uniform levels (iq4_xs's fallback: iq4_nl). The command
prints how to load the file, e.g.

    AutoModelForCausalLM.from_pretrained(OUT_DIR, gguf_file="model.gguf")

with the config fields transformers' GGUF reader does not take from the file, where the run needs
them. A run no GGUF architecture can hold is refused, naming the closest and the settings that
block it. --dtype is for --format hf only, --gguf_type for --format gguf only.

OUT_DIR must not exist or be empty; nothing is written unless every check passes.
"""

import argparse
import re
import sys
from pathlib import Path

from model.hf import FAMILIES, Unrepresentable, config_to_hf, to_hf

from .cli import argument_parser, run_cli
from .errors import ConfigError
from .files import staged_dir
from .gguf_archs import ARCHS
from .gguf_export import FILE_NAME, FILE_TYPES, write_gguf
from .hardware import DTYPES
from .hf_tokenizer import save_hf_tokenizer
from .post.chat_format import ChatFormat
from .run import load_run
from .tokenizer import for_run

MAX_FIELDS = 6  # a refusal names at most this many of the closest family's blocking settings


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
    blocked, refused = {}, {}  # family -> the settings it cannot hold; family -> another reason
    for name in FAMILIES:
        try:
            config_to_hf(model_cfg, name)
            return name
        except Unrepresentable as e:
            blocked[name] = e.settings
        except ValueError as e:
            refused[name] = str(e).removeprefix(f"HF {name} ").removeprefix("cannot represent ")
    if not blocked:
        raise ConfigError(f"no HF family can represent this model ({'; '.join(f'{n}: {r}' for n, r in refused.items())})")
    closest = min(blocked, key=lambda name: len(blocked[name]))  # the fewest blocking settings
    fields = blocked.pop(closest)
    more = f" and {len(fields) - MAX_FIELDS} more" if len(fields) > MAX_FIELDS else ""
    others = ", ".join(f"{name} {len(f)}" for name, f in sorted(blocked.items(), key=lambda kv: len(kv[1])))
    others += f"; {', '.join(refused)} refuse it for other reasons, which --family NAME prints" if refused else ""
    raise ConfigError(f"no HF family can represent this model; the closest, {closest}, cannot hold "
                      f"{', '.join(fields[:MAX_FIELDS])}{more} (settings the others cannot hold: {others})")


def export(run_dir: str | Path, out_dir: str | Path, family: str = "auto", dtype: str = "fp32",
           step: int | None = None, tokenizer_path: str = "") -> str:
    """Write the run's model (newest checkpoint, or `step`) as an HF directory; return the family."""
    run = load_run(run_dir, step)
    tok = for_run(run.run_dir, tokenizer_path)
    family = choose_family(run.model.config, family)
    chat = run.cfg.post.chat
    eos = ChatFormat(tok).end if chat else tok.eot  # a chat model's turn ends with <|end|>
    special = dict(bos_token_id=tok.eot, eos_token_id=eos)
    hf_model = to_hf(run.model.to(DTYPES[dtype]), family, **special)
    hf_model.generation_config.update(**special, pad_token_id=eos)
    with staged_dir(Path(out_dir), f"OUT_DIR {out_dir}") as staging:  # a failed write leaves no OUT_DIR
        hf_model.save_pretrained(str(staging))
        save_hf_tokenizer(tok, staging, chat)
    return family


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser("python -m train.export", __doc__)
    p.add_argument("run_dir", help="a training run's directory (train.out_dir)")
    p.add_argument("out_dir", help="where to write the HF model directory, or the directory for model.gguf")
    p.add_argument("--format", default="hf", choices=["hf", "gguf"], help="an HF directory, or one GGUF file")
    p.add_argument("--family", default="auto", help=f"auto, or one of: {', '.join(FAMILIES)} "
                                                    f"(gguf: {', '.join(ARCHS)})")
    p.add_argument("--dtype", default=None, choices=list(DTYPES), help="hf: dtype of the saved weights (default fp32)")
    p.add_argument("--gguf_type", default=None, choices=list(FILE_TYPES),
                   help="gguf: tensor type of the matrices (default f16)")
    p.add_argument("--step", type=int, default=None, help="export this checkpoint (default: the newest)")
    p.add_argument("--tokenizer_path", default="", help="gpt2 runs: the ranks file, if the run's is elsewhere now")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    flag, value = {"hf": ("--gguf_type", args.gguf_type), "gguf": ("--dtype", args.dtype)}[args.format]
    if value is not None:
        raise ConfigError(f"{flag} does not apply to --format {args.format}")
    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty directory; choose a new OUT_DIR")
    if args.format == "gguf":
        return _main_gguf(args, out)
    dtype = args.dtype or "fp32"
    family = export(args.run_dir, out, args.family, dtype, args.step, args.tokenizer_path)
    print(f"wrote {out} (HF {family}, {dtype}); load it with "
          f"AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


def _main_gguf(args: argparse.Namespace, out: Path) -> int:
    if out.suffix == ".gguf":
        raise ConfigError(f"OUT_DIR {out} is the directory to hold {FILE_NAME}; give a directory name")
    run = load_run(args.run_dir, args.step)
    tok = for_run(run.run_dir, args.tokenizer_path)
    done = write_gguf(run.model, tok, out, args.family, args.gguf_type or "f16", run.cfg.post.chat)
    kept = ""
    for kind in sorted(set(done.fallback.values()), key=lambda t: (t == "f16", t)):
        names = sorted({re.sub(r"^blk\.\d+\.", "blk.*.", n) for n, t in done.fallback.items() if t == kind})
        kept += f"; kept in {kind}, rows not a multiple of {32 if kind == 'f16' else 256}: {', '.join(names)}"
    print(f"wrote {done.path} (GGUF {done.family}, {done.gguf_type}{kept}); ", end="")
    if done.load_kwargs is None:
        print(f"run it with llama.cpp ({done.unreadable})")
        return 0
    load = "".join(f", {k}={v!r}" for k, v in done.load_kwargs.items())
    print(f"load it with AutoModelForCausalLM.from_pretrained({str(out)!r}, gguf_file={done.path.name!r}{load})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
