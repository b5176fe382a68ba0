"""The training loop: precision, compile, accumulation, evaluation, checkpoints, exact resume.

`train(cfg)` builds everything from a RunConfig and runs to `train.max_steps`. Re-running it with
the same out_dir resumes from the newest complete checkpoint. Resume is exact: batches are a pure
function of (seed, step, micro-step, rank), and the checkpoint holds the optimizer, grad-scaler and
RNG state, so an interrupted run logs the same losses as an uninterrupted one.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from model import GPT
from model.accounting import flops_per_token

from . import checkpoint as ckpt
from .config import RunConfig, to_toml
from .data import TokenData, bits_per_byte, get_batch, prepare
from .hardware import autocast, peak_flops, pick_device, pick_dtype
from .optim import build_optimizer, lr_at


@dataclass
class Trainer:
    cfg: RunConfig
    rank: int = 0
    world_size: int = 1
    log: list[dict] = field(default_factory=list)  # the metrics.jsonl records written by this process

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.out_dir = Path(cfg.train.out_dir)
        self.device = pick_device(cfg.train.device)
        self.dtype = pick_dtype(cfg.train.dtype, self.device)
        self.data: TokenData = prepare(cfg.data)
        if self.data.vocab_size > cfg.model.vocab_size:
            raise ValueError(
                f"data vocabulary ({self.data.vocab_size}) exceeds model.vocab_size ({cfg.model.vocab_size})"
            )
        torch.manual_seed(cfg.train.seed)
        self.model = GPT(cfg.model).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device.type)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == "fp16")
        self.step_fn = torch.compile(self.model) if cfg.train.compile else self.model
        self.step = 0
        self.tokens_per_step = cfg.train.batch_size * cfg.seq_len * cfg.train.grad_accum * self.world_size
        self.flops_per_step = flops_per_token(cfg.model, cfg.seq_len) * self.tokens_per_step
        self.peak = peak_flops(self.device, self.dtype)

    # ----- state -------------------------------------------------------------------------------
    def save(self) -> Path:
        train_state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
        }
        state = {"step": self.step, "tokens": self.step * self.tokens_per_step,
                 "data_fingerprint": self.data.meta.get("fingerprint")}
        return ckpt.save_checkpoint(self.out_dir, self.step, self.model, train_state, state,
                                    to_toml(self.cfg), keep=self.cfg.train.keep_checkpoints)

    def resume(self) -> bool:
        """Load the newest complete checkpoint, if any; return whether one was found."""
        path = ckpt.latest_checkpoint(self.out_dir)
        if path is None:
            return False
        train_state, state = ckpt.load_checkpoint(path, self.model, map_location=self.device)
        self.optimizer.load_state_dict(train_state["optimizer"])
        self.scaler.load_state_dict(train_state["scaler"])
        torch.set_rng_state(train_state["rng_cpu"].cpu())
        if self.device.type == "cuda" and train_state["rng_cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in train_state["rng_cuda"]])
        self.step = state["step"]
        self._truncate_metrics(self.step)
        return True

    # ----- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimizer step over `grad_accum` micro-batches; returns its metrics."""
        cfg, model = self.cfg, self.step_fn
        lr = lr_at(self.step, cfg.optim, cfg.train.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.train.grad_accum):
            x, y = self._batch(self.data.train, (cfg.train.seed, 0, self.step, micro, self.rank))
            with autocast(self.device, self.dtype):
                _, loss = model(x, y)
            self.scaler.scale(loss / cfg.train.grad_accum).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        max_norm = cfg.optim.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        loss = (total / cfg.train.grad_accum).item()
        # With fp16 loss scaling an overflowing gradient is expected: the scaler skips the step.
        grads_ok = self.scaler.is_enabled() or math.isfinite(grad_norm.item())
        if not (math.isfinite(loss) and grads_ok):
            raise FloatingPointError(
                f"non-finite loss ({loss}) or gradient norm ({grad_norm.item()}) at step {self.step + 1}; "
                "try a lower optim.lr or train.dtype=fp32"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm.item()}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean loss over a fixed set of validation batches, and the same in bits per byte."""
        cfg = self.cfg
        self.model.eval()
        losses = []
        for i in range(cfg.train.eval_batches):
            x, y = self._batch(self.data.val, (cfg.train.seed, 1, i))
            with autocast(self.device, self.dtype):
                _, loss = self.model(x, y)
            losses.append(loss.item())
        val_loss = sum(losses) / len(losses)
        return {"val_loss": val_loss, "val_bpb": bits_per_byte(val_loss, self.data.bytes_per_token("val"))}

    def _batch(self, tokens, key):
        x, y = get_batch(tokens, self.cfg.train.batch_size, self.cfg.seq_len, key)
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    # ----- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict:
        t = self.cfg.train
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.toml").write_text(to_toml(self.cfg))
        resumed_from = self.step if self.resume() else None
        bar = tqdm(total=t.max_steps, initial=self.step, desc=self.out_dir.name, dynamic_ncols=True,
                   disable=self.rank != 0, mininterval=1.0)
        if resumed_from is not None:
            bar.write(f"resumed from step {resumed_from} ({self.out_dir})")
        start_time, start_step, last = time.perf_counter(), self.step, None
        while self.step < t.max_steps:
            t0 = time.perf_counter()
            record = self.train_step()
            dt = time.perf_counter() - t0
            record["tokens_per_s"] = self.tokens_per_step / dt
            record["mfu"] = self.flops_per_step / dt / self.peak
            final = self.step == t.max_steps
            if (t.eval_interval and self.step % t.eval_interval == 0) or final:
                record.update(self.evaluate())
                last = record
            if self.step % t.log_interval == 0 or "val_loss" in record or final:
                self._log(record)
            if (t.ckpt_interval and self.step % t.ckpt_interval == 0) or final:
                self.save()
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}",
                            mfu=f"{100 * record['mfu']:.1f}%", refresh=False)
        bar.close()
        elapsed = time.perf_counter() - start_time
        summary = {"steps": self.step, "steps_this_run": self.step - start_step, "seconds": elapsed,
                   **({k: last[k] for k in ("loss", "val_loss", "val_bpb")} if last else {})}
        if self.rank == 0:
            print(_summary_line(summary, self.out_dir))
        return summary

    def _log(self, record: dict) -> None:
        self.log.append(record)
        if self.rank == 0:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after the checkpoint we resume from: those steps run again."""
        path = self.out_dir / "metrics.jsonl"
        if self.rank != 0 or not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)


def _summary_line(s: dict, out_dir: Path) -> str:
    parts = [f"done: {s['steps']} steps ({s['steps_this_run']} this run) in {s['seconds']:.0f}s"]
    if "val_loss" in s:
        parts.append(f"train loss {s['loss']:.4f}, val loss {s['val_loss']:.4f}, val {s['val_bpb']:.3f} bits/byte")
    return " | ".join(parts) + f" | {out_dir}"


def train(cfg: RunConfig) -> dict:
    return Trainer(cfg).fit()
