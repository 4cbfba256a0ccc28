#!/usr/bin/env bash
# The GPU check of issue 17, in one script: prepare, build, run the checks, write one JSON file.
#
#   tools/gpu-check.sh [--dry] [--out FILE.json] [--bin PATH] [--peer DIR] [--gguf FILE]
#                      [--checks families,adapters,classifier,lora,real,bench]
#
# Steps (each recorded in the JSON with its status, seconds and whether it ran dry):
#   env          the machine: GPU (nvidia-smi), nvcc, cargo, python packages
#   prepare      the fixtures are present; the peer-bench checkpoint (random 124.7M Llama) is
#                built offline by tools/gpu/peer_llama.py into $TOXDRIFT_GPU_WORK/peer
#   build        the gpu_check program: a carried binary (--bin, or .gpu/gpu_check made here by
#                tools/gpu/pack.sh), else `cargo build --release --features cuda` when cargo and
#                nvcc exist; its CUDA libraries are found (tools/gpu/cuda-libs.sh) and a device
#                probe runs
#   checks       gpu_check on cuda:0: every family fixture's parity (f32 logits, f32/bf16/f16
#                greedy), the PEFT adapters, the classifier, a LoRA step and a 10-step run, and
#                the greedy benchmark of the peer Llama at batch 16 and 64 (bf16 and f32)
#   transformers transformers `generate` (bf16 and f32, sdpa) on the same GPU, same prompts
#                (only when the checks include bench)
#   write        tools/gpu/merge.py: the JSON report, with toxdrift and transformers side by side
#
# The real Gemma-3-270M GGUF is benchmarked too (bf16) when --gguf names it or, on the GPU, when
# tools/gpu/stage-gguf.sh has staged it in $TOXDRIFT_GPU_WORK; wheels carried in .gpu/whl/ (the
# `gguf` reader transformers needs for it) are installed into $TOXDRIFT_GPU_WORK/site first.
# --dry runs every step, the GPU ones replaced by their CPU counterparts (gpu_check --device cpu
# from a debug build, a small benchmark: batch 2 and 4, 8 new tokens, f32), so the harness is
# tested where there is no GPU. The JSON lists the steps that ran dry.
# Exit status: 0 when every step ran and no check failed; 1 otherwise. docs/gpu.md has more.
set -uo pipefail

SELF=$(realpath "$0")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
cd "$ROOT" || exit 1

# --- the steps' bodies (each runs as `gpu-check.sh __step NAME`, under `timeout`) ----------------
rust_args() {
  if [ "$DRY" = 1 ]; then
    echo --dtypes bf16,f16 --bench-batches 2,4 --bench-new-tokens 8 --bench-reps 1 --bench-dtypes f32 --study-prompts 8 --dry
  else
    echo --dtypes bf16,f16 --bench-batches 16,64,512 --bench-new-tokens 50 --bench-reps 3 --bench-dtypes bf16,f32 --study-prompts 2400
  fi
}
tf_args() {
  if [ "$DRY" = 1 ]; then
    echo --device cpu --dtypes f32 --batches 2,4 --new-tokens 8 --reps 1 --attn sdpa --threads 2
  else
    echo --device cuda --dtypes bf16,f32 --batches 16,64,512 --new-tokens 50 --reps 3 --attn sdpa
  fi
}

step_env() {
  "$PYTHON" tools/gpu/env_probe.py >"$WORK/env.json" || return 1
  cat "$WORK/env.json"
  python3 -c 'import json, sys; e = json.load(open(sys.argv[1])); g = e["gpus"][0] if e["gpus"] else {}
print("gpu:", g.get("name", "none"), g.get("memory", ""), "| torch", e.get("torch"), "| transformers",
      e.get("transformers"), "| nvcc", e.get("nvcc"), "| cargo", e.get("cargo"))' "$WORK/env.json"
}

step_prepare() {
  local n shared=/work/shared/tools/peer-bench/peer_generate.py
  n=$(ls -d tests/fixtures/gen/*/reference.json 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] || { echo "no family fixtures under tests/fixtures/gen"; return 1; }
  for f in tests/fixtures/classifier/reference.json tests/fixtures/lora/llama/train_ref.json \
           tests/fixtures/lora/phi3/grad_ref.json tests/fixtures/samples/dolly/databricks-dolly-15k.jsonl; do
    [ -e "$f" ] || { echo "missing fixture $f"; return 1; }
  done
  echo "fixtures: $n with references under tests/fixtures/gen"
  "$PYTHON" tools/gpu/peer_llama.py --out "$PEER" $([ -e $shared ] && echo --check-copy $shared)
}

step_build() {
  local bin=$BIN_GIVEN libs=""
  if [ -z "$bin" ] && [ "$DRY" = 0 ]; then
    for c in .gpu/gpu_check.xz .gpu/gpu_check; do [ -e "$c" ] && { bin=$c; break; }; done
  fi
  if [ -n "$bin" ]; then
    case "$bin" in
      *.xz)
        if command -v xz >/dev/null; then xz -dc "$bin" >"$WORK/gpu_check"
        else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
               "$bin" "$WORK/gpu_check"; fi || return 1
        chmod +x "$WORK/gpu_check" && bin=$WORK/gpu_check ;;
    esac
    echo "carried binary: $bin"
    if [ -e .gpu/BUILD.json ]; then
      cat .gpu/BUILD.json
      local want got
      want=$(python3 -c 'import json; print(json.load(open(".gpu/BUILD.json"))["sha256"])')
      got=$(sha256sum "$bin" | cut -d' ' -f1)
      [ "$want" = "$got" ] || { echo "sha256 of $bin is $got, BUILD.json says $want"; return 1; }
    fi
  elif [ "$DRY" = 1 ]; then
    cargo build --example gpu_check || return 1
    bin=${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/gpu_check
  else
    command -v cargo >/dev/null || { echo "no carried binary (.gpu/gpu_check: tools/gpu/pack.sh) and no cargo"; return 1; }
    if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
    command -v nvcc >/dev/null || { echo "cargo but no nvcc: cannot build --features cuda"; return 1; }
    local cap
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '.')
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-${cap:-90}}
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda}
    cargo build --release --features cuda --example gpu_check || return 1
    bin=$CARGO_TARGET_DIR/release/examples/gpu_check
  fi
  if [ "$DRY" = 0 ]; then
    libs=$(tools/gpu/cuda-libs.sh "$PYTHON")
    export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    if ldd "$bin" | grep 'not found'; then echo "unresolved libraries (above)"; return 1; fi
  fi
  "$bin" --device "$DEVICE" --checks probe --out "$WORK/probe.json" || { cat "$WORK/probe.json" 2>/dev/null; return 1; }
  printf 'BIN=%q\nexport LD_LIBRARY_PATH=%q\n' "$bin" "${LD_LIBRARY_PATH:-}" >"$WORK/build.env"
  echo "probe ok: $(grep -o '"first_op_s": [0-9.e-]*' "$WORK/probe.json")"
}

step_checks() {
  # shellcheck disable=SC1091
  . "$WORK/build.env"
  "$BIN" --device "$DEVICE" --root "$ROOT" --out "$WORK/rust.json" --peer "$PEER" \
    ${GGUF:+--gguf "$GGUF"} --checks "$CHECKS" $(rust_args)
  local rc=$?
  # 1: it ran, and some checks failed (the report says which); anything else: it broke.
  { [ $rc = 0 ] || [ $rc = 1 ]; } && [ -s "$WORK/rust.json" ]
}

step_transformers() {
  "$PYTHON" tools/gpu/bench_transformers.py --peer "$PEER" --out "$WORK/tf.json" \
    ${GGUF:+--gguf "$GGUF"} $(tf_args)
}

if [ "${1:-}" = __step ]; then
  "step_$2"
  exit $?
fi

# --- arguments ---------------------------------------------------------------------------------
DRY=0 OUTF="" BIN_GIVEN="" PEER="" GGUF="" CHECKS=families,adapters,classifier,lora,real,bench
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --out) OUTF=$2; shift ;;
    --bin) BIN_GIVEN=$(realpath "$2"); shift ;;
    --peer) PEER=$2; shift ;;
    --gguf) GGUF=$(realpath "$2"); shift ;;
    --checks) CHECKS=$2; shift ;;
    -h|--help) sed -n '2,33p' "$SELF"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
WORK=${TOXDRIFT_GPU_WORK:-/tmp/toxdrift-gpu}
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
STEPS=$WORK/steps.jsonl
: >"$STEPS"
rm -f "$WORK"/{rust,tf,probe,env}.json "$WORK/build.env" "$WORK"/logs/*.log
[ -n "$OUTF" ] || OUTF=${OUT:+$OUT/gpu-check.json}
[ -n "$OUTF" ] || OUTF=$WORK/gpu-check.json
mkdir -p "$(dirname "$OUTF")"
[ -n "$PEER" ] || PEER=$WORK/peer
if [ -z "${PYTHON:-}" ]; then
  # The GPU machine's python3 holds torch and transformers; here the reference venv does.
  if [ $DRY = 1 ] && [ -x /tmp/refvenv/bin/python ]; then PYTHON=/tmp/refvenv/bin/python; else PYTHON=python3; fi
fi
# TOXDRIFT_GPU_DEVICE overrides the device (e.g. `cpu`, to try the GPU path's carried binary,
# library lookup and arguments on a machine without a GPU).
DEVICE=${TOXDRIFT_GPU_DEVICE:-$([ $DRY = 1 ] && echo cpu || echo cuda:0)}
if [ -z "$GGUF" ] && [ $DRY = 0 ] && [ -e "$WORK/gemma-3-270m-q4_k_m.gguf" ]; then
  GGUF=$WORK/gemma-3-270m-q4_k_m.gguf  # staged by tools/gpu/stage-gguf.sh
fi
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .gpu/whl/*.whl && export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
export ROOT WORK DRY PEER GGUF PYTHON DEVICE BIN_GIVEN CHECKS
T_START=$(date +%s)

# step NAME DRY(0|1) TIMEOUT_S: runs step_NAME with its output in logs/NAME.log, and records
# status (ok | fail | timeout), seconds and the log's last line.
step() {
  local name=$1 dry=$2 limit=$3 log=$WORK/logs/$1.log t0 rc status
  t0=$(date +%s.%N)
  echo "== $name$([ "$dry" = 1 ] && echo ' (dry: on the CPU)')"
  timeout -k 10 "$limit" "$SELF" __step "$name" >"$log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=fail ;; esac
  record "$name" "$dry" "$status" "$t0" "$(grep -v '^\s*$' "$log" | tail -n1 | cut -c1-300)" "$rc"
  [ $status = ok ] || tail -n 25 "$log"
  return $rc
}

# record NAME DRY STATUS T0 DETAIL [RC]: one line of the steps log.
record() {
  python3 - "$@" >>"$STEPS" <<'PYEOF'
import json, sys, time
n, dry, status, t0, detail = sys.argv[1:6]
rc = int(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[6] else None
print(json.dumps({"name": n, "dry": dry == "1", "status": status,
                  "seconds": round(time.time() - float(t0), 2), "detail": detail, "rc": rc}))
PYEOF
}

skip_step() { record "$1" "$2" skip "$(date +%s.%N)" "$3" ""; echo "== $1: skipped ($3)"; }

# --- the run -----------------------------------------------------------------------------------
step env 0 120
step prepare 0 240; PREP_OK=$?
step build "$DRY" 480; BUILD_OK=$?
if [ $BUILD_OK = 0 ]; then step checks "$DRY" 360; else skip_step checks "$DRY" "no gpu_check binary (build failed)"; fi
if [[ ",$CHECKS," != *,bench,* ]]; then skip_step transformers "$DRY" "bench not among the checks"
elif [ $PREP_OK = 0 ]; then step transformers "$DRY" 300
else skip_step transformers "$DRY" "no peer checkpoint (prepare failed)"; fi

echo "== write (after $(( $(date +%s) - T_START )) s)"
python3 tools/gpu/merge.py --steps "$STEPS" --env "$WORK/env.json" --rust "$WORK/rust.json" \
  --tf "$WORK/tf.json" --out "$OUTF" --root "$ROOT" $([ $DRY = 1 ] && echo --dry)
rc=$?
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  tar -czf "$OUT/gpu-check-logs.tar.gz" -C "$WORK" logs steps.jsonl \
    $(cd "$WORK" && ls rust.json tf.json probe.json env.json 2>/dev/null)
fi
echo "total $(( $(date +%s) - T_START )) s"
exit $rc
