"""The tasks `--task` can name: the built-in ones, or a JSONL file of multiple-choice items.

A task has a `name` (the spec as given), a `kind` ("choice" or "generate"), the `split` it is
scored on, and `items(split, n, seed)`; a choice task has a `delimiter` between context and
choice, a generative task a `chance` of 0 and `extract(completion) -> answer`. A spec is
`NAME` or `NAME:key=value,flag,...`; each task's module documents its options.
"""

from dataclasses import dataclass
from pathlib import Path

from ..data import DataConfig
from ..errors import ConfigError
from .arithmetic import Arithmetic
from .cloze import StdlibCloze
from .jsonl import JsonlTask
from .passkey import Passkey
from .pyexpr import PythonEval

BUILT_IN = {"arithmetic": Arithmetic, "passkey": Passkey, "python-eval": PythonEval, "stdlib-cloze": StdlibCloze}


@dataclass
class TaskEnv:
    """What building a task may need: the run's tokenizer, context and data config."""

    tok: object
    block_size: int
    data: DataConfig


def build_task(spec: str, env: TaskEnv):
    """The task `spec` names, its options checked; a ConfigError in one line otherwise."""
    name, _, options = spec.partition(":")
    if name in BUILT_IN:
        return BUILT_IN[name](spec, options, env)
    path = spec if Path(spec).is_file() else name
    if Path(path).is_file() or path.endswith(".jsonl"):
        if not Path(path).is_file():
            raise ConfigError(f"--task {spec}: no such file {path!r}")
        return JsonlTask(spec, path, options if path == name else "")
    raise ConfigError(f"--task {spec}: unknown task {name!r} (built in: {', '.join(sorted(BUILT_IN))}; "
                      f"or a .jsonl file of multiple-choice items)")
