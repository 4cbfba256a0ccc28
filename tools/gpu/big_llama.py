#!/usr/bin/env python3
"""Builds a random Llama in the shape of Llama-2-7B (hidden 4096, 32 layers, 32 heads without
GQA, intermediate 11008, vocabulary 32,000: 6.74B parameters, bf16) into DIR/llama7b, beside the
peer bench's checkpoint, tokenizer and prompts in DIR (built first with peer_generate.build when
missing; the 7B model uses the same tokenizer). Offline; initialised on the GPU when there is
one (seconds), then written as safetensors (13.5 GB).

It times the paper's largest models on the GPU machine (docs/performance.md, "On a GPU"):
random weights cost what trained ones do.

Usage: big_llama.py --out DIR [--layers N]
Prints one JSON line: {"params", "build_s", "out"}.
"""
import argparse, json, os, shutil, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=32)
    a = ap.parse_args()
    sys.path.insert(0, HERE)
    import peer_generate  # sets HF_HUB_OFFLINE=1
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    t0 = time.perf_counter()
    small = os.path.join(a.out, "llama110m")
    if not os.path.exists(os.path.join(small, "model.safetensors")):
        peer_generate.build(a.out)
    d = os.path.join(a.out, "llama7b")
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(small):
        if f.startswith("tokenizer") or f == "special_tokens_map.json":
            shutil.copy(os.path.join(small, f), d)
    cfg = LlamaConfig(hidden_size=4096, num_hidden_layers=a.layers, num_attention_heads=32,
                      num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
                      max_position_embeddings=4096, rms_norm_eps=1e-5, initializer_range=0.02,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    model.save_pretrained(d)
    c = json.load(open(os.path.join(d, "config.json")))  # the transformers-4.x layout, as the peer's
    c["rope_theta"] = float((c.pop("rope_parameters", None) or {}).get("rope_theta", 10000.0))
    c["rope_scaling"] = None
    c.pop("dtype", None); c.pop("layer_types", None)
    c["torch_dtype"] = "bfloat16"
    json.dump(c, open(os.path.join(d, "config.json"), "w"), indent=2, sort_keys=True)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": int(n), "build_s": round(time.perf_counter() - t0, 2), "out": os.path.abspath(d)}))


if __name__ == "__main__":
    main()
