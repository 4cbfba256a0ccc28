#!/usr/bin/env python3
"""The peers of the real-model side-by-side (issue 12): transformers `generate` and llama.cpp's
server on the real Gemma-3-270M GGUF, the 16 prompts of
tests/fixtures/real/gemma3-270m/reference.json, greedy, exactly 50 new tokens, 2 threads.
The Rust side is `crates/gen-engine/examples/real_bench.rs` (same file, prompts and counts).

    # transformers (the reference venv: torch, transformers >= 5, gguf)
    /tmp/refvenv/bin/python benches/gemma3_peer.py transformers --gguf G [--reps 3]
    # llama.cpp's server (tools/remote/setup.sh's venv: xllamacpp), 1 and 4 slots
    target/remote-venv/bin/python benches/gemma3_peer.py llamacpp --gguf G --slots 1 4

Prints one JSON line per measurement: new tokens/s with every prompt in flight at once (batch 16
for transformers, `slots` requests in flight for llama.cpp) and wall ms per new token one prompt
at a time (prefill included, as the Rust side measures it).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
REFS = os.path.join(ROOT, "tests/fixtures/real/gemma3-270m/reference.json")
NEW = 50


def prompts(path):
    with open(path) as f:
        return json.load(f)["prompts"]


def run_transformers(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    d, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    ps = prompts(args.refs)

    def gen(batch):
        enc = tok(batch, return_tensors="pt", padding=True)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                                 pad_token_id=tok.pad_token_id)
        assert out.shape[1] - enc["input_ids"].shape[1] == NEW
        return time.perf_counter() - t

    gen(ps)  # warm-up
    b16 = statistics.median(gen(ps) for _ in range(args.reps))
    b1 = sum(gen([p]) for p in ps)
    print(json.dumps({
        "peer": "transformers", "version": __import__("transformers").__version__,
        "attn": model.config._attn_implementation, "threads": args.threads, "load_s": load_s,
        "batch16_s": b16, "batch16_tok_per_s": len(ps) * NEW / b16,
        "batch1_ms_per_token": 1000 * b1 / (len(ps) * NEW),
    }), flush=True)


def post(root, body):
    req = urllib.request.Request(root + "/completion", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def run_llamacpp(args):
    sys.path.insert(0, os.path.join(ROOT, "tools", "remote"))
    from direct_completion import PAPER_BODY

    ps = prompts(args.refs)
    for slots in args.slots:
        port = 18400 + slots
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools/remote/llama_server.py"), "--model",
             args.gguf, "--port", str(port), "--slots", str(slots), "--threads",
             str(args.threads), "--ctx-size", "1024"],
            stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise SystemExit(f"server did not start: {line!r}")
            root = f"http://127.0.0.1:{port}"
            body = dict(PAPER_BODY, ignore_eos=True)

            def one(p):
                r = post(root, dict(body, prompt=p))
                assert r["tokens_predicted"] == NEW, r["tokens_predicted"]
                return r

            one(ps[0])  # warm-up
            walls = []
            for _ in range(args.reps):
                t = time.perf_counter()
                with ThreadPoolExecutor(slots) as ex:
                    list(ex.map(one, ps))
                walls.append(time.perf_counter() - t)
            wall = statistics.median(walls)
            rec = {"peer": "llama.cpp server (xllamacpp)", "slots": slots,
                   "threads": args.threads, "in_flight": slots, "wall_s": wall,
                   "tok_per_s": len(ps) * NEW / wall}
            if slots == 1:
                t = time.perf_counter()
                decode_ms = []
                for p in ps:
                    r = one(p)
                    decode_ms.append(r["timings"]["predicted_per_token_ms"])
                b1 = time.perf_counter() - t
                rec["one_at_a_time_ms_per_token"] = 1000 * b1 / (len(ps) * NEW)
                rec["decode_only_ms_per_token_median"] = statistics.median(decode_ms)
            print(json.dumps(rec), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peer", choices=["transformers", "llamacpp"])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--refs", default=REFS)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    if args.peer == "transformers":
        run_transformers(args)
    else:
        run_llamacpp(args)


if __name__ == "__main__":
    main()
