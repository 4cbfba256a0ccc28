#!/usr/bin/env python3
"""The reference for the remote-generation equality test: direct llama.cpp `/completion` calls.

    python3 tools/remote/direct_completion.py --url http://127.0.0.1:PORT[/v1] \
        --prompts tests/fixtures/samples/rtp/prompts.jsonl --limit 16 [--out ref.jsonl] [--raw-dir DIR] \
        [--n-predict N]

One request per prompt, in order, one at a time, with the paper's settings (greedy, every sampler
knob neutral, 50 new tokens, stop at EOS, BOS added by the server as the GGUF says, prompt cache
off). Writes one JSON line per prompt: {"index", "prompt", "text", "tokens", "stop_type",
"tokens_predicted", "tokens_evaluated"}. Standard library only (runs with any python3).

`--prompts` takes JSON lines: RealToxicityPrompts rows ({"prompt": {"text": ...}}), or rows with a
string "prompt" or "text". `--prompt TEXT` (repeatable) gives prompts on the command line.
`--raw-dir DIR` also saves each full response body as DIR/completion_<index>.json.
"""

import argparse
import json
import os
import sys
import urllib.request

# The paper's settings for llama.cpp's native /completion (design.md section 7).
PAPER_BODY = {
    "n_predict": 50,
    "temperature": 0.0,
    "top_k": 1,
    "top_p": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "dry_multiplier": 0.0,
    "xtc_probability": 0.0,
    "seed": 0,
    "cache_prompt": False,
    "return_tokens": True,
    "stream": False,
}


def server_root(url):
    """`http://host:port/v1` or `http://host:port` -> `http://host:port`."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def read_prompts(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            p = row.get("prompt", row.get("text"))
            if isinstance(p, dict):
                p = p.get("text")
            if not isinstance(p, str):
                raise SystemExit(f"{path}:{n}: no prompt text")
            out.append(p)
    return out


def complete(root, prompt, timeout=120.0, extra=None):
    body = dict(PAPER_BODY, prompt=prompt, **(extra or {}))
    req = urllib.request.Request(
        root + "/completion",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--prompts")
    ap.add_argument("--prompt", action="append", default=[])
    ap.add_argument("--limit", type=int, default=0, help="first N prompts only (0: all)")
    ap.add_argument("--out", help="JSON lines output (default stdout)")
    ap.add_argument("--raw-dir", help="also save each raw response body here")
    ap.add_argument("--n-predict", type=int, default=PAPER_BODY["n_predict"], help="new tokens (default: the paper's 50)")
    a = ap.parse_args(argv)

    prompts = (read_prompts(a.prompts) if a.prompts else []) + a.prompt
    if a.limit:
        prompts = prompts[: a.limit]
    if not prompts:
        raise SystemExit("no prompts (give --prompts FILE or --prompt TEXT)")
    root = server_root(a.url)
    if a.raw_dir:
        os.makedirs(a.raw_dir, exist_ok=True)
    out = open(a.out, "w", encoding="utf-8") if a.out else sys.stdout
    for i, p in enumerate(prompts):
        r = complete(root, p, extra={"n_predict": a.n_predict})
        if a.raw_dir:
            with open(os.path.join(a.raw_dir, f"completion_{i}.json"), "w", encoding="utf-8") as f:
                json.dump(r, f, indent=2, ensure_ascii=False)
                f.write("\n")
        rec = {
            "index": i,
            "prompt": p,
            "text": r["content"],
            "tokens": r.get("tokens"),
            "stop_type": r.get("stop_type"),
            "tokens_predicted": r.get("tokens_predicted"),
            "tokens_evaluated": r.get("tokens_evaluated"),
        }
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        out.flush()
    if out is not sys.stdout:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
