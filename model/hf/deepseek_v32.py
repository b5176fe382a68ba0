"""DeepSeek-V3.2 (`DeepseekV32ForCausalLM`, arXiv:2512.02556): DeepSeek-V3 plus DeepSeek Sparse Attention.

Everything DeepSeek-V3 has is stored as in deepseek.py. Each attention layer adds the lightning
indexer (model/mixer/dsa.py) under `self_attn.indexer`: `wq_b` (our `q_up`, reading the query
latent), `wk` (`k_proj`), `k_norm` (a LayerNorm with weight and bias), `weights_proj`
(`head_weights`). The indexer's RoPE is rotate-half in HF already, so its rows are copied as they are.

Not supported (ValueError naming the setting): what deepseek.py refuses, q_lora_rank = None (HF's
V3.2 attention always has the low-rank query the indexer reads), mlp_bias, and mlp_layer_types
other than first_k_dense_replace dense layers then MoE. HF's indexer picks min(index_topk, keys)
keys, as ours does.
"""

from ..config import ModelConfig
from .deepseek import (
    DENSE_ROWS, MLA_ROWS, SHARED_ROWS, deepseek_config_to_hf, deepseek_v3_config_from_hf,
)
from .llama import HF_IGNORE, PRE_NORMS, decoder_weights
from .moe import MOE_ROWS
from .table import IDENTITY, Family, Row, reject_unsupported

INDEXER_ROWS: list[Row] = [
    ("attn.indexer.q_up.weight", "self_attn.indexer.wq_b.weight", IDENTITY),
    ("attn.indexer.k_proj.weight", "self_attn.indexer.wk.weight", IDENTITY),
    ("attn.indexer.k_norm.weight", "self_attn.indexer.k_norm.weight", IDENTITY),
    ("attn.indexer.k_norm.bias", "self_attn.indexer.k_norm.bias", IDENTITY),
    ("attn.indexer.head_weights.weight", "self_attn.indexer.weights_proj.weight", IDENTITY),
]


def deepseek_v32_config_from_hf(c) -> ModelConfig:
    """HF DeepseekV32Config -> ModelConfig: DeepSeek-V3's fields, plus [model.mla] index_topk,
    index_n_head and index_head_dim."""
    n_dense = min(c.first_k_dense_replace, c.num_hidden_layers)
    reject_unsupported(c, {
        "q_lora_rank": not c.q_lora_rank,
        "index_topk": c.index_topk < 1,  # our dense MLA is DeepSeek-V3
        "mlp_bias": c.mlp_bias,
        "mlp_layer_types": list(c.mlp_layer_types) != ["dense"] * n_dense + ["sparse"] * (c.num_hidden_layers - n_dense),
        "layer_types": set(c.layer_types) != {"indexed_attention"},
    })
    cfg = deepseek_v3_config_from_hf(c)
    cfg.mla.index_topk, cfg.mla.index_n_head, cfg.mla.index_head_dim = c.index_topk, c.index_n_heads, c.index_head_dim
    return ModelConfig(**{**vars(cfg), "mla": cfg.mla})  # validated again, with the indexer


def deepseek_v32_config_to_hf(cfg: ModelConfig, **overrides):
    m = cfg.mla
    # HF V3.2 types q_lora_rank as int (no full-rank queries): 0 for ours, which config_from_hf refuses
    return deepseek_config_to_hf("deepseek_v32", cfg, q_lora_rank=m.q_lora_rank, index_topk=m.index_topk, index_n_heads=m.index_n_head,
                                 index_head_dim=m.index_head_dim, mlp_layer_types=None, layer_types=None,
                                 mlp_bias=False, **overrides)


WEIGHTS = decoder_weights(PRE_NORMS, MOE_ROWS + SHARED_ROWS, attn_mlp=MLA_ROWS + INDEXER_ROWS + DENSE_ROWS)
DEEPSEEK_V32 = Family(deepseek_v32_config_from_hf, deepseek_v32_config_to_hf, WEIGHTS, HF_IGNORE)
