"""Gemma 3 text (HF `Gemma3ForCausalLM`, model_type "gemma3_text", arXiv:2503.19786): Gemma 2's
layer (gemma2.py: sandwich and unit-offset norms, GeGLU, scaled embeddings, query_pre_attn_scalar)
with per-head QK-norm, 5 sliding layers to 1 global, and a RoPE per layer type: the global layers'
(1M, linearly scaled in the larger models) and plain RoPE at 10k on the sliding ones, our
`rope.local_theta` (read and written as OLMo 3's per-type RoPE is, llama.py).
"""

from dataclasses import replace

from ..config import ModelConfig
from .gemma2 import gemma2_config_from_hf, gemma2_config_to_hf
from .llama import HF_IGNORE, SANDWICH_NORMS, decoder_weights, olmo3_rope_from_hf, olmo3_rope_to_hf
from .table import Family


def gemma3_config_from_hf(c) -> ModelConfig:
    return replace(gemma2_config_from_hf(c, rope=olmo3_rope_from_hf, preferred_global_every=6), qk_norm="head")


def gemma3_config_to_hf(cfg: ModelConfig, **overrides):
    return gemma2_config_to_hf(cfg, model_type="gemma3_text", rope_parameters=olmo3_rope_to_hf(cfg),
                               **overrides)


GEMMA3 = Family(gemma3_config_from_hf, gemma3_config_to_hf, decoder_weights(SANDWICH_NORMS),
                HF_IGNORE + (r"rotary_emb\.\w+_attention_(original_)?inv_freq$",))
