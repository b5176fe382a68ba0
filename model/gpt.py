"""The GPT model: token (+ position) embeddings, a stack of blocks, a final norm, the LM head."""

import math

import torch
from torch import nn

from .accounting import kv_cache_bytes_per_token
from .block import build_block
from .config import ModelConfig
from .embedding import ScaledEmbedding
from .inference.cache import CacheSpec, ModelCache
from .inference.cache.static import StaticCache
from .ffn.moe import Experts, MoE, end_step, step_stats
from .inference.generate import generate as generate_tokens
from .loss import lm_loss
from .mtp import MTP
from .inference.mtp_draft import MTPDraft
from .norm import build_norm
from .inference.sampling import TEMPERATURE, TOP_K
from .ffn.router import Router
from .softcap import softcap
from .streams import Streams
from .value_embed import ValueEmbeddings


class GPT(nn.Module):
    """A decoder-only transformer language model; with the default config, exactly GPT-2.

    Radford et al. 2019, "Language Models are Unsupervised Multitask Learners". Parameter names
    follow HF `GPT2LMHeadModel` (`transformer.wte`, `transformer.h.0.attn.c_attn`, ...), so
    weight conversion (model/hf/) is a near-identity map.

    `model(idx)` returns logits (B, T, vocab_size); `model(idx, targets)` returns (None, terms), the
    terms of the objective by name: "loss", the LM cross-entropy computed in chunks without
    materialising the logits (model/loss.py), and in a training forward the extra terms of the
    layers that have one (`objective`). The trainer minimises their sum. The embedding table is
    padded to `padded_vocab_size` rows for faster matmuls; the padding rows are cut off the logits
    and the loss, so they can never receive probability.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        embedding = ScaledEmbedding if cfg.embed_scale else nn.Embedding
        self.transformer = nn.ModuleDict(dict(
            wte=embedding(cfg.padded_vocab_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(build_block(cfg, i) for i in range(cfg.n_layer)),
            ln_f=build_norm(cfg),
        ))
        if cfg.pos == "learned":
            self.transformer["wpe"] = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        # the speedrun rungs: value embeddings, x0 lambdas / U-net skips (None when off)
        self.value_embeds = ValueEmbeddings(cfg) if cfg.value_embeds else None
        self.streams = Streams(cfg) if cfg.x0_lambdas or cfg.unet_skips else None
        self.mtp = MTP(cfg) if cfg.mtp_depth else None  # multi-token prediction modules
        self.moe_layers = [m for m in self.modules() if isinstance(m, MoE)]  # a plain list: they stay in `h`
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 initialisation.

        | parameter                               | init                                   |
        |-----------------------------------------|----------------------------------------|
        | embeddings, linear weights              | N(0, init_std)                         |
        | residual projections (`*.c_proj`,       | N(0, init_std / sqrt(2 * n_layer))     |
        |   Gated DeltaNet's `out_proj`)          |                                        |
        | biases                                  | 0                                      |
        | norm scales / shifts                    | 1 / 0                                  |
        | unit-offset norm scales (`1 + weight`)  | weight 0, so the scale starts at 1     |
        | MoE router weight                       | N(0, init_std); bias, expert_bias 0    |
        | MoE experts: c_fc / c_proj (per expert) | as an MLP's c_fc / c_proj              |
        | Gated DeltaNet decay: A_log, dt_bias    | log U(0.01, 16), 1 (HF Qwen3.5)        |
        | Gated DeltaNet conv1d                   | PyTorch's Conv1d default               |
        | value-embedding gates (`ve_gate`)        | 0 (gate 2 sigmoid(0) = 1)               |
        | x0 lambdas / U-net skip weights          | a_i 1, b_i 0.1 / 1 (model/streams.py)   |

        With `model.zero_init_proj` the residual projections start at 0 instead (modded-nanogpt,
        nanochat): every block is the identity at step 0 and the stream is the embedding's alone.

        Every block adds two residual branches to the stream; scaling their output projections by
        1/sqrt(2 * n_layer) keeps the stream's variance independent of depth (GPT-2 paper, sec. 2.3).
        """
        std = self.config.init_std
        residual_std = 0.0 if self.config.zero_init_proj else std / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                is_residual = name.endswith(("c_proj", "out_proj"))  # out_proj: linear attention
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)
                if name.endswith("ve_gate"):
                    nn.init.zeros_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, Router):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                nn.init.zeros_(module.expert_bias)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, Experts):
                nn.init.normal_(module.c_fc, mean=0.0, std=std)
                nn.init.normal_(module.c_proj, mean=0.0, std=residual_std)
                for bias in (module.c_fc_bias, module.c_proj_bias):
                    if bias is not None:
                        nn.init.zeros_(bias)
            elif hasattr(module, "reset_parameters") and not list(module.children()):
                module.reset_parameters()  # norms: scale 1, shift 0

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: ModelCache | None = None, ignore_index: int = -100,
                return_hidden: bool = False):
        """idx: (B, T) token ids. With `cache`, idx continues the cached sequence. return_hidden
        (no targets): (logits, the last block's output before the final norm), which the MTP draft
        starts from (model/inference/mtp_draft.py)."""
        B, T = idx.shape
        if cache is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds model.block_size={self.config.block_size}")
            positions = torch.arange(T, device=idx.device)  # (T,)
        else:  # the cache knows where idx starts; it never holds more than block_size positions
            positions = cache.positions(T, idx.device)
        x = self.transformer.wte(idx)  # (B, T, n_embd)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(positions)
        x = self.transformer.drop(x)
        values = self.value_embeds(idx) if self.value_embeds is not None else [None] * len(self.transformer.h)
        # a training forward's extra loss terms, by name: a list that layers with a term add to
        terms = {} if targets is not None and self.training else None
        if self.streams is None:
            for block, ve in zip(self.transformer.h, values):
                x = block(x, positions, cache, ve, terms)
        else:
            x = self.streams(self.transformer.h, x, positions, cache, values, terms)
        if cache is not None:
            cache.advance(T)
        h, x = x, self.transformer.ln_f(x)  # h: the last hidden state, which MTP starts from
        if targets is None:
            logits = self.lm_head(x)[..., : self.config.vocab_size]  # (B, T, vocab_size)
            logits = softcap(logits, self.config.final_softcap) if self.config.final_softcap else logits
            return (logits, h) if return_hidden else logits
        cfg = self.config
        loss = lm_loss(x.flatten(0, 1), self.lm_head.weight, targets.flatten(), cfg.vocab_size,
                       cfg.final_softcap, ignore_index)
        if terms is None:
            return None, {"loss": loss}
        mtp = None if self.mtp is None else self.mtp(h, idx, targets, self.transformer.wte,
                                                    self.lm_head.weight, ignore_index, terms)
        return None, objective(loss, terms, mtp)

    @torch.no_grad()
    def step_stats(self, sum_over_ranks=None) -> torch.Tensor:
        """The statistics the layers gathered since the last `end_step` (MoE: load per expert and
        the aux terms' values), flat and on the device, so that the trainer reads them with the loss
        in one copy; empty without MoE. sum_over_ranks: model/ffn/moe.py `step_stats`."""
        if not self.moe_layers:
            return self.transformer.ln_f.weight.new_zeros(0)
        return step_stats(self.moe_layers, sum_over_ranks)

    @torch.no_grad()
    def end_step(self, stats: list[float] | None = None, update_bias: bool = True) -> dict:
        """After an optimizer step: metrics from `step_stats` (as read by the caller, or read here),
        the aux-loss-free bias update of the MoE routers (update_bias=False: a skipped step) and a
        reset of the statistics (model/ffn/moe.py `end_step`)."""
        return end_step(self.moe_layers, stats, update_bias)

    def mtp_draft(self) -> MTPDraft:
        """The MTP modules as a speculative-decoding draft (model/inference/mtp_draft.py): for
        `speculative_generate(model, model.mtp_draft(), ...)` or `generate(..., draft="mtp")`."""
        return MTPDraft(self)

    def num_params(self) -> int:
        """Parameters, counting a tied embedding/LM-head matrix once."""
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, path_or_name: str) -> "GPT":
        """Load a Hugging Face checkpoint: a local directory, or a hub name when online (model/hf/).
        A training run's directory belongs to the trainer: `train.run.load_run(run_dir).model`."""
        from .hf import load_pretrained

        return load_pretrained(str(path_or_name))

    def cache_dtype(self) -> torch.dtype:
        """The compute dtype: autocast's when autocast is on for this device (keys and values come
        out of autocast matmuls in that dtype), else the weights' dtype."""
        p = self.transformer.ln_f.weight  # not the LM head's, which may be quantized (inference/quantize.py)
        on = torch.is_autocast_enabled(p.device.type)
        return torch.get_autocast_dtype(p.device.type) if on else p.dtype

    def new_cache(self, batch_size: int, max_len: int | None = None,
                  dtype: torch.dtype | None = None, **options) -> ModelCache:
        """An empty generation cache on this model's device for `max_len` positions (block_size).

        options: the other `CacheSpec` fields (kv_dtype, kv_residual, kv_group, rollback, static).
        dtype None: the compute dtype (`cache_dtype`).
        """
        dtype = dtype or self.cache_dtype()
        max_len = max_len or self.config.block_size
        if max_len > self.config.block_size:
            raise ValueError(f"a cache of {max_len} positions exceeds model.block_size={self.config.block_size}")
        spec = CacheSpec(batch_size, max_len, dtype, self.transformer.ln_f.weight.device, **options)
        cache_class = StaticCache if spec.static else ModelCache
        return cache_class([block.attn.new_cache(spec) for block in self.transformer.h], spec)

    def kv_cache_bytes_per_token(self, kv_dtype: str | None = None, **options) -> float:
        """Bytes one more token of context occupies in the generation cache across all layers,
        quantization scales included, in the compute dtype `new_cache` would pick (model/accounting.py;
        options: kv_group)."""
        return kv_cache_bytes_per_token(self.config, kv_dtype, self.cache_dtype().itemsize, **options)

    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = TEMPERATURE, top_k: int = TOP_K,
        top_p: float = 1.0, use_cache: bool = True, kv_dtype: str | None = None, draft=None,
        n_draft: int = 4, generator: torch.Generator | None = None, compile: bool = False, **options,
    ) -> torch.Tensor:
        """idx (B, T) followed by max_new_tokens sampled tokens: (B, T + max_new_tokens).

        temperature 0 = greedy (default 0.8, with top_k 50: model/inference/sampling.py); use_cache=False
        recomputes the whole prefix per token (the reference); kv_dtype None (compute dtype) |
        "int8" | "int4"; draft: a small GPT for speculative decoding with n_draft guesses per step, or
        "mtp" for the model's own MTP modules (at most one guess per module and step); compile: a
        static cache through torch.compile (CUDA graphs on a GPU, model/inference/decoder.py). Sampling and
        the decode loop live in model/inference/generate.py; `options` are passed on to it (e.g. kv_residual,
        or stream: a callable that sees each block of new tokens as it is decided).
        """
        return generate_tokens(self, idx, max_new_tokens, temperature, top_k, generator, top_p=top_p,
                               use_cache=use_cache, kv_dtype=kv_dtype, draft=draft, n_draft=n_draft,
                               compile=compile, **options)


def objective(lm: torch.Tensor, terms: dict[str, list[torch.Tensor]], mtp: torch.Tensor | None) -> dict:
    """A training forward's terms of the objective by name, each a scalar, each only when on:
    "loss", the LM cross-entropy; "aux_loss", MoE's weighted balancing terms averaged over MoE
    layers (model/ffn/moe.py); "mtp_loss", lambda times the mean multi-token-prediction
    cross-entropy (model/mtp.py); "index_loss", DSA's indexer loss averaged over its layers
    (model/mixer/dsa.py). metrics.jsonl logs each under its name."""
    out = {"loss": lm}
    if "aux_loss" in terms:
        out["aux_loss"] = sum(terms["aux_loss"]) / len(terms["aux_loss"])
    if mtp is not None:
        out["mtp_loss"] = mtp
    if "index_loss" in terms:
        out["index_loss"] = torch.stack(terms["index_loss"]).mean()
    return out
