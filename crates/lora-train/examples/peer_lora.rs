//! The Rust side of `../shared/tools/peer-bench/peer_lora.py`: the same checkpoint, the same
//! initial adapter (`DIR/lora_init/`), the exact batches (`DIR/lora_batches.json`), LoRA r 16 /
//! alpha 16 on the seven projections, AdamW lr 2e-4 (weight decay 0, constant, no clipping),
//! 2 × 256 tokens per step. Prints one JSON line: per-step losses against the peer's
//! `peer_lora_losses.json`, step times, training tokens/s and peak memory (VmHWM).
//!
//! ```text
//! python peer_lora.py --out /tmp/peer-lora
//! RAYON_NUM_THREADS=2 cargo run --release -p lora-train --example peer_lora -- /tmp/peer-lora
//! ```

use lora_train::finetune::{LoraParams, load_for_training};
use lora_train::optim::{AdamWParams, Schedule};
use lora_train::template::Example;
use lora_train::trainer::{TrainParams, Trainer};
use std::path::PathBuf;
use std::time::Instant;

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    lora_train::memory::keep_freed_memory();
    // This thread is one of the pool's (see `Trainer::train`).
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()?;
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/peer-lora".into()),
    );
    let batches: Vec<Vec<Vec<u32>>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lora_batches.json"))?)?;
    let peer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("peer_lora_losses.json"))?)?;
    let peer_losses: Vec<f64> = serde_json::from_value(peer["losses"].clone())?;
    let warm = peer["warmup"].as_u64().unwrap_or(2) as usize;
    let rss_start = vm_hwm_mib();
    let lora = LoraParams {
        r: 16,
        alpha: 16.0,
        ..LoraParams::default()
    };
    let tm = load_for_training(
        &hub_source::Source::local(dir.join("llama110m")),
        &lora,
        Some(&dir.join("lora_init")),
        gen_engine::DTypeChoice::F32,
        &candle_core::Device::Cpu,
    )?;
    let rss_loaded = vm_hwm_mib();
    let examples: Vec<Example> = batches
        .iter()
        .flatten()
        .map(|row| Example {
            input_ids: row.clone(),
            labels: row.iter().map(|&t| t as i64).collect(),
            truncated_from: None,
        })
        .collect();
    let rows = batches.first().map(|b| b.len()).unwrap_or(2);
    let params = TrainParams {
        adamw: AdamWParams {
            lr: 2e-4,
            weight_decay: 0.0,
            ..AdamWParams::default()
        },
        schedule: Schedule::Constant,
        warmup_steps: 0,
        micro_batch: rows,
        grad_accum: 1,
        max_grad_norm: 0.0,
        epochs: 1,
        max_steps: None,
        shuffle: false,
        seed: 0,
        checkpoint_every: 0,
        keep_checkpoints: 1,
    };
    let trainer = Trainer::new(&tm.model, tm.vars.clone(), params, 0)?;
    let mut times = Vec::new();
    let mut t0 = Instant::now();
    let summary = trainer.train(&examples, None, &mut |s| {
        times.push(t0.elapsed().as_secs_f64());
        eprintln!(
            "step {} loss {:.6} ({:.3} s)",
            s.step,
            s.loss,
            times[times.len() - 1]
        );
        t0 = Instant::now();
    })?;
    let losses: Vec<f64> = summary.log.iter().map(|s| s.loss).collect();
    let max_rel = losses
        .iter()
        .zip(&peer_losses)
        .map(|(a, b)| (a - b).abs() / b.abs())
        .fold(0f64, f64::max);
    let mut timed: Vec<f64> = times.iter().skip(warm).copied().collect();
    timed.sort_by(|a, b| a.total_cmp(b));
    let median = if timed.is_empty() {
        f64::NAN
    } else {
        timed[timed.len() / 2]
    };
    let tokens = (rows
        * batches
            .first()
            .and_then(|b| b.first())
            .map(|r| r.len())
            .unwrap_or(0)) as f64;
    let out = serde_json::json!({
        "bench": "lora_train_peer_lora",
        "threads": candle_core::utils::get_num_threads(),
        "trainable_params": tm.vars.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
        "steps": losses.len(),
        "warmup_steps": warm,
        "step_s_median": median,
        "step_s_all": times,
        "train_tok_per_s": tokens / median,
        "losses": losses,
        "peer_losses": peer_losses,
        "max_rel_loss_diff_vs_peer": max_rel,
        "rss_start_mib": rss_start,
        "rss_loaded_mib": rss_loaded,
        "peak_rss_mib": vm_hwm_mib(),
    });
    println!("{out}");
    Ok(())
}
