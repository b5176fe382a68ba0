"""Data pipeline: tokenizers, prepare() (splits, counts, cache, errors) and get_batch(). CPU only,
no network: the gpt2 tests read the shared offline vocabulary and skip when it is absent."""

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from train import data as data_mod
from train import tokenizer as tok_mod
from train.data import (DataConfig, TokenData, bits_per_byte, fingerprint, get_batch, prepare,
                        token_dtype)
from train.sources import resolve_source
from train.tokenizer import get_tokenizer, tokenizer_vocab_size
from tiny_run import GPT2_RANKS, needs_gpt2_ranks

GPT2_FILE = Path(GPT2_RANKS)

DOCS = {  # a small corpus with non-ASCII text and a nested folder
    "a.txt": "hello world\n",
    "b.txt": "naïve café — 日本語 🙂\n",
    "sub/c.md": "# title\nsome more text here\n" * 3,
    "sub/d.py": "def f(x):\n    return x + 1\n",
    "e.txt": "the quick brown fox jumps over the lazy dog\n" * 5,
}


def write_corpus(root: Path, docs: dict = DOCS) -> Path:
    for name, text in docs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def config(tmp_path: Path, source, **kw) -> DataConfig:
    return DataConfig(source=str(source), cache_dir=str(tmp_path / "cache"), **kw)


def documents(tokens: np.ndarray, eot: int) -> list[bytes]:
    """Split a byte-tokenized split back into its documents (each one ends with eot)."""
    ends = np.flatnonzero(tokens == eot)
    assert len(ends) and ends[-1] == len(tokens) - 1
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [bytes(tokens[s:e].astype(np.uint8)) for s, e in zip(starts, ends)]


# --- tokenizers ---------------------------------------------------------------------------------

def test_byte_tokenizer_round_trip_and_eot():
    tok = get_tokenizer("byte")
    text = "héllo wörld — 日本語 🙂\n"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids) == text
    assert (tok.n_vocab, tok.eot, tok.name) == (257, 256, "byte")
    assert tok.decode(ids[:3] + [tok.eot] + ids[3:]) == text[:2] + "<|endoftext|>" + text[2:]
    assert tok.decode(torch.tensor([104, 105, 300])) == "hi\ufffd"  # out of vocabulary
    assert tok.decode([0xC3]) == "\ufffd"  # half a character
    [arr] = tok.encode_batch([text])
    assert arr.tolist() == ids


def test_vocab_sizes_without_loading_and_unknown_name():
    assert tokenizer_vocab_size("byte") == 257 and tokenizer_vocab_size("gpt2") == 50257
    with pytest.raises(ValueError, match=r"data\.tokenizer must be one of 'byte', 'gpt2'"):
        get_tokenizer("sentencepiece")


@needs_gpt2_ranks
def test_gpt2_from_file_and_env_var(monkeypatch):
    tok = get_tokenizer("gpt2", str(GPT2_FILE))
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.n_vocab, tok.eot) == (50257, 50256)
    text = "naïve café <|endoftext|> 日本語"
    assert tok.decode(tok.encode(text)) == text  # the special text is encoded as ordinary text
    assert tok.eot not in tok.encode(text)
    assert tok.decode([15496, tok.eot]) == "Hello<|endoftext|>"
    monkeypatch.setenv(tok_mod.GPT2_ENV_VAR, str(GPT2_FILE))
    assert get_tokenizer("gpt2").encode("Hello world") == [15496, 995]


def test_gpt2_offline_without_a_file_is_one_quick_line(monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'\nretry")

    monkeypatch.delenv(tok_mod.GPT2_ENV_VAR, raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(ValueError) as err:
        get_tokenizer("gpt2")
    msg = str(err.value)
    assert "\n" not in msg and "data.tokenizer_path" in msg and tok_mod.GPT2_ENV_VAR in msg
    assert "gpt2.tiktoken" in msg and "load_tiktoken_bpe" in msg and "ConnectionError" in msg

    # a download that hangs is cut short too
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: time.sleep(5))
    monkeypatch.setattr(tok_mod, "DOWNLOAD_TIMEOUT_S", 0.05)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="no answer within"):
        get_tokenizer("gpt2")
    assert time.perf_counter() - start < 2


def test_gpt2_bad_paths(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"data\.tokenizer_path=.*no such file"):
        get_tokenizer("gpt2", str(tmp_path / "missing.tiktoken"))
    monkeypatch.setenv(tok_mod.GPT2_ENV_VAR, str(tmp_path / "missing.tiktoken"))
    with pytest.raises(ValueError, match=tok_mod.GPT2_ENV_VAR):
        get_tokenizer("gpt2")
    small = tmp_path / "small.tiktoken"
    small.write_text("YQ== 0\nYg== 1\n")
    with pytest.raises(ValueError, match="has 2 ranks"):
        get_tokenizer("gpt2", str(small))


# --- config -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, field", [
    ({"val_fraction": 0.0}, "data.val_fraction"),
    ({"val_fraction": 0.7}, "data.val_fraction"),
    ({"max_docs": -1}, "data.max_docs"),
    ({"max_tokens": -5}, "data.max_tokens"),
    ({"tokenizer": "bpe"}, "data.tokenizer"),
    ({"source": ""}, "data.source"),
    ({"cache_dir": ""}, "data.cache_dir"),
    ({"hf_data_files": ["x.jsonl"]}, "data.hf_data_files"),
    ({"source": "hf:json", "hf_text_field": ""}, "data.hf_text_field"),
])
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        DataConfig(**kw)


def test_token_dtype_and_bits_per_byte():
    assert token_dtype(257) == np.uint16 and token_dtype(50257) == np.uint16
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32
    with pytest.raises(ValueError, match="does not fit"):
        token_dtype(2**33)
    assert bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert bits_per_byte(2 * math.log(2), 4.0) == pytest.approx(0.5)


# --- prepare ------------------------------------------------------------------------------------

def test_prepare_directory_counts_and_contents(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    data = prepare(config(tmp_path, root, val_fraction=0.3), progress=False)
    assert isinstance(data, TokenData) and data.train.dtype == np.uint16
    assert (data.vocab_size, data.eot) == (257, 256)
    meta = data.meta
    splits = meta["splits"]
    assert splits["train"]["docs"] >= 1 and splits["val"]["docs"] >= 1
    assert splits["train"]["docs"] + splits["val"]["docs"] == len(DOCS)
    total_bytes = sum(len(t.encode("utf-8")) for t in DOCS.values())
    assert splits["train"]["bytes"] + splits["val"]["bytes"] == total_bytes
    for name in ("train", "val"):
        tokens = data.split(name)
        assert len(tokens) == splits[name]["tokens"] == splits[name]["bytes"] + splits[name]["docs"]
        assert data.bytes_per_token(name) == splits[name]["bytes"] / splits[name]["tokens"]
    recovered = documents(np.asarray(data.train), 256) + documents(np.asarray(data.val), 256)
    assert sorted(recovered) == sorted(t.encode("utf-8") for t in DOCS.values())
    on_disk = json.loads((data.path / "meta.json").read_text())
    assert on_disk == meta and meta["fingerprint"] == data.path.name
    assert meta["dtype"] == "uint16" and meta["tokenizer"] == "byte"
    assert not [p for p in data.path.parent.iterdir() if p.name.startswith(".tmp")]


def test_split_is_by_document_hash_and_stable(tmp_path):
    docs = {f"doc{i:02d}.txt": f"document {i}\n" for i in range(40)}
    root = write_corpus(tmp_path / "corpus", docs)
    cfg = config(tmp_path, root, val_fraction=0.25)
    first = prepare(cfg, progress=False)
    val_docs = set(documents(np.asarray(first.val), 256))
    expected = {f"document {i}\n".encode() for i in range(40)
                if data_mod.unit_hash(f"doc{i:02d}.txt") < 0.25}
    assert val_docs == expected and 0 < len(val_docs) < 40
    again = prepare(config(tmp_path / "elsewhere", root, val_fraction=0.25), progress=False)
    assert again.path != first.path and again.path.name == first.path.name
    assert np.array_equal(again.train, first.train) and np.array_equal(again.val, first.val)
    # adding documents leaves the split of the existing ones alone
    write_corpus(root, {f"new{i}.txt": f"new {i}\n" for i in range(10)})
    grown = prepare(cfg, progress=False)
    old = {f"document {i}\n".encode() for i in range(40)}
    assert set(documents(np.asarray(grown.val), 256)) & old == val_docs


def test_both_splits_are_never_empty(tmp_path):
    root = write_corpus(tmp_path / "two", {"x.txt": "first document\n", "y.txt": "second one\n"})
    data = prepare(config(tmp_path, root, val_fraction=1e-9), progress=False)
    assert data.meta["splits"]["val"]["docs"] == 1 and data.meta["splits"]["train"]["docs"] == 1
    data = prepare(config(tmp_path, root, val_fraction=0.5), progress=False)
    assert data.meta["splits"]["val"]["docs"] == 1 and data.meta["splits"]["train"]["docs"] == 1


def test_single_file_is_split_by_position(tmp_path):
    text = "".join(f"line {i}: ünïcode\n" for i in range(100))
    path = tmp_path / "input.txt"
    path.write_text(text, encoding="utf-8")
    data = prepare(config(tmp_path, path, val_fraction=0.1), progress=False)
    train, val = (bytes(np.asarray(data.split(s)[:-1], dtype=np.uint8)) for s in ("train", "val"))
    assert (train + val).decode("utf-8") == text
    assert len(val.decode("utf-8")) == round(len(text) * 0.1)


def test_cache_hit_does_not_retokenize(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, root, val_fraction=0.3)
    first = prepare(cfg, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("a cache hit must not tokenize again")

    monkeypatch.setattr(data_mod, "_tokenize", no_tokenizing)
    second = prepare(cfg, progress=False)
    assert second.path == first.path and second.meta == first.meta
    assert {p.name: p.stat().st_mtime_ns for p in second.path.iterdir()} == stamps


def test_a_cold_cache_is_checked_and_replaced_under_its_lock(tmp_path):
    """Two ranks tokenize one cold corpus at once. While one holds the cache's lock to rename its copy
    into place (here the test holds it), the other waits with its own copy; then it finds the
    finished copy and opens it, neither deleting nor replacing it (unlocked, a rank could delete
    the copy another had just renamed into place and was opening)."""
    import fcntl
    import shutil
    import threading

    root = write_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, root, val_fraction=0.3)
    finished = prepare(config(tmp_path / "other", root, val_fraction=0.3), progress=False).path  # same fingerprint
    final = Path(cfg.cache_dir) / finished.name
    final.parent.mkdir(parents=True)
    opened = []
    with open(final.parent / f".{finished.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rank = threading.Thread(target=lambda: opened.append(prepare(cfg, progress=False)))
        rank.start()
        rank.join(0.5)
        assert rank.is_alive() and not final.exists()  # tokenized, and waiting to check
        shutil.copytree(finished, final)  # the other rank's copy lands
        inode = (final / "train.bin").stat().st_ino
    rank.join()
    assert opened[0].path == final and (final / "train.bin").stat().st_ino == inode
    assert [p.name for p in final.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_fingerprint_tracks_what_decides_the_tokens(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    base = config(tmp_path, root)
    _, identity, _ = resolve_source(base)
    fp = fingerprint(base, identity)
    assert fp == fingerprint(config(tmp_path / "other_cache", root), identity)
    assert fp != fingerprint(config(tmp_path, root, tokenizer="gpt2"), identity)
    assert fp != fingerprint(config(tmp_path, root, val_fraction=0.02), identity)
    assert fp != fingerprint(config(tmp_path, root, max_docs=3), identity)
    st = (root / "a.txt").stat()
    os.utime(root / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert resolve_source(base)[1] != identity


def test_interrupted_prepare_leaves_no_cache(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, root)
    real_write = data_mod._SplitWriter._write

    def crash(self, *args):
        real_write(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(data_mod._SplitWriter, "_write", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []  # neither a result nor a temp dir
    monkeypatch.setattr(data_mod._SplitWriter, "_write", real_write)
    assert prepare(cfg, progress=False).meta["splits"]["train"]["docs"] >= 1


def test_caps_and_glob_source(tmp_path):
    root = write_corpus(tmp_path / "corpus", {f"d{i:02d}.txt": "x" * 10 for i in range(20)})
    data = prepare(config(tmp_path, root, max_docs=5), progress=False)
    assert sum(s["docs"] for s in data.meta["splits"].values()) == 5
    data = prepare(config(tmp_path, root, max_tokens=30), progress=False)
    assert sum(s["tokens"] for s in data.meta["splits"].values()) == 33  # whole documents of 11
    data = prepare(config(tmp_path, root / "d0*.txt"), progress=False)
    assert sum(s["docs"] for s in data.meta["splits"].values()) == 10


# --- errors -------------------------------------------------------------------------------------

def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(ValueError, match=r"data\.source=.*not a file, a directory or a"):
        prepare(config(tmp_path, tmp_path / "nope"), progress=False)
    with pytest.raises(ValueError, match="matches no files"):
        prepare(config(tmp_path, tmp_path / "*.nothing"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="matches no files"):
        prepare(config(tmp_path, tmp_path / "empty"), progress=False)
    (tmp_path / "empty" / "blank.txt").write_text("")
    with pytest.raises(ValueError, match="the corpus is empty"):
        prepare(config(tmp_path, tmp_path / "empty"), progress=False)


def test_binary_files(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt.*not UTF-8"):
        prepare(config(tmp_path, bad), progress=False)
    root = write_corpus(tmp_path / "corpus")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (root / "old.txt").write_bytes("café".encode("latin-1"))
    data = prepare(config(tmp_path, root, val_fraction=0.3), progress=False)
    assert data.meta["skipped_files"] == 2
    assert sorted(data.meta["skipped_examples"]) == ["image.png", "old.txt"]
    assert sum(s["docs"] for s in data.meta["splits"].values()) == len(DOCS)


# --- batches ------------------------------------------------------------------------------------

def test_get_batch_is_a_function_of_its_key(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(tokens, batch_size=4, block_size=16, key=(1337, 0, 5, 0, 0))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y, x + 1)  # consecutive windows
    x2, y2 = get_batch(tokens, 4, 16, (1337, 0, 5, 0, 0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, get_batch(tokens, 4, 16, (1337, 0, 6, 0, 0))[0])
    assert not torch.equal(x, get_batch(tokens, 4, 16, (1337, 1, 5))[0])
    # the whole range of starts is reachable, including the last full window
    starts = torch.cat([get_batch(np.arange(20), 64, 16, (0, i))[0][:, 0] for i in range(20)])
    assert starts.min() == 0 and starts.max() == 3


def test_get_batch_on_prepared_memmap(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    data = prepare(config(tmp_path, root, val_fraction=0.3), progress=False)
    x, y = get_batch(data.train, 3, 8, (0, 0, 0, 0, 0))
    train = torch.from_numpy(np.asarray(data.train, dtype=np.int64))
    for row_x, row_y in zip(x, y):
        start = next(i for i in range(len(train) - 8) if torch.equal(train[i:i + 8], row_x))
        assert torch.equal(train[start + 1:start + 9], row_y)


def test_short_split_error(tmp_path):
    with pytest.raises(ValueError, match=r"has 10 tokens but block_size=64 needs at least 65"):
        get_batch(np.zeros(10, dtype=np.uint16), 2, 64, (0,))
    root = write_corpus(tmp_path / "corpus")
    data = prepare(config(tmp_path, root, val_fraction=0.3), progress=False)
    n_val = len(data.val)
    with pytest.raises(ValueError, match=rf"val split has {n_val} tokens but block_size={n_val}"):
        data.check_block_size(n_val)
    data.check_block_size(n_val - 1)


# --- Hugging Face datasets (the packaged, offline "json" builder over local files) --------------

def test_hf_json_over_local_files(tmp_path):
    records = [{"text": f"record number {i} — ✓", "id": i} for i in range(30)]
    path = tmp_path / "part.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    cfg = config(tmp_path, "hf:json", hf_data_files=[str(path)], val_fraction=0.2)
    data = prepare(cfg, progress=False)
    splits = data.meta["splits"]
    assert splits["train"]["docs"] + splits["val"]["docs"] == 30
    assert splits["train"]["bytes"] + splits["val"]["bytes"] == sum(
        len(r["text"].encode("utf-8")) for r in records)
    recovered = documents(np.asarray(data.train), 256) + documents(np.asarray(data.val), 256)
    assert sorted(recovered) == sorted(r["text"].encode("utf-8") for r in records)
    capped = prepare(config(tmp_path, "hf:json", hf_data_files=[str(path)], max_docs=7),
                     progress=False)
    assert sum(s["docs"] for s in capped.meta["splits"].values()) == 7
    with pytest.raises(ValueError, match=r"data\.hf_text_field='body'.*\['id', 'text'\]"):
        prepare(config(tmp_path, "hf:json", hf_data_files=[str(path)], hf_text_field="body"),
                progress=False)


# --- the default source -------------------------------------------------------------------------

def test_python_stdlib_source(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    assert cfg.source == "python-stdlib"
    files, identity, _ = resolve_source(cfg)
    assert len(files) > 1000 and identity["n_files"] == len(files)
    ids = [doc_id for doc_id, _ in files]
    assert ids == sorted(ids) and all(i.endswith(".py") for i in ids)
    assert not any("site-packages" in i or "__pycache__" in i for i in ids)
    assert resolve_source(cfg)[:2] == (files, identity)  # deterministic
    data = prepare(DataConfig(cache_dir=str(tmp_path / "cache"), max_docs=300), progress=False)
    assert data.meta["splits"]["val"]["docs"] >= 1 and len(data.train) > 100_000


# --- what a cap, a fingerprint and a source listing hold ----------------------------------------

def test_max_tokens_counts_each_eot_and_stops_at_the_document_that_reaches_it(tmp_path):
    """Documents of 10 bytes are 11 tokens with their eot: a cap of 22 is reached exactly by the
    second document, so 2 documents (22 tokens) are read, not a third."""
    root = write_corpus(tmp_path / "corpus", {f"d{i:02d}.txt": "x" * 10 for i in range(6)})
    data = prepare(config(tmp_path, root, max_tokens=22), progress=False)
    splits = data.meta["splits"].values()
    assert (sum(s["docs"] for s in splits), sum(s["tokens"] for s in splits)) == (2, 22)


def test_fingerprint_changes_with_max_tokens(tmp_path):
    """max_tokens decides which documents are tokenized, so it must pick another cache directory."""
    root = write_corpus(tmp_path / "corpus")
    base = config(tmp_path, root)
    _, identity, _ = resolve_source(base)
    assert fingerprint(base, identity) != fingerprint(config(tmp_path, root, max_tokens=100), identity)


def test_directory_walk_skips_hidden_pycache_and_the_cache_itself(tmp_path):
    """Of a folder holding hidden files and folders, __pycache__ and the data cache, only the
    ordinary files are documents, with ids relative to the folder."""
    root = write_corpus(tmp_path / "corpus", {"a.txt": "a\n", "sub/b.txt": "b\n", ".env": "secret\n",
                                              ".git/config": "x\n", "__pycache__/m.txt": "x\n",
                                              "cache/old.bin": "x\n"})
    cfg = DataConfig(source=str(root), cache_dir=str(root / "cache"))
    assert [doc_id for doc_id, _ in resolve_source(cfg)[0]] == ["a.txt", "sub/b.txt"]


def test_glob_ids_are_relative_to_the_part_before_the_first_wildcard(tmp_path):
    """Ids (which pick the split) must not depend on where the corpus lies or the working directory."""
    root = write_corpus(tmp_path / "corpus", {"x/d1.txt": "1\n", "y/d2.txt": "2\n", "z.md": "3\n"})
    files, _, _ = resolve_source(config(tmp_path, root / "*" / "d*.txt"))
    assert [doc_id for doc_id, _ in files] == ["x/d1.txt", "y/d2.txt"]
    files, _, _ = resolve_source(config(tmp_path, root / "[xy]" / "d*.txt"))  # a bracket is a wildcard too
    assert [doc_id for doc_id, _ in files] == ["x/d1.txt", "y/d2.txt"]


def test_a_utf8_file_with_nul_bytes_is_skipped_as_binary(tmp_path):
    root = write_corpus(tmp_path / "corpus", {"a.txt": "text\n"})
    (root / "blob.dat").write_bytes(b"ab\x00cd")  # valid UTF-8, but NUL marks binary data
    data = prepare(config(tmp_path, root), progress=False)
    assert data.meta["skipped_examples"] == ["blob.dat"]


@needs_gpt2_ranks
def test_gpt2_batch_encoding_is_ordinary_and_decode_marks_unknown_ids():
    """encode_batch, the corpus path, never emits eot for the text "<|endoftext|>" (as encode);
    an id past the vocabulary decodes to U+FFFD instead of failing."""
    tok = get_tokenizer("gpt2", str(GPT2_FILE))
    text = "a <|endoftext|> b"
    [ids] = tok.encode_batch([text])
    assert ids.tolist() == tok.encode(text) and tok.eot not in ids.tolist()
    assert tok.decode([15496, tok.n_vocab]) == "Hello\ufffd"


def test_val_documents_stop_at_the_same_max_tokens_as_prepare(tmp_path):
    """Three 10-byte documents, max_tokens=22: both read a.txt and b.txt only (11 tokens each with
    eot); b.txt, nearer the threshold, is val, and d.txt, whose id hashes below 0.5, is not read."""
    root = write_corpus(tmp_path / "corpus", {"a.txt": "document a", "b.txt": "document b", "d.txt": "document d"})
    cfg = config(tmp_path, root, val_fraction=0.5, max_tokens=22)
    assert data_mod.unit_hash("d.txt") < 0.5 < data_mod.unit_hash("b.txt") < data_mod.unit_hash("a.txt")
    assert documents(np.asarray(prepare(cfg, progress=False).val), 256) == [b"document b"]
    assert data_mod.val_documents(cfg, get_tokenizer("byte")) == [("b.txt", "document b")]


def test_byte_tokenizer_decodes_every_ascii_byte_including_nul():
    tok = get_tokenizer("byte")
    assert tok.decode(list(range(128))) == "".join(chr(i) for i in range(128))
    assert tok.decode([0, tok.eot, 0]) == "\x00<|endoftext|>\x00"


@needs_gpt2_ranks
def test_gpt2_ranks_path_is_recorded_absolute_from_a_relative_argument_or_variable(monkeypatch):
    """Runs record the tokenizer's path; a relative one would point elsewhere from another folder."""
    monkeypatch.chdir(GPT2_FILE.parent)
    assert get_tokenizer("gpt2", GPT2_FILE.name).path == os.path.realpath(GPT2_FILE)
    monkeypatch.setenv(tok_mod.GPT2_ENV_VAR, GPT2_FILE.name)
    assert get_tokenizer("gpt2").path == os.path.realpath(GPT2_FILE)
