"""A pytest plugin (or import) for correctness runs on a GPU: every Triton autotuner keeps only its
first N configs (N from the environment's AUTOTUNE_KEEP, default 3). flash-linear-attention's first
call of each kernel otherwise compiles and times every config, minutes in all on an H200, while a
kernel's result does not depend on which config runs it. Its speed does: never time under this.

    PYTHONPATH=scripts python -m pytest -p triton_first_configs tests/test_deltanet.py -k fla

A config that cannot run on the device (too much shared memory) is skipped by the autotuner as
usual, so keeping a few rather than one leaves it one that runs. Without Triton it does nothing.
"""

import os

KEEP = int(os.environ.get("AUTOTUNE_KEEP", "3"))
if KEEP < 1:
    raise ValueError(f"AUTOTUNE_KEEP must be >= 1, got {KEEP}")
try:
    from triton.runtime import autotuner
except ImportError:  # a CPU build of PyTorch: no kernels to tune
    autotuner = None
else:
    _init = autotuner.Autotuner.__init__

    def _first_configs(self, fn, arg_names, configs, *args, **kwargs):
        _init(self, fn, arg_names, list(configs)[:KEEP], *args, **kwargs)

    autotuner.Autotuner.__init__ = _first_configs
