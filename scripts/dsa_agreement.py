"""How well a trained run's DSA indexer agrees with its main attention (model/mixer/dsa.py).

    python scripts/dsa_agreement.py RUN_DIR [--text FILE] [--batches 4]

For every DSA layer and every query with more than index_topk visible keys: the main attention's
distribution over *all* visible keys (dense, head mean, as if nothing were chosen), its top index_topk
keys, and the share of them the indexer's own top-k picks (recall; 1 = the same keys). Also the
sparse-stage KL of the indexer towards the main attention over the chosen keys (the training loss).
Text: FILE, in the run's tokens (default this Python's `argparse.py` source); `--batches` windows
of block_size tokens.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.mixer.dsa import attention_target, index_kl  # noqa: E402
from model.mixer.masks import visible_keys  # noqa: E402
from train.cli import argument_parser, at_least, run_cli  # noqa: E402
from train.errors import ConfigError  # noqa: E402
from train.run import load_run  # noqa: E402
from train.tokenizer import for_run  # noqa: E402


@torch.no_grad()
def layer_stats(attn, x: torch.Tensor) -> tuple[float, float, int, float]:
    """(recall sum, chance recall sum, queries counted, KL) of one MLA layer with input x (B, T, n_embd), no cache."""
    B, T, _ = x.shape
    pos = torch.arange(T)
    q_latent = attn.query.latent(x)
    q = attn.query.up(q_latent).view(B, T, attn.n_head, -1).transpose(1, 2)
    q_nope, q_pe = q.split([attn.nope, attn.rope], dim=-1)
    latent, k_pe = attn.kv_a_proj(x).unsqueeze(1).split([attn.rank, attn.rope], dim=-1)
    q_pe, k_pe = attn.rotary(q_pe, k_pe, pos)
    kv = attn.kv_b_proj(attn.kv_a_norm(latent)[:, 0]).view(B, T, attn.n_head, -1).transpose(1, 2)
    k = torch.cat([kv[..., : attn.nope], k_pe.expand(-1, attn.n_head, -1, -1)], dim=-1)
    q = torch.cat([q_nope, q_pe], dim=-1)
    indexer = attn.indexer
    q_index, k_index = indexer.project(x, q_latent, pos, attn.rotary)
    visible = visible_keys(pos, None, T, attn.window).expand(B, 1, T, T)
    dense = attention_target(q, k, visible, attn.scale)  # (B, 1, T, T)
    learns, indexer.learns = indexer.learns, True  # a run with index_loss_coef = 0 too
    with torch.enable_grad():  # select returns its scores only in a training forward with gradient on
        indexer.train()
        chosen, scores, _ = indexer.select(x, q_index, k_index, pos, None, attn.window, terms={})
        scores = scores.detach()
        indexer.eval()
    indexer.learns = learns
    chosen = chosen & visible
    kl = index_kl(scores, attention_target(q, k, chosen, attn.scale), chosen).item()
    top = torch.zeros_like(chosen).scatter_(-1, dense.topk(indexer.topk, dim=-1).indices, True)
    rows = visible.sum(-1) > indexer.topk  # (B, 1, T): a real choice
    recall = (top & chosen).sum(-1).float() / indexer.topk
    chance = indexer.topk / visible.sum(-1).float()  # k random keys of n: recall k / n
    return recall[rows].sum().item(), chance[rows].sum().item(), int(rows.sum()), kl


def main(argv: list[str]) -> int:
    p = argument_parser("python scripts/dsa_agreement.py", __doc__)
    p.add_argument("run_dir", help="a training run whose model has a DSA indexer")
    p.add_argument("--text", default=argparse.__file__, help="the text to score (default: argparse.py)")
    p.add_argument("--batches", type=int, default=4, help="windows of block_size tokens (default 4)")
    args = p.parse_args(argv)
    at_least(args.batches, "--batches", 1)
    if not Path(args.text).is_file():
        raise ConfigError(f"--text {args.text}: no such file")
    model = load_run(args.run_dir).model
    if not model.config.mla.index_topk or model.config.attention != "mla":
        raise ConfigError(f"{args.run_dir} has no DSA indexer (model.attention = 'mla' with model.mla.index_topk > 0)")
    T = model.config.block_size
    data = torch.tensor(for_run(args.run_dir).encode(Path(args.text).read_text(encoding="utf-8")), dtype=torch.long)
    if len(data) < args.batches * T:
        raise ConfigError(f"--text {args.text} holds {len(data):,} tokens; --batches {args.batches} of "
                          f"model.block_size={T} need {args.batches * T:,}")
    idx = data[: args.batches * T].view(args.batches, T)
    inputs = {}
    hooks = [b.attn.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0]))
             for i, b in enumerate(model.transformer.h)]
    with torch.no_grad():
        model(idx)
    for h in hooks:
        h.remove()
    stats = []
    for i, block in enumerate(model.transformer.h):
        r, c, n, kl = layer_stats(block.attn, inputs[i])
        stats.append((r, c, n, kl))
        print(f"layer {i}: top-{block.attn.indexer.topk} recall {r / n:.3f} (random keys: {c / n:.3f})  KL {kl:.4f}")
    recall, chance, count, kl = map(sum, zip(*stats))
    print(f"all layers: top-k recall {recall / count:.3f} (random keys: {chance / count:.3f})  "
          f"mean KL {kl / len(stats):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
