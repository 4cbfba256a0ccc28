//! The Rust side of the real-model side-by-side (issue 12): the real Gemma-3-270M GGUF (or any
//! checkpoint `gen_engine::load_dir` reads), the 16 prompts of
//! `tests/fixtures/real/gemma3-270m/reference.json`, greedy, exactly 50 new tokens
//! (`min_new_tokens = 50`), f32 on the CPU. Prints one JSON line: batch-16 throughput (new
//! tokens/s, prefill included), batch-1 wall time per new token (prefill included), load time,
//! peak RSS (VmHWM). The peers (transformers `generate`, llama.cpp's server) are measured by
//! `benches/gemma3_peer.py` on the same file and prompts.
//!
//! ```text
//! cargo build --release -p gen-engine --example real_bench
//! RAYON_NUM_THREADS=2 target/release/examples/real_bench \
//!     target/remote-venv/models/gemma-3-270m-q4_k_m.gguf tests/fixtures/real/gemma3-270m/reference.json 3
//! ```
//!
//! The third argument is the batch-16 repetitions (median reported; 0: batch 1 only, for
//! profiling it); a fourth, `f32`, dequantizes the GGUF at load.

use gen_engine::{GenerateParams, LoadOptions};
use std::time::Instant;

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = std::path::PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/remote-venv/models/gemma-3-270m-q4_k_m.gguf".into()),
    );
    let refs = std::path::PathBuf::from(
        args.next()
            .unwrap_or_else(|| "tests/fixtures/real/gemma3-270m/reference.json".into()),
    );
    let reps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    // A fourth argument `f32`: the weights dequantized at load (the reference path) instead of
    // kept quantized.
    let dequantize_gguf = args.next().as_deref() == Some("f32");
    let opts = LoadOptions {
        dequantize_gguf,
        ..LoadOptions::default()
    };
    let t0 = Instant::now();
    let m = gen_engine::load_dir(&model, &opts)?;
    let load_s = t0.elapsed().as_secs_f64();
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&refs)?)?;
    let texts: Vec<&str> = reference["prompts"]
        .as_array()
        .ok_or("reference.json: no `prompts` list")?
        .iter()
        .map(|p| p.as_str().unwrap_or(""))
        .collect();
    let params = GenerateParams::new()
        .max_new_tokens(50)
        .min_new_tokens(50)
        .batch_size(16)
        .bucket_by_length(false);
    let g = m.generator(params)?;
    let enc = g.encode(&texts)?;
    let prompt_tokens: usize = enc.iter().map(Vec::len).sum();
    let run = |batch: &[Vec<u32>]| -> Result<f64, gen_engine::Error> {
        let t = Instant::now();
        let out = g.generate_batch(batch)?;
        assert!(out.iter().all(|o| o.token_ids.len() == 50));
        Ok(t.elapsed().as_secs_f64())
    };
    // `reps` 0: batch 1 only (for profiling it); the batch-16 figures are then null.
    let b16_s = if reps == 0 {
        run(&enc[..1])?; // warm-up
        f64::NAN
    } else {
        run(&enc)?; // warm-up
        median((0..reps).map(|_| run(&enc)).collect::<Result<_, _>>()?)
    };
    // Batch 1: every prompt alone, one pass (prefill included), as llama.cpp with one slot.
    let mut b1_total = 0.0;
    for p in &enc {
        b1_total += run(std::slice::from_ref(p))?;
    }
    let new_tokens = (enc.len() * 50) as f64;
    println!(
        "{}",
        serde_json::json!({
            "model": model.display().to_string(),
            "prompts": enc.len(),
            "prompt_tokens": prompt_tokens,
            "weights": if dequantize_gguf { "f32 (dequantized at load)" } else { "quantized codes" },
            "load_s": load_s,
            "batch16_s": b16_s,
            "batch16_tok_per_s": new_tokens / b16_s,
            "batch1_ms_per_token": 1000.0 * b1_total / new_tokens,
            "vm_hwm_mib": vm_hwm_mib(),
            "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        })
    );
    Ok(())
}
