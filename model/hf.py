"""Conversion between our `GPT` and Hugging Face transformers checkpoints, driven by a table.

`FAMILIES` maps an HF `config.model_type` ("gpt2", later "llama", "qwen3", ...) to a `Family`:
  * `config_from_hf(hf_config) -> ModelConfig`: reads the HF config and raises ValueError for any
    setting our model cannot reproduce exactly (a different activation, a rescaled attention, ...);
  * `config_to_hf(cfg, **overrides) -> PretrainedConfig`: the inverse. Whether the HF family can
    express `cfg` is checked once for all families: `config_from_hf(config_to_hf(cfg))` must give
    `cfg` back, so a field this family does not know (e.g. a later rung's toggle) is never dropped;
  * `weights`: rows (our parameter, HF tensor name(s), Transform); `{i}` stands for the layer index.
    A `Transform` converts the HF tensors of a row into our one tensor (`load`) and back (`save`):
    a transpose for GPT-2's `Conv1D` (stored (in, out), our `nn.Linear` is (out, in)), vocabulary
    padding, or `concat` of several HF tensors (q/k/v -> our fused `c_attn`);
  * `hf_ignore`: regexes of HF buffers that carry no weights (masks, rotary frequency tables).

The converter copies every row, then checks that each of our parameters was filled and each HF
parameter/buffer consumed; a row whose names exist on neither side is skipped (`lm_head` of a tied
model), on one side only is an error. Each copy checks the shape, since `copy_` would broadcast.
"""

import os
import re
from dataclasses import dataclass, fields
from typing import Callable, NamedTuple

import torch
from torch import nn

from .config import ModelConfig
from .gpt import GPT

Tensors = list[torch.Tensor]


class Transform(NamedTuple):
    load: Callable[[Tensors, ModelConfig], torch.Tensor]  # HF tensors of one row -> our tensor
    save: Callable[[torch.Tensor, ModelConfig], Tensors]  # our tensor -> HF tensors of the row


IDENTITY = Transform(lambda ts, cfg: ts[0], lambda t, cfg: [t])
TRANSPOSE = Transform(lambda ts, cfg: ts[0].t(), lambda t, cfg: [t.t()])  # Conv1D (in, out)
# Our embedding/LM-head rows are padded to `padded_vocab_size`; the padding rows are never used
# (their logits are cut off), so zeros are as good as anything.
VOCAB = Transform(
    lambda ts, cfg: nn.functional.pad(ts[0], (0, 0, 0, cfg.padded_vocab_size - ts[0].shape[0])),
    lambda t, cfg: [t[: cfg.vocab_size]],
)


def concat(sizes: Callable[[ModelConfig], list[int]], dim: int = 0) -> Transform:
    """Several HF tensors stacked along `dim` into one of ours, e.g. q/k/v into `c_attn`."""
    return Transform(
        lambda ts, cfg: torch.cat(ts, dim=dim),
        lambda t, cfg: list(t.split(sizes(cfg), dim=dim)),
    )


@dataclass(frozen=True)
class Family:
    config_from_hf: Callable[[object], ModelConfig]
    config_to_hf: Callable[..., object]
    weights: list[tuple[str, str | tuple[str, ...], Transform]]
    hf_ignore: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- GPT-2
def _gpt2_config_from_hf(c) -> ModelConfig:
    unsupported = {  # both names below are GELU with the tanh approximation
        "activation_function": c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"),
        "scale_attn_weights": not c.scale_attn_weights,  # scores not divided by sqrt(head_dim)
        "scale_attn_by_inverse_layer_idx": c.scale_attn_by_inverse_layer_idx,
        "add_cross_attention": c.add_cross_attention,
    }
    # `reorder_and_upcast_attn` is accepted: it computes the same function, only with fp32 scores.
    for name, bad in unsupported.items():
        if bad:
            raise ValueError(f"HF gpt2 config {name}={getattr(c, name)!r} is not supported")
    if not c.resid_pdrop == c.embd_pdrop == c.attn_pdrop:
        raise ValueError(
            "model.dropout is one rate, but the HF config has resid_pdrop/embd_pdrop/attn_pdrop = "
            f"{c.resid_pdrop}/{c.embd_pdrop}/{c.attn_pdrop}; load it with equal rates"
        )
    return ModelConfig(
        vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
        n_embd=c.n_embd, mlp_hidden=c.n_inner or 0, norm_eps=c.layer_norm_epsilon,
        tie_embeddings=c.tie_word_embeddings, dropout=float(c.resid_pdrop),
        init_std=c.initializer_range,
    )


def _gpt2_config_to_hf(cfg: ModelConfig, **overrides):
    from transformers import GPT2Config

    kwargs = dict(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_embd=cfg.n_embd, n_inner=cfg.mlp_hidden,
        activation_function="gelu_new",
        layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        initializer_range=cfg.init_std,
        bos_token_id=None, eos_token_id=None,  # ours has no special tokens; pass them as overrides
    )
    return GPT2Config(**{**kwargs, **overrides})


_GPT2_LAYER = [
    ("ln_1.weight", "ln_1.weight", IDENTITY),
    ("ln_1.bias", "ln_1.bias", IDENTITY),
    ("attn.c_attn.weight", "attn.c_attn.weight", TRANSPOSE),  # q, k, v in the same order
    ("attn.c_attn.bias", "attn.c_attn.bias", IDENTITY),
    ("attn.c_proj.weight", "attn.c_proj.weight", TRANSPOSE),
    ("attn.c_proj.bias", "attn.c_proj.bias", IDENTITY),
    ("ln_2.weight", "ln_2.weight", IDENTITY),
    ("ln_2.bias", "ln_2.bias", IDENTITY),
    ("mlp.c_fc.weight", "mlp.c_fc.weight", TRANSPOSE),
    ("mlp.c_fc.bias", "mlp.c_fc.bias", IDENTITY),
    ("mlp.c_proj.weight", "mlp.c_proj.weight", TRANSPOSE),
    ("mlp.c_proj.bias", "mlp.c_proj.bias", IDENTITY),
]

GPT2 = Family(
    config_from_hf=_gpt2_config_from_hf,
    config_to_hf=_gpt2_config_to_hf,
    weights=[
        ("transformer.wte.weight", "transformer.wte.weight", VOCAB),
        ("transformer.wpe.weight", "transformer.wpe.weight", IDENTITY),
        *[(f"transformer.h.{{i}}.{o}", f"transformer.h.{{i}}.{h}", t) for o, h, t in _GPT2_LAYER],
        ("transformer.ln_f.weight", "transformer.ln_f.weight", IDENTITY),
        ("transformer.ln_f.bias", "transformer.ln_f.bias", IDENTITY),
        ("lm_head.weight", "lm_head.weight", VOCAB),  # only when untied
    ],
    hf_ignore=(r"\.attn\.(masked_)?bias$",),  # causal-mask buffers of older transformers versions
)

FAMILIES: dict[str, Family] = {"gpt2": GPT2}


# ----------------------------------------------------------------------------- conversion
def _family(model_type: str) -> Family:
    if model_type not in FAMILIES:
        known = ", ".join(sorted(FAMILIES))
        raise ValueError(f"HF model_type {model_type!r} is not supported; known: {known}")
    return FAMILIES[model_type]


def config_from_hf(hf_config) -> ModelConfig:
    return _family(hf_config.model_type).config_from_hf(hf_config)


def config_to_hf(cfg: ModelConfig, model_type: str = "gpt2", **overrides):
    """An HF config for `cfg`; `overrides` set HF-only fields (e.g. eos_token_id=50256)."""
    family = _family(model_type)
    hf_config = family.config_to_hf(cfg, **overrides)
    back = family.config_from_hf(hf_config)
    names = [f.name for f in fields(cfg) if f.name != "vocab_multiple"]  # padding is ours alone
    lost = [n for n in names if getattr(back, n) != getattr(cfg, n)]
    if lost:
        settings = ", ".join(f"model.{n}={getattr(cfg, n)!r}" for n in lost)
        raise ValueError(f"HF {model_type} cannot represent {settings}")
    return hf_config


def _rows(family: Family, cfg: ModelConfig):
    """The weight table with `{i}` expanded: (our name, tuple of HF names, transform)."""
    for ours, hf, transform in family.weights:
        hf = (hf,) if isinstance(hf, str) else hf
        for i in range(cfg.n_layer) if "{i}" in ours else [None]:
            yield ours.format(i=i), tuple(h.format(i=i) for h in hf), transform


def _hf_tensors(hf_model: nn.Module, family: Family) -> dict[str, torch.Tensor]:
    tensors = dict(hf_model.named_parameters()) | dict(hf_model.named_buffers())
    return {n: t for n, t in tensors.items() if not any(re.search(p, n) for p in family.hf_ignore)}


@torch.no_grad()
def _transfer(rows, src: dict, dst: dict, convert: Callable[[Tensors], Tensors]) -> None:
    """Fill `dst` from `src`; each row maps src names -> dst names. Raises unless all are used."""
    unused, unfilled = set(src), set(dst)
    for src_names, dst_names, transform in rows:
        have = [n in src for n in src_names] + [n in dst for n in dst_names]
        if not any(have):
            continue  # e.g. lm_head of a tied model, present on neither side
        if not all(have):
            missing = [n for n in (*src_names, *dst_names) if n not in src and n not in dst]
            raise ValueError(f"weight map row {src_names} -> {dst_names}: missing {missing}")
        outputs = convert([src[n] for n in src_names], transform)
        for name, value in zip(dst_names, outputs, strict=True):
            if value.shape != dst[name].shape:
                raise ValueError(f"{name}: expected shape {tuple(dst[name].shape)}, "
                                 f"got {tuple(value.shape)} from {src_names}")
            dst[name].copy_(value)
        unused -= set(src_names)
        unfilled -= set(dst_names)
    if unused or unfilled:
        raise ValueError(
            f"incomplete conversion: unused {sorted(unused)}, unfilled {sorted(unfilled)}"
        )


def from_hf(hf_model: nn.Module) -> GPT:
    """Our GPT with the weights of an HF causal LM, in its dtype and on the CPU."""
    family = _family(hf_model.config.model_type)
    cfg = family.config_from_hf(hf_model.config)
    dtype = next(hf_model.parameters()).dtype
    gpt = GPT(cfg).to(dtype)
    rows = [(hf, (ours,), t) for ours, hf, t in _rows(family, cfg)]
    src = {n: t.detach().cpu() for n, t in _hf_tensors(hf_model, family).items()}
    _transfer(rows, src, dict(gpt.named_parameters()), lambda ts, t: [t.load(ts, cfg)])
    return gpt.eval()


def to_hf(gpt: GPT, model_type: str = "gpt2", **overrides) -> nn.Module:
    """An HF `AutoModelForCausalLM` with our weights, in eval mode, in our dtype and on the CPU."""
    from transformers import AutoModelForCausalLM

    family, cfg = _family(model_type), gpt.config
    dtype = next(gpt.parameters()).dtype
    hf_config = config_to_hf(cfg, model_type, **overrides)
    hf_model = AutoModelForCausalLM.from_config(hf_config).to(dtype)
    rows = [((ours,), hf, t) for ours, hf, t in _rows(family, cfg)]
    src = {n: p.detach().cpu() for n, p in gpt.named_parameters()}
    _transfer(rows, src, _hf_tensors(hf_model, family), lambda ts, t: t.save(ts[0], cfg))
    return hf_model.eval()


def load_pretrained(path_or_name: str) -> GPT:
    """`GPT.from_pretrained`: a local HF checkpoint directory, or a hub name when online."""
    from transformers import AutoModelForCausalLM

    path = os.path.expanduser(path_or_name)
    looks_local = os.path.isabs(path) or path.startswith(".") or os.path.exists(path)
    if looks_local and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{path_or_name!r} is not a directory with an HF checkpoint (config.json)")
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(path)
    except OSError as e:  # no weights in the directory, or the hub is unreachable or lacks it
        why = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ValueError(f"cannot load HF checkpoint {path_or_name!r}: {why}") from None
    return from_hf(hf_model)
