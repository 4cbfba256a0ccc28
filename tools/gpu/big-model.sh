#!/usr/bin/env bash
# Times a model of the paper's largest size on the GPU machine (docs/performance.md, "On a GPU"):
# builds a random Llama in Llama-2-7B's shape (tools/gpu/big_llama.py, 6.74B parameters, bf16),
# then runs toxdrift (the carried gpu_check: batches 16, 64 and 512, and a 2,400-prompt run with
# --batch-size auto) and transformers `generate` (sdpa) at the same points, and merges both
# into OUT_DIR/big-check.json (tools/gpu/merge.py's side-by-side). Needs .gpu/ from
# tools/gpu/pack.sh, carried as for tools/gpu-check.sh (docs/gpu.md).
#
#   tools/gpu/big-model.sh OUT_DIR [REPS]
#
# Environment (for trying it on the CPU with a small stand-in): TOXDRIFT_GPU_DEVICE (cuda:0),
# BIG_LAYERS (32), STUDY_PROMPTS (2400), BATCHES (16,64,512).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
OUTD=${1:?usage: big-model.sh OUT_DIR [REPS]}
REPS=${2:-2}
DEVICE=${TOXDRIFT_GPU_DEVICE:-cuda:0}
TF_DEVICE=$([ "$DEVICE" = cpu ] && echo cpu || echo cuda)
BATCHES=${BATCHES:-16,64,512}
WORK=${TOXDRIFT_GPU_WORK:-/tmp/toxdrift-gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUTD" "$WORK"
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .gpu/whl/*.whl && export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
xz -dc .gpu/gpu_check.xz >"$WORK/gpu_check" && chmod +x "$WORK/gpu_check" || exit 1
libs=$(tools/gpu/cuda-libs.sh "$PYTHON")
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
STEPS=$WORK/big-steps.jsonl
: >"$STEPS"
step() {  # step NAME LIMIT CMD...: runs CMD under timeout, logs it, records one steps line
  local name=$1 limit=$2 t0 rc status
  shift 2
  t0=$(date +%s.%N)
  echo "== $name"
  timeout -k 10 "$limit" "$@" >"$WORK/big-$name.log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=fail ;; esac
  # gpu_check exits 1 when a check failed; the report says which.
  [ "$name" = toxdrift ] && [ $rc = 1 ] && status=ok
  python3 -c 'import json, sys, time; n, s, t0, rc = sys.argv[1:5]; print(json.dumps({"name": n, "dry": False,
"status": s, "seconds": round(time.time() - float(t0), 2), "detail": "", "rc": int(rc)}))' \
    "$name" "$status" "$t0" "$rc" >>"$STEPS"
  tail -n 3 "$WORK/big-$name.log"
}
step build 150 "$PYTHON" tools/gpu/big_llama.py --out "$WORK/big" --layers "${BIG_LAYERS:-32}"
step toxdrift 170 "$WORK/gpu_check" --device "$DEVICE" --root "$ROOT" --checks bench --peer "$WORK/big" \
  --bench-model llama7b --bench-dtypes bf16 --bench-batches "$BATCHES" --bench-reps "$REPS" \
  --study-prompts "${STUDY_PROMPTS:-2400}" --out "$WORK/big-rust.json"
step transformers 150 "$PYTHON" tools/gpu/bench_transformers.py --peer "$WORK/big" --model llama7b \
  --out "$WORK/big-tf.json" --device "$TF_DEVICE" --dtypes bf16 --batches "$BATCHES" --reps "$REPS" --attn sdpa
python3 tools/gpu/merge.py --steps "$STEPS" --rust "$WORK/big-rust.json" --tf "$WORK/big-tf.json" \
  --out "$OUTD/big-check.json" --root "$ROOT"
