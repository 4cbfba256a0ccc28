#!/usr/bin/env python3
"""transformers' side of the throughput benchmark: greedy `generate` of the peer-bench Llama
(DIR/llama110m, prompts DIR/prompts.jsonl cycled to the batch size), exactly NEW new tokens per
row (min_new_tokens = max_new_tokens), left padding, on one device, in each dtype, with the
attention implementation asked for (sdpa by default). One warm-up, then the median of REPS runs,
timed after torch.cuda.synchronize(). The token ids of the first timed run are kept for the
side-by-side with toxdrift (tools/gpu/merge.py).

Usage: bench_transformers.py --peer DIR --out FILE.json [--device cuda] [--dtypes bf16,f32]
           [--batches 16,64] [--new-tokens 50] [--reps 3] [--attn sdpa] [--gguf FILE]
Writes {"tool": "bench_transformers", "env": {...}, "results": [...]}; a result that cannot run
is recorded with status "skip" or "error" and its reason, never dropped.
"""
import argparse, json, os, statistics, sys, time, traceback
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def prompts(peer, n):
    base = [json.loads(l)["text"] for l in open(os.path.join(peer, "prompts.jsonl")) if l.strip()]
    return [base[i % len(base)] for i in range(n)]


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_model(torch, model, tok, name, a, dtype, results, extra=None):
    for b in a.batches:
        texts = prompts(a.peer, b)
        enc = tok(texts, return_tensors="pt", padding=True).to(a.device)
        kw = dict(do_sample=False, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

        def gen():
            with torch.inference_mode():
                out = model.generate(**enc, **kw)
            sync(torch, a.device)
            return out
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter(); gen(); warm = time.perf_counter() - t
        times, first = [], None
        for rep in range(max(1, a.reps)):
            t = time.perf_counter(); out = gen(); times.append(time.perf_counter() - t)
            if rep == 0:
                first = out[:, enc["input_ids"].shape[1]:].tolist()
        med = statistics.median(times)
        exact = all(len(r) == a.new_tokens for r in first)
        numbers = {"new_tokens_per_row": a.new_tokens, "warmup_s": warm, "runs_s": times, "median_s": med,
                   "new_tokens_per_s": sum(len(r) for r in first) / med,
                   "ms_per_step": 1000.0 * med / a.new_tokens,
                   "prompt_tokens_padded": int(enc["input_ids"].shape[1])}
        if a.device.startswith("cuda"):
            numbers["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if extra:
            numbers.update(extra)
        results.append({"check": "bench", "name": name, "engine": "transformers", "device": a.device,
                        "dtype": dtype, "batch": b, "attn": a.attn, "status": "pass" if exact else "fail",
                        "pass": exact, "numbers": numbers, "token_ids": first})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default="bf16,f32")
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--new-tokens", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--model", default="llama110m", help="the checkpoint under --peer (named peer-llama when llama110m)")
    a = ap.parse_args()
    a.batches = [int(x) for x in a.batches.split(",") if x]
    report = {"tool": "bench_transformers", "env": {}, "results": []}
    res = report["results"]
    try:
        import torch, transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except Exception as e:  # noqa: BLE001 - recorded, not raised
        res.append({"check": "bench", "name": "peer-llama", "engine": "transformers", "device": a.device,
                    "status": "skip", "pass": None, "reason": f"transformers/torch not importable: {e}"})
        json.dump(report, open(a.out, "w"), indent=1)
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    env = report["env"]
    env.update(python=sys.version.split()[0], torch=torch.__version__, transformers=transformers.__version__,
               cuda_available=torch.cuda.is_available(), threads=torch.get_num_threads())
    if a.device.startswith("cuda"):
        if not torch.cuda.is_available():
            res.append({"check": "bench", "name": "peer-llama", "engine": "transformers", "device": a.device,
                        "status": "error", "pass": False, "reason": "torch.cuda.is_available() is False"})
            json.dump(report, open(a.out, "w"), indent=1)
            return
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_mib=p.total_memory / 2**20, torch_cuda=torch.version.cuda)
    d = os.path.join(a.peer, a.model)
    mname = "peer-llama" if a.model == "llama110m" else a.model
    for dt in [x for x in a.dtypes.split(",") if x]:
        try:
            tok = AutoTokenizer.from_pretrained(d, padding_side="left")
            t = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(d, dtype=getattr(torch, DTYPES[dt]),
                                                         attn_implementation=a.attn).to(a.device).eval()
            sync(torch, a.device)
            bench_model(torch, model, tok, mname, a, dt, res, {"load_s": time.perf_counter() - t,
                        "params": sum(p.numel() for p in model.parameters())})
            del model
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            res.append({"check": "bench", "name": mname, "engine": "transformers", "device": a.device,
                        "dtype": dt, "status": "error", "pass": False,
                        "reason": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]})
    name = "gemma-3-270m-gguf"
    if not a.gguf:
        res.append({"check": "bench", "name": name, "engine": "transformers", "device": a.device, "dtype": "bf16",
                    "status": "skip", "pass": None, "reason": "no --gguf file given"})
    else:
        try:
            import gguf  # noqa: F401 - transformers' GGUF reader needs it
            gdir, gfile = os.path.split(os.path.abspath(a.gguf))
            tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gfile, padding_side="left")
            t = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gfile, dtype=torch.bfloat16,
                                                         attn_implementation=a.attn).to(a.device).eval()
            bench_model(torch, model, tok, name, a, "bf16", res, {"load_s": time.perf_counter() - t})
        except Exception as e:  # noqa: BLE001
            res.append({"check": "bench", "name": name, "engine": "transformers", "device": a.device,
                        "dtype": "bf16", "status": "skip" if isinstance(e, ImportError) else "error",
                        "pass": None if isinstance(e, ImportError) else False,
                        "reason": f"{type(e).__name__}: {e}"})
    json.dump(report, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
