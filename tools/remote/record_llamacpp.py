#!/usr/bin/env python3
"""Records real llama.cpp server responses for remote-gen's shape tests.

    python3 tools/remote/record_llamacpp.py --url http://127.0.0.1:PORT \
        --out crates/remote-gen/tests/data/llamacpp

Run against `tools/remote/llama_server.py` on the Gemma-3-270M Q4_K_M GGUF (1 slot, 1 thread).
Writes each response body as pretty JSON (`<name>.json`) and `requests.json`, the request behind
each file (method, path, body, HTTP status). Standard library only.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from direct_completion import PAPER_BODY, read_prompts, server_root  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RTP = os.path.join(HERE, "..", "..", "tests", "fixtures", "samples", "rtp", "prompts.jsonl")


def call(root, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(root + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    root = server_root(a.url)
    os.makedirs(a.out, exist_ok=True)
    prompts = read_prompts(RTP)[:3]

    cases = []
    for i, p in enumerate(prompts):
        cases.append((f"completion_limit_{i}", "POST", "/completion", dict(PAPER_BODY, prompt=p), None))
    # EOS: this base model rarely emits <eos> (id 1) within 50 tokens, so a logit bias on it makes
    # the server stop on EOS; everything else is the paper's settings.
    cases.append(("completion_eos", "POST", "/completion", dict(PAPER_BODY, prompt=prompts[0], logit_bias=[[1, 7]]), None))
    cases.append(("completion_eos_first_token", "POST", "/completion", dict(PAPER_BODY, prompt=prompts[0], logit_bias=[[1, 100]]), None))
    cases.append(("completion_prompt_list", "POST", "/completion", dict(PAPER_BODY, prompt=prompts[:2], n_predict=5), None))
    cases.append((
        "v1_completions",
        "POST",
        "/v1/completions",
        {"model": "gemma-3-270m", "prompt": prompts[:2], "max_tokens": 5, "temperature": 0, "seed": 0},
        None,
    ))
    cases.append((
        "v1_completions_wrong_model",
        "POST",
        "/v1/completions",
        {"model": "no-such-model", "prompt": prompts[0], "max_tokens": 5, "temperature": 0, "seed": 0},
        None,
    ))
    cases.append(("v1_models", "GET", "/v1/models", None, None))
    cases.append(("props", "GET", "/props", None, None))
    cases.append(("health", "GET", "/health", None, None))
    cases.append(("error_400_missing_prompt", "POST", "/completion", {"n_predict": 5}, None))
    cases.append(("error_400_bad_json", "POST", "/completion", None, b"not json"))
    cases.append(("error_404", "GET", "/no-such-path", None, None))

    index = {}
    for name, method, path, body, raw in cases:
        status, resp = call(root, method, path, body, raw)
        with open(os.path.join(a.out, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(resp, f, indent=2, ensure_ascii=False)
            f.write("\n")
        index[name] = {
            "method": method,
            "path": path,
            "status": status,
            "body": body if raw is None else raw.decode(),
        }
        print(f"{name}: {method} {path} -> {status}", file=sys.stderr)
    with open(os.path.join(a.out, "requests.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
