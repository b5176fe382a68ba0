"""Data parallelism on CPU with gloo: N ranks must train what one process with N x the accumulation
trains; checkpoints move between layouts; a signal or a dead rank stops every rank.

The `slow` tests start real processes with the variables torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), each running tests/dist_worker.py (the trainer, plus a dump
of what each rank saw). Dropout is 0 where losses are compared across layouts: its masks are drawn
per rank, so they cannot follow a micro-batch to another rank (docs/LOG.md).
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from model import GPT
from scripts.bench_parallel import saved_activation_bytes
from train import checkpoint as ckpt
from train.trainer import Trainer

from tiny_run import ROOT, TINY, cli, error_line, fit, make, metrics, numerics, snapshot, tiny, without_torch_logs

WORKER = ROOT / "tests" / "dist_worker.py"
# dropout 0: comparable across layouts; MoE on the second layer with the aux-loss-free bias update,
# so that a load not summed over ranks would show (in the loss and in expert_bias)
EXACT = ["--model.dropout=0.0", "--model.moe.n_expert=4", "--model.moe.top_k=2",
         "--model.moe.first_dense=1", "--model.moe.bias_update_rate=0.01",
         "--train.max_steps=4", "--train.ckpt_interval=2", "--train.keep_checkpoints=0",
         "--train.eval_interval=2", "--train.eval_batches=3"]
B = 2  # the micro-batch of each rank
RTOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(n: int, args: list[str], **env) -> list[subprocess.Popen]:
    """n ranks of tests/dist_worker.py, with the rendezvous variables torchrun would set."""
    common = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
              "WORLD_SIZE": str(n), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
    return [subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], cwd=ROOT,
                             env={**common, "RANK": str(r), "LOCAL_RANK": str(r)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(n)]


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a rank hung") from None
        out.append((p.returncode, stdout, stderr))
    return out


def launch(n: int, args: list[str], **env) -> list[tuple[int, str, str]]:
    results = finish(start(n, args, **env))
    failed = [f"rank {rank} exited {code}:\n{err[-2000:]}" for rank, (code, _, err) in enumerate(results) if code]
    assert not failed, "\n".join(failed)  # every rank's own words: one crash closes the others' connections
    return results


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL)


def assert_same_losses(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        for key in ("loss", "aux_loss", "val_loss", "grad_norm"):
            if key in w:
                assert close(g[key], w[key]), (g["step"], key, g[key], w[key])
        assert g["tokens"] == w["tokens"]  # tokens per step = batch x seq x accum x world
        if "moe_max_load" in w:
            assert g["moe_max_load"] == pytest.approx(w["moe_max_load"], rel=RTOL)  # global load


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, corpus):
    """One process, grad_accum 2 x micro-batch B: what 2 ranks x B must reproduce."""
    out = tmp_path_factory.mktemp("one")
    torch.set_num_threads(1)
    trainer = Trainer(make(out, corpus, "run", *EXACT, f"--train.batch_size={B}", "--train.grad_accum=2"))
    trainer.fit()
    return trainer


@pytest.fixture(scope="module", params=["ddp", "fsdp2"])
def two_ranks(request, tmp_path_factory, corpus):
    """2 ranks x micro-batch B, grad_accum 1: (out_dir, results per rank, each rank's view)."""
    out = tmp_path_factory.mktemp(request.param) / "run"
    args = [*TINY, *corpus, *EXACT, f"--train.batch_size={B}", "--train.grad_accum=1",
            f"--train.parallel={request.param}", f"--train.out_dir={out}"]
    results = launch(2, args)
    views = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, results, views


@pytest.mark.slow  # two processes start and import torch: ~20-40 s per layout on 2 cores
def test_two_ranks_match_one_process_with_accumulation(two_ranks, baseline):
    out, results, views = two_ranks
    assert_same_losses(metrics(out), metrics(baseline.out_dir))
    assert numerics(views[0]["log"]) == numerics(views[1]["log"])  # the same global figures on each rank
    # rank 0 alone writes: each step once in metrics.jsonl, one summary line, no bar from rank 1
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    assert "done: 4 steps" in results[0][1] and without_torch_logs(results[1][1]) == ""
    assert "4/4" not in results[1][2]
    # MoE: the bias update used the load summed over ranks, so expert_bias is identical on both
    # ranks and equals one process's, and it did move (the test could fail)
    assert views[0]["bias"] == views[1]["bias"]
    want = [m.router.expert_bias.tolist() for m in baseline.model.moe_layers]
    assert views[0]["bias"] == want  # +-rate steps decided by integer loads: exact
    assert any(abs(b) > 0 for layer in want for b in layer)
    # each step reads the device once on each rank (losses, norm, MoE statistics and the agreed stop
    # signal together), plus once in the MoE layer: the CPU's expert loop reads its token counts
    assert all(view["reads"] == [2] * 4 for view in views), [view["reads"] for view in views]


@pytest.mark.slow
def test_two_ranks_accumulating_match_one_process_with_their_product(tmp_path, corpus, one_thread):
    """2 DDP ranks x grad_accum 2 read the global micro-batches rank * 2 + m, which one process with
    grad_accum 4 reads in turn, and all-reduce the gradients once, after the last micro-batch."""
    one = Trainer(make(tmp_path, corpus, "one", *EXACT, "--train.batch_size=1", "--train.grad_accum=4"))
    one.fit()
    out = tmp_path / "two"
    launch(2, [*TINY, *corpus, *EXACT, "--train.batch_size=1", "--train.grad_accum=2", "--train.parallel=ddp",
               f"--train.out_dir={out}"])
    assert_same_losses(metrics(out), metrics(one.out_dir))


@pytest.mark.slow
def test_checkpoint_of_two_ranks_resumes_on_one(two_ranks, baseline, tmp_path, corpus, one_thread):
    """N -> 1: the step-2 checkpoint of 2 ranks (DDP or FSDP2) resumes in one process with
    grad_accum 2 and reproduces the straight run's steps 3 and 4."""
    out = tmp_path / "run"
    shutil.copytree(two_ranks[0], out)
    shutil.rmtree(ckpt.checkpoint_dir(out) / "step_00000004")
    cfg = make(tmp_path, corpus, "run", *EXACT, f"--train.batch_size={B}", "--train.grad_accum=2")
    resumed = fit(Trainer(cfg))
    assert resumed[0]["step"] == 3
    assert_same_losses(resumed, metrics(baseline.out_dir)[2:])


@pytest.mark.slow
def test_checkpoint_of_one_process_resumes_on_two(baseline, tmp_path, corpus):
    """1 -> 2: the one-process step-2 checkpoint resumes on 2 DDP ranks with grad_accum 1."""
    out = tmp_path / "run"
    shutil.copytree(baseline.out_dir, out)
    shutil.rmtree(ckpt.checkpoint_dir(out) / "step_00000004")
    args = [*TINY, *corpus, *EXACT, f"--train.batch_size={B}",
            "--train.grad_accum=1", f"--train.out_dir={out}"]
    launch(2, args)
    got = metrics(out)
    assert [r["step"] for r in got] == [1, 2, 3, 4]  # steps 1-2 kept from the first run
    assert_same_losses(got[2:], metrics(baseline.out_dir)[2:])


@pytest.mark.slow
def test_muon_on_two_fsdp2_ranks_matches_one_process_and_resumes_on_one(tmp_path, corpus, one_thread):
    """Muon orthogonalizes whole matrices: under FSDP2 each rank gathers its shards, and the
    checkpoint gathers Muon's and AdamW's states part by part. Both must give what one process
    with grad_accum 2 gives, and the step-2 checkpoint must resume there."""
    muon = [*EXACT, "--optim.name=muon", f"--train.batch_size={B}"]
    one = Trainer(make(tmp_path, corpus, "one", *muon, "--train.grad_accum=2"))
    one.fit()
    out = tmp_path / "two"
    launch(2, [*TINY, *corpus, *muon, "--train.grad_accum=1", "--train.parallel=fsdp2",
               f"--train.out_dir={out}"])
    assert_same_losses(metrics(out), metrics(one.out_dir))
    shutil.rmtree(ckpt.checkpoint_dir(out) / "step_00000004")
    resumed = fit(Trainer(make(tmp_path, corpus, "two", *muon, "--train.grad_accum=2")))
    assert resumed[0]["step"] == 3
    assert_same_losses(resumed, metrics(one.out_dir)[2:])

@pytest.mark.slow
def test_sigterm_on_one_rank_stops_every_rank_after_one_checkpoint(tmp_path, corpus):
    out = tmp_path / "run"
    procs = start(2, [*TINY, *corpus, "--train.max_steps=100000", "--train.ckpt_interval=0",
                      "--train.eval_interval=0", f"--train.out_dir={out}"])
    deadline = time.time() + 240
    while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "no progress"
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # rank 1 only, as a scheduler pre-empting one node would
    results = finish(procs)
    assert [code for code, _, _ in results] == [143, 143], results[0][2][-1000:]
    views = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    stopped = views[0]["summary"]["steps"]
    assert views[1]["summary"]["steps"] == stopped and 3 <= stopped < 100000
    assert [p.name for p in ckpt.list_checkpoints(out)] == [f"step_{stopped:08d}"]  # one, written once
    assert "stopped by SIGTERM" in results[0][1]


@pytest.mark.slow
def test_a_dead_rank_makes_the_others_exit_with_an_error(tmp_path, corpus):
    results = finish(start(2, [*TINY, *corpus, "--train.max_steps=50", "--train.dist_timeout_s=60",
                               f"--train.out_dir={tmp_path / 'run'}"], DIE_AT_STEP="3"), timeout=240)
    assert results[1][0] == 3  # the rank that died
    code, _, err = results[0]
    assert code == 1, err[-1000:]
    assert "another rank stopped or cannot be reached" in error_line(err)


# ----- bad input: one line, exit 2, nothing overwritten (no processes started) -----------------------
def test_fsdp2_without_a_process_group_is_refused(base, corpus, cfg_file, capsys):
    before = snapshot(base)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={base}", "--train.parallel=fsdp2")
    assert code == 2 and "train.parallel='fsdp2' needs a process group" in error_line(err)
    assert snapshot(base) == before


def test_nccl_on_cpu_is_refused(base, corpus, cfg_file, capsys, monkeypatch):
    for name, value in [("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(free_port()))]:
        monkeypatch.setenv(name, value)
    before = snapshot(base)
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={base}", "--train.dist_backend=nccl")
    assert code == 2 and "train.dist_backend='nccl' needs CUDA" in error_line(err)
    assert not torch.distributed.is_initialized()
    assert snapshot(base) == before


def test_unknown_parallel_layout_is_refused(base, corpus, cfg_file, capsys):
    code, _, err = cli(capsys, cfg_file, *TINY, *corpus, f"--train.out_dir={base}", "--train.parallel=zero1")
    assert code == 2 and "train.parallel must be one of 'ddp', 'fsdp2'" in error_line(err)


# ----- activation checkpointing ------------------------------------------------------------------------
def test_activation_checkpointing_same_losses_fewer_saved_bytes(tmp_path, corpus, one_thread):
    """Recomputing each block in backward changes no number (dropout masks included: the RNG is
    replayed), and autograd keeps fewer bytes for backward."""
    runs, saved = {}, {}
    for ac in (False, True):
        trainer = Trainer(make(tmp_path, corpus, f"ac{ac}", "--train.max_steps=3", "--train.eval_interval=0",
                               f"--train.activation_checkpointing={str(ac).lower()}"))
        runs[ac] = [(r["loss"], r["grad_norm"]) for r in fit(trainer)]
        x, y = trainer._batch(trainer.data.train, (0, 0, 0, 0, 0))
        with saved_activation_bytes(trainer.model) as n:
            trainer.model(x, y)[1]["loss"].backward()
        saved[ac] = n[0]
    assert runs[True] == runs[False]
    assert saved[True] < 0.7 * saved[False], saved


@pytest.mark.slow
def test_bench_parallel_under_torchrun(tmp_path):
    """scripts/bench_parallel.py through the real torchrun launcher: one JSON line per variant."""
    out = tmp_path / "parallel.jsonl"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    run = subprocess.run([torchrun, "--nproc_per_node", "1", "--master_port", str(free_port()),
                          str(ROOT / "scripts" / "bench_parallel.py"), "--tiny", "--device", "cpu",
                          "--variants", "none,ddp,fsdp2+ac", "--steps", "1", "--warmup", "1",
                          "--out", str(out)],
                         cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in records] == ["none", "ddp", "fsdp2+ac"]
    assert all(r["tok_s"] > 0 and r["world_size"] == 1 and r["tokens_per_step"] == 4 * 64 for r in records)
    # the same model and batch: DDP saves what the bare model saves; recomputation saves less
    assert records[1]["saved_activation_bytes"] == records[0]["saved_activation_bytes"]
    assert records[2]["saved_activation_bytes"] < records[0]["saved_activation_bytes"] / 2


def test_a_failed_collective_becomes_one_distributed_error_and_other_errors_pass_through():
    import torch.distributed as dist

    from train.errors import DistributedError
    from train.parallel import Dist, clear_errors

    def raised(d, error):
        try:
            with clear_errors(d, 30):
                raise error
        except Exception as e:  # noqa: BLE001 - the kind is what is checked
            return e

    group = Dist(rank=1, world_size=2, active=True)
    e = raised(group, RuntimeError("[gloo] Connection closed by peer"))
    assert type(e) is DistributedError and str(e).startswith("rank 1: another rank stopped")
    assert "train.dist_timeout_s=30" in str(e)
    assert type(raised(Dist(), dist.DistError("store timed out"))) is DistributedError
    # without a process group a message that merely mentions a timeout is not another rank's doing
    assert type(raised(Dist(), RuntimeError("read timed out"))) is RuntimeError
    assert type(raised(group, RuntimeError("CUDA out of memory"))) is RuntimeError


def test_tied_weights_are_stored_once_under_the_name_safetensors_keeps(tmp_path):
    """unique_state drops the tied names that safetensors' own save_model drops, and records each as
    the same alias, so that a checkpoint reads as if save_model had written it."""
    from safetensors import safe_open
    from safetensors.torch import save_model

    from train.parallel import unique_state

    model = GPT(tiny(tie_embeddings=True))
    save_model(model, str(tmp_path / "model.safetensors"))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names, aliases = set(f.keys()), f.metadata()
    tensors, our_aliases = unique_state(model)
    assert our_aliases and set(tensors) == names and our_aliases == aliases


def test_the_optimizer_state_is_gathered_whole_part_by_part_on_rank_zero_only():
    """MuonWithAdamW's state_dict is {"muon": ..., "adamw": ...}: each part's sharded tensors are
    gathered (full_tensor()), and every rank but 0 gets None."""
    from train.parallel import Dist, full_optimizer_state

    class Shard:  # what a sharded tensor offers: its whole value
        def __init__(self, whole):
            self.whole = whole

        def full_tensor(self):
            return self.whole

    a, b = torch.ones(2, 3), torch.arange(4.0)
    groups = [{"lr": 0.1, "params": [0]}]
    sd = {"muon": {"state": {0: {"momentum_buffer": Shard(a)}}, "param_groups": groups},
          "adamw": {"state": {0: {"exp_avg": Shard(b), "step": torch.tensor(3.0)}}, "param_groups": groups}}
    full = full_optimizer_state(sd, Dist())
    assert full["muon"]["state"][0]["momentum_buffer"] is a and full["muon"]["param_groups"] == groups
    assert full["adamw"]["state"][0]["exp_avg"] is b and float(full["adamw"]["state"][0]["step"]) == 3.0
    assert full_optimizer_state(sd, Dist(rank=1, world_size=2, active=True)) is None
