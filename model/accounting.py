"""Model accounting from the config alone: parameters, training FLOPs per token, KV-cache bytes.

The one place benchmarks, logs and reports read these numbers from. Everything is a formula over
`ModelConfig` (no model is built), so it also answers "how big would this be?" for configs too large
to instantiate. A block is described by the weight matrices it multiplies (`block_matrices`) and the
norms and other vectors it holds; each rung is a registry entry or one term below: a GLU MLP lists
three matrices in `MLP_MATRICES`, a sandwich block holds four norms (`NORMS_PER_BLOCK`), a
Mixture-of-Experts layer counts all experts in `param_count` but only the top_k active ones in
`param_count(active=True)` and `matmul_params`.
"""

from .inference.cache.quantized import BITS, position_bytes
from .inference.cache.quantized_rolling import ring_groups, window_cache
from .mixer.attention import QK_NORM_GROUPS, kv_layouts as attention_kv_layouts
from .mixer.delta_rule import CHUNK
from .mixer.mla import kv_layouts as mla_kv_layouts
from .config import ModelConfig
from .value_embed import value_gate_matrices

Matrix = tuple[int, int]  # (fan_in, fan_out) of one weight matrix


def gqa_matrices(cfg: ModelConfig) -> list[Matrix]:
    """Fused q/k/v projection (n_kv_head key/value heads) and the output projection."""
    q_dim, kv_dim = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    return [(cfg.n_embd, q_dim + 2 * kv_dim), (q_dim, cfg.n_embd)]


def mla_matrices(cfg: ModelConfig) -> list[Matrix]:
    """MLA (model/mixer/mla.py): the query (full rank, or down + up through q_lora_rank), the KV
    down-projection to [latent; rotary key], the up-projection to per-head [k_nope; v], the output."""
    m, d, H = cfg.mla, cfg.n_embd, cfg.n_head
    q_out = H * (m.qk_nope_head_dim + m.qk_rope_head_dim)
    query = [(d, m.q_lora_rank), (m.q_lora_rank, q_out)] if m.q_lora_rank else [(d, q_out)]
    # DSA's indexer (model/mixer/dsa.py): query up-projection from the query latent, key, head weights
    indexer = [(m.q_lora_rank, m.index_n_head * m.index_head_dim), (d, m.index_head_dim),
               (d, m.index_n_head)] if m.index_topk else []
    return query + [(d, m.kv_lora_rank + m.qk_rope_head_dim),
                    (m.kv_lora_rank, H * (m.qk_nope_head_dim + m.v_head_dim)), (H * m.v_head_dim, d)] + indexer


def deltanet_matrices(cfg: ModelConfig) -> list[Matrix]:
    """Gated DeltaNet (model/mixer/deltanet.py): the fused input projection to [q; k; v; z; b; a] and
    the output projection."""
    d = cfg.deltanet
    key_dim, value_dim = d.n_head * d.head_dim, d.n_v_head * d.v_head_dim
    return [(cfg.n_embd, 2 * key_dim + 2 * value_dim + 2 * d.n_v_head), (value_dim, cfg.n_embd)]


def deltanet_vectors(cfg: ModelConfig) -> int:
    """The depthwise conv taps, A_log and dt_bias per value head, the gated RMSNorm's scale."""
    d = cfg.deltanet
    conv_dim = 2 * d.n_head * d.head_dim + d.n_v_head * d.v_head_dim
    return conv_dim * d.conv_size + 2 * d.n_v_head + d.v_head_dim


# `ModelConfig.mixer(i)` -> (its matrices, the indices of those with a bias when `model.bias`, its
# other parameters: norms, conv taps). MLA has no bias on the up-projections out of a latent (q_b,
# kv_b), and always RMSNorms the kv latent (and the query latent when low-rank); DSA's indexer
# LayerNorms its key. Gated DeltaNet has no biases (as HF).
MIXER_MATRICES = {
    "gqa": (gqa_matrices, lambda cfg: [0, 1], lambda cfg: 0),
    "mla": (mla_matrices, lambda cfg: [0, 2, 4] if cfg.mla.q_lora_rank else [0, 1, 3],
            lambda cfg: cfg.mla.kv_lora_rank + cfg.mla.q_lora_rank + 2 * cfg.mla.index_head_dim),
    "gated_deltanet": (deltanet_matrices, lambda cfg: [], deltanet_vectors),
}

ATTENTION_DIMS = {  # `model.attention` -> (query/key, value) dims per head in training
    "gqa": lambda cfg: (cfg.head_dim, cfg.head_dim),
    "mla": lambda cfg: (cfg.mla.qk_nope_head_dim + cfg.mla.qk_rope_head_dim, cfg.mla.v_head_dim),
}


def gate_matrices(cfg: ModelConfig, layer_idx: int) -> list[Matrix]:
    """The output gate's projection (model/mixer/gate.py) on attention layers, `model.attn_gate`:
    from x to the heads' output, n_head value vectors."""
    if not cfg.attn_gate or cfg.is_linear(layer_idx):
        return []
    return [(cfg.n_embd, cfg.n_head * ATTENTION_DIMS[cfg.attention](cfg)[1])]


def attention_matrices(cfg: ModelConfig, layer_idx: int = 0) -> list[Matrix]:
    """The matrices of block `layer_idx`'s mixer (attention, MLA or linear attention), gate included."""
    return MIXER_MATRICES[cfg.mixer(layer_idx)][0](cfg) + gate_matrices(cfg, layer_idx)


def attention_params(cfg: ModelConfig, layer_idx: int = 0) -> int:
    """Weights and biases of block `layer_idx`'s mixer and its gate, plus MLA's latent RMSNorms (kv,
    and q when low-rank) or Gated DeltaNet's conv, decay and norm parameters."""
    build, biased, vectors = MIXER_MATRICES[cfg.mixer(layer_idx)]
    matrices = build(cfg)
    n = sum(fi * fo for fi, fo in matrices) + (sum(matrices[i][1] for i in biased(cfg)) if cfg.bias else 0)
    return n + vectors(cfg) + _params(cfg, gate_matrices(cfg, layer_idx))


def _two_layer(d: int, hidden: int) -> list[Matrix]:
    return [(d, hidden), (hidden, d)]


def _gated(d: int, hidden: int) -> list[Matrix]:
    # gate and up are one fused `c_fc` of 2 * hidden outputs; its bias splits the same way
    return [(d, hidden), (d, hidden), (hidden, d)]


# `model.mlp` -> the matrices of one MLP of `hidden` units (a dense MLP, one expert, shared experts)
MLP_MATRICES = {"gelu": _two_layer, "relu2": _two_layer, "swiglu": _gated, "geglu": _gated, "swiglu_clamped": _gated}


def _params(cfg: ModelConfig, matrices: list[Matrix]) -> int:
    """Weights and, with `model.bias`, one bias per output."""
    return sum(fi * fo + (fo if cfg.bias else 0) for fi, fo in matrices)


def mlp_matrices(cfg: ModelConfig, hidden: int) -> list[Matrix]:
    return MLP_MATRICES[cfg.mlp](cfg.n_embd, hidden)


def ffn_matrices(cfg: ModelConfig, layer_idx: int, active: bool) -> list[Matrix]:
    """The matrices of block `layer_idx`'s MLP slot. For an MoE layer: the shared experts and all
    routed experts, or (active=True) only the top_k a token is sent to."""
    if not cfg.is_moe(layer_idx):
        return mlp_matrices(cfg, cfg.mlp_hidden)
    m = cfg.moe
    experts = m.top_k if active else m.n_expert
    shared = mlp_matrices(cfg, m.n_shared * m.expert_hidden) if m.n_shared else []
    return shared + experts * mlp_matrices(cfg, m.expert_hidden)


def router_matrices(cfg: ModelConfig, layer_idx: int) -> list[Matrix]:
    """The MoE router of block `layer_idx` (its bias is `moe.router_bias`, whatever `model.bias` says), or nothing."""
    return [(cfg.n_embd, cfg.moe.n_expert)] if cfg.is_moe(layer_idx) else []


def shared_gate_matrices(cfg: ModelConfig, layer_idx: int) -> list[Matrix]:
    """The sigmoid gate on the shared experts of MoE block `layer_idx` (`moe.shared_gate`, Qwen3-Next):
    one number per token, no bias whatever `model.bias` says; or nothing."""
    return [(cfg.n_embd, 1)] if cfg.is_moe(layer_idx) and cfg.moe.shared_gate else []


NORM_PARAMS = {  # keyed by `model.norm`: parameters of one norm over `dim` features
    "layernorm": lambda cfg, dim: dim * (2 if cfg.bias else 1),  # scale (+ shift)
    "rmsnorm": lambda cfg, dim: dim,  # scale only, whatever `model.bias` says
}

NORMS_PER_BLOCK = {"pre": 2, "post": 2, "sandwich": 4}  # keyed by `model.norm_placement`


def block_matrices(cfg: ModelConfig, layer_idx: int = 0, active: bool = False) -> list[Matrix]:
    """The weight matrices of block `layer_idx` (all experts, or only the active ones)."""
    gates = router_matrices(cfg, layer_idx) + shared_gate_matrices(cfg, layer_idx) + value_gate_matrices(cfg, layer_idx)
    return attention_matrices(cfg, layer_idx) + ffn_matrices(cfg, layer_idx, active) + gates


def block_params(cfg: ModelConfig, layer_idx: int = 0, active: bool = False) -> int:
    """Parameters of one block: matrices and their biases, the router and the shared experts' gate,
    norms, and on attention (not linear-attention) layers QK-norms, sinks and Canon taps."""
    norm = NORM_PARAMS[cfg.norm]
    n = attention_params(cfg, layer_idx) + _params(cfg, ffn_matrices(cfg, layer_idx, active))
    n += sum(fi * fo + (fo if cfg.moe.router_bias else 0) for fi, fo in router_matrices(cfg, layer_idx))
    n += sum(fi * fo for fi, fo in shared_gate_matrices(cfg, layer_idx) + value_gate_matrices(cfg, layer_idx))
    n += NORMS_PER_BLOCK[cfg.norm_placement] * norm(cfg, cfg.n_embd)
    if not cfg.is_linear(layer_idx):
        n += sum(norm(cfg, dim) for dim in QK_NORM_GROUPS[cfg.qk_norm](cfg))  # query and key norms
        n += cfg.n_head if cfg.attn_sinks else 0  # one sink logit per head
        n += (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim * cfg.attn_conv  # Canon-B's taps (model/canon.py)
    return n


def param_count(cfg: ModelConfig, active: bool = False) -> int:
    """Parameters of `GPT(cfg)`, a tied embedding/LM-head matrix counted once.

    padded embedding + learned positions + the blocks + final norm + untied LM head + value
    embeddings + the streams' scalars (x0 lambdas, skip weights).
    Equals `sum(p.numel() for p in GPT(cfg).parameters())` for every combination of rungs.
    active=True counts only the top_k routed experts of each MoE layer: the parameters one token
    uses (the "active parameters" of an MoE, e.g. 37B of DeepSeek-V3's 671B).
    """
    d, vocab = cfg.n_embd, cfg.padded_vocab_size
    n = vocab * d  # token embedding
    n += cfg.block_size * d if cfg.pos == "learned" else 0  # RoPE and NoPE have no table
    n += sum(block_params(cfg, i, active) for i in range(cfg.n_layer))
    n += NORM_PARAMS[cfg.norm](cfg, d)  # final norm
    n += 0 if cfg.tie_embeddings else vocab * d  # LM head
    n += sum(vocab * cfg.n_kv_head * cfg.head_dim for i in range(cfg.n_layer) if cfg.has_value_embed(i))
    n += (2 * cfg.n_layer if cfg.x0_lambdas else 0) + (cfg.n_layer // 2 if cfg.unet_skips else 0)  # model/streams.py
    return n + sum(mtp_module_params(cfg, k, active) for k in range(1, cfg.mtp_depth + 1))


def mtp_module_params(cfg: ModelConfig, depth: int, active: bool = False) -> int:
    """One MTP module: its two input norms, the (2 n_embd -> n_embd) projection, a block and an
    output norm; the embedding and the LM head are the main model's."""
    d = cfg.n_embd
    return 3 * NORM_PARAMS[cfg.norm](cfg, d) + 2 * d * d + block_params(cfg, cfg.n_layer + depth - 1, active)


def matmul_params(cfg: ModelConfig) -> int:
    """Weights each token is multiplied by in a forward pass: every block matrix (three for a GLU
    MLP; for an MoE layer the router, the shared experts and their gate, and top_k routed experts)
    and the LM head (over the padded vocabulary, which is what is computed). Embedding lookups, norms
    and bias additions are not matmuls and are left out, as in Kaplan et al. 2020 (arXiv:2001.08361)."""
    blocks = sum(fi * fo for i in range(cfg.n_layer) for fi, fo in block_matrices(cfg, i, active=True))
    return blocks + cfg.n_embd * cfg.padded_vocab_size + mtp_matmul_params(cfg)


def mtp_matmul_params(cfg: ModelConfig) -> int:
    """Training only: each MTP module's projection, block and a second pass through the LM head.
    Charged for every token (depth k skips the last k positions of a sequence: k / seq_len less)."""
    head = cfg.n_embd * cfg.padded_vocab_size
    return sum(2 * cfg.n_embd**2 + head + sum(fi * fo for fi, fo in block_matrices(cfg, i, active=True))
               for i in range(cfg.n_layer, cfg.n_layer + cfg.mtp_depth))  # the MTP blocks


def attended_keys(cfg: ModelConfig, seq_len: int) -> list[int]:
    """Keys a query is charged for on each attention layer, the MTP blocks' included (they attend in
    training too): seq_len on global layers and min(window, seq_len) on sliding-window (local)
    layers; linear-attention layers have none."""
    local = min(cfg.window, seq_len)
    layers = range(cfg.n_layer + cfg.mtp_depth)  # the stack, then the MTP blocks
    return [local if cfg.is_local(i) else seq_len for i in layers if not cfg.is_linear(i)]


def deltanet_flops(cfg: ModelConfig, chunk: int = CHUNK) -> int:
    """Forward + backward FLOPs per token of one Gated DeltaNet layer beyond its matmuls with
    weights, in the chunked form (model/mixer/delta_rule.py), per value head: reading and writing
    the (head_dim x v_head_dim) state three times (S_0 read by q and by the keys' correction, the
    state update): 3 * 2 * dk * dv; the within-chunk products K K^T, Q K^T (chunk * dk each) and
    scores @ U (chunk * dv): 2 * chunk * (2 dk + dv); the two triangular solves: chunk * (dk + dv).
    Times 3 for forward + backward. Independent of the sequence length: linear in T overall."""
    d = cfg.deltanet
    dk, dv = d.head_dim, d.v_head_dim
    forward = 6 * dk * dv + 2 * chunk * (2 * dk + dv) + chunk * (dk + dv)
    return 3 * d.n_v_head * forward


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """FLOPs of one training step (forward + backward) per token at sequence length `seq_len`.

        6 * matmul_params + 6 * n_head * (qk_dim + v_dim) * sum(attended_keys)

    Weights: a token times an (in, out) matrix is in*out multiply-adds = 2*in*out FLOPs forward;
    the backward pass needs two such products (gradients w.r.t. the input and the weight), so
    2 + 4 = 6 FLOPs per weight per token.
    Attention: per layer and head, a query is dotted with seq_len keys (q @ k^T, 2*head_dim*seq_len
    FLOPs) and the seq_len values are summed with those weights (att @ v, the same again):
    2 * n_head * (qk_dim + v_dim) * seq_len forward, times 3 for forward + backward. For GQA
    qk_dim = v_dim = head_dim (12 * n_head * head_dim); MLA trains on the naive path, with
    qk_nope_head_dim + qk_rope_head_dim and v_head_dim (`ATTENTION_DIMS`).
    A sliding-window layer sees at most `window` keys, so it is charged min(window, seq_len) keys
    instead of seq_len (`attended_keys`). A Gated DeltaNet layer attends to no keys; its state and
    within-chunk products cost a constant per token (`deltanet_flops`).
    Like PaLM (arXiv:2204.02311, appendix B) and nanoGPT, this counts the full seq_len keys, not
    the ~seq_len/2 a causal mask leaves, and softmax/norm/activation FLOPs are ignored. With GQA the
    score cost follows n_head (queries), not n_kv_head.
    DeepSeek Sparse Attention (mla.index_topk): the heads attend to at most index_topk keys
    (`sparse` below), and the indexer scores every visible key, 2 * index_n_head * index_head_dim
    FLOPs per key forward, times 3 when its KL loss trains it (`mla.index_loss_coef` > 0; the
    attention probabilities it is fitted to are recomputed on the selected keys, 2 * n_head * qk_dim
    per key, forward only). Its weight matrices are in matmul_params and charged 6x like the others. On CPU our kernel
    masks a dense score matrix; the count is what the algorithm needs.
    """
    qk_dim, v_dim = ATTENTION_DIMS[cfg.attention](cfg)
    m, keys = cfg.mla, attended_keys(cfg, seq_len)
    sparse = sum(min(m.index_topk or seq_len, k) for k in keys)  # index_topk is 0 without DSA
    attention = 6 * cfg.n_head * (qk_dim + v_dim) * sparse
    indexer = 0
    if m.index_topk:
        trained = m.index_loss_coef > 0
        indexer = (6 if trained else 2) * m.index_n_head * m.index_head_dim * sum(keys)
        indexer += trained * 2 * cfg.n_head * qk_dim * sparse
    linear = deltanet_flops(cfg) * sum(map(cfg.is_linear, range(cfg.n_layer + cfg.mtp_depth)))
    return float(6 * matmul_params(cfg) + attention + indexer + linear)


KV_ELEMENTS = {  # `model.attention` -> numbers one layer caches per token
    "gqa": lambda cfg: 2 * cfg.n_kv_head * cfg.head_dim,  # a key and a value per KV head
    # the latent and the rotary key, and DSA's indexer key
    "mla": lambda cfg: cfg.mla.kv_lora_rank + cfg.mla.qk_rope_head_dim + cfg.mla.index_head_dim,
}


def kv_bytes_per_token(cfg: ModelConfig, bytes_per_elem: int = 2) -> int:
    """Bytes the generation cache holds per token, over the attention layers: linear-attention layers
    keep a fixed-size state instead (`recurrent_state_bytes`)."""
    attention_layers = sum(not cfg.is_linear(i) for i in range(cfg.n_layer))
    return attention_layers * KV_ELEMENTS[cfg.attention](cfg) * bytes_per_elem


def recurrent_state_bytes(cfg: ModelConfig, dtype_bytes: int = 2) -> int:
    """What one Gated DeltaNet layer caches for one sequence, whatever its length
    (model/inference/cache/recurrent.py): the conv's last conv_size - 1 inputs in the compute dtype, and the
    fp32 state of n_v_head (head_dim x v_head_dim) matrices."""
    d = cfg.deltanet
    conv_dim = 2 * d.n_head * d.head_dim + d.n_v_head * d.v_head_dim
    return conv_dim * (d.conv_size - 1) * dtype_bytes + d.n_v_head * d.head_dim * d.v_head_dim * 4


def mha_kv_bytes_per_token(cfg: ModelConfig, bytes_per_elem: int = 2) -> int:
    """The same for multi-head attention at this width (n_head heads of head_dim keys and values):
    what GQA and MLA are measured against."""
    return 2 * cfg.n_layer * cfg.n_head * cfg.head_dim * bytes_per_elem


# ----------------------------------------------------------------------------- generation cache
# `model.attention` -> (heads, layouts) of one layer's quantized cache, as its mixer builds it: how
# each stored tensor is grouped and what it keeps beside its codes (model/inference/cache/quantized.py)
KV_LAYOUTS = {
    "gqa": lambda cfg: attention_kv_layouts(cfg.n_kv_head, cfg.head_dim),
    "mla": lambda cfg: mla_kv_layouts(cfg.mla.kv_lora_rank, cfg.mla.qk_rope_head_dim, cfg.mla.index_head_dim),
}


def _layer_bytes_per_token(cfg: ModelConfig, kv_dtype: str | None, dtype_bytes: int, kv_group: int) -> float:
    """What one layer that keeps every position stores per token: in the compute dtype, or as codes
    plus their scales and zeros (per token, or 1/kv_group of the per-channel ones)."""
    if kv_dtype is None:
        return KV_ELEMENTS[cfg.attention](cfg) * dtype_bytes
    heads, layouts = KV_LAYOUTS[cfg.attention](cfg)
    return heads * position_bytes(layouts, BITS[kv_dtype], kv_group, dtype_bytes)


def kv_cache_bytes_per_token(cfg: ModelConfig, kv_dtype: str | None = None, dtype_bytes: int = 2,
                             kv_group: int = 128) -> float:
    """Bytes one more token of context occupies in the generation cache, summed over layers, scales
    and zero-points included. Sliding-window layers keep a fixed ring once the sequence is longer
    than their window (`kv_cache_bytes`) and add nothing per token, nor do linear-attention layers
    (a fixed state). Equals `GPT.new_cache(...).bytes_per_token()` (tests/test_generate.py)."""
    per_layer = _layer_bytes_per_token(cfg, kv_dtype, dtype_bytes, kv_group)
    return sum(0 if cfg.is_local(i) or cfg.is_linear(i) else per_layer for i in range(cfg.n_layer))


def kv_cache_bytes(cfg: ModelConfig, max_len: int, batch_size: int = 1, kv_dtype: str | None = None,
                   dtype_bytes: int = 2, kv_residual: int = 32, kv_group: int = 128, rollback: int = 0) -> int:
    """Bytes a generation cache for `max_len` positions allocates (model/inference/cache/), all layers:
    - a full-precision layer: max_len positions;
    - a quantized layer: codes and scales for max_len rounded up to kv_group positions, plus a
      full-precision ring of kv_residual + kv_group + rollback positions;
    - a sliding-window layer whose window + rollback is shorter than max_len: the smaller
      (`window_cache`) of its ring of window + rollback positions in the compute dtype, plus one
      int64 position per slot, and under kv_dtype a ring of whole quantized groups
      (model/inference/cache/quantized_rolling.py) with the same full-precision tail, plus one int64
      per group;
    - a linear-attention layer: its fixed state (`recurrent_state_bytes`), whatever max_len."""
    full = KV_ELEMENTS[cfg.attention](cfg) * dtype_bytes  # one position of one layer in the compute dtype
    total = 0.0
    for i in range(cfg.n_layer):
        if cfg.is_linear(i):
            total += batch_size * recurrent_state_bytes(cfg, dtype_bytes)
            continue
        quantized = kv_dtype and _layer_bytes_per_token(cfg, kv_dtype, dtype_bytes, kv_group)
        kind = "every"
        if cfg.is_local(i):
            kind = window_cache(cfg.window, max_len, rollback, kv_group, kv_residual, full, quantized or None)
        if kind == "ring":
            slots = cfg.window + rollback
            total += batch_size * slots * full + slots * 8
        elif kv_dtype is None:
            total += batch_size * max_len * full
        else:
            groups = -(-max_len // kv_group)
            if kind == "quantized ring":  # whole groups, and the group each slot holds
                groups = ring_groups(cfg.window, rollback, kv_group)
                total += groups * 8
            total += batch_size * (groups * kv_group * quantized + (kv_residual + kv_group + rollback) * full)
    return round(total)


# ----------------------------------------------------------------------------- quantized weights
def quantized_matrices(cfg: ModelConfig) -> list[Matrix]:
    """The matrices model/inference/quantize.py stores in int8/int4: every Linear of the blocks and the MTP
    modules, and the LM head (a tied token embedding shares it). Not MLA's kv_b up-projection (the
    absorbed decode reads its weight), the value-embedding gate, nor the MoE router and routed experts."""
    m = cfg.mla
    kv_b = (m.kv_lora_rank, cfg.n_head * (m.qk_nope_head_dim + m.v_head_dim)) if cfg.attention == "mla" else None
    out = [(2 * cfg.n_embd, cfg.n_embd)] * cfg.mtp_depth  # each MTP module's projection
    for i in range(cfg.n_layer + cfg.mtp_depth):  # the stack, then the MTP blocks
        attention = attention_matrices(cfg, i)
        if not cfg.is_linear(i) and kv_b in attention:
            attention.remove(kv_b)
        shared = mlp_matrices(cfg, cfg.moe.n_shared * cfg.moe.expert_hidden) if cfg.moe.n_shared else []
        ffn = shared + shared_gate_matrices(cfg, i) if cfg.is_moe(i) else ffn_matrices(cfg, i, False)
        out += attention + ffn
    return out + [(cfg.n_embd, cfg.padded_vocab_size)]


def _quantized_matrix_bytes(fan_in: int, fan_out: int, kind: str, group_size: int, dtype_bytes: int) -> float:
    """int8 and w8a8: codes and one scale per output; int4: outputs padded to 64 for the CPU packing
    (model/inference/quantize.py PAD_ROWS), codes and a scale and zero per group of `group_size`
    inputs of each output."""
    if kind != "int4":
        return fan_in * fan_out + fan_out * dtype_bytes
    rows = -(-fan_out // 64) * 64
    return rows * fan_in / 2 + rows * (fan_in // group_size) * 2 * dtype_bytes


def weight_bytes(cfg: ModelConfig, quantize: str | None = None, group_size: int = 128, dtype_bytes: int = 4) -> float:
    """Bytes of `GPT(cfg)`'s weights, a tied table counted once: every parameter in the compute
    dtype, or with `quantize` ("int8" | "int4" | "w8a8") the `quantized_matrices` as codes plus their scales
    (biases and everything else stay in the compute dtype). Equals the bytes of the parameters and
    buffers of `quantize(GPT(cfg), ...)`, the router's fp32 expert bias aside (tests/test_quantize.py)."""
    total = param_count(cfg) * dtype_bytes
    if quantize is None:
        return total
    for fan_in, fan_out in quantized_matrices(cfg):
        total += _quantized_matrix_bytes(fan_in, fan_out, quantize, group_size, dtype_bytes)
        total -= fan_in * fan_out * dtype_bytes
    return total
