"""Multi-token prediction (DeepSeek-V3, arXiv:2412.19437 sec. 2.2): D sequential modules that predict
the tokens 2 .. D + 1 positions ahead, as an extra training signal and as a built-in draft model.

Module k (1 .. D) at position i takes the previous depth's hidden state h^{k-1}_i (h^0: the main
model's last hidden state, before its final norm) and the embedding of token t_{i+k}:

    h'_i = M_k [RMSNorm(Emb(t_{i+k})); RMSNorm(h^{k-1}_i)]      M_k: (2 n_embd -> n_embd), eh_proj
    h^k  = Block_k(h')                                           one transformer block, causal
    P^k_{i+k+1} = softmax(Head(Norm_k(h^k_i)))                   predicts t_{i+k+1}

over positions i = 0 .. T - k - 1. Emb and Head are the main model's (shared, not copied). The
paper's equation (21) writes [h; Emb]; the released DeepSeek-V3 weights (and HF's `eh_proj`) put
the embedding first, which only permutes the columns of M_k; we follow the weights. The norms are
the model's `model.norm`, so RMSNorm on DeepSeek-like configs.
The training objective adds lambda * mean_k CE_k (`model.mtp_loss_weight`, 0.3 in the paper's first
10T tokens); GPT.forward returns it as the `mtp_loss` term. Inference ignores the modules, except as a
draft for speculative decoding (model/inference/mtp_draft.py).
HF `DeepseekV3ForCausalLM` builds no MTP layers (their weights are skipped on load), so tests check
this module against the equations above written out by hand.
Config: model.mtp_depth (D, 0 = off), model.mtp_loss_weight.
"""

import torch
from torch import nn

from .block import build_block
from .config import ModelConfig
from .loss import lm_loss
from .norm import build_norm


class MTPModule(nn.Module):
    """One depth k of multi-token prediction: the two norms, the projection, a block, an output norm.
    Names follow DeepSeek-V3's MTP layer (enorm, hnorm, eh_proj, shared_head.norm -> norm)."""

    def __init__(self, cfg: ModelConfig, depth: int):
        super().__init__()
        self.enorm = build_norm(cfg)
        self.hnorm = build_norm(cfg)
        self.eh_proj = nn.Linear(2 * cfg.n_embd, cfg.n_embd, bias=False)
        self.block = build_block(cfg, cfg.n_layer + depth - 1)  # the layer pattern continues past the stack
        self.norm = build_norm(cfg)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, positions: torch.Tensor, cache=None,
                terms: dict | None = None) -> torch.Tensor:
        """h: (B, T, n_embd) previous depth's states; emb: (B, T, n_embd) embeddings of the tokens
        k ahead -> (B, T, n_embd) this depth's states (before `norm`)."""
        x = self.eh_proj(torch.cat([self.enorm(emb), self.hnorm(h)], dim=-1))  # (B, T, n_embd)
        return self.block(x, positions, cache, terms=terms)


class MTP(nn.Module):
    """D MTP modules and their weighted loss (module docstring). Config: mtp_depth, mtp_loss_weight."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(MTPModule(cfg, k) for k in range(1, cfg.mtp_depth + 1))
        self.weight = cfg.mtp_loss_weight
        self.vocab_size, self.final_softcap = cfg.vocab_size, cfg.final_softcap

    def hidden_states(self, h: torch.Tensor, idx: torch.Tensor, embed: nn.Module,
                      terms: dict | None = None) -> list[torch.Tensor]:
        """Every depth's states over idx (B, T) = t_0 .. t_{T-1}, from the main model's h (B, T, n_embd):
        h^k (B, T - k, n_embd) at positions i = 0 .. T - k - 1 (t_{i+k} must exist); h^k_i predicts
        t_{i+k+1}."""
        out, T = [], idx.shape[1]
        for k, module in enumerate(self.layers, start=1):
            n = T - k
            h = module(h[:, :n], embed(idx[:, k:]), torch.arange(n, device=idx.device), terms=terms)
            out.append(h)
        return out

    def forward(self, h: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor, embed: nn.Module,
                head: torch.Tensor, ignore_index: int = -100, terms: dict | None = None) -> torch.Tensor:
        """lambda * the mean over depths of depth k's cross-entropy against t_{i+k+1} = targets[:, i+k].

        h: (B, T, n_embd) the main model's states before its final norm; idx, targets: (B, T), the
        inputs and the inputs shifted by one; embed, head: the main model's embedding and LM-head
        weight; terms: the forward's other loss terms, which the modules' blocks may add to (MoE)."""
        losses = []
        for k, (module, hk) in enumerate(zip(self.layers, self.hidden_states(h, idx, embed, terms)), start=1):
            losses.append(lm_loss(module.norm(hk).flatten(0, 1), head, targets[:, k:].flatten(),
                                  self.vocab_size, self.final_softcap, ignore_index))
        return self.weight * torch.stack(losses).mean()
