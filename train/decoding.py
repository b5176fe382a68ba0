"""The decoding flags (--kv_dtype, --compile, --draft) checked against a model where the command
line enters: train.sample, scripts/bench_decode.py, scripts/eval_kv_cache.py.

The model decides what it can serve; this module only asks it, and words a refusal for a
command-line user (a ConfigError: one line, exit 2). Each layer's mixer builds its own cache and
refuses a `CacheSpec` it cannot hold (a Canon convolution's state takes no static buffers), and a cache says
how far it can be rolled back (`max_rollback`; 0 for a Canon convolution's state), which speculative decoding
needs after a rejected guess. The ValueErrors model code raises stay as they are, for Python callers.
"""

from model.inference.cache import CacheSpec

from .errors import ConfigError

# what each mixer (model.config.mixer(i)) keeps of the past, in a user's words
LAYER_CACHES = {"gqa": "attention's key/value cache", "mla": "MLA's latent cache",
                "gated_deltanet": "Gated DeltaNet's recurrent state"}


def refusing_layer(model, mtp: bool = False, **options) -> str | None:
    """The first layer whose cache `model` cannot build with `options` (CacheSpec fields), or
    cannot roll back by `options["rollback"]` positions, in words ("MLA's latent cache (layer 1)");
    None when every layer can. mtp: the MTP modules' blocks too (the self-draft's caches)."""
    mixers = [block.attn for block in model.transformer.h]
    if mtp and model.mtp is not None:
        mixers += [module.block.attn for module in model.mtp.layers]
    spec = CacheSpec(1, 1, model.cache_dtype(), model.transformer.ln_f.weight.device, **options)
    for mixer in mixers:
        try:
            cache = mixer.new_cache(spec)
        except ValueError:
            return layer_words(model, mixer.layer_idx)
        if spec.rollback and getattr(cache, "max_rollback", None) == 0:
            return layer_words(model, mixer.layer_idx)
    return None


def layer_words(model, layer_idx: int) -> str:
    kind = model.config.mixer(layer_idx)
    if kind == "gqa" and model.config.attn_conv:  # what refuses is the conv's past, not the keys and values
        return f"the Canon convolution's state of attention (layer {layer_idx}, model.attn_conv)"
    return f"{LAYER_CACHES.get(kind, kind)} (layer {layer_idx})"


def check_decoding(model, *, kv_dtype: str | None = None, compile: bool = False, draft=None,
                   draft_name: str = "", n_draft: int = 4) -> None:
    """ConfigError naming the flag for a decoding request `model` cannot serve. draft: a draft
    model, "mtp" (the model's own MTP modules) or None; draft_name: as given to --draft."""
    if compile and kv_dtype:
        raise ConfigError("--compile decodes through a static cache in the compute dtype: leave out --kv_dtype "
                          "or --compile")
    if kv_dtype and (layer := refusing_layer(model, kv_dtype=kv_dtype)):
        raise ConfigError(f"--kv_dtype {kv_dtype} does not apply to {layer}: leave out --kv_dtype")
    if compile and (layer := refusing_layer(model, static=True)):
        raise ConfigError(f"--compile has no static cache for {layer} yet: leave out --compile")
    if draft is None:
        return
    if draft == "mtp":
        try:
            model.mtp_draft()
        except ValueError:
            raise ConfigError("--draft mtp drafts with the model's multi-token-prediction modules, and this run "
                              "has none (model.mtp_depth = 0): give a draft run directory instead") from None
    models = [("the model", model)] + ([] if draft == "mtp" else [("the draft", draft)])
    for which, m in models:
        if layer := refusing_layer(m, mtp=draft == "mtp", rollback=n_draft):
            raise ConfigError(f"--draft {draft_name or draft}: {layer} of {which} cannot be rolled back after "
                              "a rejected guess, as speculative decoding needs: leave out --draft")
