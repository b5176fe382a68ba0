"""Conversion between our `GPT` and Hugging Face transformers checkpoints, driven by a table.

`FAMILIES` maps an HF `config.model_type` to a `Family` (model/hf/table.py), one module per layout:
gpt2.py (GPT-2), gpt_neox.py (GPT-NeoX), llama.py (Llama, Mistral, Qwen3, OLMo 2, OLMo 3), gemma2.py
(Gemma 2), gemma3.py (Gemma 3 text), moe.py (Mixtral, Qwen3-MoE), deepseek.py (DeepSeek-V3: MLA), deepseek_v32.py
(DeepSeek-V3.2: sparse attention), gpt_oss.py (gpt-oss: sinks, biased experts), qwen3_5.py
(Qwen3.5: Gated DeltaNet and gated attention), qwen3_next.py (Qwen3-Next, Qwen3.5-MoE: that hybrid
with routed experts and a gated shared expert). A family has
  * `config_from_hf(hf_config) -> ModelConfig`: reads the HF config and raises ValueError naming
    any HF setting our model cannot reproduce exactly (a different activation, a RoPE variant, ...);
  * `config_to_hf(cfg, **overrides) -> PretrainedConfig`: the inverse. Whether the HF family can
    express `cfg` is checked once for all families: `config_from_hf(config_to_hf(cfg))` must give
    `cfg` back, so a field this family does not know (e.g. a later rung's toggle) is never dropped;
  * `weights`: rows (our parameter(s), HF tensor name(s), Transform); `{i}` stands for the layer
    index; a row with several of ours (Qwen3.5's q_proj holds our queries and gates) loads a list
    and saves from one;
  * `hf_ignore`: regexes of HF buffers that carry no weights (masks, rotary frequency tables).

The converter copies every row, then checks that each of our parameters was filled and each HF
parameter/buffer consumed; a row whose names exist on neither side is skipped (`lm_head` of a tied
model, biases of a bias-free one), on one side only is an error. Each copy checks the shape, since
`copy_` would broadcast. Our persistent buffers take part only where a row names them: the only
one, MoE `expert_bias`, is DeepSeek-V3's `e_score_correction_bias`; the other MoE families have no
such bias (gpt-oss's learned router bias is our `Router.bias`), so their `to_hf` refuses a model
where it is not 0.
"""

import os
import re
from dataclasses import fields, is_dataclass, replace
from typing import Callable

import torch
from torch import nn

from ..config import MLAConfig, ModelConfig, MoEConfig
from ..gpt import GPT
from .deepseek import DEEPSEEK_V3
from .deepseek_v32 import DEEPSEEK_V32
from .gemma2 import GEMMA2
from .gemma3 import GEMMA3
from .gpt2 import GPT2
from .gpt_neox import GPT_NEOX
from .gpt_oss import GPT_OSS
from .llama import LLAMA, MISTRAL, OLMO2, OLMO3, QWEN3
from .moe import MIXTRAL, QWEN3_MOE
from .qwen3_5 import QWEN3_5
from .qwen3_next import QWEN3_5_MOE, QWEN3_NEXT
from .table import IDENTITY, TRANSPOSE, VOCAB, Family, Tensors, Transform, concat, names

__all__ = [
    "FAMILIES", "Family", "Transform", "IDENTITY", "TRANSPOSE", "VOCAB", "concat",
    "config_from_hf", "config_to_hf", "from_hf", "to_hf", "load_pretrained",
]

FAMILIES: dict[str, Family] = {
    "gpt2": GPT2, "gpt_neox": GPT_NEOX, "llama": LLAMA, "mistral": MISTRAL, "qwen3": QWEN3, "olmo2": OLMO2,
    "olmo3": OLMO3, "gemma2": GEMMA2, "gemma3_text": GEMMA3,
    "mixtral": MIXTRAL, "qwen3_moe": QWEN3_MOE, "deepseek_v3": DEEPSEEK_V3, "deepseek_v32": DEEPSEEK_V32,
    "gpt_oss": GPT_OSS, "qwen3_5_text": QWEN3_5, "qwen3_5_moe_text": QWEN3_5_MOE, "qwen3_next": QWEN3_NEXT,
}


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
    lost = _differences(_canonical(cfg), _canonical(family.config_from_hf(hf_config)), "model.")
    # Padding is ours alone; zero_init_proj is how the weights started. Capacity, aux/z-loss
    # weights, the bias update rate and DSA's indexer loss weight shape what training learns, not
    # the function a given set of weights computes, which is all an HF config describes.
    for name in ("vocab_multiple", "zero_init_proj", *(f"moe.{n}" for n in MoEConfig.TRAINING_ONLY),
                 *(f"mla.{n}" for n in MLAConfig.TRAINING_ONLY)):
        lost.pop(f"model.{name}", None)
    if lost:
        raise Unrepresentable(model_type, [f"{name}={value!r}" for name, value in lost.items()])
    return hf_config


class Unrepresentable(ValueError):
    """`config_to_hf`'s refusal: the settings ("model.window=64", ...) an HF family cannot hold."""

    def __init__(self, model_type: str, settings: list[str]):
        super().__init__(f"HF {model_type} cannot represent {', '.join(settings)}")
        self.settings = settings


def _canonical(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with settings that have two spellings written one way: attn_scale = head_dim^-0.5 is
    the default scale, the same model as attn_scale = 0 (Gemma 2's presets spell it out); plain RoPE
    with local_theta = theta is the same as local_theta = 0."""
    if cfg.attn_scale and cfg.attn_scale == cfg.head_dim**-0.5:
        cfg = replace(cfg, attn_scale=0.0)
    if cfg.rope.scaling == "none" and cfg.rope.local_theta == cfg.rope.theta:
        cfg = replace(cfg, rope=replace(cfg.rope, local_theta=0.0))
    return cfg


def _differences(ours, back, prefix: str) -> dict[str, object]:
    """Fields of `ours` that `back` does not reproduce, by dotted name (into sub-configs)."""
    lost = {}
    for f in fields(ours):
        a, b = getattr(ours, f.name), getattr(back, f.name)
        if is_dataclass(a) and is_dataclass(b):
            lost |= _differences(a, b, f"{prefix}{f.name}.")
        elif a != b:
            lost[prefix + f.name] = a
    return lost


def _rows(family: Family, cfg: ModelConfig):
    """The weight table with `{i}` expanded: (tuple of our names, tuple of HF names, transform)."""
    for ours, hf, transform in family.weights:
        ours, hf = names(ours), names(hf)
        for i in range(cfg.n_layer) if "{i}" in ours[0] else [None]:
            yield tuple(o.format(i=i) for o in ours), tuple(h.format(i=i) for h in hf), transform


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
        raise ValueError(f"incomplete conversion: unused {sorted(unused)}, "
                         f"unfilled {sorted(unfilled)}")


def from_hf(hf_model: nn.Module) -> GPT:
    """Our GPT with the weights of an HF causal LM, in its dtype and on the CPU."""
    family = _family(hf_model.config.model_type)
    cfg = family.config_from_hf(hf_model.config)
    gpt = GPT(cfg).to(next(hf_model.parameters()).dtype)
    rows = [(hf, ours, t) for ours, hf, t in _rows(family, cfg)]
    src = {n: t.detach().cpu() for n, t in _hf_tensors(hf_model, family).items()}
    _transfer(rows, src, _our_tensors(gpt, family), lambda ts, t: _listed(t.load(ts, cfg)))
    return gpt.eval()


def to_hf(gpt: GPT, model_type: str = "gpt2", **overrides) -> nn.Module:
    """An HF `AutoModelForCausalLM` with our weights, in eval mode, in our dtype and on the CPU."""
    from transformers import AutoModelForCausalLM

    family, cfg = _family(model_type), gpt.config
    if cfg.mtp_depth:
        raise ValueError(f"model.mtp_depth = {cfg.mtp_depth}: HF causal LMs build no multi-token-prediction "
                         "modules (DeepseekV3ForCausalLM drops its MTP layer on load), so their weights "
                         "would be lost; convert a model with model.mtp_depth = 0")
    hf_config = config_to_hf(cfg, model_type, **overrides)
    ours = _our_tensors(gpt, family)
    _check_no_expert_bias(gpt, model_type, ours)
    hf_model = AutoModelForCausalLM.from_config(hf_config).to(next(gpt.parameters()).dtype)
    rows = list(_rows(family, cfg))
    src = {n: p.detach().cpu() for n, p in ours.items()}
    _transfer(rows, src, _hf_tensors(hf_model, family), lambda ts, t: t.save(ts[0] if len(ts) == 1 else ts, cfg))
    return hf_model.eval()


def _listed(loaded) -> list[torch.Tensor]:
    """A Transform's `load` gives our one tensor, or a list when a row fills several of ours."""
    return [loaded] if isinstance(loaded, torch.Tensor) else list(loaded)


def _our_tensors(gpt: GPT, family: Family) -> dict[str, torch.Tensor]:
    """Our parameters, and the buffers the family's table maps (DeepSeek-V3's router bias)."""
    mapped = {name.split(".{i}.")[-1] for ours, _, _ in family.weights for name in names(ours)}
    buffers = {n: b for n, b in gpt.named_buffers() if n.split(".", 3)[-1] in mapped}
    return dict(gpt.named_parameters()) | buffers


def _check_no_expert_bias(gpt: GPT, model_type: str, converted: dict) -> None:
    """MoE `expert_bias` (moved by aux-loss-free balancing) steers which experts a token uses; HF
    routers without a bias would choose differently, so a non-zero bias cannot be dropped."""
    for name, buffer in gpt.named_buffers():
        if name.endswith("router.expert_bias") and name not in converted and buffer.any():
            raise ValueError(f"HF {model_type} has no bias that steers only the choice of experts, but {name} "
                             "is not zero (trained with model.moe.bias_update_rate > 0)")


def load_pretrained(path_or_name: str) -> GPT:
    """`GPT.from_pretrained`: a local HF checkpoint directory, or a hub name when online."""
    from transformers import AutoModelForCausalLM

    path = os.path.expanduser(path_or_name)
    looks_local = os.path.isabs(path) or path.startswith(".") or os.path.exists(path)
    if looks_local and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{path_or_name!r} is not a directory with an HF checkpoint (config.json); "
                         "a training run loads with train.run.load_run(run_dir).model")
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(path)
    except OSError as e:  # no weights in the directory, or the hub is unreachable or lacks it
        why = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ValueError(f"cannot load HF checkpoint {path_or_name!r}: {why}") from None
    return from_hf(hf_model)
