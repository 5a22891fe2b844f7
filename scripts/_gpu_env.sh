# Shared set-up of the GPU chunk scripts (sourced by gpu_chunk.sh and gpu_fast_chunk.sh after
# they read NAME, OFFSET and MINUTES): defaults of INIT, OUT, PY, WORKERS, the environment, the
# face model carried in .fm/, and the output folder.
INIT=${INIT:-pix2vertex_addon/weights}
OUT=${OUT:?set OUT to the folder that comes back}
PY=${PY:-python3}
WORKERS=${WORKERS:-$(($(nproc) - 2))}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
if [ -z "${P2V_FACE_MODEL:-}" ] && [ -f .fm/ict_facekit.npz ]; then
    export P2V_FACE_MODEL=$PWD/.fm/ict_facekit.npz
fi
mkdir -p "$OUT"
