#!/usr/bin/env bash
# A CUDA 13.0 build toolkit from PyPI wheels, for `cargo build --features cuda` on a machine
# without a CUDA installation (the development machines). Nothing here needs a GPU.
#
#   tools/gpu/toolkit.sh install      # once: venv + pinned wheels + link stubs (~1.3 GB on disk)
#   eval "$(tools/gpu/toolkit.sh env)" # PATH, CUDA_HOME, CUDA_COMPUTE_CAP for the build
#
# Pinned set (checked 2026-11-26 with candle 0.11.1 / cudarc 0.19.10 / cudaforge 0.1.6):
#   nvcc, nvvm, crt 13.0.88, cuda-runtime 13.0.96, cccl 13.0.85  - compiles candle-kernels
#     (PTX + libmoe.a); cudarc reads "13.0" from `nvcc --version` (feature cuda-13000).
#   cublas 13.0.0.19, curand 10.4.0.35, nvrtc 13.0.88             - linked against (cudarc
#     uses `dynamic-linking`): the oldest 13.0 builds, so every symbol the binary needs exists
#     in any CUDA 13.x runtime the GPU machine has (its torch 2.11+cu130 wheels).
#   libcuda.so.1 has no wheel (it is the driver's): a stub with every cu* entry point of
#     cudarc's driver bindings is compiled here, for the linker only; at run time the machine's
#     driver library is loaded.
# The wheels' `-cu12` nvcc packages carry only ptxas; CUDA 11.8 (Debian's) cannot build sm_90a.
set -euo pipefail

ROOT=${TOXDRIFT_CUDA_TOOLKIT:-/tmp/toxdrift-cuda13}
PY=${PYTHON:-python3}
PINS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
)

cu13() {
  local d
  d=$(ls -d "$ROOT"/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -n1)
  [ -n "$d" ] || { echo "toolkit.sh: no toolkit under $ROOT (run: tools/gpu/toolkit.sh install)" >&2; exit 1; }
  echo "$d"
}

cudarc_src() {
  local d
  d=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -n1)
  [ -n "$d" ] || { echo "toolkit.sh: cudarc sources not found (run: cargo fetch)" >&2; exit 1; }
  echo "$d"
}

install() {
  [ -x "$ROOT/bin/pip" ] || "$PY" -m venv "$ROOT"
  "$ROOT/bin/pip" install -q --no-deps "${PINS[@]}"
  local c; c=$(cu13)
  # Unversioned names for the linker (`-lcublas` looks for libcublas.so).
  for l in cublas cublasLt curand nvrtc cudart; do
    local f; f=$(ls "$c"/lib/lib$l.so.* | grep -v alt | head -n1)
    ln -sf "$(basename "$f")" "$c/lib/lib$l.so"
  done
  # The driver stub: every `cu*` function cudarc's driver bindings can reference.
  mkdir -p "$c/lib/stubs"
  local src; src=$(cudarc_src)
  grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+' "$src/src/driver/sys/mod.rs" | awk '{print $4}' |
    sort -u | awk '{print "void " $1 "(void) {}"}' >"$c/lib/stubs/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$c/lib/stubs/libcuda.so" "$c/lib/stubs/cuda_stub.c"
  "$c/bin/nvcc" --version | tail -n2
  echo "toolkit ready: $c"
}

env_lines() {
  local c; c=$(cu13)
  cat <<EOT
export CUDA_HOME=$c CUDA_PATH=$c CUDA_ROOT=$c
export PATH=$c/bin:\$PATH
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
EOT
}

case "${1:-}" in
  install) install ;;
  env) env_lines ;;
  *) echo "usage: $0 install|env" >&2; exit 2 ;;
esac
