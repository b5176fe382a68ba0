"""ModelConfig: every architectural choice of the ladder as one typed field.

The defaults are GPT-2 small (124M). Each rung adds one field whose default keeps GPT-2 unchanged,
so a config file names only what it changes. Values are validated on creation: a bad value raises
ValueError naming the field and what is allowed. Sizes written as 0 mean "derive the usual value"
and are resolved here, so the config saved next to a run states every size explicitly.
"""

import math
from dataclasses import dataclass, field, fields
from typing import Literal, get_args, get_origin


@dataclass
class RopeConfig:
    """Rotary position embeddings (`[model.rope]`), used when `model.pos = "rope"`."""

    theta: float = 10000.0  # base of the rotation frequencies
    scaling: Literal["none", "linear", "llama3", "yarn"] = "none"  # context-extension variant
    factor: float = 1.0  # context extension factor (linear, llama3, yarn)
    original_max_pos: int = 0  # pre-extension context length (llama3, yarn); 0 = block_size
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    truncate: bool = True  # yarn: round the ramp's ends to whole dimensions (HF default; gpt-oss: false)
    fraction: float = 1.0  # fraction of each head's dimensions that rotate (partial rotary)
    local_theta: float = 0.0  # theta for sliding-window layers (Gemma 3); 0 = theta

    def __post_init__(self) -> None:
        _check_choices(self, "model.rope.")
        for name in ("theta", "factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow"):
            _check_positive(f"model.rope.{name}", getattr(self, name))
        check_int("model.rope.original_max_pos", self.original_max_pos, minimum=0)
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"model.rope.fraction must be in (0, 1]; got {self.fraction}")
        if not (math.isfinite(self.local_theta) and self.local_theta >= 0):
            raise ValueError(f"model.rope.local_theta must be >= 0; got {self.local_theta}")


@dataclass
class MoEConfig:
    """Mixture of Experts (`[model.moe]`): with n_expert > 0, the MLP of every block after the first
    `first_dense` is replaced by routed experts (model/ffn/moe.py). The experts use `model.mlp`'s
    activation; the dense layers keep `model.mlp_hidden`."""

    n_expert: int = 0  # routed experts per MoE layer; 0 = no MoE (a dense MLP everywhere)
    top_k: int = 2  # experts each token is sent to
    expert_hidden: int = 0  # hidden size of one expert; 0 = model.mlp_hidden
    n_shared: int = 0  # always-on shared experts, one MLP of n_shared * expert_hidden (DeepSeek)
    shared_gate: bool = False  # a sigmoid gate, one scalar per token, on the shared experts' output (Qwen3-Next)
    router: Literal["softmax", "sigmoid"] = "softmax"  # expert scores: Mixtral, Qwen3 | DeepSeek-V3
    norm_topk: bool = True  # rescale the top_k weights of a token to sum to 1
    routed_scale: float = 1.0  # multiplies the routed experts' output (DeepSeek-V3: 2.5)
    n_group: int = 1  # group-limited routing: experts in n_group groups (DeepSeek-V3: 8) ...
    topk_group: int = 1  # ... and a token chooses only within its best topk_group groups (4)
    first_dense: int = 0  # the first layers keep a dense MLP (DeepSeek-V3: 3)
    router_bias: bool = False  # a learned bias on the router logits (gpt-oss)
    # --- training only: they change what is learned, not the function a trained model computes ---
    capacity_factor: float = 0.0  # > 0: an expert takes at most cf * tokens * top_k / n_expert
    aux_loss_coef: float = 0.0  # load-balancing loss weight (Switch Transformer)
    z_loss_coef: float = 0.0  # router z-loss weight (ST-MoE)
    bias_update_rate: float = 0.0  # aux-loss-free balancing step size (DeepSeek-V3); 0 = off

    TRAINING_ONLY = ("capacity_factor", "aux_loss_coef", "z_loss_coef", "bias_update_rate")

    def __post_init__(self) -> None:
        _check_choices(self, "model.moe.")
        for name in ("n_expert", "expert_hidden", "n_shared", "first_dense"):
            check_int(f"model.moe.{name}", getattr(self, name), minimum=0)
        for name in ("top_k", "n_group", "topk_group"):
            check_int(f"model.moe.{name}", getattr(self, name), minimum=1)
        _check_positive("model.moe.routed_scale", self.routed_scale)
        _check_bool("model.moe.shared_gate", self.shared_gate)
        for name in self.TRAINING_ONLY:
            _check_nonnegative(f"model.moe.{name}", getattr(self, name))
        if not self.n_expert:
            return
        if self.shared_gate and not self.n_shared:
            raise ValueError("model.moe.shared_gate gates the shared experts: it needs model.moe.n_shared >= 1")
        if self.top_k > self.n_expert:
            raise ValueError(f"model.moe.top_k ({self.top_k}) must be <= model.moe.n_expert "
                             f"({self.n_expert}): a token cannot use more experts than exist")
        _check_divisible("model.moe.n_expert", self.n_expert, "model.moe.n_group", self.n_group)
        if self.topk_group > self.n_group:
            raise ValueError(f"model.moe.topk_group ({self.topk_group}) must be <= model.moe.n_group "
                             f"({self.n_group})")
        per_group = self.n_expert // self.n_group
        if self.n_group > 1 and per_group < 2:
            raise ValueError("model.moe.n_group: each group needs >= 2 experts (groups are ranked by "
                             f"their two best scores); got {per_group}")
        if self.top_k > self.topk_group * per_group:
            raise ValueError(f"model.moe.top_k ({self.top_k}) must be <= the experts in "
                             f"model.moe.topk_group groups ({self.topk_group * per_group})")


@dataclass
class MLAConfig:
    """Multi-head Latent Attention (`[model.mla]`), read when `model.attention = "mla"`
    (model/mixer/mla.py). Sizes written as 0 take DeepSeek-V2/V3's ratios to `model.head_dim`."""

    q_lora_rank: int = 0  # rank of the compressed query; 0 = full-rank queries (DeepSeek-V2-Lite)
    kv_lora_rank: int = 0  # width of the cached latent c_kv; 0 = 4 * head_dim
    qk_nope_head_dim: int = 0  # per head: query/key dims read from the latent; 0 = head_dim
    qk_rope_head_dim: int = 0  # per head: rotary dims, one key shared by all heads; 0 = head_dim // 2
    v_head_dim: int = 0  # per head: value dims; 0 = head_dim
    # DeepSeek Sparse Attention (DeepSeek-V3.2, model/mixer/dsa.py): a lightning indexer picks the
    # index_topk keys each query attends to; 0 = dense MLA (no indexer)
    index_topk: int = 0
    index_n_head: int = 0  # indexer heads; 0 = n_head // 2 (V3.2: 64 of 128)
    index_head_dim: int = 0  # indexer head size; 0 = 2 * qk_rope_head_dim (V3.2: 128, rotary 64)
    # --- training only: the weight of the indexer's KL loss towards the main attention (dsa.py);
    # it trains the indexer alone, so on by default; 0 = the indexer stays as initialised
    index_loss_coef: float = 1.0

    TRAINING_ONLY = ("index_loss_coef",)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name not in self.TRAINING_ONLY:
                check_int(f"model.mla.{f.name}", getattr(self, f.name), minimum=0)
        _check_nonnegative("model.mla.index_loss_coef", self.index_loss_coef)

    def resolve(self, head_dim: int) -> None:
        """Fill the sizes written as 0 (called by ModelConfig when model.attention = "mla")."""
        self.kv_lora_rank = self.kv_lora_rank or 4 * head_dim
        self.qk_nope_head_dim = self.qk_nope_head_dim or head_dim
        self.qk_rope_head_dim = self.qk_rope_head_dim or max(2, head_dim // 2)
        self.v_head_dim = self.v_head_dim or head_dim
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"model.mla.qk_rope_head_dim must be even (rotary pairs); got {self.qk_rope_head_dim}")
        if not self.index_topk:
            if self.index_n_head or self.index_head_dim:
                raise ValueError("model.mla.index_n_head / index_head_dim are read only with model.mla.index_topk > 0")
            return
        if not self.q_lora_rank:
            raise ValueError("model.mla.index_topk needs model.mla.q_lora_rank > 0: the indexer's queries "
                             "are read from the low-rank query latent (DeepSeek-V3.2)")
        self.index_head_dim = self.index_head_dim or 2 * self.qk_rope_head_dim
        if self.index_head_dim < self.qk_rope_head_dim:
            raise ValueError(f"model.mla.index_head_dim ({self.index_head_dim}) must be >= model.mla."
                             f"qk_rope_head_dim ({self.qk_rope_head_dim}): its first dims rotate")


@dataclass
class DeltaNetConfig:
    """Gated DeltaNet linear attention (`[model.deltanet]`), read when `model.linear_attention =
    "gated_deltanet"` (model/mixer/deltanet.py). Sizes written as 0 take the attention's sizes."""

    full_every: int = 4  # layer i keeps full attention (model.attention) when (i + 1) % full_every == 0;
    # 0 = every layer linear. Qwen3-Next / Qwen3.5: 4 (3 linear : 1 full)
    n_head: int = 0  # query/key heads; 0 = model.n_head
    n_v_head: int = 0  # value heads (each q/k head serves n_v_head / n_head of them); 0 = n_head
    head_dim: int = 0  # query/key size per head; 0 = model.head_dim
    v_head_dim: int = 0  # value size per head; 0 = head_dim
    conv_size: int = 4  # width of the short causal depthwise convolution over q, k, v (1: no mixing over time)

    def __post_init__(self) -> None:
        for f in fields(self):
            minimum = 1 if f.name == "conv_size" else 0
            check_int(f"model.deltanet.{f.name}", getattr(self, f.name), minimum)

    def resolve(self, n_head: int, head_dim: int) -> None:
        """Fill the sizes written as 0 (called by ModelConfig when linear attention is on)."""
        self.n_head = self.n_head or n_head
        self.n_v_head = self.n_v_head or self.n_head
        self.head_dim = self.head_dim or head_dim
        self.v_head_dim = self.v_head_dim or self.head_dim
        _check_divisible("model.deltanet.n_v_head", self.n_v_head, "model.deltanet.n_head",
                         self.n_head)


@dataclass
class ModelConfig:
    # --- sizes ---
    vocab_size: int = 50257  # real vocabulary; embeddings are padded up to `padded_vocab_size`
    vocab_multiple: int = 64  # pad the embedding table to a multiple of this (matmul-friendly)
    block_size: int = 1024  # longest sequence the model is built for
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 0  # key/value heads; 0 = n_head (multi-head attention)
    n_embd: int = 768
    head_dim: int = 0  # 0 = n_embd // n_head
    mlp_hidden: int = 0  # 0 = 4 * n_embd
    # --- GPT-2 choices; each later rung offers alternatives ---
    # positions: learned absolute (GPT-2) | rotary (RoPE, configured in [model.rope]) | none (NoPE)
    pos: Literal["learned", "rope", "none"] = "learned"
    rope: RopeConfig = field(default_factory=RopeConfig)
    # norms
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    norm_unit_offset: bool = False  # scale by (1 + weight), weight initialised to 0 (Gemma)
    norm_placement: Literal["pre", "post", "sandwich"] = "pre"  # GPT-2/Llama | OLMo 2 | Gemma 2/3
    qk_norm: Literal["none", "head", "full"] = "none"  # per head (Qwen3, Gemma 3) | across heads (OLMo 2)
    # feed-forward
    # gelu: tanh approximation, as GPT-2; swiglu_clamped: gpt-oss's (up + 1) * clamped SwiGLU
    mlp: Literal["gelu", "swiglu", "geglu", "relu2", "swiglu_clamped"] = "gelu"
    swiglu_alpha: float = 1.702  # swiglu_clamped: gate * sigmoid(alpha * gate)
    swiglu_limit: float = 7.0  # swiglu_clamped: gate <= limit, -limit <= up <= limit
    moe: MoEConfig = field(default_factory=MoEConfig)  # Mixture of Experts in the MLP slot
    # the mixer: multi-head / grouped-query attention (n_kv_head) | Multi-head Latent Attention ([model.mla])
    attention: Literal["gqa", "mla"] = "gqa"
    mla: MLAConfig = field(default_factory=MLAConfig)
    attn_gate: bool = False  # sigmoid gate from the block input on the attention output (Qwen3-Next)
    # linear-attention layers between the full-attention ones, their pattern and sizes in [model.deltanet]
    linear_attention: Literal["none", "gated_deltanet"] = "none"
    deltanet: DeltaNetConfig = field(default_factory=DeltaNetConfig)
    # attention pattern
    window: int = 0  # sliding-window size in tokens; 0 = full causal attention
    global_every: int = 0  # with window: layer i is global when (i + 1) % global_every == 0; 0 = none
    attn_scale: float = 0.0  # softmax scale; 0 = 1 / sqrt(head_dim)
    attn_softcap: float = 0.0  # cap * tanh(logits / cap) on attention logits (Gemma 2); 0 = off
    final_softcap: float = 0.0  # the same on the output logits; 0 = off
    attn_sinks: bool = False  # a learned per-head sink logit in the softmax (gpt-oss)
    # embeddings, biases, regularisation, init
    embed_scale: bool = False  # multiply token embeddings by sqrt(n_embd) (Gemma)
    bias: bool = True  # biases in linear layers and norms
    tie_embeddings: bool = True  # lm_head shares the token embedding matrix
    dropout: float = 0.0
    init_std: float = 0.02
    # multi-token prediction (DeepSeek-V3): extra modules predicting 2 .. mtp_depth + 1 tokens ahead
    mtp_depth: int = 0  # D sequential MTP modules (model/mtp.py); 0 = off
    mtp_loss_weight: float = 0.3  # lambda: the objective adds lambda * mean of the D MTP losses
    # the speedrun rungs (modded-nanogpt, nanochat; docs/speedrun.md), each off by default
    value_embeds: bool = False  # a token embedding added, gated, to the values of alternate attention layers
    x0_lambdas: bool = False  # learned x <- a_i x + b_i x0 before block i, x0 the embedding (model/streams.py)
    unet_skips: bool = False  # the first half's block outputs feed the second half's inputs, mirrored
    zero_init_proj: bool = False  # residual output projections start at 0: every block starts as the identity
    attn_conv: int = 0  # Canon-B: a causal depthwise conv of this width, with a residual, on attention's q, k, v

    def __post_init__(self) -> None:
        _check_choices(self, "model.")
        for name in ("vocab_size", "vocab_multiple", "block_size", "n_layer", "n_head", "n_embd"):
            check_int(f"model.{name}", getattr(self, name), minimum=1)
        for name in ("n_kv_head", "head_dim", "mlp_hidden", "window", "global_every", "mtp_depth", "attn_conv"):
            check_int(f"model.{name}", getattr(self, name), minimum=0)
        if not self.head_dim and self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head "
                             f"({self.n_head}), or set model.head_dim explicitly")
        if self.attention == "mla":
            self._check_mla()
        elif self.mla != MLAConfig():
            raise ValueError('model.mla is read only when model.attention = "mla"; '
                             f"got model.attention = {self.attention!r}")
        self.n_kv_head = self.n_kv_head or self.n_head
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        rot_dim = int(self.head_dim * self.rope.fraction)  # as model/rope.py and HF compute it
        if self.pos == "rope" and self.attention != "mla" and (rot_dim < 2 or rot_dim % 2):
            raise ValueError(f"model.rope.fraction * head_dim must be an even number >= 2; "
                             f"got {self.rope.fraction} * {self.head_dim} -> {rot_dim}")
        if self.linear_attention != "none":
            self.deltanet.resolve(self.n_head, self.head_dim)
        elif self.deltanet != DeltaNetConfig():
            raise ValueError('model.deltanet is read only when model.linear_attention = "gated_deltanet"')
        self.mlp_hidden = self.mlp_hidden or 4 * self.n_embd
        _check_divisible("model.n_head", self.n_head, "model.n_kv_head", self.n_kv_head)
        if not (_is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"model.dropout must be a number in [0, 1); got {self.dropout!r}")
        for name in ("norm_eps", "init_std", "swiglu_alpha", "swiglu_limit"):
            _check_positive(f"model.{name}", getattr(self, name))
        for name in ("attn_scale", "attn_softcap", "final_softcap", "mtp_loss_weight"):
            _check_nonnegative(f"model.{name}", getattr(self, name), zero="off/default")
        for name in ("attn_gate", "value_embeds", "x0_lambdas", "unet_skips", "zero_init_proj"):
            _check_bool(f"model.{name}", getattr(self, name))
        if self.value_embeds and self.attention != "gqa":
            raise ValueError('model.value_embeds needs model.attention = "gqa" (MLA caches a latent, '
                             "not the values an embedding could be added to)")
        if self.value_embeds and not any(self.has_value_embed(i) for i in range(self.n_layer)):
            raise ValueError("model.value_embeds gives no layer a value embedding: they go to alternate layers "
                             "counted back from the last, attention layers only, and those are all linear here")
        if self.attn_conv and self.attention != "gqa":
            raise ValueError('model.attn_conv (Canon layers) needs model.attention = "gqa": MLA has no '
                             "fused [q; k; v] projection for it to act on")
        if self.global_every and not self.window:
            raise ValueError("model.global_every needs a sliding window: set model.window > 0")
        if self.moe.n_expert:
            self.moe.expert_hidden = self.moe.expert_hidden or self.mlp_hidden
            if self.moe.first_dense >= self.n_layer:
                raise ValueError(f"model.moe.first_dense ({self.moe.first_dense}) must be < "
                                 f"model.n_layer ({self.n_layer}), or there is no MoE layer")

    def _check_mla(self) -> None:
        """MLA shares one latent among all heads and normalises that latent itself: the GQA-only
        settings have nothing to act on, so they are refused rather than ignored."""
        if self.n_kv_head not in (0, self.n_head):
            raise ValueError(f"model.n_kv_head ({self.n_kv_head}) does not apply to MLA, whose heads all "
                             "read one cached latent: leave it at 0 (= n_head) with model.attention = \"mla\"")
        if self.qk_norm != "none":
            raise ValueError(f"model.qk_norm = {self.qk_norm!r} does not apply to MLA (it normalises the "
                             "latent; a norm on up-projected keys would break the absorbed decode path)")
        if self.rope.fraction != 1.0:
            raise ValueError("model.rope.fraction does not apply to MLA: its rotary dimensions are "
                             "model.mla.qk_rope_head_dim")
        self.mla.resolve(self.head_dim or self.n_embd // self.n_head)
        if self.mla.index_topk:
            self.mla.index_n_head = self.mla.index_n_head or max(1, self.n_head // 2)
            if self.attn_softcap or self.attn_sinks:
                raise ValueError("model.mla.index_topk (sparse attention) does not combine with "
                                 "model.attn_softcap or model.attn_sinks")

    def is_local(self, layer_idx: int) -> bool:
        """Whether block `layer_idx` uses sliding-window attention. With a window, layer i is global
        when (i + 1) % global_every == 0 (Gemma 2: global_every=2 -> local, global, ...; Gemma 3: 6);
        global_every=0 -> all layers local."""
        is_global = self.global_every > 0 and (layer_idx + 1) % self.global_every == 0
        return self.window > 0 and not is_global and not self.is_linear(layer_idx)

    def is_linear(self, layer_idx: int) -> bool:
        """Whether block `layer_idx` mixes with linear attention (`model.linear_attention`) rather than
        `model.attention`: with deltanet.full_every = 4, layers 0, 1, 2 linear, 3 full, ...; 0 = all."""
        every = self.deltanet.full_every
        return self.linear_attention != "none" and not (every and (layer_idx + 1) % every == 0)

    def has_value_embed(self, layer_idx: int) -> bool:
        """Whether block `layer_idx` of the stack gets a value embedding (model/value_embed.py):
        alternate blocks counted back from the last, attention layers only, never an MTP block."""
        alternate = (self.n_layer - 1 - layer_idx) % 2 == 0
        return self.value_embeds and alternate and layer_idx < self.n_layer and not self.is_linear(layer_idx)

    def mixer(self, layer_idx: int) -> str:
        """The sequence mixer of block `layer_idx`: the key of `model/mixer.MIXERS`."""
        return self.linear_attention if self.is_linear(layer_idx) else self.attention

    def ignored_keys(self) -> dict[str, str]:
        """Keys (dotted, under `model.`) that the chosen rungs never read, each with the reason.

        Setting one changes nothing; train/config.py warns when a user sets one explicitly.
        """
        out: dict[str, str] = {}

        def add(names, prefix: str, why: str) -> None:
            for name in names:
                out.setdefault(f"{prefix}{name}", why)

        if self.pos != "rope":
            add([f.name for f in fields(RopeConfig)], "rope.", f"model.pos is {self.pos!r}, not 'rope'")
        else:
            scaling = self.rope.scaling
            used = {"none": (), "linear": ("factor",),
                    "llama3": ("factor", "original_max_pos", "low_freq_factor", "high_freq_factor"),
                    "yarn": ("factor", "original_max_pos", "beta_fast", "beta_slow", "truncate")}[scaling]
            add([n for n in ("factor", "original_max_pos", "low_freq_factor", "high_freq_factor",
                             "beta_fast", "beta_slow", "truncate") if n not in used],
                "rope.", f"model.rope.scaling is {scaling!r}")
            if not self.window:
                add(["local_theta"], "rope.", "there are no sliding-window layers (model.window = 0)")
        if self.mlp != "swiglu_clamped":
            add(["swiglu_alpha", "swiglu_limit"], "", f"model.mlp is {self.mlp!r}, not 'swiglu_clamped'")
        if not self.moe.n_expert:
            add([f.name for f in fields(MoEConfig) if f.name != "n_expert"], "moe.",
                "model.moe.n_expert is 0 (no Mixture of Experts)")
        if self.attention != "mla":
            add([f.name for f in fields(MLAConfig)], "mla.", f"model.attention is {self.attention!r}, not 'mla'")
        if self.linear_attention == "none":
            add([f.name for f in fields(DeltaNetConfig)], "deltanet.", "model.linear_attention is 'none'")
        if not self.mtp_depth:
            add(["mtp_loss_weight"], "", "model.mtp_depth is 0 (no multi-token prediction)")
        return {f"model.{k}": v for k, v in out.items()}

    def is_moe(self, layer_idx: int) -> bool:
        """Whether block `layer_idx` holds a Mixture of Experts rather than a dense MLP."""
        return self.moe.n_expert > 0 and layer_idx >= self.moe.first_dense

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m


def _check_choices(obj: object, prefix: str) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if get_origin(f.type) is Literal and value not in get_args(f.type):
            allowed = ", ".join(repr(c) for c in get_args(f.type))
            raise ValueError(f"{prefix}{f.name} must be one of {allowed}; got {value!r}")


def _check_positive(name: str, value: object) -> None:
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")


def _check_nonnegative(name: str, value: object, zero: str = "off") -> None:
    if not (_is_number(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be >= 0 (0 = {zero}); got {value!r}")


def _check_divisible(name: str, value: int, by_name: str, by: int) -> None:
    if value % by:
        raise ValueError(f"{name} ({value}) must be divisible by {by_name} ({by})")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false; got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int) -> None:
    """ValueError `name must be an integer >= minimum` unless value is one (a bool is not): the one
    check of an integer argument, for configs and for the model's Python API alike."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
