"""Tokenizers: raw UTF-8 bytes (no files, no downloads) or GPT-2's byte-pair encoding via tiktoken.

Both expose the same small interface, which is all the data pipeline and the sampler use:
`name`, `n_vocab`, `eot` (the end-of-text id that separates documents), `encode(text)`,
`encode_batch(texts)` (the fast path for whole corpora) and `decode(ids)`.
Encoding is "ordinary": the text "<|endoftext|>" inside a document is encoded as plain text,
never as the special token, so a corpus cannot inject document boundaries.
"""

import base64
import functools
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

from .errors import ConfigError, one_line

EOT_TEXT = "<|endoftext|>"
GPT2_ENV_VAR = "GPT_LADDER_GPT2_TIKTOKEN"
# GPT-2's pre-tokenizer split pattern (tiktoken's "gpt2" uses an equivalent, faster spelling).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_N_RANKS = 50256  # mergeable tokens; <|endoftext|> is id 50256, so n_vocab = 50257
# tiktoken downloads with no network timeout; a firewalled machine could hang for minutes.
DOWNLOAD_TIMEOUT_S = 30.0

_VOCAB_SIZES = {"byte": 257, "gpt2": 50257}
_REPLACEMENT = "\ufffd"


def tokenizer_vocab_size(name: str) -> int:
    """The vocabulary size of tokenizer `name` (DataConfig checked it), without loading it."""
    return _VOCAB_SIZES[name]


def get_tokenizer(name: str, path: str = "") -> "ByteTokenizer | GPT2Tokenizer":
    """Build the tokenizer `name` ("byte" or "gpt2"); `path` is an optional gpt2 ranks file."""
    check_tokenizer_name(name)
    return ByteTokenizer() if name == "byte" else GPT2Tokenizer(path)


def check_tokenizer_name(name: str) -> None:
    if name not in _VOCAB_SIZES:
        allowed = ", ".join(repr(n) for n in _VOCAB_SIZES)
        raise ValueError(f"data.tokenizer must be one of {allowed}; got {name!r}")


class ByteTokenizer:
    """Every UTF-8 byte is a token (ids 0-255), plus one end-of-text token (id 256).

    No vocabulary file and no out-of-vocabulary text, which makes it the default for a first run;
    sequences are ~2-4x longer than with BPE, so compare runs in bits per byte, not loss per token.
    """

    name = "byte"
    n_vocab = 257
    eot = 256
    path = ""  # nothing to read

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """One uint8 array per text, straight from the UTF-8 bytes (no Python loop over bytes)."""
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids) -> str:
        """Bytes to text; broken UTF-8 and ids outside the vocabulary become U+FFFD."""
        out = bytearray()
        for i in (int(i) for i in ids):
            out += bytes([i]) if 0 <= i < 256 else (EOT_TEXT if i == self.eot else _REPLACEMENT).encode()
        return out.decode("utf-8", errors="replace")


class GPT2Tokenizer:
    """GPT-2's 50,257-token byte-level BPE (Radford et al. 2019), run by tiktoken.

    The ranks come from, in order: the `path` argument (config `data.tokenizer_path`), the
    GPT_LADDER_GPT2_TIKTOKEN environment variable, or tiktoken's own `get_encoding("gpt2")`,
    which downloads once and caches (in TIKTOKEN_CACHE_DIR, else the system temp directory).
    """

    name = "gpt2"
    n_vocab = 50257
    eot = 50256

    def __init__(self, path: str = "", where: str = "data.tokenizer_path") -> None:
        source, where = (path, where) if path else (os.environ.get(GPT2_ENV_VAR, ""), GPT2_ENV_VAR)
        self.path = _resolved(source, where) if source else ""  # "": tiktoken's own download cache
        self._enc = _gpt2_from_file(self.path) if self.path else _gpt2_from_tiktoken(DOWNLOAD_TIMEOUT_S)
        assert self._enc.n_vocab == self.n_vocab and self._enc.eot_token == self.eot

    def ranks(self) -> dict[bytes, int]:
        """The 50,256 mergeable tokens and their ranks (the merge order of the BPE)."""
        return self._enc._mergeable_ranks

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode many texts on all cores (tiktoken releases the GIL)."""
        threads = max(1, os.cpu_count() or 1)
        return [np.asarray(ids, dtype=np.uint32)
                for ids in self._enc.encode_ordinary_batch(texts, num_threads=threads)]

    def decode(self, ids) -> str:
        """Ids to text; broken UTF-8 and ids outside the vocabulary become U+FFFD."""
        ids = [int(i) for i in ids]
        if all(0 <= i < self.n_vocab for i in ids):
            return self._enc.decode(ids, errors="replace")
        out = bytearray()
        for i in ids:
            ok = 0 <= i < self.n_vocab
            out += self._enc.decode_single_token_bytes(i) if ok else _REPLACEMENT.encode("utf-8")
        return out.decode("utf-8", errors="replace")


def _resolved(path: str, where: str) -> str:
    """The absolute path of the ranks file `path`, or a ConfigError naming the setting `where`."""
    if not Path(path).is_file():
        what = "a directory" if Path(path).is_dir() else "no such file"
        raise ConfigError(f"{where}={path!r}: {what} (expected a gpt2.tiktoken ranks file)")
    return str(Path(path).resolve())


# ---------------------------------------------------------------------------------------------
# what a run records about its tokenizer (<run>/tokenizer.json), and loading it back

RUN_FILE = "tokenizer.json"


def ranks_sha256(tok) -> str:
    """SHA-256 of the BPE ranks, written as a tiktoken file ("base64 rank" lines in rank order),
    so the same ranks hash alike whether read from a file or from tiktoken's cache; "" for bytes."""
    if tok.name != "gpt2":
        return ""
    digest = hashlib.sha256()
    for token, rank in sorted(tok.ranks().items(), key=lambda kv: kv[1]):
        digest.update(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
    return digest.hexdigest()


def describe(tok) -> dict:
    """What sampling a run needs to rebuild its tokenizer: written to <run>/tokenizer.json."""
    return {"tokenizer": tok.name, "path": tok.path, "ranks_sha256": ranks_sha256(tok),
            "n_vocab": tok.n_vocab, "eot": tok.eot}


def recorded(run_dir: str | Path) -> dict:
    """The run's tokenizer.json (`describe` of the tokenizer it trained with), or a ConfigError."""
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} has no {RUN_FILE}, the record of the tokenizer it trained with "
                          "(python -m train writes it when a run starts)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: unreadable (not a JSON object)")
    return record


def for_run(run_dir: str | Path, tokenizer_path: str = "") -> "ByteTokenizer | GPT2Tokenizer":
    """The tokenizer a training run used, checked against the ranks hash it recorded.

    The ranks file is `tokenizer_path` when given, else the resolved path the run recorded in
    tokenizer.json, else the environment variable or tiktoken.
    """
    run_dir = Path(run_dir)
    record = recorded(run_dir)
    name = record.get("tokenizer", "byte")
    if name != "gpt2":
        if tokenizer_path:
            raise ConfigError(f"--tokenizer_path is for gpt2 runs; {run_dir} used the {name} tokenizer, "
                              "which has no ranks file")
        return get_tokenizer(name)
    how = (f"pass --tokenizer_path PATH to a gpt2.tiktoken ranks file (or set {GPT2_ENV_VAR}); "
           "it must hold the ranks the run trained with")
    path, where = (tokenizer_path, "--tokenizer_path") if tokenizer_path else (record.get("path", ""), "the run's tokenizer")
    if path and not Path(path).is_file():
        raise ConfigError(f"{where} {path!r} {'is a directory' if Path(path).is_dir() else 'does not exist'}; {how}")
    try:
        tok = GPT2Tokenizer(path, where)
    except ValueError as e:
        raise ConfigError(f"{str(e).splitlines()[0]}; {how}") from None
    want = record.get("ranks_sha256")
    if want and ranks_sha256(tok) != want:
        raise ConfigError(f"the ranks in {tok.path or 'tiktoken cache'} differ from those the run "
                          f"{run_dir} trained with (SHA-256 {want[:12]}...); {how}")
    return tok


@functools.lru_cache(maxsize=4)
def _gpt2_from_file(path: str):
    """Build tiktoken's "gpt2" encoding offline from a ranks file (base64 token + rank per line)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    try:
        ranks = load_tiktoken_bpe(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a tiktoken ranks file ({e})") from None
    if len(ranks) != GPT2_N_RANKS:
        raise ConfigError(f"{path}: has {len(ranks)} ranks; GPT-2's ranks file has {GPT2_N_RANKS}")
    if set(ranks.values()) != set(range(GPT2_N_RANKS)):  # tiktoken panics on a repeated or missing rank
        raise ConfigError(f"{path}: its ranks are not each of 0..{GPT2_N_RANKS - 1} once (repeated or out of range)")
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT_TEXT: GPT2_N_RANKS})


def _gpt2_from_tiktoken(timeout_s: float):
    """tiktoken.get_encoding("gpt2"), bounded in time, failing with a one-line how-to.

    The download runs in a daemon thread: offline it usually fails within ~1 s (name resolution),
    but on a network that silently drops packets tiktoken's request has no timeout of its own.
    """
    import tiktoken

    result: dict = {}

    def load() -> None:
        try:
            result["enc"] = tiktoken.get_encoding("gpt2")
        except Exception as e:  # any failure (offline, proxy, bad cache) gets the same advice
            result["error"] = one_line(e, limit=120)

    thread = threading.Thread(target=load, name="tiktoken-gpt2-download", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "enc" in result:
        return result["enc"]
    reason = result.get("error", f"no answer within {timeout_s:g} s")
    raise ValueError(f"gpt2 tokenizer: tiktoken could not download its 'gpt2' files ({reason}); "
                     f"offline, set data.tokenizer_path or the env var {GPT2_ENV_VAR} to a "
                     "gpt2.tiktoken ranks file (one 'base64-token rank' line per token, as read by "
                     "tiktoken.load.load_tiktoken_bpe)")
