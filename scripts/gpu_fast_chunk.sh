#!/usr/bin/env bash
# One GPU training chunk with the batched generator (training/fast_train.py) on the lent device
# machine; fits one 10-minute command with time to spare:
#
#   bash scripts/gpu_fast_chunk.sh NAME DATA_OFFSET MINUTES [fast_train options ...]
#
# trains from the weights in $INIT (default pix2vertex_addon/weights) on fresh training samples
# DATA_OFFSET, DATA_OFFSET + 1, ... (a new offset for every chunk: docs/dev/training.md lists those
# used), stops itself a minute before MINUTES to validate and export, and leaves in $OUT/NAME the
# fp16 export (config.json + two safetensors, each at most 16 MiB), log.jsonl and opts.json
# (5 files). Prints throughput (samples/s, s per step, GPU busy share) and the validation figures.
# The face model travels in an ignored folder: run(carry=[".fm"]) with .fm/ict_facekit.npz.
# Extra options override the defaults (e.g. --arch two-heads, --resolution 256, --batch-size 48).
set -euo pipefail
NAME=${1:?usage: gpu_fast_chunk.sh NAME DATA_OFFSET MINUTES [fast_train options]}
OFFSET=${2:?data offset (a new one for every chunk; docs/dev/training.md lists those used)}
MINUTES=${3:?minutes: the chunk stops itself one minute before, to validate and export}
shift 3
source "$(dirname "$0")/_gpu_env.sh"
SMI=
if command -v nvidia-smi >/dev/null 2>&1; then  # GPU busy share, sampled every second
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -l 1 > "$OUT/$NAME.gpu_util.csv" &
    SMI=$!
fi
set +e
"$PY" -m pix2vertex_addon.training.fast_train --out "$OUT/$NAME" --init-weights "$INIT" \
    --data-offset "$OFFSET" --max-minutes "$MINUTES" --workers "$WORKERS" --batch-size 64 \
    --val-size 64 --log-every 50 "$@" 2>&1 | tee "$OUT/$NAME.train.log" | tail -n 40
rc=${PIPESTATUS[0]}
set -e
if [ -n "$SMI" ]; then
    kill "$SMI" 2>/dev/null || true
    awk '{s += $1; n += 1} END {if (n) printf "GPU busy (nvidia-smi, %d one-second samples, start-up included): %.0f %%\n", n, s / n}' \
        "$OUT/$NAME.gpu_util.csv"
fi
exit "$rc"
