//! Criterion bench of batched greedy generation.
//!
//! By default it runs the tiny Llama parity fixture (fast, for regressions). Point
//! `GEN_ENGINE_BENCH_DIR` at the directory `peer-bench/peer_generate.py --out DIR` built to bench
//! the 124.7M-parameter Llama on the peer's 16 prompts instead:
//!
//! ```text
//! GEN_ENGINE_BENCH_DIR=/tmp/peer-gen RAYON_NUM_THREADS=2 cargo bench -p gen-engine --bench generate
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gen_engine::{GenerateParams, LoadOptions};
use std::path::PathBuf;

fn setup() -> (PathBuf, Vec<String>, Option<u32>) {
    match std::env::var("GEN_ENGINE_BENCH_DIR") {
        Ok(dir) => {
            let dir = PathBuf::from(dir);
            let prompts = std::fs::read_to_string(dir.join("prompts.jsonl"))
                .expect("prompts.jsonl")
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).expect("json")["text"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
            (dir.join("llama110m"), prompts, Some(3))
        }
        Err(_) => {
            let dir = PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/gen/llama"
            ));
            let prompts = (0..16)
                .map(|i| {
                    format!(
                        "The tiny robot walked to the market {}",
                        "again ".repeat(i % 5)
                    )
                })
                .collect();
            (dir, prompts, None)
        }
    }
}

fn bench(c: &mut Criterion) {
    let (dir, prompts, pad) = setup();
    let m = gen_engine::load_dir(&dir, &LoadOptions::default()).expect("load");
    let mut group = c.benchmark_group("greedy_generate");
    group.sample_size(10);
    for (batch, new) in [(16usize, 50usize), (1, 50)] {
        let params = GenerateParams::new()
            .max_new_tokens(new)
            .min_new_tokens(new)
            .batch_size(batch)
            .pad_token_id(pad);
        let g = m.generator(params).expect("generator");
        let texts: Vec<&str> = prompts.iter().take(batch).map(String::as_str).collect();
        let enc = g.encode(&texts).expect("encode");
        group.throughput(Throughput::Elements((batch * new) as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &enc, |b, enc| {
            b.iter(|| g.generate_batch(enc).expect("generate"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
