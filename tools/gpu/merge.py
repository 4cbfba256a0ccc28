#!/usr/bin/env python3
"""Merges the pieces of one tools/gpu-check.sh run into its JSON report and prints a short table.

Inputs: the steps log (one JSON object per line: name, dry, status, seconds, detail), the
environment probe, gpu_check's JSON (Rust) and bench_transformers.py's JSON (either may be
missing: then the step that should have made it failed, and the report says so).
The report's `side_by_side` pairs toxdrift's and transformers' benchmark points of one model,
dtype and batch: new tokens per second, their ratio, and how far the two greedy continuations
agree (same device, same dtype; token ids are compared here and then left out of the report).
"""
import argparse, json, os, subprocess, sys


def load(path):
    if path and os.path.exists(path):
        try:
            with open(path) as f:
                return json.load(f)
        except ValueError as e:
            return {"_unreadable": f"{path}: {e}"}
    return None


def agreement(a, b):
    same = total = 0
    first = []
    for x, y in zip(a, b):
        total += max(len(x), len(y))
        same += sum(1 for p, q in zip(x, y) if p == q)
        d = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None)
        if d is None and len(x) != len(y):
            d = min(len(x), len(y))
        first.append(d)
    return {"identical_token_share": same / total if total else None,
            "rows_identical": sum(d is None for d in first), "rows": len(first), "first_divergence": first}


def git(root, *args):
    try:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001 - no git on the machine: recorded as empty
        return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", required=True)
    ap.add_argument("--env", default=None)
    ap.add_argument("--rust", default=None)
    ap.add_argument("--tf", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry", action="store_true")
    ap.add_argument("--root", default=".")
    a = ap.parse_args()
    steps = [json.loads(l) for l in open(a.steps) if l.strip()] if os.path.exists(a.steps) else []
    rust, tf = load(a.rust), load(a.tf)
    results = []
    for src in (rust, tf):
        if src and "results" in src:
            results.extend(src["results"])
    bench = [r for r in results if r.get("check") == "bench" and "token_ids" in r]
    pairs = []
    for r in bench:
        if r.get("engine") != "toxdrift":
            continue
        for t in bench:
            if (t.get("engine") == "transformers" and t["name"] == r["name"] and t["dtype"] == r["dtype"]
                    and t["batch"] == r["batch"]):
                rt, tt = r["numbers"]["new_tokens_per_s"], t["numbers"]["new_tokens_per_s"]
                pairs.append({"model": r["name"], "device": r["device"], "dtype": r["dtype"], "batch": r["batch"],
                              "toxdrift_new_tokens_per_s": rt, "transformers_new_tokens_per_s": tt,
                              "toxdrift_ms_per_step": r["numbers"]["ms_per_step"],
                              "transformers_ms_per_step": t["numbers"]["ms_per_step"],
                              "ratio_toxdrift_over_transformers": rt / tt if tt else None,
                              "transformers_attn": t.get("attn"),
                              "greedy_agreement": agreement(r["token_ids"], t["token_ids"])})
    for r in results:
        r.pop("token_ids", None)
    count = lambda s: sum(1 for r in results if r.get("status") == s)  # noqa: E731
    step_bad = [s["name"] for s in steps if s.get("status") not in ("ok", "skip")]
    summary = {"pass": count("pass"), "fail": count("fail"), "error": count("error"), "skip": count("skip"),
               "failed_steps": step_bad}
    summary["ok"] = not step_bad and summary["fail"] == 0 and summary["error"] == 0 and summary["pass"] > 0
    report = {
        "tool": "tools/gpu-check.sh", "schema": 1, "dry": a.dry,
        "dry_steps": [s["name"] for s in steps if s.get("dry")],
        "git": {"rev": git(a.root, "rev-parse", "HEAD"), "dirty_files": len(git(a.root, "status", "--porcelain").splitlines())},
        "env": load(a.env) or {},
        "steps": steps,
        "summary": summary,
        "side_by_side": pairs,
        "results": results,
        "rust_report": {k: v for k, v in (rust or {}).items() if k != "results"},
        "transformers_env": (tf or {}).get("env"),
    }
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    # The short table (the device tool's reply carries the end of the output).
    print(f"\n== gpu-check{' (DRY: GPU steps on the CPU)' if a.dry else ''}: {a.out}")
    for s in steps:
        print(f"  step {s['name']:<12} {s['status']:<6} {s.get('seconds', 0):7.1f}s {'dry ' if s.get('dry') else ''}"
              f"{str(s.get('detail', ''))[:90]}")
    print(f"  results: {summary['pass']} pass, {summary['fail']} fail, {summary['error']} error, {summary['skip']} skip")
    for r in results:
        if r.get("status") in ("fail", "error"):
            why = r.get("reason") or json.dumps(r.get("numbers"))[:160]
            print(f"  {r['status'].upper():<5} {r['check']} {r['name']} {r.get('dtype', '')}: {why}")
    for p in pairs:
        ag = p["greedy_agreement"]
        print(f"  bench {p['model']} {p['dtype']} b{p['batch']}: toxdrift {p['toxdrift_new_tokens_per_s']:.0f} tok/s, "
              f"transformers {p['transformers_new_tokens_per_s']:.0f} tok/s (x{p['ratio_toxdrift_over_transformers']:.2f}); "
              f"same tokens {ag['identical_token_share']:.2f}")
    for r in results:
        n = r.get("numbers") or {}
        if r.get("check", "").startswith("real_greedy") and r.get("status") in ("pass", "fail"):
            tf = n.get("teacher_forced") or {}
            extra = (f"same tokens {n['identical_token_share']:.3f}, rows {n['rows_identical']}/{n['rows']}"
                     if "identical_token_share" in n else
                     f"top-1 {tf.get('top1_agreement', 0):.3f}, rel L2 {tf.get('relative_l2_logit_error', 0):.4f}")
            print(f"  {r['status']} {r['check']} {r['name']}: {extra}")
        if r.get("check") == "study_time" and r.get("status") in ("pass", "fail"):
            print(f"  study {r['name']} {r['dtype']}: {n['prompts']} prompts in {n['seconds']:.1f}s "
                  f"({n['new_tokens_per_s']:.0f} tok/s), batches {n['batches']} (largest {n['largest_batch']})")
    for r in results:
        if r.get("check") == "bench" and r.get("status") == "skip":
            print(f"  skip {r['name']} ({r.get('engine', 'toxdrift')}): {r.get('reason')}")
    print(f"  OK: {summary['ok']}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
