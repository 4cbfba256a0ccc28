//! The Rust side of the side-by-side with `peer-bench/peer_generate.py` (run it first with
//! `--out DIR`): same checkpoint, same 16 prompts, greedy, exactly 50 new tokens
//! (`min_new_tokens = 50`, pad id 3 as the peer's tokenizer), f32. Prints one JSON line with
//! batch-16 throughput, batch-1 time per token, load time, peak RSS (VmHWM), and whether the
//! greedy ids equal the peer's.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p gen-engine --example peer_bench -- /tmp/peer-gen [reps]
//! ```

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
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/peer-gen".into()));
    let reps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let rss_start = vm_hwm_mib();
    let t0 = Instant::now();
    let m = gen_engine::load_dir(&dir.join("llama110m"), &LoadOptions::default())?;
    let load_s = t0.elapsed().as_secs_f64();
    let rss_load = vm_hwm_mib();
    let prompts: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("prompts.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let texts: Vec<&str> = prompts
        .iter()
        .map(|p| p["text"].as_str().unwrap_or(""))
        .collect();
    let params = GenerateParams::new()
        .max_new_tokens(50)
        .min_new_tokens(50)
        .batch_size(16)
        .pad_token_id(Some(3))
        .bucket_by_length(false);
    let g = m.generator(params)?;
    let enc = g.encode(&texts)?;
    let run =
        |batch: &[Vec<u32>]| -> Result<(f64, Vec<gen_engine::Generation>), gen_engine::Error> {
            let t = Instant::now();
            let out = g.generate_batch(batch)?;
            Ok((t.elapsed().as_secs_f64(), out))
        };
    let (_, first) = run(&enc)?; // warm-up
    let mut t16 = Vec::new();
    for _ in 0..reps {
        t16.push(run(&enc)?.0);
    }
    let _ = run(&enc[..1])?;
    let mut t1 = Vec::new();
    for _ in 0..reps {
        t1.push(run(&enc[..1])?.0);
    }
    // Greedy parity with the peer's outputs, when present.
    let parity = std::fs::read_to_string(dir.join("peer_generate_outputs.jsonl"))
        .ok()
        .map(|s| {
            let peer: Vec<Vec<u32>> = s
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .map(|v| {
                    v["new_token_ids"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_u64().map(|x| x as u32))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect();
            let same = first
                .iter()
                .zip(&peer)
                .filter(|(a, b)| a.token_ids == **b)
                .count();
            format!("{same}/{}", peer.len())
        });
    let m16 = median(t16.clone());
    let m1 = median(t1.clone());
    let info = m.model.info();
    let weights_mib = info.num_params as f64 * 4.0 / (1024.0 * 1024.0);
    let padded = enc.iter().map(Vec::len).max().unwrap_or(0);
    let kv_mib = (info.num_layers * 2 * 16 * info.num_kv_heads * info.head_dim * (padded + 50) * 4)
        as f64
        / (1024.0 * 1024.0);
    // 2 FLOPs per weight per token (matmuls), plus attention (q·k and p·v: 4 · heads·hd · kv_len per layer).
    let prompt_tokens: usize = 16 * padded;
    let flops_weights = 2.0 * (info.num_params - info.vocab_size * info.hidden_size) as f64;
    let head = 2.0 * (info.vocab_size * info.hidden_size) as f64;
    let mut flops = 0.0;
    flops += prompt_tokens as f64 * flops_weights + 16.0 * head;
    for step in 1..50 {
        flops += 16.0 * (flops_weights + head);
        let kv_len = padded + step;
        flops += 16.0 * (info.num_layers * 4 * info.hidden_size * kv_len) as f64;
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "gen_engine_peer_bench",
            "threads": std::env::var("RAYON_NUM_THREADS").ok(),
            "load_s": (load_s * 1000.0).round() / 1000.0,
            "prompt_tokens_padded": padded,
            "bs16_runs_s": t16,
            "bs16_wall_s": m16,
            "bs16_new_tok_per_s": 800.0 / m16,
            "bs16_gflops": flops / m16 / 1e9,
            "bs1_runs_s": t1,
            "bs1_ms_per_token": 1000.0 * m1 / 50.0,
            "rss_start_mib": rss_start,
            "rss_after_load_mib": rss_load,
            "peak_rss_mib": vm_hwm_mib(),
            "weights_mib": weights_mib,
            "kv_cache_bs16_mib": kv_mib,
            "greedy_ids_equal_peer": parity,
        })
    );
    Ok(())
}
