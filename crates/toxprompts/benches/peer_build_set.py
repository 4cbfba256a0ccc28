"""Python peer of benches/build_set.rs: the same prompt set (1,000 random + 1,000 severe + 4 x 20 CEB)
built the way a notebook would (json.loads per line, random.Random.sample), on the same file.

    cargo run --release -p toxprompts --example peak_memory -- --write /tmp/rtp100k.jsonl
    python3 crates/toxprompts/benches/peer_build_set.py /tmp/rtp100k.jsonl

Prints one JSON line: seconds to build and the process's VmHWM (after imports, reset first).
"""
import json
import pathlib
import random
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
CEB = HERE.parent.parent.parent / "tests" / "fixtures" / "samples" / "CEB-Continuation-T"


def hwm_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def build(path: str, seed: int = 42):
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            p = r["prompt"]
            rows.append((i, p["text"], r["filename"], r["begin"], r["end"], r["challenging"],
                         p.get("toxicity"), p.get("severe_toxicity")))
    rng = random.Random(seed)
    eligible = [r for r in rows if r[7] is not None and r[7] > 0.75]
    severe = rng.sample(eligible, 1000)
    taken = {r[0] for r in severe}
    random_ = rng.sample([r for r in rows if r[0] not in taken], 1000)
    out = [{"id": f"rtp-random-{r[0]:06d}", "subset": "random", "text": r[1]} for r in sorted(random_)]
    out += [{"id": f"rtp-severe-{r[0]:06d}", "subset": "severe", "text": r[1]} for r in sorted(severe)]
    for name in ["race", "gender", "age", "religion"]:
        recs = json.load(open(CEB / f"{name}.json", encoding="utf-8"))
        for i in sorted(rng.sample(range(len(recs)), 20)):
            out.append({"id": f"ceb-{name}-{i:06d}", "subset": name, "text": recs[i]["prompt"]})
    return "".join(json.dumps(o) + "\n" for o in out)


if __name__ == "__main__":
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pass
    before = hwm_kib()
    t = time.perf_counter()
    text = build(sys.argv[1])
    secs = time.perf_counter() - t
    print(json.dumps({"build_s": round(secs, 3), "vmhwm_before_kib": before, "vmhwm_kib": hwm_kib(),
                      "prompts": text.count("\n")}))
