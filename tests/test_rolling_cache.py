"""Sliding-window layers' caches: the full-precision ring of the last `window` positions and the
ring of whole quantized groups, each against the full forward or a cache of every position,
through chunks of every size and speculative decoding's rollbacks."""

import pytest
import torch

from model import GPT
from model.config import MLAConfig
from tiny_run import chunked_logits, randomize_, tiny, tokens

TOL = dict(atol=1e-5, rtol=1e-5)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ----------------------------------------------------------------------------- rolling window cache
def test_rolling_cache_equals_full_forward_far_past_the_window():
    """Window 8 on every other layer: a 20-token prefill (longer than the ring), then 40 single
    tokens. Local layers hold a ring of 8 slots whatever the context; the result is the full forward."""
    from model.inference.cache import LayerKV, RollingKV

    model = randomize_(GPT(tiny(window=8, global_every=2)), std=0.2)
    idx = tokens(60)
    with torch.no_grad():
        full = model(idx)
    cache = model.new_cache(2)
    assert [type(layer) for layer in cache.layers] == [RollingKV, LayerKV]
    got = []
    with torch.no_grad():
        got.append(model(idx[:, :20], cache=cache))
        got += [model(idx[:, t : t + 1], cache=cache) for t in range(20, 60)]
    torch.testing.assert_close(torch.cat(got, dim=1), full, **TOL)
    ring, every = cache.layers
    assert ring.nbytes() == 2 * (2 * 2 * 8 * 8 * 4) + 8 * 8  # k and v: (B=2, heads=2, 8 slots, hd=8) fp32 + positions
    assert every.nbytes() == 2 * (2 * 2 * 64 * 8 * 4) and ring.bytes_per_token() == 0


@pytest.mark.parametrize("rollback", [0, 3])
def test_rolling_cache_takes_chunks_of_every_size_past_the_window(rollback):
    """Window 8, ring of 8 + rollback slots: once the window is full, chunks of 1 to 6 tokens, on both
    sides of the longest the ring serves without evicting a key that the chunk's own queries still
    need, give the full forward's logits."""
    model = randomize_(GPT(tiny(window=8, global_every=2)), std=0.2)
    chunks = [10, 1, 2, 3, 4, 5, 6, 2, 1]
    idx = tokens(sum(chunks))
    with torch.no_grad():
        full = model(idx)
        got = chunked_logits(model, idx, chunks, rollback=rollback)
    torch.testing.assert_close(got, full, **TOL)


@pytest.mark.parametrize("attention", ["gqa", "mla"])
@pytest.mark.parametrize("kv_dtype", [None, "int8", "int4"])
def test_rollback_within_the_margin_is_exact(kv_dtype, attention):
    """Speculative decoding's pattern: 5 guesses fed, rolled back, others fed instead; the result is
    what a cache that never saw the guesses gives (window 8 ring; quantized groups of 16, residual 2:
    the guesses complete group 1, positions 16 .. 31, which the rollback must forget and quantize again)."""
    heads = dict(n_kv_head=4) if attention == "mla" else {}
    model = randomize_(GPT(tiny(window=8, global_every=2, attention=attention, **heads)), std=0.2)
    idx, guesses = tokens(50), tokens(5, seed=1)
    options = dict(kv_dtype=kv_dtype, kv_group=16, kv_residual=2, rollback=5)
    with torch.no_grad():
        cache = model.new_cache(2, **options)
        model(idx[:, :30], cache=cache)
        model(guesses, cache=cache)  # 35 >= 2 * 16 + 2 tokens: group 1 is quantized, guesses 30 and 31 in it
        cache.rollback(30)
        again = model(idx[:, 30:35], cache=cache)
        fresh = model.new_cache(2, **options)
        model(idx[:, :30], cache=fresh)
        expected = model(idx[:, 30:35], cache=fresh)
    assert torch.equal(again, expected)
    with pytest.raises(ValueError, match="built for at most 5"):
        cache.rollback(29)


@pytest.mark.parametrize("attention", ["gqa", "mla-dsa"])
@pytest.mark.parametrize("kv_dtype", ["int8", "int4"])
def test_a_quantized_ring_reads_what_a_cache_of_every_position_reads(kv_dtype, attention):
    """A window layer under kv_dtype keeps KIVI's groups in a ring of whole groups where that is the
    smaller cache (window 48, groups of 8: 6 slots, fewer bytes than the 48-slot full-precision
    ring); its logits equal those of the same cache with that layer's ring swapped for a QuantizedKV
    of the whole sequence, prefilled short, long (past the ring) and whole, to 1e-5. One layer, and
    beside it a global one for the bytes: read through a ring, attention sums in another order, and
    a later quantized layer may round that float noise to another code (a scale's, under MLA)."""
    from model.accounting import kv_cache_bytes
    from model.inference.cache import QuantizedKV, QuantizedRollingKV

    mla = dict(attention="mla", n_kv_head=4, mla=MLAConfig(q_lora_rank=8, index_topk=4)) if attention == "mla-dsa" else {}
    options = dict(kv_dtype=kv_dtype, kv_group=8, kv_residual=2)
    two = GPT(tiny(window=48, global_every=2, block_size=128, **mla))
    cache = two.new_cache(2, **options)
    assert [type(layer) for layer in cache.layers] == [QuantizedRollingKV, QuantizedKV]
    assert cache.nbytes() == kv_cache_bytes(two.config, 128, 2, dtype_bytes=4, **options)
    model = randomize_(GPT(tiny(n_layer=1, window=48, global_every=2, block_size=128, **mla)), std=0.2)
    idx = tokens(120)

    def logits(chunks, swap):
        cache = model.new_cache(2, **options)
        ring = cache.layers[0]
        assert isinstance(ring, QuantizedRollingKV)
        assert ring.nbytes() == model.new_cache(2, 100, **options).layers[0].nbytes()  # fixed by the window
        assert ring.nbytes() < model.new_cache(2).layers[0].nbytes()  # the full-precision ring
        if swap:
            cache.layers[0] = QuantizedKV(cache.spec, ring.codes[0].shape[1], ring.layouts, ring.bits)
        return torch.cat([model(part, cache=cache) for part in idx.split(chunks, dim=1)], dim=1)

    with torch.no_grad():
        for chunks in ([11] + [1] * 109, [70] + [1] * 50, [120]):
            torch.testing.assert_close(logits(chunks, False), logits(chunks, True), atol=1e-5, rtol=1e-5)
        # speculative decoding's rollback: 5 guesses complete group 7 (positions 56 .. 63, guesses
        # at 62 and 63 in it), which the ring must forget and quantize again from the right tokens
        options["rollback"] = 5
        cache, fresh = model.new_cache(2, **options), model.new_cache(2, **options)
        assert isinstance(cache.layers[0], QuantizedRollingKV)
        assert cache.nbytes() == kv_cache_bytes(model.config, 128, 2, dtype_bytes=4, **options)
        model(idx[:, :62], cache=cache)
        model(tokens(5, seed=1), cache=cache)
        cache.rollback(62)
        model(idx[:, :62], cache=fresh)
        assert torch.equal(model(idx[:, 62:], cache=cache), model(idx[:, 62:], cache=fresh))


@pytest.mark.parametrize("window", [45, 48])
@pytest.mark.parametrize("residual", [0, 2])
def test_a_quantized_ring_of_ceil_window_over_group_slots_is_enough(window, residual):
    """The ring holds ceil((window + rollback) / kv_group) groups: a query needs the window's
    positions before it, the newest kv_residual or more of them are in the full-precision tail, and
    the stored groups end at a group boundary. Chunks of every size from 1 to 13, a window that is
    and one that is not a multiple of the group, no tail and a short one, and rollbacks of up to
    the margin: the logits equal a QuantizedKV's of the whole sequence."""
    from model.inference.cache import QuantizedKV, QuantizedRollingKV

    options = dict(kv_dtype="int4", kv_group=8, kv_residual=residual, rollback=3)
    model = randomize_(GPT(tiny(n_layer=1, window=window, global_every=2, block_size=160)), std=0.2)
    idx = tokens(150)
    sizes = torch.randint(1, 14, (40,), generator=torch.Generator().manual_seed(window + residual)).tolist()
    chunks = [sizes.pop(0)]
    while sum(chunks) < 150:
        chunks.append(min(sizes.pop(0), 150 - sum(chunks)))

    def run(swap: bool) -> torch.Tensor:
        cache = model.new_cache(1, **options)
        ring = cache.layers[0]
        assert isinstance(ring, QuantizedRollingKV) and ring.slots == -(-(window + 3) // 8)
        if swap:
            cache.layers[0] = QuantizedKV(cache.spec, ring.codes[0].shape[1], ring.layouts, ring.bits)
        out, at = [], 0
        for n in chunks:
            guesses = tokens(3, B=1, seed=at)
            model(guesses, cache=cache)  # three rejected guesses, then the real tokens from `at`
            cache.rollback(at)
            out.append(model(idx[:1, at:at + n], cache=cache))
            at += n
        return torch.cat(out, dim=1)

    with torch.no_grad():
        torch.testing.assert_close(run(False), run(True), atol=1e-5, rtol=1e-5)


def test_a_long_chunk_after_a_rollback_hides_the_rejected_guesses():
    """Window 8, rollback margin 3 (ring of 11): 20 tokens, 3 rejected guesses rolled back, then a
    6-token chunk, longer than the ring serves in place. The ring still holds the guesses (one at
    the chunk's first position); the chunk's logits are the full forward's."""
    model = randomize_(GPT(tiny(window=8, global_every=2)), std=0.2)
    idx = tokens(26)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, rollback=3)
        model(idx[:, :20], cache=cache)
        model(tokens(3, seed=1), cache=cache)
        cache.rollback(20)
        got = model(idx[:, 20:], cache=cache)
    torch.testing.assert_close(got, full[:, 20:], **TOL)
