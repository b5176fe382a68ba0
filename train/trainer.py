"""The training loop: precision, compile, accumulation, evaluation, checkpoints, exact resume.

`train(cfg)` builds everything from a RunConfig and runs to `train.max_steps`. Re-running it with
the same out_dir resumes from the newest complete checkpoint. Resume is exact: batches are a pure
function of (seed, step, micro-step, rank), and the checkpoint holds the optimizer, grad-scaler and
RNG state, so an interrupted run logs the same losses as an uninterrupted one.

Several processes (torchrun, train/parallel.py): `train.batch_size` is the micro-batch of each
rank, so a step sees batch_size x seq_len x grad_accum x world_size tokens; rank r's micro-step m
reads global micro-batch r * grad_accum + m, so N ranks with grad_accum a see the same batches as
one process with grad_accum N * a. Rank 0 alone writes logs, checkpoints and the progress bar.

Failure handling (see train/guard.py and train/checkpoint.py): bad input fails before the first
step; SIGTERM / SIGINT end the step, write a checkpoint and return; a non-finite loss or gradient
stops the run or skips the step (`train.on_nonfinite`); a non-finite model is never saved; resuming
with a different [model] or [data] is refused unless `train.allow_config_change` is set.

`train.max_seconds` ends a run early but as a finished one (evaluated, checkpointed, exit 0): every
rank stops after the same step, the first at whose end any rank's clock has reached the budget.
"""

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from model import GPT, flops_per_token, use_device_kernels

from . import checkpoint as ckpt
from . import parallel
from .config import RunConfig, schedule_warning, to_toml
from .errors import ConfigError
from .data import TokenData, bits_per_byte, get_batch, prepare
from .guard import (RUN_CONFIG_HEADER, all_finite, check_out_dir, check_same_run, check_same_tokenizer, oom_message,
                    run_lock, thread_warning)
from .hardware import DTYPES, Peak, autocast, pick_device, pick_dtype
from .init_from import initial_weights
from .metrics_log import MetricsLog, write_atomic
from .optim import build_optimizer, lr_at
from .stop import StopAgreement
from .post.chat_data import ChatData, ChatSplit
from .post import methods as post_methods
from .post.rollouts import held_out_pass
from .tokenizer import RUN_FILE as TOKENIZER_FILE, describe, get_tokenizer


class Trainer:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.out_dir = Path(cfg.train.out_dir)
        self.device = pick_device(cfg.train.device)
        self.dtype = pick_dtype(cfg.train.dtype, self.device)
        t = cfg.train
        if t.parallel == "fsdp2" and self.dtype == "fp16":
            raise ConfigError("train.parallel='fsdp2' does not take train.dtype='fp16' (its loss "
                              "scaler is per rank); use train.dtype='bf16' or 'fp32'")
        self.metrics = MetricsLog(self.out_dir, t.tensorboard)  # rank 0 writes it
        self.dist = parallel.init(t.parallel, t.dist_backend, t.dist_timeout_s, self.device)
        self.rank, self.world_size = self.dist.rank, self.dist.world_size  # of the process group
        if self.device.type == "cuda" and self.dist.active:
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.rank == 0:
            check_out_dir(self.out_dir)
        # Checked here, not only when tokenizing: a cache hit must not hide a bad ranks file that
        # sampling and export would trip over later.
        self.tokenizer = get_tokenizer(cfg.data.tokenizer, cfg.data.tokenizer_path)
        # the corpus of [data], or a post-training run's chats (train/post/chat_data.py)
        self.data: TokenData | ChatData = (ChatData(cfg.post, self.tokenizer, cfg.model.block_size, cfg.data)
                                           if cfg.post.chat else prepare(cfg.data))
        self.data.check_batch(cfg.train.batch_size, cfg.seq_len, cfg.model.vocab_size)
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        self.model = GPT(cfg.model).to(self.device)
        self.kernels = use_device_kernels(self.model, self.device, DTYPES[self.dtype])  # {layer: kernel}
        if t.activation_checkpointing:
            parallel.checkpoint_blocks(self.model)
        # DDP: a wrapper around self.model; FSDP2: self.model itself, sharded in place.
        self.wrapped = parallel.wrap(self.model, t.parallel, self.dist, self.device, DTYPES[self.dtype])
        self.sharded = self.dist.active and t.parallel == "fsdp2"
        self.init_source: dict | None = None  # train.init_from's weights: where from (metrics.jsonl, step 0)
        weights, fresh = None, not ckpt.list_checkpoints(self.out_dir)  # else resume() loads the run's own
        if t.init_from and (fresh or cfg.post.needs_reference):
            weights, source = initial_weights(t.init_from, t.init_step, cfg.model)
            if fresh:
                parallel.load_full_model_state(self.model, weights)
                self.init_source = source
        # post-training on a task: its validation prompts (evaluations log their pass@1); rft, grpo,
        # dpo: an objective that samples from the model (train/post/methods.py)
        self.held_out, self.method = post_methods.build(cfg, self.tokenizer, self.model, weights, self.device,
                                                        self.dtype)
        if self.rank:
            torch.manual_seed(t.seed + self.rank)  # dropout masks differ between ranks
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device.type)
        self.params = list(self.model.parameters())  # listed once: clipping takes them every step
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == "fp16")
        self.step_fn = torch.compile(self.wrapped) if t.compile else self.wrapped
        self.stop = StopAgreement(t.max_seconds, self.elapsed_s, self.dist, self.device)
        self.ended_by: str | None = None  # "max_seconds": the run ended early, as a finished run
        self.step = 0
        self.skipped_steps = 0  # non-finite steps skipped (train.on_nonfinite="skip"), in all
        self.skipped_in_a_row = 0
        self._saved_step: int | None = None
        self.elapsed_before = 0.0  # wall-clock seconds of earlier runs, up to the resumed checkpoint
        self._clock_start = time.perf_counter()  # reset when fit() starts
        self.tokens_per_step = cfg.train.batch_size * cfg.seq_len * cfg.train.grad_accum * self.world_size
        self.flops_per_step = flops_per_token(cfg.model, cfg.seq_len) * self.tokens_per_step
        self.peak = Peak(self.device, self.dtype)

    # ----- state -------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write checkpoint `step`: the whole model and optimizer state, gathered to rank 0 and
        written once, in the format a single process writes (so any layout can resume it)."""
        if self.dist.max_int(int(not all_finite(self.model)), self.device):
            raise FloatingPointError(f"the model has non-finite weights at step {self.step}; "
                                     "not writing a checkpoint (the previous ones are intact)")
        weights = parallel.full_model_state(self.model, self.dist)
        optimizer = parallel.full_optimizer_state(self.optimizer.state_dict(), self.dist)
        rng = self.dist.gather_objects(self._rng_state())  # dropout masks are drawn per rank
        path = ckpt.checkpoint_dir(self.out_dir) / f"{ckpt.PREFIX}{self.step:08d}"
        failure = None
        if self.rank == 0:
            train_state = {
                "optimizer": optimizer,
                "scaler": self.scaler.state_dict(),
                "rng_cpu": rng[0]["cpu"],
                "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" and
                not self.dist.active else [],
                **({"rng_ranks": rng} if self.world_size > 1 else {}),
                **({"post": self.method.state_dict()} if self.method else {}),
            }
            state = {"step": self.step, "tokens": self.tokens_through(self.step),
                     "world_size": self.world_size, "data_fingerprint": self.data.meta.get("fingerprint"),
                     "skipped_steps": self.skipped_steps, "skipped_in_a_row": self.skipped_in_a_row,
                     "elapsed_s": self.elapsed_s(), "cpu_threads": torch.get_num_threads(),
                     **({"ended_by": self.ended_by} if self.ended_by else {})}
            try:
                path = ckpt.save_checkpoint(self.out_dir, self.step, weights, train_state, state,
                                            to_toml(self.cfg), keep=self.cfg.train.keep_checkpoints)
            except OSError as e:
                failure = e
        if self.dist.max_int(int(failure is not None), self.device):  # every rank waits for the write
            raise failure or OSError(f"rank 0 could not write checkpoint {path}")
        self._saved_step = self.step
        return path

    def _rng_state(self) -> dict:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def resume(self) -> bool:
        """Load the newest loadable checkpoint, if any; return whether one was found."""
        found = ckpt.load_newest(self.out_dir, self._load)
        if found is None:
            if self.rank == 0:
                self.metrics.truncate(-1)  # lines from a run killed before its first checkpoint
            return False
        path, (train_state, state) = found
        try:
            parallel.load_optimizer_state(self.optimizer, train_state["optimizer"])
        except (ValueError, KeyError, IndexError) as e:
            raise ckpt.CheckpointMismatch(f"checkpoint {path}: its optimizer state does not fit "
                                          f"this model ({e})") from None
        self.scaler.load_state_dict(train_state["scaler"])
        if self.method:
            self.method.load_state_dict(train_state["post"])
        self._restore_rng(train_state, state["step"])
        self.step = state["step"]
        self.skipped_steps = state.get("skipped_steps", 0)
        self.skipped_in_a_row = state.get("skipped_in_a_row", 0)
        self.elapsed_before = state.get("elapsed_s", 0.0)
        self.ended_by = state.get("ended_by")
        self._saved_step = self.step
        if self.rank == 0:
            self.metrics.truncate(self.step)  # those steps run again
            warning = thread_warning(path, state.get("cpu_threads"), self.device)
            if warning:
                print(f"warning: {warning}", file=sys.stderr, flush=True)
        return True

    def _restore_rng(self, train_state: dict, step: int) -> None:
        """Each rank's dropout RNG as saved. With another number of ranks than wrote the
        checkpoint the micro-batches move between ranks, so their masks cannot follow them: rank 0
        takes the saved rank 0 state, the others start fresh streams (seed, rank, step)."""
        ranks = train_state.get("rng_ranks") or [{"cpu": train_state["rng_cpu"], "cuda": None}]
        if len(ranks) == self.world_size or self.rank == 0:
            torch.set_rng_state(ranks[self.rank]["cpu"].cpu())
            if self.device.type == "cuda" and ranks[self.rank]["cuda"] is not None:
                torch.cuda.set_rng_state(ranks[self.rank]["cuda"].cpu(), self.device)
        else:
            torch.manual_seed(hash((self.cfg.train.seed, self.rank, step)) % 2**63)
        if self.device.type == "cuda" and not self.dist.active and train_state["rng_cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in train_state["rng_cuda"]])

    def elapsed_s(self) -> float:
        """Wall-clock seconds since the run first started, carried across resumes (the time
        between a run's last checkpoint and its interruption is not counted: those steps re-run)."""
        return self.elapsed_before + time.perf_counter() - self._clock_start

    def _load(self, path: Path) -> tuple[dict, dict]:
        """Verify a checkpoint, refuse one from a different model or data, then load the weights."""
        ckpt.verify_checkpoint(path)
        if not self.cfg.train.allow_config_change:
            check_same_run(path, self.cfg, self.data.meta.get("fingerprint"))
        if not self.sharded:
            return ckpt.load_checkpoint(path, self.model, map_location=self.device, verify=False)
        # FSDP2: load into a whole model on the CPU (with every check), then cut it into shards
        whole = GPT(self.cfg.model)
        loaded = ckpt.load_checkpoint(path, whole, verify=False)
        parallel.load_full_model_state(self.model, whole.state_dict())
        return loaded

    # ----- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimizer step over `grad_accum` micro-batches; returns its metrics."""
        cfg, model = self.cfg, self.step_fn
        lr = lr_at(self.step, cfg.optim, cfg.train.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if not self.model.training:  # after an evaluation; a call each step walks every module
            model.train()
        accum = cfg.train.grad_accum
        total = None  # each term of the objective, summed over micro-batches
        for micro in range(accum):
            # the global micro-batch index: ranks x grad_accum micro-batches make one step
            # (the key's last field, once the rank, stays 0 so one process reads what it always did)
            key = (cfg.train.seed, 0, self.step, self.rank * accum + micro, 0)
            shape = cfg.rows_at(self.step), cfg.seq_len_at(self.step)  # smaller during a warm-up
            with parallel.grad_sync(self.wrapped, micro == accum - 1):  # all-reduce on the last only
                with autocast(self.device, self.dtype):
                    # The objective's terms by name: the LM cross-entropy ("loss") and those of
                    # the layers that have one (MoE balancing, MTP, DSA's indexer), or a sampling
                    # method's; metrics.jsonl logs each under its name.
                    terms = (self.method.terms(model, key) if self.method else
                             model(*self._batch(self.data.train, key, *shape))[1])
                objective = sum(terms.values())
                self.scaler.scale(objective / accum).backward()
            parts = torch.stack([t.detach().float() for t in terms.values()])
            total = parts if total is None else total + parts
        self.dist.sum_(total)  # the mean over every rank's micro-batches, the same on all ranks
        self.scaler.unscale_(self.optimizer)
        grad_norm = parallel.clip_grad_norm(self.params, cfg.optim.grad_clip or float("inf"))
        # The step's one read of the device (a sync on a GPU): every term's mean, the gradient
        # norm and the layers' statistics (MoE load), in a single copy. Nothing else here waits
        # for the device.
        stats = self.model.step_stats(self.dist.sum_ if self.dist.active else None)
        readout = [total / (accum * self.world_size), grad_norm.view(1).float(), stats]
        if self.dist.active:  # a stop signal or the time budget on any rank, agreed on by all
            readout.append(self.stop.flags())
        values = torch.cat(readout).tolist()
        if self.dist.active:
            self.stop.set(values[-self.stop.size:])
            del values[-self.stop.size:]
        means = dict(zip(terms, values))  # {"loss": ..., "aux_loss": ...}
        grad_norm = values[len(terms)]
        loss = sum(means.values())  # the objective
        # With fp16 loss scaling an overflowing gradient is expected: the scaler skips the step.
        grads_ok = self.scaler.is_enabled() or math.isfinite(grad_norm)
        if not (math.isfinite(loss) and grads_ok):
            return self._nonfinite_step(lr, f"non-finite loss ({loss}) or gradient norm "
                                            f"({grad_norm}) at step {self.step + 1}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.skipped_in_a_row = 0
        record = {"step": self.step, **means, "lr": lr, "grad_norm": grad_norm,
                  "skipped_steps": self.skipped_steps}
        if stats.numel():  # MoE: its metrics, its aux-loss-free bias update and a fresh count
            record |= {"aux_loss": means.get("aux_loss", 0.0), **self.model.end_step(values[len(terms) + 1:])}
        if self.method:  # rewards, pass rate, KL, clip fraction, timings
            record |= self.method.metrics()
        return record

    def _nonfinite_step(self, lr: float, what: str) -> dict:
        """Stop (train.on_nonfinite="stop"), or drop the gradients and count a skipped step."""
        t = self.cfg.train
        if t.on_nonfinite == "stop":
            raise FloatingPointError(f"{what}; try a lower optim.lr or train.dtype=fp32 (or "
                                     "train.on_nonfinite=skip to skip such steps)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()  # fp16: lowers the loss scale; a no-op otherwise
        self.model.end_step(update_bias=False)  # forget the MoE load of the dropped step
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row > t.max_skipped_steps:
            raise FloatingPointError(f"{what}: {self.skipped_in_a_row} non-finite steps in a row "
                                     f"(train.max_skipped_steps={t.max_skipped_steps}); try a lower optim.lr")
        self.skipped_steps += 1
        self.step += 1
        return {"step": self.step, "loss": None, "lr": lr, "grad_norm": None,
                "skipped_steps": self.skipped_steps, "skipped": True}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean loss over a fixed set of validation batches, and the same in bits per byte; a
        sampling method's held-out score (pass@1, or DPO's accuracy on held-out pairs)."""
        scores = evaluate(self.model, self.data, self.cfg, self.device, self.dtype, self.dist)
        if self.held_out:
            scores["val_pass@1"] = held_out_pass(self.model, self.held_out, self.dtype)
        return scores | (self.method.evaluate() if self.method else {})

    def _batch(self, tokens, key, rows: int | None = None, seq_len: int | None = None):
        return batch_on(tokens, self.cfg, key, self.device, rows, seq_len)

    def tokens_at(self, step: int) -> int:
        """Tokens of step `step` (0-based), over all ranks: fewer during a warm-up."""
        t = self.cfg.train
        return self.cfg.rows_at(step) * self.cfg.seq_len_at(step) * t.grad_accum * self.world_size

    def tokens_through(self, step: int) -> int:
        """Tokens trained by steps 0 .. step - 1, over all ranks."""
        t = self.cfg.train
        warm = min(step, max(t.seq_warmup_steps, t.batch_warmup_steps))
        return sum(self.tokens_at(s) for s in range(warm)) + (step - warm) * self.tokens_per_step

    # ----- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to train.max_steps (resuming if a checkpoint exists); return a summary.

        On SIGTERM / SIGINT the current step finishes, a checkpoint is written and the summary gets
        `signal` and `exit_code` (128 + the signal number).
        """
        where = f"train.out_dir={str(self.out_dir)!r}"
        with parallel.clear_errors(self.dist, self.cfg.train.dist_timeout_s), \
                (run_lock(self.out_dir, where) if self.rank == 0 else nullcontext()):
            summary = self._fit()
        if self.rank == 0:
            print(_summary_line(summary, self.out_dir), flush=True)
        return summary

    def _fit(self) -> dict:
        self._clock_start = time.perf_counter()
        if self.rank == 0:
            ckpt.remove_stale_temps(self.out_dir)  # left by a writer that was killed
        self.dist.barrier()  # ... before any rank lists the checkpoints
        resumed_from = self.step if self.resume() else None  # refuses a different config first
        warning = schedule_warning(self.cfg)
        if warning and self.rank == 0:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        tokenizer = describe(self.tokenizer)
        if resumed_from is not None and not self.cfg.train.allow_config_change:
            check_same_tokenizer(self.out_dir, tokenizer)
        if self.rank == 0:
            write_atomic(self.out_dir / "config.toml", RUN_CONFIG_HEADER + to_toml(self.cfg))
            write_atomic(self.out_dir / TOKENIZER_FILE, json.dumps(tokenizer, indent=2) + "\n")
        try:
            with self.stop.catching_signals():
                return self._loop(resumed_from)
        except torch.OutOfMemoryError:
            t = self.cfg.train
            raise MemoryError(oom_message(t.batch_size, t.grad_accum, str(self.device))) from None

    def _loop(self, resumed_from: int | None) -> dict:
        t = self.cfg.train
        bar = tqdm(total=t.max_steps, initial=self.step, desc=self.out_dir.name, dynamic_ncols=True,
                   disable=self.rank != 0, mininterval=1.0)
        if resumed_from is not None:
            self._say(bar, f"resumed from step {resumed_from} ({self.out_dir})")
        if self.world_size > 1 and resumed_from is None:
            self._say(bar, f"{self.world_size} ranks ({t.parallel}): tokens per step = batch_size "
                           f"{t.batch_size} x seq_len {self.cfg.seq_len} x grad_accum {t.grad_accum} "
                           f"x {self.world_size} ranks = {self.tokens_per_step:,}")
        start_time, start_step, last = time.perf_counter(), self.step, None
        try:
            if self.rank == 0:
                self.metrics.open(after_step=self.step)
            if self.init_source and resumed_from is None:  # where fine-tuning starts: the source's val loss
                self._log({"step": 0, "tokens": 0, **self.evaluate(), "init_from": self.init_source})
            self.stop.agree()  # a signal that came before the first step
            # A run that ended at train.max_seconds is done: a re-run trains no further, unless the
            # limit was raised or removed. (From a checkpoint not so marked, e.g. with the limit
            # lowered since, it trains one step and ends then.)
            self.stop.out_of_time = self.ended_by == "max_seconds" and 0 < t.max_seconds <= self.elapsed_before
            self.ended_by = self.ended_by if self.stop.out_of_time else None
            while self.step < t.max_steps and self.stop.signal is None and not self.stop.out_of_time:
                record = self._run_step(bar)
                last = record if "val_loss" in record else last
            if self.stop.signal is not None and self._saved_step != self.step:
                self.save()  # the signal came before the first step
        finally:
            bar.close()  # an error message then starts on a line of its own
            self.metrics.close()
        summary = {"steps": self.step, "steps_this_run": self.step - start_step,
                   "seconds": time.perf_counter() - start_time,
                   **({k: last[k] for k in ("loss", "val_loss", "val_bpb")} if last else {})}
        if self.ended_by:
            summary["ended_by"] = self.ended_by
        if self.stop.signal is not None:
            summary.update(signal=self.stop.signal.name, exit_code=128 + int(self.stop.signal))
        return summary

    def _say(self, bar: tqdm, text: str) -> None:
        if self.rank == 0:
            bar.write(text)

    def _run_step(self, bar: tqdm) -> dict:
        """One step and what follows it: evaluation, the metrics line, a checkpoint, the bar."""
        t = self.cfg.train
        t0, before = time.perf_counter(), self.method.tokens if self.method else 0
        record = self.train_step()  # with several ranks, it also agrees on a stop signal and the time
        if not self.dist.active:
            self.stop.agree()
        dt = time.perf_counter() - t0
        # tokens trained so far and this step, over all ranks (a sampling method's rows vary in length)
        record["tokens"] = self.tokens_through(self.step)
        tokens = self.tokens_at(self.step - 1)
        if self.method:
            tokens, record["tokens"] = [n * self.world_size for n in (self.method.tokens - before, self.method.tokens)]
        record["tokens_per_s"] = tokens / dt
        # per device: <= 1, see hardware.Peak
        record["mfu"] = self.peak.mfu(self.flops_per_step / self.tokens_per_step * tokens / self.world_size / dt)
        self.ended_by = "max_seconds" if self.stop.out_of_time and self.step < t.max_steps else None
        if self.ended_by:
            record["ended_by"] = self.ended_by  # in the metrics line and the checkpoint below
        final = self.step == t.max_steps or self.ended_by is not None
        if record.get("skipped"):
            self._say(bar, f"warning: skipped step {self.step} (non-finite loss or gradient; "
                      f"{self.skipped_in_a_row} in a row, {self.skipped_steps} in all)")
        if (t.eval_interval and self.step % t.eval_interval == 0) or final:
            record.update(self.evaluate())
        if self.step % t.log_interval == 0 or "val_loss" in record or final or record.get("skipped"):
            self._log(record)
        if (t.ckpt_interval and self.step % t.ckpt_interval == 0) or final or self.stop.signal:
            self.save()
        bar.update(1)
        if record["loss"] is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}",
                            mfu=f"{100 * record['mfu']:.1f}%", refresh=False)
        return record

    def _log(self, record: dict) -> None:
        record["elapsed_s"] = round(self.elapsed_s(), 3)
        if self.rank == 0:
            self.metrics.append(record)


def _summary_line(s: dict, out_dir: Path) -> str:
    if "signal" in s:
        return (f"stopped by {s['signal']} at step {s['steps']}; checkpoint saved, re-run the same "
                f"command to resume | {out_dir}")
    parts = [f"done: {s['steps']} steps ({s['steps_this_run']} this run) in {s['seconds']:.0f}s"]
    if s.get("ended_by") == "max_seconds":
        parts[0] += " (train.max_seconds reached)"
    if s.get("val_loss") is not None and s.get("loss") is not None:
        parts.append(f"train loss {s['loss']:.4f}, val loss {s['val_loss']:.4f}, val {s['val_bpb']:.3f} bits/byte")
    return " | ".join(parts) + f" | {out_dir}"


@torch.no_grad()
def evaluate(model: GPT, data: TokenData, cfg: RunConfig, device: torch.device, dtype: str,
             d: parallel.Dist = parallel.Dist()) -> dict:
    """Mean loss over `train.eval_batches` fixed validation batches (the same at every evaluation
    and in `python -m train.eval`), and the same in bits per byte.

    With several ranks, rank r evaluates batches r, r + world, ... and the sums are all-reduced:
    the same mean as one process. Every rank runs the same number of forwards (a sharded model
    gathers its weights in each), the surplus ones on the last batch and not counted."""
    model.eval()
    n = cfg.train.eval_batches
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, batches
    for j in range(math.ceil(n / d.world_size)):
        i = d.rank + j * d.world_size
        x, y = batch_on(data.val, cfg, (cfg.train.val_seed, 1, min(i, n - 1)), device)
        with autocast(device, dtype):
            loss = model(x, y)[1]["loss"]
        if i < n:
            sums += torch.stack([loss.detach().double(), sums.new_tensor(1.0)])
    loss_sum, count = d.sum_(sums).tolist()
    val_loss = loss_sum / count
    return {"val_loss": val_loss, "val_bpb": bits_per_byte(val_loss, data.bytes_per_token("val"))}


def batch_on(tokens, cfg: RunConfig, key: tuple[int, ...], device: torch.device, rows: int | None = None,
             seq_len: int | None = None):
    """The batch `key` of `tokens` (see train/data.py get_batch), on `device`: `rows` sequences
    (default cfg.train.batch_size) of `seq_len` tokens (default cfg.seq_len)."""
    seq_len, rows = seq_len or cfg.seq_len, rows or cfg.train.batch_size
    if isinstance(tokens, ChatSplit):  # chats: rows from conversation starts, answers only as targets
        x, y = tokens.batch(rows, seq_len, key)
    else:
        x, y = get_batch(tokens, rows, seq_len, key)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def train(cfg: RunConfig) -> dict:
    try:
        return Trainer(cfg).fit()
    finally:
        parallel.shutdown()
