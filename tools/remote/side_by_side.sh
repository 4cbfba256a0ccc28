#!/usr/bin/env bash
# Side by side: `toxdrift generate --endpoint` against the minimal concurrent client
# (benches/remote_peer.py) on the same llama.cpp server and prompts (issue 13's targets):
#   A: one server, 4 slots, 2 threads, 8 in flight (toxdrift >= 0.95x the peer);
#   B: one 1-slot 1-thread server vs two as replicas (>= 1.6x).
# Needs `bash tools/remote/setup.sh` and a built target/debug/toxdrift; run on an idle machine
# (nothing else building). Rounds alternate peer and toxdrift on one warm server.
#   N_A=96 ROUNDS=3 bash tools/remote/side_by_side.sh
set -u
cd "$(dirname "$0")/../.."
V=target/remote-venv; M=$V/models/gemma-3-270m-q4_k_m.gguf
T=target/debug/toxdrift
start() { # port slots threads
  $V/bin/python tools/remote/llama_server.py --model $M --port $1 --slots $2 --threads $3 > /tmp/srv$1.log 2>&1 &
  for i in $(seq 1 100); do grep -q READY /tmp/srv$1.log && return; sleep 0.2; done; echo "server $1 failed"; }
tdx() { # n_label urls... ; prompts in /tmp/peer.jsonl
  local inflight=$1; shift; local out=/tmp/tdx.$$.jsonl; rm -f $out
  local args=(); for u in "$@"; do args+=(--endpoint "$u"); done
  local t0=$(date +%s.%N)
  $T generate "${args[@]}" --served-model gemma-3-270m --max-in-flight $inflight --prompts /tmp/peer.jsonl --out $out 2>/dev/null
  local t1=$(date +%s.%N); local n=$(wc -l < $out)
  python3 -c "print(f'toxdrift: {$n} prompts in {$t1-$t0:.2f}s = {$n/($t1-$t0):.3f} prompts/s')"
}
peer() { local inflight=$1; shift; local args=(); for u in "$@"; do args+=(--url "$u"); done
  local t0=$(date +%s.%N)
  python3 benches/remote_peer.py "${args[@]}" -n $N -m $inflight > /tmp/peer.out 2>&1
  local t1=$(date +%s.%N)
  python3 -c "print(f'peer    : {$N} prompts in {$t1-$t0:.2f}s wall = {$N/($t1-$t0):.3f} prompts/s')"; tail -1 /tmp/peer.out; }

N=${N_A:-96}
echo "== A: one server, 4 slots, 2 threads; 8 in flight; N=$N"
start 8181 4 2
python3 benches/remote_peer.py --url http://127.0.0.1:8181/v1 -n $N -m 8 --write-prompt-set /tmp/peer.jsonl > /dev/null 2>&1  # warm-up + prompt set
for r in $(seq 1 ${ROUNDS:-3}); do peer 8 http://127.0.0.1:8181/v1; tdx 8 http://127.0.0.1:8181/v1; done
kill $(grep READY /tmp/srv8181.log | awk '{print $3}')
sleep 1
N=${N_B:-32}
echo "== B: replicas: one 1-slot 1-thread server vs two; 1 in flight each; N=$N"
head -$N /tmp/peer.jsonl > /tmp/peer32 && mv /tmp/peer32 /tmp/peer.jsonl
start 8182 1 1; start 8183 1 1
for r in $(seq 1 ${ROUNDS:-3}); do
  tdx 1 http://127.0.0.1:8182/v1
  tdx 1 http://127.0.0.1:8182/v1 http://127.0.0.1:8183/v1
done
peer 1 http://127.0.0.1:8182/v1
peer 2 http://127.0.0.1:8182/v1 http://127.0.0.1:8183/v1
kill $(grep READY /tmp/srv8182.log | awk '{print $3}') $(grep READY /tmp/srv8183.log | awk '{print $3}')
