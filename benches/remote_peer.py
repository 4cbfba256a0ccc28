#!/usr/bin/env python3
"""The "minimal concurrent client" of the remote-generation performance target (issue 13).

    python3 benches/remote_peer.py --url http://127.0.0.1:PORT/v1 [--url URL2 ...] \
        [--prompts tests/fixtures/samples/rtp/prompts.jsonl] [-n 64] [-m 8]

Sends N prompts (the first N RealToxicityPrompts rows of the fixture) as plain llama.cpp
`/completion` calls with the paper's settings (greedy, 50 new tokens, `cache_prompt: false`,
`return_tokens: true`), M in flight from a thread pool, each worker on one keep-alive connection.
Several --url are replicas: prompt i goes to URL i mod len(urls). Prints one line
`remote_peer: N prompts, M in flight, E endpoint(s): T s, R prompts/s` and, with --json, a JSON
summary. `--write-prompt-set FILE` also writes those N prompts for `toxdrift generate`.
Standard library only; toxdrift's client must reach >= 0.95x this rate on the same
server and prompts (see tools/remote/README.md).
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tools", "remote"))
from direct_completion import PAPER_BODY, read_prompts, server_root  # noqa: E402

_local = threading.local()


def post(root, body):
    """POST /completion on this thread's keep-alive connection to `root`."""
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    for attempt in (0, 1):
        conn = conns.get(root)
        if conn is None:
            u = urllib.parse.urlsplit(root)
            conn = conns[root] = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        try:
            conn.request("POST", "/completion", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{root}/completion: HTTP {resp.status}: {data[:200]!r}")
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                del conns[root]
            return json.loads(data)
        except (http.client.HTTPException, ConnectionError):
            conn.close()
            del conns[root]
            if attempt:
                raise
    raise AssertionError("unreachable")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", action="append", required=True, help="server base URL (repeat for replicas)")
    ap.add_argument("--prompts", default=os.path.join(ROOT, "tests/fixtures/samples/rtp/prompts.jsonl"))
    ap.add_argument("-n", "--num-prompts", type=int, default=64)
    ap.add_argument("-m", "--in-flight", type=int, default=8)
    ap.add_argument("--n-predict", type=int, default=PAPER_BODY["n_predict"])
    ap.add_argument("--json", action="store_true", help="also print a JSON summary line")
    ap.add_argument(
        "--write-prompt-set",
        metavar="FILE",
        help="also write the same N prompts as a toxdrift prompt set (for `toxdrift generate --prompts`)",
    )
    a = ap.parse_args(argv)

    prompts = read_prompts(a.prompts)[: a.num_prompts]
    if a.write_prompt_set:
        with open(a.write_prompt_set, "w", encoding="utf-8") as f:
            for i, p in enumerate(prompts):
                rec = {"id": f"peer-{i:06d}", "subset": "random", "text": p, "source": None}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    roots = [server_root(u) for u in a.url]
    bodies = [
        (roots[i % len(roots)], json.dumps(dict(PAPER_BODY, prompt=p, n_predict=a.n_predict)).encode())
        for i, p in enumerate(prompts)
    ]
    tokens = [0] * len(bodies)

    def one(i):
        r = post(*bodies[i])
        tokens[i] = r.get("tokens_predicted", 0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=a.in_flight) as pool:
        list(pool.map(one, range(len(bodies))))
    dt = time.perf_counter() - t0
    rate = len(bodies) / dt
    print(
        f"remote_peer: {len(bodies)} prompts, {a.in_flight} in flight, {len(roots)} endpoint(s): "
        f"{dt:.2f} s, {rate:.3f} prompts/s, {sum(tokens) / dt:.1f} tokens/s"
    )
    if a.json:
        print(json.dumps({
            "prompts": len(bodies), "in_flight": a.in_flight, "endpoints": a.url,
            "seconds": dt, "prompts_per_s": rate, "tokens": sum(tokens),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
