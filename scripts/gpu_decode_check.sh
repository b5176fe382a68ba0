#!/usr/bin/env bash
# The GPU figures of the decode benchmark in one go: GPT-2 124M shape (random weights), batch 1 and 8,
# 512 tokens of context: eager cached decode, the no-cache reference and HF GPT2LMHeadModel.generate
# on the same weights, then the compiled decode (GPT.generate(..., compile=True)), then int8, int4 and
# w8a8 (scripts/bench_quantize.py), then speculative decoding when a target and a draft run are given. Paste the tables into docs/LOG.md.
#
#   scripts/gpu_decode_check.sh                      # on a CUDA machine, from the repository root
#   TARGET=runs/default DRAFT=runs/draft scripts/gpu_decode_check.sh   # + speculative (SPEC_NEW=64 new tokens;
#                                                  # a run's block_size caps the context)
#
# Every setting is an environment variable, so the same script runs tiny on a CPU as a check:
#   DEVICE=cpu DTYPE=fp32 CONTEXT=8 NEW=2 NOCACHE=1 REPEAT=1 COMPILE=0 QUANT_NEW=2 QUANT_GROUP=32 \
#     EXTRA="--model.n_layer=1 --model.n_embd=32 --model.n_head=2" scripts/gpu_decode_check.sh
set -euo pipefail

PY=${PY:-python}
CONFIG=${CONFIG:-configs/gpt2-124m.toml}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
CONTEXT=${CONTEXT:-512}
NEW=${NEW:-256}
NOCACHE=${NOCACHE:-16}
REPEAT=${REPEAT:-3}
COMPILE=${COMPILE:-1}
EAGER=${EAGER:-1}  # 0: the compiled decode only
EXTRA=${EXTRA:-}
# EXTRA holds several overrides: split on purpose
common=(--device "$DEVICE" --dtype "$DTYPE" --context "$CONTEXT" --new_tokens "$NEW"
        --nocache_tokens "$NOCACHE" --repeat "$REPEAT" $EXTRA)

echo "# $(date -u +%F) $(${PY} -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"
if [ "$EAGER" = 1 ]; then
    echo "## eager: cached vs no cache vs HF generate ($CONFIG)"
    $PY scripts/bench_decode.py "$CONFIG" --hf "${common[@]}"
fi
if [ "$COMPILE" = 1 ]; then
    echo "## compiled decode ($CONFIG)"
    $PY scripts/bench_decode.py "$CONFIG" --compile "${common[@]}"
fi
if [ "${QUANT:-1}" = 1 ]; then
    echo "## int8 / int4 / w8a8 against the compute dtype, interleaved ($CONFIG)"
    # the config's own weights, random; QUANT=0 skips this section
    $PY scripts/bench_quantize.py "$CONFIG" --device "$DEVICE" --dtype "$DTYPE" --context "$CONTEXT" \
        --new_tokens "${QUANT_NEW:-32}" --group_size "${QUANT_GROUP:-128}" --rounds "$REPEAT" --kv_dtype int8 $EXTRA
fi
if [ -n "${TARGET:-}" ] && [ -n "${DRAFT:-}" ]; then
    echo "## speculative decoding: $TARGET with draft $DRAFT"
    $PY scripts/bench_decode.py "$TARGET" --draft "$DRAFT" --device "$DEVICE" --dtype "$DTYPE" \
        --context "$CONTEXT" --new_tokens "${SPEC_NEW:-64}" --nocache_tokens "$NOCACHE" --repeat "$REPEAT"
fi
