"""Data pipeline properties beyond tests/test_data.py: batch keys, the hash that picks the split, the
edge cases of the split rule, cache validity and how local, glob and hf: sources name documents."""

import json

import numpy as np
import pytest

from test_data import config, documents, write_corpus
from train import data as data_mod
from train.data import TokenData, get_batch, prepare
from train.sources import resolve_source
from train.tokenizer import get_tokenizer


# --- batches ------------------------------------------------------------------------------------

def test_every_field_of_a_batch_key_picks_the_batch():
    """Keys (seed, 0, step, micro_step, rank) that differ in any one field, the micro-step and
    the rank included, draw different windows from a long split (10^6 starts, 8 rows each)."""
    tokens = np.arange(1_000_016, dtype=np.uint32)
    base = (7, 0, 3, 1, 1)
    first = get_batch(tokens, 8, 16, base)[0][:, 0]
    for field in range(len(base)):
        key = list(base)
        key[field] += 1
        assert not np.array_equal(first, get_batch(tokens, 8, 16, tuple(key))[0][:, 0]), field


# --- the split ----------------------------------------------------------------------------------

def test_unit_hash_is_uniform_on_the_unit_interval():
    """The share of ids hashing below f is f: 4000 ids, each decile within 0.03 (about 6 sigma)."""
    u = np.array([data_mod.unit_hash(f"dir/file_{i}.py") for i in range(4000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    for f in np.arange(0.1, 1.0, 0.1):
        assert abs((u < f).mean() - f) < 0.03, f


def test_a_two_character_single_document_keeps_one_character_for_val(tmp_path):
    """A single document is cut by position and val gets at least one character, however small
    val_fraction is: "ab" at 1 % gives train "a" and val "b", each followed by eot."""
    path = tmp_path / "tiny.txt"
    path.write_text("ab", encoding="utf-8")
    data = prepare(config(tmp_path, path, val_fraction=0.01), progress=False)
    assert np.asarray(data.train).tolist() == [ord("a"), 256]
    assert np.asarray(data.val).tolist() == [ord("b"), 256]


def ids_hashing(below: bool, n: int, threshold: float = 0.5) -> list[str]:
    names = (f"doc{i}.txt" for i in range(10_000))
    return [s for s in names if (data_mod.unit_hash(s) < threshold) == below][:n]


def test_when_every_document_hashes_to_val_the_highest_moves_to_train(tmp_path):
    """Four documents whose ids all hash below val_fraction: the one nearest the threshold (the
    highest hash) is train, the other three val; val_documents names the same three."""
    names = ids_hashing(True, 4)
    root = write_corpus(tmp_path / "corpus", {n: f"text of {n}\n" for n in names})
    cfg = config(tmp_path, root, val_fraction=0.5)
    highest = max(names, key=data_mod.unit_hash)
    data = prepare(cfg, progress=False)
    assert documents(np.asarray(data.train), 256) == [f"text of {highest}\n".encode()]
    want = sorted(n for n in names if n != highest)
    assert sorted(documents(np.asarray(data.val), 256)) == sorted(f"text of {n}\n".encode() for n in want)
    assert data_mod.val_documents(cfg, get_tokenizer("byte")) == [(n, f"text of {n}\n") for n in want]


def test_a_cache_with_a_truncated_val_file_is_rebuilt(tmp_path):
    """meta.json records each split's token count; a val.bin of another size is not trusted."""
    root = write_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, root, val_fraction=0.3)
    first = prepare(cfg, progress=False)
    n_val = first.meta["splits"]["val"]["tokens"]
    want = np.asarray(first.val).copy()
    with open(first.path / "val.bin", "r+b") as f:
        f.truncate((n_val - 1) * 2)
    again = prepare(cfg, progress=False)
    assert len(again.val) == n_val and np.array_equal(np.asarray(again.val), want)


def test_check_batch_needs_one_token_more_than_a_micro_batch():
    """batch_size x seq_len tokens of train split are refused, one more is enough."""
    meta = {"vocab_size": 257, "eot": 256, "dtype": "uint16"}
    val = np.zeros(100, dtype=np.uint16)
    TokenData(train=np.zeros(4 * 16 + 1, np.uint16), val=val, meta=meta, path=None).check_batch(4, 16, 257)
    with pytest.raises(ValueError, match="needs 65 tokens but the train split has 64"):
        TokenData(train=np.zeros(4 * 16, np.uint16), val=val, meta=meta, path=None).check_batch(4, 16, 257)


# --- sources ------------------------------------------------------------------------------------

def test_glob_ids_are_relative_to_the_folder_before_the_first_wildcard_even_with_fixed_parts_after(tmp_path):
    """root/*/sub/d*.txt: ids keep the folders from the first wildcard on (x/sub/d1.txt)."""
    root = write_corpus(tmp_path / "corpus", {"x/sub/d1.txt": "1\n", "y/sub/d2.txt": "2\n"})
    files, _, _ = resolve_source(config(tmp_path, root / "*" / "sub" / "d*.txt"))
    assert [doc_id for doc_id, _ in files] == ["x/sub/d1.txt", "y/sub/d2.txt"]


def test_a_directory_of_one_binary_file_skips_it_rather_than_failing_on_it(tmp_path):
    """Only a source that names a file is an error when not UTF-8; in a directory the file is skipped,
    which here leaves an empty corpus (with the skip counted)."""
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "old.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"corpus is empty \(1 files skipped as binary or not UTF-8\)"):
        prepare(config(tmp_path, folder), progress=False)


def test_site_packages_is_skipped_only_in_the_standard_library(tmp_path):
    """A user corpus keeps a folder named site-packages; only the stdlib source drops it."""
    root = write_corpus(tmp_path / "corpus", {"a.txt": "a\n", "site-packages/b.txt": "b\n"})
    assert [doc_id for doc_id, _ in resolve_source(config(tmp_path, root))[0]] == ["a.txt", "site-packages/b.txt"]


def test_a_relative_cache_dir_inside_the_source_is_not_read_as_documents(tmp_path, monkeypatch):
    """source "." and cache_dir "cache" from inside the corpus: the cache folder is skipped."""
    root = write_corpus(tmp_path / "corpus", {"a.txt": "a\n", "cache/x/train.bin": "x\n"})
    monkeypatch.chdir(root)
    cfg = data_mod.DataConfig(source=".", cache_dir="cache")
    assert [doc_id for doc_id, _ in resolve_source(cfg)[0]] == ["a.txt"]


def test_hf_records_split_by_their_text_not_their_position(tmp_path):
    """A record's text is its id, so the same records in reverse order split the same way."""
    records = [f"record number {i}" for i in range(40)]
    val_sets = []
    for name, order in (("fwd", records), ("rev", records[::-1])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in order), encoding="utf-8")
        data = prepare(config(tmp_path, "hf:json", hf_data_files=[str(path)], val_fraction=0.2), progress=False)
        val_sets.append(set(documents(np.asarray(data.val), 256)))
    want = {t.encode() for t in records if data_mod.unit_hash(t) < 0.2}
    assert val_sets[0] == val_sets[1] == want and 0 < len(want) < 40
