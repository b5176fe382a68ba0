"""Data: tokenize a text corpus once into memory-mapped token files, then sample batches from them.

`prepare(cfg)` reads documents from a source (by default the Python standard library that ships
with the running interpreter, so a first run needs no download), tokenizes them and writes

    <cache_dir>/<fingerprint>/train.bin   token ids, uint16 (uint32 for vocabularies > 65,536),
    <cache_dir>/<fingerprint>/val.bin     every document followed by the eot token
    <cache_dir>/<fingerprint>/meta.json   tokenizer, dtype, token/byte/document counts, source

The fingerprint hashes everything that decides the tokens (source files with sizes and mtimes,
tokenizer, split and caps), so a changed config or an edited file gets a fresh directory and an
unchanged one is a cache hit that reads only file metadata. `get_batch` then draws windows from the
memory-mapped split with a generator seeded by the batch's key alone: stateless and resumable.
"""

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from tqdm import tqdm

from .errors import at_least, make_dir
from .files import locked
from .sources import HF_PREFIX, STDLIB, hf_documents, local_documents, resolve_source
from .tokenizer import check_tokenizer_name, get_tokenizer

FORMAT_VERSION = 1  # bump when the layout of the token files or meta.json changes
SPLITS = ("train", "val")
_BATCH_TEXT_CHARS = 8_000_000  # text per tokenizer call: enough for tiktoken's threads


@dataclass
class DataConfig:
    source: str = STDLIB  # "python-stdlib", a text file, a directory, a glob, or "hf:<dataset>"
    tokenizer: Literal["byte", "gpt2"] = "byte"
    tokenizer_path: str = ""  # gpt2 only: a local gpt2.tiktoken ranks file (for offline machines)
    val_fraction: float = 0.01  # share of documents held out, chosen by a hash of each document id
    cache_dir: str = ".cache/data"  # token files go to <cache_dir>/<fingerprint>/
    hf_config: str = ""  # hf: the dataset's config (subset) name
    hf_split: str = "train"  # hf: which split to stream
    hf_text_field: str = "text"  # hf: the record field holding the document text
    hf_data_files: list[str] = field(default_factory=list)  # hf: e.g. local files for "hf:json"
    max_docs: int = 0  # read at most this many documents (0 = no cap)
    max_tokens: int = 0  # stop reading once this many tokens are collected (0 = no cap)

    def __post_init__(self) -> None:
        check_tokenizer_name(self.tokenizer)
        if not self.source or self.source == HF_PREFIX:
            raise ValueError(f"data.source must name a corpus ({STDLIB!r}, a path, a glob or "
                             f"'hf:<dataset>'); got {self.source!r}")
        if not (math.isfinite(self.val_fraction) and 0 < self.val_fraction <= 0.5):
            raise ValueError(f"data.val_fraction must be in (0, 0.5]; got {self.val_fraction}")
        if not self.cache_dir:
            raise ValueError("data.cache_dir must not be empty")
        for name in ("max_docs", "max_tokens"):
            at_least(getattr(self, name), f"data.{name}", 0, " (0 = no cap)")
        if self.is_hf:
            for name in ("hf_split", "hf_text_field"):
                if not getattr(self, name):
                    raise ValueError(f"data.{name} must not be empty for an hf: source")
        elif self.hf_config or self.hf_data_files:
            raise ValueError(f"data.hf_config and data.hf_data_files apply only to 'hf:<dataset>' "
                             f"sources; data.source is {self.source!r}")

    @property
    def is_hf(self) -> bool:
        return self.source.startswith(HF_PREFIX)


@dataclass
class TokenData:
    """The prepared splits as read-only memory maps, plus meta.json.

    Bits per byte makes runs with different tokenizers comparable:
    `bits_per_byte(loss, data.bytes_per_token("val"))` for a mean per-token loss in nats.
    """

    train: np.memmap
    val: np.memmap
    meta: dict
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> "TokenData":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta["vocab_size"] > np.iinfo(meta["dtype"]).max + 1:
            raise ValueError(f"{path}: a vocabulary of {meta['vocab_size']} tokens does not fit its "
                             f"{meta['dtype']} token files; delete the directory to re-tokenize")
        maps = {s: np.memmap(path / f"{s}.bin", dtype=meta["dtype"], mode="r") for s in SPLITS}
        return cls(train=maps["train"], val=maps["val"], meta=meta, path=path)

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def eot(self) -> int:
        return self.meta["eot"]

    def split(self, name: str) -> np.memmap:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {name!r}")
        return getattr(self, name)

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of the split's text (eot tokens add none) per token (eot tokens included)."""
        counts = self.meta["splits"][split]
        return counts["bytes"] / counts["tokens"]

    def check_block_size(self, block_size: int) -> None:
        """Fail early, naming the split, if a split is too short for one window of block_size."""
        for name in SPLITS:
            _check_length(len(self.split(name)), block_size, f"the {name} split")

    def check_batch(self, batch_size: int, seq_len: int, model_vocab_size: int) -> None:
        """Fail at start-up, not mid-run, when this data cannot feed a model and batch this size."""
        if self.vocab_size > model_vocab_size:
            raise ValueError(f"data vocabulary ({self.vocab_size}) exceeds model.vocab_size "
                             f"({model_vocab_size})")
        self.check_block_size(seq_len)
        need = batch_size * seq_len + 1
        if len(self.train) < need:
            raise ValueError(f"one micro-batch (train.batch_size={batch_size} x seq_len={seq_len}) "
                             f"needs {need} tokens but the train split has {len(self.train)}; "
                             "lower train.batch_size or use a larger corpus")


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """Convert a mean per-token cross-entropy in nats to bits per UTF-8 byte of text."""
    return loss / math.log(2) / bytes_per_token


def get_batch(tokens: np.ndarray, batch_size: int, block_size: int,
              key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `batch_size` windows of `block_size + 1` tokens; return inputs x and targets y.

    x, y: int64 tensors of shape (batch_size, block_size), y[:, t] = x[:, t + 1]. The window
    starts come from `np.random.default_rng(SeedSequence(key))` and nothing else, so a batch is a
    pure function of its key: a resumed run sees exactly the batches it would have seen. Keys
    (non-negative ints) used by the trainer:
        (seed, 0, step, rank * grad_accum + micro_step, 0)   a training micro-batch
        (val_seed, 1, i)   the i-th evaluation batch, the same at every evaluation
                           (val_seed: train.eval_seed, or train.seed when it is -1)
    """
    _check_length(len(tokens), block_size, "the token split")
    rng = np.random.default_rng(np.random.SeedSequence(key))
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
    windows = tokens[starts[:, None] + np.arange(block_size + 1)]  # one gather: (B, T + 1)
    windows = torch.from_numpy(windows.astype(np.int64))
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def _check_length(n_tokens: int, block_size: int, what: str) -> None:
    if n_tokens < block_size + 1:
        # A larger val_fraction grows the val split at the train split's expense, and vice versa.
        shift = {"the val split": "a larger data.val_fraction, ",
                 "the train split": "a smaller data.val_fraction, "}.get(what, "")
        raise ValueError(f"{what} has {n_tokens} tokens but block_size={block_size} needs at "
                         f"least {block_size + 1}; use a larger corpus, {shift}or a smaller "
                         "train.seq_len / model.block_size")


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every token id: halves the files for small vocabs."""
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"a vocabulary of {vocab_size} tokens does not fit the uint32 token files")


# ---------------------------------------------------------------------------------------------
# prepare: source -> fingerprint -> (cache hit | tokenize into a temp dir, then rename)


def prepare(cfg: DataConfig, progress: bool = True) -> TokenData:
    """Tokenize cfg.source into <cache_dir>/<fingerprint>/ unless that exists; open it.

    The files are written into a temporary sibling directory that is renamed into place only
    when complete, so an interrupted run never leaves a cache that a later run would trust
    (a killed run may leave a `.tmp-*` directory, which is safe to delete).
    """
    files, identity, description = resolve_source(cfg)
    fp = fingerprint(cfg, identity)
    final = Path(cfg.cache_dir) / fp
    if (data := _open_cached(final)) is not None:
        return data
    tok = get_tokenizer(cfg.tokenizer, cfg.tokenizer_path)  # fail before reading the corpus
    make_dir(final.parent, f"data.cache_dir={cfg.cache_dir!r}")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{fp}-", dir=final.parent))
    try:
        meta = _tokenize(cfg, tok, files, tmp, description, progress)
        meta.update(fingerprint=fp, fingerprint_of=_fingerprint_inputs(cfg, identity))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        # One process at a time checks and replaces: unlocked, one DDP rank could delete the copy
        # another had just renamed into place and was opening.
        with locked(final.parent / f".{fp}.lock"):
            if _open_cached(final) is None:  # not finished meanwhile by another process (DDP ranks)
                shutil.rmtree(final, ignore_errors=True)  # a directory that failed the checks
                try:
                    os.rename(tmp, final)
                except OSError:  # without flock: another process renamed its copy into place first
                    if _open_cached(final) is None:
                        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a no-op after a successful rename
    return TokenData.open(final)


def fingerprint(cfg: DataConfig, identity: dict) -> str:
    """A short hash of everything that decides the token files (not where they are stored)."""
    blob = json.dumps(_fingerprint_inputs(cfg, identity), sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _fingerprint_inputs(cfg: DataConfig, identity: dict) -> dict:
    return {"format": FORMAT_VERSION, "source": identity, "tokenizer": cfg.tokenizer,
            "val_fraction": cfg.val_fraction, "max_docs": cfg.max_docs,
            "max_tokens": cfg.max_tokens}


def _open_cached(path: Path) -> TokenData | None:
    """Open a finished cache directory, or None when it is missing or inconsistent."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        itemsize = np.dtype(meta["dtype"]).itemsize
        for s in SPLITS:
            if (path / f"{s}.bin").stat().st_size != meta["splits"][s]["tokens"] * itemsize:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return TokenData.open(path) if meta.get("format") == FORMAT_VERSION else None


# ---------------------------------------------------------------------------------------------
# tokenizing and splitting


def _tokenize(cfg: DataConfig, tok, files: list, out: Path, description: str,
              progress: bool) -> dict:
    """Tokenize every document into out/train.bin and out/val.bin; return meta.json's content."""
    start, skipped = time.perf_counter(), []
    if cfg.is_hf:
        docs, total = hf_documents(cfg), None
    else:
        docs, total = local_documents(cfg, files, skipped), sum(p.stat().st_size for _, p in files)
    dtype = token_dtype(tok.n_vocab)
    writer = _SplitWriter(out, dtype, tok, cfg.val_fraction)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not progress)
    try:
        for n_docs, (doc_id, text, ids) in enumerate(_encoded(docs, tok), start=1):
            writer.add(doc_id, text, ids)
            bar.update(len(text.encode("utf-8")))
            if (cfg.max_docs and n_docs >= cfg.max_docs) or (
                    cfg.max_tokens and writer.seen_tokens >= cfg.max_tokens):
                break
        else:
            if total:
                bar.update(total - bar.n)  # the bytes of skipped files: end the bar at 100%
        writer.finish(cfg.source, len(skipped))
    finally:
        bar.close()
        writer.close()
    return {"format": FORMAT_VERSION, "source": description, "tokenizer": tok.name,
            "vocab_size": tok.n_vocab, "eot": tok.eot, "dtype": dtype.name,
            "splits": writer.counts, "skipped_files": len(skipped),
            "skipped_examples": skipped[:5], "seconds": round(time.perf_counter() - start, 3)}


def _encoded(docs: Iterator[tuple[str, str]], tok) -> Iterator[tuple[str, str, np.ndarray]]:
    """(id, text, token ids) per non-empty document, encoded in large batches for speed."""
    batch, chars = [], 0
    for doc_id, text in docs:
        if text:
            batch.append((doc_id, text))
            chars += len(text)
        if chars >= _BATCH_TEXT_CHARS:
            yield from _encode_batch(batch, tok)
            batch, chars = [], 0
    yield from _encode_batch(batch, tok)


def _encode_batch(batch: list, tok) -> Iterator[tuple[str, str, np.ndarray]]:
    if batch:
        for (doc_id, text), ids in zip(batch, tok.encode_batch([t for _, t in batch])):
            yield doc_id, text, ids


def unit_hash(doc_id: str) -> float:
    """A stable pseudo-random number in [0, 1) per document id (Python's hash() is salted)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def val_documents(cfg: DataConfig, tok) -> list[tuple[str, str]]:
    """The documents `prepare(cfg)` puts in the val split, read again from a local source, by id.

    The same rule as `_SplitWriter`, without tokenizing into files: the non-empty UTF-8 documents
    (within data.max_docs / data.max_tokens, counted with `tok`) whose id hashes below
    val_fraction; if none does, the train document nearest the threshold; if all do, all but the
    one nearest it. A single document contributes its last val_fraction. Tasks that must draw
    only from held-out text (stdlib-cloze in train/evals/) read it here.
    """
    if cfg.is_hf:
        raise ValueError(f"data.source={cfg.source!r}: held-out documents are read from local "
                         "sources only (python-stdlib, a file, a directory or a glob)")
    files, _, _ = resolve_source(cfg)
    docs, seen = [], 0
    for doc_id, text in local_documents(cfg, files, []):
        if not text:
            continue
        docs.append((unit_hash(doc_id), doc_id, text))
        seen += len(tok.encode(text)) + 1 if cfg.max_tokens else 0
        if (cfg.max_docs and len(docs) >= cfg.max_docs) or (cfg.max_tokens and seen >= cfg.max_tokens):
            break
    if len(docs) == 1:
        _, doc_id, text = docs[0]
        return [(doc_id, text[len(text) - max(1, round(len(text) * cfg.val_fraction)):])]
    val = [d for d in docs if d[0] < cfg.val_fraction]
    if not val:
        val = [min(docs)]
    elif len(val) == len(docs):
        val.remove(max(docs))
    return [(doc_id, text) for _, doc_id, text in sorted(val, key=lambda d: d[1])]


class _SplitWriter:
    """Appends each document's tokens and an eot to train.bin or val.bin, by a hash of its id.

    A document is val when its hash is below val_fraction, so adding documents never moves the
    others. To keep both splits non-empty in one pass, each split holds back the document nearest
    the threshold (lowest hash in train, highest in val) and writes it last; if a split ends up
    empty, the other split's held document moves over, as if the threshold had moved just enough.
    A corpus of a single document is cut by position instead: its last val_fraction is val.
    """

    def __init__(self, out: Path, dtype: np.dtype, tok, val_fraction: float) -> None:
        self.files = {s: open(out / f"{s}.bin", "wb") for s in SPLITS}
        self.counts = {s: {"tokens": 0, "bytes": 0, "docs": 0} for s in SPLITS}
        self.held: dict[str, tuple[float, str, np.ndarray]] = {}
        self.dtype, self.tok, self.val_fraction = dtype, tok, val_fraction
        self.seen_tokens = 0

    def add(self, doc_id: str, text: str, ids: np.ndarray) -> None:
        self.seen_tokens += len(ids) + 1
        u = unit_hash(doc_id)
        split = "val" if u < self.val_fraction else "train"
        doc, held = (u, text, ids), self.held.get(split)
        nearer = held is None or (u < held[0] if split == "train" else u > held[0])
        if nearer:
            self.held[split], doc = doc, held
        if doc is not None:
            self._write(split, doc[1], doc[2])

    def finish(self, source: str, n_skipped: int) -> None:
        held = self.held
        n_written = sum(c["docs"] for c in self.counts.values())
        if not held:
            why = f" ({n_skipped} files skipped as binary or not UTF-8)" if n_skipped else ""
            raise ValueError(f"data.source={source!r}: the corpus is empty{why}")
        if n_written == 0 and len(held) == 1:  # a single document: cut it by position
            _, text, _ = next(iter(held.values()))
            if len(text) < 2:
                raise ValueError(f"data.source={source!r}: the corpus has {len(text)} "
                                 f"character(s); it needs at least 2 for a train and a val part")
            cut = len(text) - max(1, round(len(text) * self.val_fraction))
            parts = (text[:cut], text[cut:])
            for split, part, ids in zip(SPLITS, parts, self.tok.encode_batch(list(parts))):
                self._write(split, part, ids)
            return
        if "val" not in held:
            held["val"] = held.pop("train")
        elif "train" not in held:
            held["train"] = held.pop("val")
        for split, (_, text, ids) in held.items():
            self._write(split, text, ids)

    def _write(self, split: str, text: str, ids: np.ndarray) -> None:
        tokens = np.empty(len(ids) + 1, dtype=self.dtype)
        tokens[:-1] = ids
        tokens[-1] = self.tok.eot
        self.files[split].write(tokens.tobytes())
        c = self.counts[split]
        c["tokens"] += len(tokens)
        c["bytes"] += len(text.encode("utf-8"))
        c["docs"] += 1

    def close(self) -> None:
        for f in self.files.values():
            f.close()
