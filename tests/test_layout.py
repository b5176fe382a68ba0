"""The package boundaries docs/layout.md promises: model/ never imports train/ (not even inside a
function), the trainer uses only the model package's public names, and the layout names every
module."""
import ast
import re
from pathlib import Path

import model
from train.config import read_toml

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import statement in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def test_the_model_package_never_imports_train():
    files = sorted((ROOT / "model").rglob("*.py"))
    assert len(files) > 30
    offenders = [f"{f.relative_to(ROOT)}: {mod}" for f in files for mod, _ in imported_modules(f)
                 if mod == "train" or mod.startswith("train.")]
    assert not offenders, offenders


def test_the_trainer_imports_only_the_model_packages_public_names():
    from_model = [(mod, names) for mod, names in imported_modules(ROOT / "train/trainer.py")
                  if mod == "model" or mod.startswith("model.")]
    assert from_model, "the trainer builds a GPT"
    assert all(mod == "model" for mod, _ in from_model), from_model
    assert all(name in model.__all__ for _, names in from_model for name in names), from_model


def default_path() -> dict[str, int]:
    """{file: lines} of the model/ functions that run while GPT(ModelConfig()) is built and does one
    forward, loss and backward (model/config.py aside): each function counted once, first line to
    last."""
    import sys

    import torch

    from model import GPT, ModelConfig

    seen = {}

    def record(frame, event, arg):
        code = frame.f_code
        path = Path(code.co_filename)
        if event == "call" and ROOT / "model" in path.parents and path.name != "config.py" \
                and code.co_name != "<module>":
            seen[(path, code.co_firstlineno)] = max(line for _, _, line in code.co_lines() if line)

    sys.setprofile(record)
    try:
        model = GPT(ModelConfig(n_layer=2))
        idx = torch.randint(0, 50257, (1, 8))
        sum(model(idx, idx)[1].values()).backward()
    finally:
        sys.setprofile(None)
    files = {}
    for (path, first), last in seen.items():
        name = str(path.relative_to(ROOT))
        files[name] = files.get(name, 0) + last - first + 1
    return files


def test_the_gpt2_path_reads_in_one_sitting():
    """The code GPT-2 runs: at most 6 files and ~600 lines besides model/config.py, and no
    stand-in modules (a class that only passes its input through) in its module tree."""
    files = default_path()
    assert "model/gpt.py" in files and "model/mixer/attention.py" in files, files
    assert len(files) <= 6 and sum(files.values()) <= 600, files
    from model import GPT, ModelConfig

    names = {type(m).__name__ for m in GPT(ModelConfig(n_layer=2)).modules()}
    assert not any(name.startswith("No") or name == "Identity" for name in names), names


def test_the_layout_names_every_module():
    """Each module and folder of model/ (its root, mixer/, ffn/, inference/), train/ and scripts/ is
    named in docs/layout.md, and each top-level folder in the README's Layout, so the map a reader
    starts from is the tree."""
    block = (ROOT / "docs/layout.md").read_text().split("```")[1]
    named = set(re.findall(r"[\w.]+", block))
    folders = ["model", "model/mixer", "model/ffn", "model/inference", "train", "scripts"]
    missing = [str(p.relative_to(ROOT)) for folder in folders for p in sorted((ROOT / folder).iterdir())
               if (p.suffix in (".py", ".sh") and p.stem != "__init__" and p.stem != "__main__"
                   and p.stem not in named and p.name not in named)
               or (p.is_dir() and p.name != "__pycache__" and p.name not in named)]
    assert not missing, f"docs/layout.md does not name {missing}"
    readme = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    folders = ["model/", "inference/", "train/", "post/", "evals/", "configs/", "scripts/", "tests/", "docs/"]
    assert all(f in readme for f in folders), [f for f in folders if f not in readme]


def test_an_installed_copy_has_every_package():
    """pyproject.toml lists its packages by hand; an editable install hides a missing one, a wheel
    would lose it. The list must be every folder of model/ and train/ with an __init__.py."""
    listed = read_toml(ROOT / "pyproject.toml", "pyproject.toml")["tool"]["setuptools"]["packages"]
    found = [".".join(p.parent.relative_to(ROOT).parts) for top in ("model", "train")
             for p in (ROOT / top).rglob("__init__.py")]
    assert sorted(listed) == sorted(found)
