"""The stop agreement (train/stop.py) and the run guards (train/guard.py), without a training run:
flags combined across ranks by their maximum, the time limit's boundary, the signal handler's
lifetime, the out_dir probe, resume checks and the finite-weights check."""

import os
import signal
import threading

import pytest
import torch

from tiny_run import snapshot
from train.config import ConfigError, RunConfig, to_toml
from train.guard import (RUN_CONFIG_HEADER, StopSignals, all_finite, check_out_dir, check_same_run,
                         check_same_tokenizer)
from train.parallel import Dist
from train.stop import StopAgreement

CPU = torch.device("cpu")


class TwoRanks:
    """A stand-in for an active two-rank Dist: the other rank's flags are `other`."""

    active, rank, world_size = True, 0, 2

    def __init__(self, other: list[float]) -> None:
        self.other = torch.tensor(other)

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.copy_(torch.maximum(tensor, self.other))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.add_(self.other)


def agreement(dist, received=None, max_seconds=0.0, elapsed=0.0) -> StopAgreement:
    stop = StopAgreement(max_seconds, lambda: elapsed, dist, CPU)
    if received is not None:
        stop.signals = StopSignals()  # not entered: only its flag is read
        stop.signals.received = received
    return stop


def test_ranks_agree_on_the_largest_signal_and_any_rank_out_of_time():
    """SIGINT (2) here and SIGTERM (15) on the other rank agree on SIGTERM, the larger number; a
    time limit reached on the other rank only stops this one too."""
    stop = agreement(TwoRanks([15.0, 1.0]), received=signal.SIGINT, max_seconds=100.0, elapsed=5.0)
    assert stop.local() == [2.0, 0.0]
    stop.agree()
    assert stop.signal is signal.SIGTERM and stop.out_of_time
    quiet = agreement(TwoRanks([0.0, 0.0]), received=signal.SIGINT)
    quiet.agree()
    assert quiet.signal is signal.SIGINT and not quiet.out_of_time


def test_the_other_ranks_signal_stops_this_one():
    stop = agreement(TwoRanks([float(signal.SIGTERM), 0.0]))
    stop.agree()
    assert stop.signal is signal.SIGTERM and not stop.out_of_time


@pytest.mark.parametrize("max_seconds, elapsed, out", [(10.0, 9.999, False), (10.0, 10.0, True),
                                                       (10.0, 11.0, True), (0.0, 1e9, False)])
def test_the_time_limit_is_reached_at_max_seconds_and_zero_means_none(max_seconds, elapsed, out):
    stop = agreement(Dist(), max_seconds=max_seconds, elapsed=elapsed)
    stop.agree()
    assert stop.out_of_time is out and stop.signal is None


def test_the_agreed_flags_are_read_back_by_position():
    """set() takes [signal number, out of time] as read back from the device."""
    stop = agreement(Dist())
    stop.set([15.0, 0.0])
    assert stop.signal is signal.SIGTERM and not stop.out_of_time
    stop.set([0.0, 1.0])
    assert stop.signal is None and stop.out_of_time


def test_a_signal_is_caught_only_inside_the_block_and_the_old_handler_returns():
    """Inside catching_signals a SIGTERM only sets the flag; after it, the flag is no longer
    read and SIGTERM's previous handler is back."""
    before = signal.getsignal(signal.SIGTERM)
    stop = agreement(Dist())
    with stop.catching_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.local()[0] == float(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    assert stop.local() == [0.0, 0.0]


def test_stop_signals_installs_handlers_only_in_the_main_thread():
    before = {s: signal.getsignal(s) for s in StopSignals.SIGNALS}
    seen = {}

    def worker():
        with StopSignals():
            seen.update({s: signal.getsignal(s) for s in StopSignals.SIGNALS})

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == before
    with StopSignals() as guard:
        assert all(signal.getsignal(s) == guard._handle for s in StopSignals.SIGNALS)
    assert {s: signal.getsignal(s) for s in StopSignals.SIGNALS} == before


# --- out_dir, resuming, finite weights ----------------------------------------------------------

def test_check_out_dir_creates_the_folder_and_leaves_nothing_in_it(tmp_path):
    target = tmp_path / "a" / "b"
    check_out_dir(target)
    assert target.is_dir() and list(target.iterdir()) == []


def test_a_config_toml_that_a_run_wrote_is_a_restartable_run(tmp_path):
    """Its first line is the run's header: accepted; the same file with any other first comment is
    the user's and refused, untouched."""
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "config.toml").write_text(RUN_CONFIG_HEADER + "[train]\n")
    check_out_dir(ours)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.toml").write_text("# The resolved config of my run\n[train]\n")
    before = snapshot(theirs)
    with pytest.raises(ConfigError, match="holds config.toml but no run"):
        check_out_dir(theirs)
    assert snapshot(theirs) == before


def checkpoint(path, cfg: RunConfig, state: str):
    path.mkdir(parents=True)
    (path / "config.toml").write_text(to_toml(cfg))
    (path / "state.json").write_text(state)
    return path


def test_a_checkpoint_without_a_data_fingerprint_resumes_and_another_fingerprint_is_refused(tmp_path):
    cfg = RunConfig()
    check_same_run(checkpoint(tmp_path / "old" / "checkpoints" / "s", cfg, "{}"), cfg, "abc")
    same = checkpoint(tmp_path / "new" / "checkpoints" / "s", cfg, '{"data_fingerprint": "abc"}')
    check_same_run(same, cfg, "abc")
    with pytest.raises(ConfigError, match="data fingerprint: abc -> abd"):
        check_same_run(same, cfg, "abd")


def test_the_tokenizer_check_compares_the_ranks_not_where_they_lie(tmp_path):
    """The same ranks moved to another path resume; other ranks at the recorded path do not."""
    (tmp_path / "tokenizer.json").write_text('{"tokenizer": "gpt2", "path": "/a/gpt2.tiktoken", "ranks_sha256": "h1"}')
    check_same_tokenizer(tmp_path, {"path": "/b/gpt2.tiktoken", "ranks_sha256": "h1"})
    with pytest.raises(ConfigError, match="differ from those this run trained with"):
        check_same_tokenizer(tmp_path, {"path": "/a/gpt2.tiktoken", "ranks_sha256": "h2"})


def test_all_finite_checks_every_element_of_parameters_and_buffers():
    model = torch.nn.BatchNorm1d(4)
    assert all_finite(model)
    with torch.no_grad():
        model.weight[2] = float("nan")  # one element of a parameter
    assert not all_finite(model)
    model = torch.nn.BatchNorm1d(4)
    model.running_var[3] = float("inf")  # one element of a buffer
    assert not all_finite(model)
    model.running_var[3] = 1.0
    model.num_batches_tracked += 10**6  # an integer buffer is not checked (and always finite)
    assert all_finite(model)
