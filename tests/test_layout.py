"""The package boundaries the README promises: model/ never imports train/ (not even inside a
function), and the trainer uses only the model package's public names."""
import ast
from pathlib import Path

import model

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
