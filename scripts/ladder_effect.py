"""Print the measured-effect table of docs/ladder.md from a ladder ablation's results.csv.

    python scripts/ladder_effect.py docs/results/ladder-cpu/results.csv
"""
import csv
import sys
rows = list(csv.DictReader(open(sys.argv[1])))
def f(x, fmt):
    return format(float(x), fmt) if x else "pending"
print("| rung | seeds done | val bpb | Δ vs previous rung | Δ vs 00-gpt2 | beyond seed spread | tok/s (1 thread, shared machine) |")
print("|---|--:|--:|--:|--:|---|--:|")
for r in rows:
    bpb = "" if not r["val_bpb_mean"] else f(r["val_bpb_mean"], ".3f") + (f" ± {float(r['val_bpb_std']):.3f}" if r["val_bpb_std"] else "")
    spread = {"True": "yes", "False": "no"}.get(r["beyond_seed_spread"], "n/a (1 seed)" if r["val_bpb_mean"] else "")
    spread = "(baseline)" if r["variant"] == rows[0]["variant"] else spread
    print(f"| {r['variant']} | {r['seeds_done']}/2 | {bpb or 'pending'} | {f(r['delta_bpb_previous'], '+.3f') if r['variant'] != '00-gpt2' else ''} "
          f"| {f(r['delta_bpb'], '+.3f')} | {spread} | {f(r['tok_per_s'], ',.0f')} |")
