#!/usr/bin/env bash
# Prints the directories (colon-separated) that hold the CUDA 13 libraries a `--features cuda`
# build of gpu_check links to, for LD_LIBRARY_PATH on the GPU machine: its driver's libcuda, and
# cuBLAS, cuBLASLt, cuRAND, NVRTC and the CUDA runtime from the CUDA toolkit there or from the
# pip wheels its PyTorch uses (searched under every `nvidia` package directory of PYTHON).
# A library found nowhere is left out: `ldd` then names it. Usage: cuda-libs.sh [PYTHON]
set -uo pipefail
PY=${1:-python3}
roots=$("$PY" -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null || true)
python3 - $roots <<'PYEOF'
import os, sys
need = ["libcuda.so.1", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10",
        "libnvrtc.so.13", "libcudart.so.13"]
roots = sys.argv[1:] + ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/local/cuda/lib64",
                        "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"]
found = []
for lib in need:
    hit = None
    for root in roots:
        if not os.path.isdir(root):
            continue
        for d, _, files in os.walk(root):
            if lib in files:
                hit = d
                break
        if hit:
            break
    if hit and hit not in found:
        found.append(hit)
print(":".join(found))
PYEOF
