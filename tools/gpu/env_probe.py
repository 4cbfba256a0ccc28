#!/usr/bin/env python3
"""The machine a gpu-check ran on, as JSON: host, GPU (nvidia-smi), CUDA compiler, cargo, and the
Python packages the transformers side uses. Every probe is optional: what is missing is recorded
as null (never an error)."""
import json, os, platform, shutil, subprocess, sys


def run(*cmd):
    if not shutil.which(cmd[0]):
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return r.stdout.strip() if r.returncode == 0 else None
    except Exception:  # noqa: BLE001
        return None


def version(mod):
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "?")
    except Exception:  # noqa: BLE001
        return None


def main():
    env = {"host": platform.node(), "machine": platform.machine(), "kernel": platform.release(),
           "cpus": os.cpu_count(), "python": sys.version.split()[0], "python_exe": sys.executable}
    try:
        env["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        env["mem_gib"] = None
    q = run("nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap,clocks.max.sm",
            "--format=csv,noheader")
    env["gpus"] = [dict(zip(["name", "memory", "driver", "compute_cap", "max_sm_clock"],
                            [x.strip() for x in line.split(",")])) for line in q.splitlines()] if q else []
    nvcc = run("nvcc", "--version")
    env["nvcc"] = nvcc.splitlines()[-1] if nvcc else None
    env["cargo"] = run("cargo", "--version")
    for mod in ("torch", "transformers", "tokenizers", "safetensors", "gguf"):
        env[mod] = version(mod)
    if env["torch"]:
        try:
            import torch
            env["torch_cuda"] = torch.version.cuda
            env["torch_cuda_available"] = torch.cuda.is_available()
        except Exception:  # noqa: BLE001
            pass
    print(json.dumps(env, indent=1))


if __name__ == "__main__":
    main()
