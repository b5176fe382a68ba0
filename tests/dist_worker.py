"""One rank of a test run (tests/test_distributed.py starts N of these with torchrun's variables).

`python tests/dist_worker.py --section.key=value ...` trains like `python -m train`, then writes this
rank's view (its metrics records, which rank 0 alone writes to metrics.jsonl; every MoE layer's
expert_bias; the summary; the host reads of device values in each step) to
<out_dir>/rank<R>.json. With DIE_AT_STEP=K in its environment, rank 1 dies abruptly before step K.
"""

import json
import os
import sys
from pathlib import Path

import torch

from scripts.device_reads import DeviceReads
from train import parallel
from train.cli import run_cli
from train.config import load_config
from train.trainer import Trainer


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    trainer = Trainer(load_config(None, argv))
    reads = []  # host reads of device values per step (scripts/device_reads.py)
    counted_step = trainer.train_step

    def counting_step():
        with DeviceReads() as seen:
            record = counted_step()
        reads.append(seen.reads)
        return record
    trainer.train_step = counting_step
    logged = []  # the metrics records of this rank
    log = trainer._log

    def log_and_keep(record):
        log(record)
        logged.append(record)
    trainer._log = log_and_keep
    die_at = int(os.environ.get("DIE_AT_STEP", 0))
    if die_at and trainer.rank == 1:
        step = trainer.train_step

        def dying_step():
            if trainer.step + 1 == die_at:
                os._exit(3)  # no cleanup, no goodbye: as a crashed node
            return step()
        trainer.train_step = dying_step
    try:
        summary = trainer.fit()
        view = {"log": logged, "summary": summary, "reads": reads,
                "bias": [m.router.expert_bias.tolist() for m in trainer.model.moe_layers]}
        (Path(trainer.out_dir) / f"rank{trainer.rank}.json").write_text(json.dumps(view))
        return summary.get("exit_code", 0)
    finally:
        parallel.shutdown()


if __name__ == "__main__":
    sys.exit(run_cli(main))
