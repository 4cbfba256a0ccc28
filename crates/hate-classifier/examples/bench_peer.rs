//! Side-by-side with `../shared/tools/peer-bench/peer_classify.py`: the same checkpoint, the
//! same texts, the same two measurements (one text per call on the first 128 texts, as HF
//! Evaluate calls the pipeline; batch 32 over all 1,024), medians of `--reps` runs, plus the
//! parity of the scores with the peer's `peer_classify_scores.jsonl`, the real-token FLOP rate
//! and a gemm f32 2048³ probe (this machine's matmul peak right now). Prints one JSON line.
//!
//! ```text
//! python peer_classify.py --out DIR        # builds DIR/roberta-base-shaped + DIR/texts.jsonl
//! RAYON_NUM_THREADS=2 cargo run --release -p hate-classifier --example bench_peer -- DIR [REPS] [N]
//! ```
//! `N` (default all) limits the batched run to the first N texts (a shorter run for `perf`).

use hate_classifier::HateClassifier;
use std::time::Instant;

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// gemm's f32 rate on 2048³ with the rayon pool: the machine's matmul peak as gemm sees it now.
fn gemm_probe() -> f64 {
    let n = 2048;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        // SAFETY: three n×n row-major buffers.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            )
        };
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: bench_peer DIR [REPS]")?;
    let reps: usize = args.get(1).map_or(Ok(3), |r| r.parse())?;
    let limit: usize = args.get(2).map_or(Ok(usize::MAX), |r| r.parse())?;
    let texts: Vec<String> = std::fs::read_to_string(format!("{dir}/texts.jsonl"))?
        .lines()
        .map(|l| -> Result<String, Box<dyn std::error::Error>> {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["completion"].as_str().ok_or("no completion")?.to_string())
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&str> = texts.iter().take(limit).map(String::as_str).collect();
    let n_one = refs.len().min(128);

    let t0 = Instant::now();
    let clf = HateClassifier::params()
        .batch_size(32)
        .load(format!("{dir}/roberta-base-shaped"))?;
    let load_s = t0.elapsed().as_secs_f64();
    let rss_load = vm_hwm_mib();
    let cfg = clf.config().clone();
    let ids = clf.encode(&refs)?;
    let (h, i, l) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.num_hidden_layers as f64,
    );
    // Encoder FLOPs on real tokens: the four linear maps and the two attention products.
    let flops = |ids: &[Vec<u32>]| -> f64 {
        ids.iter()
            .map(|s| {
                let n = s.len() as f64;
                l * (2.0 * n * (4.0 * h * h + 2.0 * h * i) + 4.0 * n * n * h)
            })
            .sum()
    };
    let ntok: Vec<usize> = ids.iter().map(Vec::len).collect();

    for t in &refs[..8] {
        clf.score(&[t])?;
    }
    let mut one = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for x in &refs[..n_one] {
            clf.score(&[x])?;
        }
        one.push(t.elapsed().as_secs_f64());
    }
    let rss_one = vm_hwm_mib();
    clf.score(&refs[..32])?;
    let mut batched = Vec::new();
    let mut scores = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        scores = clf.score(&refs)?;
        batched.push(t.elapsed().as_secs_f64());
    }
    let (one_s, batch_s) = (median(one.clone()), median(batched.clone()));

    let mut parity = serde_json::Value::Null;
    if let Ok(peer) = std::fs::read_to_string(format!("{dir}/peer_classify_scores.jsonl")) {
        let mut worst = 0f64;
        let mut n = 0;
        for (line, s) in peer.lines().zip(&scores) {
            let v: serde_json::Value = serde_json::from_str(line)?;
            worst = worst.max((v["hate"].as_f64().ok_or("no hate")? - *s as f64).abs());
            n += 1;
        }
        parity = serde_json::json!({"compared": n, "max_abs_diff": worst});
    }
    let one_gflops = flops(&ids[..n_one]) / one_s / 1e9;
    let batch_gflops = flops(&ids) / batch_s / 1e9;
    let peak = gemm_probe();
    println!(
        "{}",
        serde_json::json!({
            "bench": "hate_classifier_bench_peer",
            "threads": rayon::current_num_threads(),
            "reps": reps,
            "input_ids_mean_incl_specials": ntok.iter().sum::<usize>() as f64 / ntok.len() as f64,
            "load_s": load_s,
            "one_at_a_time_s": one_s,
            "one_at_a_time_runs_s": one,
            "one_at_a_time_texts": n_one,
            "one_at_a_time_texts_per_s": n_one as f64 / one_s,
            "one_at_a_time_real_token_gflops": one_gflops,
            "batch32_s": batch_s,
            "batch32_runs_s": batched,
            "batch32_texts": refs.len(),
            "batch32_texts_per_s": refs.len() as f64 / batch_s,
            "batch32_real_token_gflops": batch_gflops,
            "gemm_2048_probe_gflops": peak,
            "fraction_of_178_gflops": {"one_at_a_time": one_gflops / 178.0, "batch32": batch_gflops / 178.0},
            "fraction_of_gemm_probe": {"one_at_a_time": one_gflops / peak, "batch32": batch_gflops / peak},
            "rss_after_load_mib": rss_load,
            "peak_rss_one_at_a_time_mib": rss_one,
            "peak_rss_mib": vm_hwm_mib(),
            "parity_vs_peer": parity,
        })
    );
    Ok(())
}
