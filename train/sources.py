"""Where documents come from: the Python standard library, local files, or a Hugging Face dataset.

`resolve_source` turns `data.source` into a sorted list of (document id, path) plus the identity
that goes into the cache fingerprint (paths, sizes and mtimes, so an edited file means new tokens);
`local_documents` and `hf_documents` then yield (document id, text) pairs for the tokenizer.
Document ids are paths relative to the source root, so the val split (a hash of the id) is the
same on every machine.
"""

import glob
import hashlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

from .errors import one_line

STDLIB = "python-stdlib"
HF_PREFIX = "hf:"
_STDLIB_SKIP_DIRS = {"site-packages", "dist-packages"}


def resolve_source(cfg) -> tuple[list[tuple[str, Path]], dict, str]:
    """Return (files, identity for the fingerprint, description); files is [] for hf: sources."""
    src = cfg.source
    if cfg.is_hf:
        data_files = [_file_stamp(f) if os.path.isfile(f) else f for f in cfg.hf_data_files]
        identity = {"hf": src[len(HF_PREFIX):], "config": cfg.hf_config, "split": cfg.hf_split,
                    "text_field": cfg.hf_text_field, "data_files": data_files}
        return [], identity, f"{src} (split {cfg.hf_split!r}, field {cfg.hf_text_field!r})"
    if src == STDLIB:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = _walk(root, cfg, stdlib=True)
        extra = {"python": sys.version}
        what = f"the Python {sys.version.split()[0]} standard library at {root}"
    elif os.path.isdir(src):
        root = Path(src)
        files, extra, what = _walk(root, cfg, stdlib=False), {}, f"the directory {src}"
    elif os.path.isfile(src):
        root = Path(src).parent
        files, extra, what = [(Path(src).name, Path(src))], {"file": True}, f"the file {src}"
    elif any(c in src for c in "*?["):
        root = _glob_root(src)
        paths = [p for p in glob.glob(src, recursive=True) if os.path.isfile(p)]
        files = sorted((Path(os.path.relpath(p, root)).as_posix(), Path(p)) for p in paths)
        extra, what = {"glob": src}, f"files matching {src}"
    else:
        raise ValueError(f"data.source={src!r} is not a file, a directory or a matching glob "
                         f"(or use {STDLIB!r} or 'hf:<dataset>')")
    if not files:
        raise ValueError(f"data.source={src!r} matches no files")
    listing = "\n".join(f"{doc_id}\t{_file_stamp(p)[1:]}" for doc_id, p in files)
    identity = {"root": str(root.resolve()), "n_files": len(files),
                "files_sha256": hashlib.sha256(listing.encode("utf-8")).hexdigest(), **extra}
    return files, identity, f"{what} ({len(files)} files)"


def _file_stamp(path: str | Path) -> list:
    st = os.stat(path)
    return [str(path), st.st_size, st.st_mtime_ns]


def _glob_root(pattern: str) -> Path:
    """The directory part of a glob before its first wildcard: document ids are relative to it."""
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _walk(root: Path, cfg, stdlib: bool) -> list[tuple[str, Path]]:
    """Files under root sorted by relative path, skipping hidden ones, __pycache__ and the cache."""
    cache = Path(cfg.cache_dir).resolve()
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not (d.startswith(".") or d == "__pycache__"
                                           or (stdlib and d in _STDLIB_SKIP_DIRS)
                                           or Path(folder, d).resolve() == cache)]
        for name in names:
            if name.startswith(".") or (stdlib and not name.endswith(".py")):
                continue
            path = Path(folder, name)
            found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def local_documents(cfg, files: list, skipped: list) -> Iterator[tuple[str, str]]:
    """Yield (id, text) per file; binary or non-UTF-8 files are skipped, or an error if named."""
    named_file = len(files) == 1 and os.path.isfile(cfg.source)
    for doc_id, path in files:
        raw = path.read_bytes()
        try:
            if b"\x00" in raw:
                raise UnicodeError("contains NUL bytes")
            text = raw.decode("utf-8")
        except UnicodeError as e:
            if named_file:
                raise ValueError(f"data.source={str(path)!r} is not UTF-8 text ({e})") from None
            skipped.append(doc_id)
            continue
        yield doc_id, text


def hf_documents(cfg) -> Iterator[tuple[str, str]]:
    """Stream records of a Hugging Face dataset; the text is its own id (records have no other)."""
    import datasets

    try:
        stream = datasets.load_dataset(cfg.source[len(HF_PREFIX):], cfg.hf_config or None,
                                       split=cfg.hf_split, streaming=True,
                                       data_files=cfg.hf_data_files or None)
    except Exception as e:  # network, missing files, unknown dataset: one line for the CLI
        raise ValueError(f"data.source={cfg.source!r}: could not load the dataset "
                         f"({one_line(e)})") from None
    for record in stream:
        text = record.get(cfg.hf_text_field, 0)
        if text is None:  # a null record: nothing to learn from, like an empty file
            continue
        if not isinstance(text, str):
            raise ValueError(f"data.hf_text_field={cfg.hf_text_field!r} is not a text field of "
                             f"{cfg.source!r}; its fields are {sorted(record)}")
        yield text, text

