#!/usr/bin/env python3
"""Builds the peer-bench checkpoint (the random 124.7M Llama, its tokenizer and 16 prompts) into
DIR/llama110m and DIR/prompts.jsonl, with `build()` of peer_generate.py, and nothing else (no CPU
measurement). Works offline (the GPU machine has no network): only torch, tokenizers and
transformers are needed.

tools/gpu/peer_generate.py is a verbatim copy of the shared peer bench's
tools/peer-bench/peer_generate.py (the GPU machine sees only this repository);
`--check-copy PATH` says whether it still equals the shared one.

Usage: peer_llama.py --out DIR [--check-copy /work/shared/tools/peer-bench/peer_generate.py]
Prints one JSON line: {"params", "build_s", "out", "reused", "copy_matches"}.
"""
import argparse, filecmp, json, os, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--check-copy", default=None)
    a = ap.parse_args()
    res = {"out": os.path.abspath(a.out)}
    if a.check_copy:
        res["copy_matches"] = (filecmp.cmp(a.check_copy, os.path.join(HERE, "peer_generate.py"), shallow=False)
                               if os.path.exists(a.check_copy) else None)
    done = os.path.join(a.out, "llama110m", "model.safetensors")
    if os.path.exists(done) and os.path.exists(os.path.join(a.out, "prompts.jsonl")):
        res.update(reused=True, params=None, build_s=0.0)
    else:
        sys.path.insert(0, HERE)
        import peer_generate  # sets HF_HUB_OFFLINE=1
        t0 = time.perf_counter()
        n = peer_generate.build(a.out)
        res.update(reused=False, params=int(n), build_s=round(time.perf_counter() - t0, 2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
