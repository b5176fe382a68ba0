"""Which code one config runs that another does not, found by building both models and comparing them.

Modules are compared path by path (`named_modules()`, whose order, the order of construction, is
close to forward order):
- a class is *new* when a module of it appears in one model and nowhere in the other (RoPE's
  `Rotary`); a function is new when a module holds it (`self.act`, or a bound kernel such as
  `self.attend`) in one model only;
- a class is *changed* when one of its modules, or a torch module it owns (an `nn.Linear`), differs
  in place: a child added, removed or of another class, a parameter of another shape, added,
  removed or tied, a buffer with other values, a plain setting (`window`).
Nothing runs forward: construction alone shows what the config picked. Models too large to hold in
memory are built on the meta device, where buffers have shapes but no values.
"""

import hashlib
import inspect
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from model import GPT, ModelConfig
from model.accounting import param_count

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("model", "train")
MAX_REAL_PARAMS = 50_000_000  # larger models are built on the meta device
PLAIN = (bool, int, float, str, tuple, type(None))
LAYER = re.compile(r"\.(\d+)(?=\.|$)")


@dataclass
class Code:
    """A class or function one model runs and the other does not run, or runs with other settings."""
    obj: object
    new: bool  # absent from the other model altogether
    order: int  # where it is first met in the model's modules
    changes: dict[str, set[int]] = field(default_factory=dict)  # "path: what" -> the layers it holds in
    names: set[str] = field(default_factory=set)  # the attributes and children that differ

    @property
    def name(self) -> str:
        return self.obj.__qualname__

    def change_lines(self) -> list[str]:
        """One line per change, its layers folded into the path (`transformer.h.{0,2}.attn: ...`)."""
        return [text.replace(".{}", "." + _layers(layers)) for text, layers in self.changes.items()]


def is_project(obj: object) -> bool:
    return getattr(obj, "__module__", "").split(".")[0] in PROJECT_PACKAGES


def where(obj: object) -> tuple[str, int, int]:
    """(file relative to the repository, first line, number of lines) of a class or function."""
    lines, start = inspect.getsourcelines(obj)
    path = Path(inspect.getsourcefile(obj)).resolve()
    return (str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)), start, len(lines)


def build(cfg: ModelConfig) -> GPT:
    """The model of `cfg`, on the meta device when it is too large to build here."""
    if param_count(cfg) <= MAX_REAL_PARAMS:
        return GPT(cfg)
    with torch.device("meta"):
        return GPT(cfg)


def classes_run(model: nn.Module) -> list[type]:
    """The project classes among the model's modules and their project base classes, forward order."""
    out: dict[type, None] = {}
    for _, module in model.named_modules():
        for cls in type(module).__mro__:
            if is_project(cls) and issubclass(cls, nn.Module):
                out.setdefault(cls)
    return list(out)


def compare(mine: nn.Module, other: nn.Module) -> list[Code]:
    """The classes and functions `mine` runs that `other` does not, or runs differently; forward order."""
    a, b = dict(mine.named_modules()), dict(other.named_modules())
    a_state, b_state = _states(mine), _states(other)
    b_classes = {cls for m in b.values() for cls in type(m).__mro__}
    b_functions = set(_functions(other))
    order = {path: i for i, path in enumerate(a)}
    found: dict[object, Code] = {}

    def note(obj: object, at: str = "", path: str = "", what: str = "", key: str = "", new: bool = False) -> None:
        code = found.setdefault(obj, Code(obj, new, order[at]))
        code.new |= new
        code.names |= {key} if key else set()
        code.names |= {path.rpartition(".")[2]} if path != at else set()
        if what:
            layer = LAYER.search(path)
            code.changes.setdefault(f"{LAYER.sub('.{}', path, count=1)}: {what}", set()).add(
                int(layer.group(1)) if layer else -1)

    replaced: list[str] = []  # added, or of another class: their children are theirs, not changes
    for path, module in a.items():
        if type(module) not in b_classes and is_project(type(module)):
            note(type(module), path, path, new=True)
        if any(path.startswith(r + ".") for r in replaced):
            continue
        owner, at = _owner(path, a)
        if path not in b or type(b[path]) is not type(module):
            replaced.append(path)
        if path not in b:
            if _parent(path) in b and type(b[_parent(path)]) is type(a[_parent(path)]):
                note(owner, at, path, f"added ({type(module).__name__})")
        elif type(b[path]) is not type(module):
            note(owner, at, path, f"{type(b[path]).__name__} -> {type(module).__name__}")
        else:
            for key in sorted(a_state[path].keys() | b_state[path].keys()):
                old, new = b_state[path].get(key, "absent"), a_state[path].get(key, "absent")
                if old != new and {old, new} != {"None", "absent"}:  # a slot that is None when off and a
                    # child module when on: the module itself is listed as added or removed
                    note(owner, at, path, f"{key} {old} -> {new}", key)
    for path, module in b.items():
        if path not in a and _parent(path) in a and type(a[_parent(path)]) is type(b[_parent(path)]):
            owner, at = _owner(_parent(path), a)
            note(owner, at, path, f"removed ({type(module).__name__})")
    for fn, path in _functions(mine).items():
        if fn not in b_functions and is_project(fn):
            note(fn, path, path, new=True)
    return sorted(found.values(), key=lambda c: (c.order, not c.new))


def _owner(path: str, modules: dict[str, nn.Module]) -> tuple[type, str]:
    """The project class whose code holds the module at `path`: its own, or its nearest ancestor's."""
    while not is_project(type(modules[path])) and path:
        path = _parent(path)
    return type(modules[path]), path


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _states(model: nn.Module) -> dict[str, dict[str, str]]:
    """Per module path, what it holds besides its children: parameter shapes (and ties), buffers
    (shape and a digest of the values), and plain settings; callables by name."""
    first: dict[int, str] = {}
    out = {}
    for path, module in model.named_modules():
        state = {}
        for name, p in module._parameters.items():
            shape = "none" if p is None else f"{tuple(p.shape)}"
            seen = first.setdefault(id(p), f"{path}.{name}") if p is not None else None
            state[name] = shape if seen in (None, f"{path}.{name}") else f"{shape}, tied to {seen}"
        for name, buf in module._buffers.items():
            state[name] = "none" if buf is None else f"{tuple(buf.shape)} {_digest(buf)}".rstrip()
        for name, value in vars(module).items():
            if name.startswith("_") or name == "training":
                continue
            if isinstance(value, PLAIN) and not (isinstance(value, tuple) and not all(
                    isinstance(v, PLAIN) for v in value)):
                state[name] = repr(value)
            elif callable(value) and hasattr(value, "__qualname__"):
                state[name] = value.__qualname__
        out[path] = state
    return out


def _functions(model: nn.Module) -> dict[object, str]:
    """The functions the modules hold as attributes (`self.act = swiglu`, `self.attend = self.x`), with
    the path of the first module holding each."""
    out: dict[object, str] = {}
    for path, module in model.named_modules():
        for name, value in vars(module).items():
            fn = value.__func__ if isinstance(value, types.MethodType) else value
            if isinstance(fn, types.FunctionType) and not name.startswith("_"):
                out.setdefault(fn, path)
    return out


def _digest(t: torch.Tensor) -> str:
    if t.device.type == "meta":
        return ""
    data = t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return "values " + hashlib.sha1(data).hexdigest()[:8]


def _layers(layers: set[int]) -> str:
    numbers = sorted(layers)
    return str(numbers[0]) if len(numbers) == 1 else "{" + ",".join(map(str, numbers)) + "}"
