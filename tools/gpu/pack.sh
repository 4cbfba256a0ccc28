#!/usr/bin/env bash
# Builds gpu_check with `--features cuda` HERE (x86-64, no GPU needed) and stages it in .gpu/
# for the GPU machine, which has no Rust toolchain and no network:
#
#   tools/gpu/pack.sh            # toolkit (tools/gpu/toolkit.sh) + release build + strip + .gpu/
#
# Then a device call carries `.gpu` (docs/gpu.md): the working tree plus .gpu/ must stay under
# the device tool's 64 MiB, which this script checks. The binary links dynamically against
# libcuda.so.1 (the machine's driver) and the CUDA 13 libraries cuBLAS, cuBLASLt, cuRAND, NVRTC
# and cudart, which tools/gpu/cuda-libs.sh finds there (the PyTorch wheels hold them).
# Environment: CARGO_TARGET_DIR (default target/cuda, apart from the CPU builds),
# CUDA_COMPUTE_CAP (default 90: H100/H200, kernels built as sm_90a), NICE (default 19).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
tools/gpu/toolkit.sh install >/dev/null
eval "$(tools/gpu/toolkit.sh env)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda}
nice -n "${NICE:-19}" cargo build --release --features cuda --example gpu_check
src=$CARGO_TARGET_DIR/release/examples/gpu_check
mkdir -p .gpu/whl
rm -f .gpu/gpu_check .gpu/gpu_check.xz
# Stripped, the binary is about 70 MB (candle's kernels: PTX and sm_90a objects); xz makes it
# about 9 MB, which travels beside the tree. gpu-check.sh unpacks it (xz, or Python's lzma).
strip -o "$CARGO_TARGET_DIR/gpu_check.stripped" "$src"
xz -T0 -9 -c "$CARGO_TARGET_DIR/gpu_check.stripped" >.gpu/gpu_check.xz
# transformers reads GGUF files through the `gguf` package, which the GPU machine's image lacks
# (pure Python; its needs, numpy, pyyaml, requests and tqdm, are there).
[ -e .gpu/whl/gguf-0.19.0-py3-none-any.whl ] ||
  python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl gguf==0.19.0
# The image's transformers (5.17 on 2026-11-26) generates garbage from the Gemma-3 GGUF (its
# first run: `496 496 496 ...` where 5.23 on the CPU, and toxdrift, agree with the committed
# reference), so the transformers the references were made with travels too, with the regex
# it needs (pure Python, and a cp312 manylinux wheel).
[ -e .gpu/whl/transformers-5.23.0-py3-none-any.whl ] ||
  python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl transformers==5.23.0
ls .gpu/whl/regex-2026.11.15-cp312-*.whl >/dev/null 2>&1 ||
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl regex==2026.11.15
# Keep .gpu/ out of git (and so out of the tree that travels uncarried).
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
size=$(du -cb .gpu/gpu_check.xz .gpu/whl/*.whl | tail -n1 | cut -f1)
tree=$( (git ls-files; git ls-files --others --exclude-standard) | sort -u |
        while IFS= read -r f; do [ -f "$f" ] && stat -c %s "$f"; done | awk '{s+=$1} END {print s+0}')
python3 - "$size" "$tree" "$CUDA_COMPUTE_CAP" "$CARGO_TARGET_DIR/gpu_check.stripped" <<'PYEOF' >.gpu/BUILD.json
import datetime, hashlib, json, os, subprocess, sys
size, tree, cap, binary = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
sh = lambda *a: subprocess.run(a, capture_output=True, text=True).stdout.strip()
needed = [l.split()[-1] for l in sh("objdump", "-p", binary).splitlines() if "NEEDED" in l]
print(json.dumps({
    "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "git_rev": sh("git", "rev-parse", "HEAD"), "dirty_files": len(sh("git", "status", "--porcelain").splitlines()),
    "features": "cuda", "profile": "release", "cuda_compute_cap": cap,
    "nvcc": sh("nvcc", "--version").splitlines()[-2], "rustc": sh("rustc", "--version"),
    "binary_bytes": os.path.getsize(binary), "carried_bytes": size, "tree_bytes": tree,
    "travels_bytes": size + tree, "sha256": hashlib.sha256(open(binary, "rb").read()).hexdigest(),
    "needed": needed,
}, indent=1))
PYEOF
cat .gpu/BUILD.json
limit=$((64 * 1024 * 1024))
if [ $((size + tree)) -ge $limit ]; then
  echo "pack: tree ($tree B) + .gpu ($size B) is over the device tool's 64 MiB" >&2
  exit 1
fi
echo "pack: .gpu/gpu_check.xz ready; tree + .gpu = $(( (size + tree) / 1048576 )) MiB of 64"
