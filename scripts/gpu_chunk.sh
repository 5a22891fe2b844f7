#!/usr/bin/env bash
# One GPU training chunk on the lent device machine, with the lessons of earlier sessions built in
# (docs/dev/training.md, "GPU chunks" and "Data offsets"):
#
#   bash scripts/gpu_chunk.sh NAME DATA_OFFSET MINUTES [extra train options ...]
#
# trains NAME for MINUTES (stops itself, validated and checkpointed) starting from the weights in
# $INIT (default pix2vertex_addon/weights) on training samples DATA_OFFSET, DATA_OFFSET + 1, ...
# (take a new offset for every chunk), then exports fp16 weights to $OUT/NAME and copies the log
# and the resolved options beside them: the run folder does not survive the call, $OUT does.
# The face model travels in an ignored folder: run(carry=[".fm"]) with .fm/ict_facekit.npz.
# Extra options override the defaults below (the last one given wins).
set -euo pipefail
NAME=${1:?usage: gpu_chunk.sh NAME DATA_OFFSET MINUTES [train options]}
OFFSET=${2:?data offset (a new one for every chunk; docs/dev/training.md lists those used)}
MINUTES=${3:?minutes of training (the device allows 10 per command, all steps included)}
shift 3
source "$(dirname "$0")/_gpu_env.sh"
RUNS=${RUNS:-.runs}
set +e
"$PY" -m pix2vertex_addon.training.train --runs-dir "$RUNS" --name "$NAME" --init-weights "$INIT" \
    --ngf 32 --max-channels 192 --batch-size 32 --fresh-per-step 8 --pool-size 4000 \
    --workers "$WORKERS" --lr 0.0002 --max-minutes "$MINUTES" --data-offset "$OFFSET" "$@" \
    > "$OUT/$NAME.train.log" 2>&1
rc=$?
set -e
tail -c 3000 "$OUT/$NAME.train.log"
cp "$RUNS/$NAME/log.jsonl" "$OUT/$NAME.jsonl" 2>/dev/null || true
cp "$RUNS/$NAME/opts.json" "$OUT/$NAME.opts.json" 2>/dev/null || true
if [ $rc -ne 0 ]; then
    echo "training failed (exit $rc); log in $OUT/$NAME.train.log" >&2
    [ -f "$RUNS/$NAME/latest.pt" ] || exit $rc
    echo "exporting its last checkpoint anyway" >&2
fi
"$PY" -m pix2vertex_addon.training.export_weights --run "$RUNS/$NAME" --out "$OUT/$NAME"
echo "exported $OUT/$NAME"
exit $rc
