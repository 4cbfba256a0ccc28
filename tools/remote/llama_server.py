#!/usr/bin/env python3
"""Runs llama.cpp's HTTP server (embedded in the `xllamacpp` wheel) on 127.0.0.1 for the tests.

    target/remote-venv/bin/python tools/remote/llama_server.py --port 8080 \
        --model target/remote-venv/models/gemma-3-270m-q4_k_m.gguf [--slots 1] [--threads 1]

Prints exactly one line on stdout, `READY <port> <pid>`, once `GET /health` answers 200, then
runs until killed (SIGTERM, SIGINT or SIGKILL). Everything else (llama.cpp's log) goes to stderr.
Exits non-zero with a message on stderr when the server cannot start (port taken, bad model).

The server is llama.cpp's own `tools/server` (continuous batching, `/completion`,
`/v1/completions`, `/v1/models`, `/props`, `/health`, `/tokenize`, ...): `xllamacpp.Server(params)`
starts its HTTP listener in native threads; this script only configures and keeps it alive.
"""

import argparse
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="path of the GGUF file")
    p.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--slots", type=int, default=1, help="parallel slots, n_parallel (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for decode and prompt (default 1)")
    p.add_argument(
        "--ctx-size",
        type=int,
        default=512,
        help="context tokens PER SLOT (default 512); the server gets ctx-size * slots in all",
    )
    p.add_argument(
        "--alias",
        default="gemma-3-270m",
        help="served model name, as /v1/models lists it (default gemma-3-270m)",
    )
    p.add_argument("--http-threads", type=int, default=-1, help="HTTP worker threads (default: llama.cpp's)")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for /health")
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the parent process dies (the tests pass it: no orphan servers, ever)",
    )
    return p.parse_args(argv)


def health_ok(host, port):
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1.0) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv):
    args = parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"llama_server.py: model file {args.model} not found (run `bash tools/remote/setup.sh`)", file=sys.stderr)
        return 2
    if args.slots < 1 or args.threads < 1 or args.ctx_size < 16:
        print("llama_server.py: --slots and --threads must be >= 1, --ctx-size >= 16", file=sys.stderr)
        return 2

    # SIGTERM / SIGINT end the process at once: the server lives in native threads that
    # never hold Python state worth flushing, and os._exit avoids a slow native teardown.
    def stop(_sig, _frame):
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.exit_with_parent:
        parent = os.getppid()

        def watch_parent():
            # The parent (a test binary) may be SIGKILLed before its Drop runs: then this process
            # is re-parented, and exits within half a second.
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(0)

        threading.Thread(target=watch_parent, daemon=True).start()

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.slots
    params.n_ctx = args.ctx_size * args.slots
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_threads_http = args.http_threads
    params.n_gpu_layers = 0
    params.ui = False  # no web UI
    params.cache_ram_mib = 0  # no host-RAM prompt cache (requests send cache_prompt: false anyway)
    params.warmup = True

    try:
        server = xlc.Server(params)
    except Exception as e:  # noqa: BLE001 - report any start failure and exit non-zero
        print(f"llama_server.py: server failed to start on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1

    deadline = time.monotonic() + args.ready_timeout
    while not health_ok(args.host, args.port):
        if time.monotonic() > deadline:
            print(
                f"llama_server.py: /health on {args.host}:{args.port} did not answer within {args.ready_timeout}s "
                f"(listening_address={getattr(server, 'listening_address', None)!r})",
                file=sys.stderr,
            )
            os._exit(1)
        time.sleep(0.05)

    print(f"READY {args.port} {os.getpid()}", flush=True)
    # Keep the process (and the server object) alive until a signal ends it.
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
