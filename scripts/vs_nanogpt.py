"""Train-step throughput against nanoGPT, interleaved in one process:
`python scripts/vs_nanogpt.py PATH/TO/nanoGPT/model.py [CONFIG] [--rounds N] [--steps K] [--warmup W]
[--compile] [--key=value ...]`

nanoGPT's `model.py` is not part of this repository: pass the path of a checkout's file (it is
imported from there at run time). CONFIG defaults to configs/bench/gpt2-6x384.toml, nanoGPT's small
shape (6 layers x 6 heads x 384, T = 256, B = 16, fp32); nanoGPT's GPT gets the same shape, the
same vocabulary (unpadded), biases and no dropout.

One round times K steps of each model back to back, alternating which goes first; the ratio of
each round is taken on its own, so a slower or faster moment of a shared machine affects both
sides of a ratio alike. Each round reports two ratios: of wall-clock time, and of this process's
CPU time (`time.process_time`). On a machine shared with other jobs the wall clock also counts the
time spent waiting for a core; with one thread (OMP_NUM_THREADS=1) the CPU time counts only the
work, and is the steadier of the two. Our step is `Trainer.train_step` (batch fetch, forward, backward, clipping,
AdamW, metrics); nanoGPT's is the loop body of its train.py (forward, backward, clip_grad_norm_,
AdamW from its `configure_optimizers`, zero_grad) on the same batches. `--compile` compiles both:
ours with `--train.compile=true`, nanoGPT's model with `torch.compile`, as its train.py does by
default; the warm-up steps then include the compilation.
"""

import importlib.util
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.cli import int_option, run_cli, split_args  # noqa: E402
from train.config import ConfigError, load_config  # noqa: E402
from train.errors import one_line  # noqa: E402
from train.trainer import Trainer  # noqa: E402


def load_nanogpt(path: str):
    """nanoGPT's model.py at `path`, imported, or a ConfigError saying why it cannot be used."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file (give the path of nanoGPT's model.py)")
    if Path(path).suffix != ".py":
        raise ConfigError(f"{path}: not a Python file (give the path of nanoGPT's model.py)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{path}: has a syntax error at line {e.lineno} ({e.msg})") from None
    except Exception as e:  # any code at all runs on import: report it, whatever it raised
        raise ConfigError(f"{path}: importing it raised {one_line(e)}") from None
    missing = [name for name in ("GPT", "GPTConfig") if not hasattr(module, name)]
    if missing:
        raise ConfigError(f"{path}: defines no {', '.join(missing)} (is it nanoGPT's model.py?)")
    return module


def nanogpt_step(model, optimizer, trainer: Trainer, step: int, grad_clip: float) -> None:
    x, y = trainer._batch(trainer.data.train, (trainer.cfg.train.seed, 0, step, 0, 0))
    loss = model(x, y)[1]["loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv: list[str]) -> int:
    opts = {"--rounds": "5", "--steps": "5", "--warmup": "3"}
    compile_both = "--compile" in argv
    paths, overrides = split_args([a for a in argv if a != "--compile"], opts)
    if not 1 <= len(paths) <= 2:
        raise ConfigError("usage: python scripts/vs_nanogpt.py NANOGPT_MODEL_PY [CONFIG] [--rounds N] [--steps K] [--compile]")
    rounds, steps, warmup = (int_option(opts, name, low) for name, low in (("--rounds", 1), ("--steps", 1), ("--warmup", 0)))
    nano = load_nanogpt(paths[0])
    config = paths[1] if len(paths) > 1 else "configs/bench/gpt2-6x384.toml"
    with tempfile.TemporaryDirectory() as tmp:
        compiled = ["--train.compile=true"] if compile_both else []
        cfg = load_config(config, [*overrides, *compiled, f"--train.out_dir={tmp}"])
        trainer = Trainer(cfg)
        m, o = cfg.model, cfg.optim
        torch.manual_seed(cfg.train.seed)
        ref = nano.GPT(nano.GPTConfig(block_size=m.block_size, vocab_size=m.vocab_size, n_layer=m.n_layer,
                                      n_head=m.n_head, n_embd=m.n_embd, dropout=0.0, bias=True))
        ref_opt = ref.configure_optimizers(o.weight_decay, o.lr, (o.beta1, o.beta2), trainer.device.type)
        ref.to(trainer.device).train()
        if compile_both:
            ref = torch.compile(ref)
        clip = o.grad_clip or float("inf")
        keys = itertools.count()  # nanoGPT's batch keys, one per step: the trainer's batches

        def run_ours():
            for _ in range(steps):
                trainer.train_step()

        def run_ref():
            for _ in range(steps):
                nanogpt_step(ref, ref_opt, trainer, next(keys), clip)

        for _ in range(warmup):
            trainer.train_step()
            nanogpt_step(ref, ref_opt, trainer, next(keys), clip)
        ratios, cpu_ratios = [], []
        tok = trainer.tokens_per_step
        for r in range(rounds):
            seconds = {}  # per step: wall-clock, CPU
            for fn in (run_ours, run_ref) if r % 2 == 0 else (run_ref, run_ours):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                seconds[fn] = (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
            (ours, ours_cpu), (theirs, theirs_cpu) = seconds[run_ours], seconds[run_ref]
            ratios.append(theirs / ours)
            cpu_ratios.append(theirs_cpu / ours_cpu)
            print(f"round {r + 1}: ours {tok / ours:7.0f} tok/s, nanoGPT {tok / theirs:7.0f} tok/s, "
                  f"ratio {ratios[-1]:.3f}; per CPU-second: ours {tok / ours_cpu:7.0f}, "
                  f"nanoGPT {tok / theirs_cpu:7.0f}, ratio {cpu_ratios[-1]:.3f}", flush=True)
    for what, rs in (("wall-clock", ratios), ("CPU-time", cpu_ratios)):
        print(f"median {what} ratio (ours / nanoGPT tok/s) over {rounds} rounds of {steps} steps: "
              f"{statistics.median(rs):.3f} (min {min(rs):.3f}, max {max(rs):.3f}); "
              f"{torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
