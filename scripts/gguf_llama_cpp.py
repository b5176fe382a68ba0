"""A run's GGUF export, run by llama.cpp (through llama-cpp-python) beside our model.

    pip install llama-cpp-python    # compiles llama.cpp: about 15 minutes on 2 cores
    python scripts/gguf_llama_cpp.py RUN_DIR [--gguf_type TYPE (train.export's)]
        [--text FILE] [--windows N] [--new N] [--no_repack] [--convert LLAMA_CPP_DIR]

The run is exported as train.export --format gguf writes it (into a temporary folder) and loaded
with an fp32 KV cache (llama.cpp's default is f16). Printed: whether llama.cpp's tokenizer gives our
ids for the text; the largest logit difference over the text's first block_size tokens (the first
--windows windows of block_size), and how often the argmax agrees; both models' loss on their next
tokens (a quantized type's quality: one window is a small sample); whether greedy decoding
gives the same --new tokens after the first half of the window; for a chat run, whether the chat
template in the file, applied by llama-cpp-python, gives train.chat's prompt ids. Exit 1 when ids
differ (tokenizer or chat template).
Text: FILE (default this Python's argparse.py source). --convert LLAMA_CPP_DIR: instead, the run's
HF export (train.export) converted by llama.cpp's own convert_hf_to_gguf.py from that source tree,
for every family it converts (f32, f16, bf16 or q8_0: the types it writes); it recognises GPT-2's
tokenizer, not the byte tokenizer.

What to expect at f32 (docs/LOG.md): the decoders (llama, qwen3, mixtral, Qwen3.5, DeepSeek-V3,
gpt-oss, OLMo 2/3, Qwen3-Next and their MoE forms) within about 2e-5 to 3e-4; gpt2 within about 2e-3 and Gemma
within 1e-2, because ggml's CPU GELU reads a table indexed by the input rounded to fp16. At the
other types llama.cpp also rounds the activations that meet the weights: to f16 or bf16 beside
those weights, to 8 bits beside q8_0, q5 and q4 ones.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.cli import argument_parser, at_least, run_cli  # noqa: E402
from train.errors import ConfigError  # noqa: E402
from train.export import choose_family, export  # noqa: E402
from train.gguf_export import FILE_TYPES, choose_gguf_family, write_gguf  # noqa: E402
from train.post.chat_format import ChatFormat, Message  # noqa: E402
from train.run import load_run  # noqa: E402
from train.tokenizer import for_run  # noqa: E402

CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # the --outtype values of convert_hf_to_gguf.py we take
CHAT = [{"role": "system", "content": "Add."}, {"role": "user", "content": "23+45="},
        {"role": "assistant", "content": "3+5=8, 2+4=6 #### 68"}, {"role": "user", "content": "7+8="}]


def llama_cpp_module():
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError("this check needs llama-cpp-python: pip install llama-cpp-python") from None
    return llama_cpp


def load_llama(path: Path, n_ctx: int, no_repack: bool = False):
    """llama.cpp's model at `path` with an fp32 KV cache; no_repack: as llama.cpp's --no-repack, no
    extra weight layouts (its AMX kernels, which crashed on q8_0 here: docs/LOG.md)."""
    llama_cpp = llama_cpp_module()
    defaults = llama_cpp.llama_cpp.llama_model_default_params  # what Llama starts its parameters from

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params
    llama_cpp.llama_cpp.llama_model_default_params = without_repacking if no_repack else defaults
    try:
        return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False,
                               type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = defaults


def converted(run_dir: str, llama_cpp_dir: Path, out: Path, gguf_type: str) -> Path:
    """The run's HF export converted by llama.cpp's convert_hf_to_gguf.py, with its own gguf-py."""
    export(run_dir, out / "hf")
    command = [sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(out / "hf"),
               "--outtype", gguf_type, "--outfile", str(out / "model.gguf")]
    path = os.pathsep.join([str(llama_cpp_dir / "gguf-py"), *os.environ.get("PYTHONPATH", "").split(os.pathsep)])
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True)
    if done.returncode:
        last = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit {done.returncode}"]
        raise ConfigError(f"llama.cpp's convert_hf_to_gguf.py failed: {last[-1]}")
    return out / "model.gguf"


def llama_greedy(llm, prompt: list[int], n_new: int) -> list[int]:
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n_new):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(out[-1:])
    return out


@torch.no_grad()
def compare(model, tok, llm, text: str, n_new: int, chat: bool = False, windows: int = 1) -> dict[str, object]:
    """Our model and tokenizer against llama.cpp's `llm` on `text` (see the module docstring)."""
    ids = tok.encode(text)
    theirs_ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    T = model.config.block_size
    ours, theirs, targets = [], [], []
    for start in range(0, min(windows, len(ids) // T) * T, T):  # whole windows, one after another
        window = ids[start: start + T]
        llm.reset()
        llm.eval(window)
        theirs.append(torch.from_numpy(np.array(llm.scores[:T]))[:-1])
        ours.append(model(torch.tensor([window]))[0, :-1])
        targets.append(torch.tensor(window[1:]))
    ours, theirs, targets = torch.cat(ours), torch.cat(theirs), torch.cat(targets)
    prompt = ids[: T // 2]
    greedy = model.generate(torch.tensor([prompt]), n_new, temperature=0.0)[0, len(prompt):].tolist()
    found = {"tokens": len(ids), "same_ids": theirs_ids == ids, "window": T, "windows": len(targets) // (T - 1),
             "max_diff": (theirs - ours).abs().max().item(), "logit_std": ours.std().item(),
             "loss": [F.cross_entropy(x.float(), targets).item() for x in (ours, theirs)],
             "same_argmax": (theirs.argmax(-1) == ours.argmax(-1)).float().mean().item(),
             "same_greedy": llama_greedy(llm, prompt, n_new) == greedy}
    if chat:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        formatter = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token="", bos_token="")
        templated = formatter(messages=CHAT).prompt
        found["same_chat_ids"] = llm.tokenize(templated.encode(), add_bos=False, special=True) == \
            ChatFormat(tok).prompt([Message(**m) for m in CHAT])
    return found


def main(argv: list[str]) -> int:
    p = argument_parser("python scripts/gguf_llama_cpp.py", __doc__)
    p.add_argument("run_dir", help="a training run whose model a GGUF architecture holds")
    p.add_argument("--gguf_type", default="f32", choices=list(FILE_TYPES), help="tensor type (default f32)")
    p.add_argument("--text", default=argparse.__file__, help="the text to compare on (default: argparse.py)")
    p.add_argument("--new", type=int, help="greedy tokens to compare (default 64, or as many as fit)")
    p.add_argument("--windows", type=int, default=1, help="block_size windows of the text to score (default 1)")
    p.add_argument("--no_repack", action="store_true", help="llama.cpp's --no-repack (no AMX kernels)")
    p.add_argument("--convert", type=Path, metavar="LLAMA_CPP_DIR",
                   help="convert the HF export with this llama.cpp tree's convert_hf_to_gguf.py")
    args = p.parse_args(argv)
    if args.new is not None:
        at_least(args.new, "--new", 1)
    at_least(args.windows, "--windows", 1)
    if not Path(args.text).is_file():
        raise ConfigError(f"--text {args.text}: no such file")
    if args.convert and not (args.convert / "convert_hf_to_gguf.py").is_file():
        raise ConfigError(f"--convert {args.convert}: no convert_hf_to_gguf.py there (a llama.cpp source tree)")
    if args.convert and args.gguf_type not in CONVERTER_TYPES:
        raise ConfigError(f"--gguf_type {args.gguf_type} with --convert: llama.cpp's converter writes "
                          f"{', '.join(CONVERTER_TYPES)} (its llama-quantize writes the others)")
    run = load_run(args.run_dir)
    tok, T = for_run(args.run_dir), run.model.config.block_size
    text = Path(args.text).read_text(encoding="utf-8")
    if len(tok.encode(text)) < T:
        raise ConfigError(f"--text {args.text} holds fewer than model.block_size={T} tokens")
    args.new = args.new or min(64, T - T // 2)
    if args.new > T - T // 2:
        raise ConfigError(f"--new {args.new}: at most {T - T // 2} fit after {T // 2} prompt tokens in block_size={T}")
    # a model no architecture holds is refused first
    family = choose_family(run.model.config) if args.convert else choose_gguf_family(run.model.config)
    llama_cpp_module()
    with tempfile.TemporaryDirectory() as tmp:
        if args.convert:
            path = converted(args.run_dir, args.convert, Path(tmp), args.gguf_type)
        else:
            path = write_gguf(run.model, tok, Path(tmp) / "out", family, args.gguf_type, run.cfg.post.chat).path
        llm = load_llama(path, T, args.no_repack)
        found = compare(run.model, tok, llm, text, args.new, run.cfg.post.chat, args.windows)
    by = "llama.cpp's converter" if args.convert else "train.export"
    print(f"GGUF of HF {family} ({by}), {args.gguf_type}, in llama.cpp, against {args.run_dir}")
    print(f"tokenizer: {found['tokens']:,} tokens of {Path(args.text).name}, the same ids: {found['same_ids']}")
    scored = f"{found['windows']} windows of {found['window']} tokens" if found["windows"] > 1 else \
        f"{found['window']} tokens"
    print(f"logits over {scored}: max |diff| {found['max_diff']:.3g} (logit std "
          f"{found['logit_std']:.3g}), the same argmax at {found['same_argmax']:.1%}")
    print(f"loss on the next tokens: ours {found['loss'][0]:.4f}, llama.cpp {found['loss'][1]:.4f} nats per token")
    print(f"greedy, {args.new} tokens after {found['window'] // 2}: the same tokens: {found['same_greedy']}")
    if "same_chat_ids" in found:
        print(f"chat template: the same prompt ids: {found['same_chat_ids']}")
    return 0 if found["same_ids"] and found.get("same_chat_ids", True) else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
