"""Autoregressive generation: one prefill of the prompt, then one forward per new token.

`GPT.generate` delegates here, so sampling stays outside the model class. Three ways to get the next
logits, chosen once per call:
- through a generation cache (`use_cache=True`, the default): the prompt fills the cache, then each
  token is a single-token forward; `kv_dtype` picks the cache format (model/inference/cache/);
- without a cache (`use_cache=False`): the whole sequence is recomputed for every token. Slow, and
  the reference the cached paths are tested against;
- through a static cache and torch.compile (`compile=True`; CUDA graphs on a GPU, model/inference/decoder.py).
Speculative decoding (`draft=`) has the target check a small draft model's guesses, or with
`draft="mtp"` those of its own multi-token-prediction modules (model/inference/mtp_draft.py).
"""


import torch

from ..config import check_int
from .decoder import StaticDecoder
from .sampling import TEMPERATURE, TOP_K, check_sampling, sample_next
from .speculative import speculative_generate


def check_generation(model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float, top_k: int,
                     top_p: float, use_cache: bool, kv_dtype: str | None,
                     compile: bool = False) -> None:
    """ValueError with one line for every generation request that cannot be served; the cache's
    own settings (kv_dtype's values, kv_residual, kv_group) are checked by `CacheSpec`."""
    check_sampling(temperature, top_k, top_p)
    if not (isinstance(idx, torch.Tensor) and idx.dim() == 2 and idx.shape[1] > 0) or idx.is_floating_point():
        raise ValueError("idx must be a (batch, tokens) tensor of token ids with at least one token")
    check_int("max_new_tokens", max_new_tokens, 0)
    block_size = model.config.block_size
    if idx.shape[1] > block_size:
        raise ValueError(f"the prompt ({idx.shape[1]} tokens) is longer than the context "
                         f"(model.block_size={block_size})")
    if idx.shape[1] + max_new_tokens > block_size:
        raise ValueError(f"prompt ({idx.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"model.block_size={block_size}")
    if kv_dtype is not None and not use_cache:
        raise ValueError(f"kv_dtype={kv_dtype!r} formats the cache; it needs use_cache=True")
    if compile and (kv_dtype is not None or not use_cache):
        raise ValueError("compile=True decodes through a static cache in the compute dtype: it needs "
                         "use_cache=True and kv_dtype=None")


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = TEMPERATURE,
             top_k: int = TOP_K, generator: torch.Generator | None = None, *, top_p: float = 1.0,
             use_cache: bool = True, kv_dtype: str | None = None, kv_residual: int = 32,
             kv_group: int = 128, draft=None, n_draft: int = 4, compile: bool = False, stream=None,
             stop_token: int | None = None) -> torch.Tensor:
    """Extend idx (B, T) by `max_new_tokens` sampled tokens; returns (B, T + max_new_tokens).

    temperature 0 is greedy decoding; top_k 0 and top_p 1.0 sample from the whole vocabulary; the
    defaults, temperature 0.8 and top_k 50, are train.sample's too (model/inference/sampling.py).
    kv_dtype: None (the compute dtype), "int8" or "int4" (KIVI, model/inference/cache/quantized.py), whose
    most recent `kv_residual` tokens stay in the compute dtype and keys share scales over groups of
    `kv_group` tokens. compile: decode with a static cache through torch.compile (CUDA graphs on a
    GPU); the compiled graphs are kept per model, so only the first call per batch size and length
    bucket pays for compilation. The total length is capped at model.config.block_size. The model's
    train/eval mode is restored afterwards. stream: called with each (B, n) block of new tokens as
    soon as it is decided (one token per step; speculative decoding: a round's accepted tokens).
    stop_token: a row that has drawn it draws nothing else (the rest of the row is that token, the
    shape stays), and decoding ends once every row has; speculative decoding ignores it.
    """
    check_generation(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     use_cache=use_cache, kv_dtype=kv_dtype, compile=compile)
    if isinstance(draft, str) and draft != "mtp":
        raise ValueError(f"draft must be a model or 'mtp' (the model's own MTP modules); got {draft!r}")
    if draft is not None and (compile or kv_dtype is not None or not use_cache):
        raise ValueError("speculative decoding (draft=...) decodes through full-precision dynamic caches: "
                         "it takes no compile, kv_dtype or use_cache=False")
    was_training = model.training
    model.eval()
    try:
        if draft == "mtp":  # self-speculation: one guess per MTP module and round
            draft = model.mtp_draft()
            n_draft = min(n_draft, draft.depth)
        if draft is not None:  # the draft proposes n_draft tokens, the target checks them in one forward
            out, _ = speculative_generate(model, draft, idx, max_new_tokens, n_draft, temperature, top_k,
                                          top_p, generator, stream)
            return out
        if compile:
            step = compiled_decoder(model).step(idx.shape[0], idx.shape[1] + max_new_tokens)
        elif use_cache:
            cache = model.new_cache(idx.shape[0], idx.shape[1] + max_new_tokens, kv_dtype=kv_dtype,
                                    kv_residual=kv_residual, kv_group=kv_group)
            step = cached_step(model, cache)
        else:
            step = uncached_step(model)
        return decode(step, idx, max_new_tokens, temperature, top_k, top_p, generator, stream, stop_token)
    finally:
        model.train(was_training)


def decode(step, idx: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
           generator: torch.Generator | None, stream=None, stop_token: int | None = None) -> torch.Tensor:
    """The sampling loop: `step(tokens)` takes the prompt once, then each new token, and returns the
    (B, vocab_size) logits of the next position; `stream(next_id)` sees each token as it is drawn.
    With `stop_token`, the loop ends when every row has drawn it (one device read per token)."""
    out = [idx]
    stopped = None if stop_token is None else torch.zeros(idx.shape[0], 1, dtype=torch.bool, device=idx.device)
    if max_new_tokens:
        logits = step(idx)
    for i in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
        if stopped is not None:  # a row that has stopped repeats the stop token
            next_id = next_id.masked_fill(stopped, stop_token)
        out.append(next_id)
        if stream is not None:
            stream(next_id)
        if stopped is not None:
            stopped |= next_id == stop_token
            if bool(stopped.all()):
                out.append(next_id.new_full((idx.shape[0], max_new_tokens - i - 1), stop_token))
                break
        if i + 1 < max_new_tokens:
            logits = step(next_id)
    return torch.cat(out, dim=1)


def cached_step(model, cache):
    """Next-token logits through `cache`: each call runs only the new tokens."""
    return lambda tokens: model(tokens, cache=cache)[:, -1, :]


def uncached_step(model):
    """Next-token logits from the full sequence, recomputed at every call (the reference path)."""
    seen = []

    def step(tokens: torch.Tensor) -> torch.Tensor:
        seen.append(tokens)
        return model(torch.cat(seen, dim=1))[:, -1, :]

    return step


def compiled_decoder(model) -> StaticDecoder:
    """The model's compiled static-cache decoder, made on the first call and kept on the model (a
    plain attribute, not a submodule: no weights), so later calls reuse its graphs."""
    decoder = getattr(model, "_compiled_decoder", None)
    if decoder is None:
        decoder = model._compiled_decoder = StaticDecoder(model, compile=True)
    return decoder
