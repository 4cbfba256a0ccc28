//! Throughput of `HateClassifier::score`.
//!
//! With `HATE_BENCH_DIR` pointing at the output of
//! `../shared/tools/peer-bench/peer_classify.py --out DIR` it measures the roberta-base-shaped
//! checkpoint (`DIR/roberta-base-shaped`) on the peer's texts (`DIR/texts.jsonl`): batches over
//! the first 256 texts and one text per call over the first 32 (fewer texts than the peer so that
//! criterion's ten samples stay short; `examples/bench_peer.rs` runs the peer's exact protocol).
//! Without it, it runs the tiny parity fixture (a smoke test of the bench itself).
//! Threads: rayon's pool, so `RAYON_NUM_THREADS=2` matches the peer's `torch.set_num_threads(2)`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hate_classifier::HateClassifier;
use std::time::Duration;

fn setup() -> (String, Vec<String>) {
    match std::env::var("HATE_BENCH_DIR") {
        Ok(dir) => {
            let text = std::fs::read_to_string(format!("{dir}/texts.jsonl"))
                .expect("HATE_BENCH_DIR/texts.jsonl (run peer_classify.py --out DIR first)");
            let texts = text
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                    v["completion"].as_str().expect("a completion").to_string()
                })
                .collect();
            let texts: Vec<String> = texts;
            (
                format!("{dir}/roberta-base-shaped"),
                texts[..256.min(texts.len())].to_vec(),
            )
        }
        Err(_) => {
            let fx = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/classifier"
            );
            let r: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(format!("{fx}/reference.json")).expect("fixture"),
            )
            .expect("fixture JSON");
            let texts: Vec<String> = r["texts"]
                .as_array()
                .expect("texts")
                .iter()
                .map(|t| t.as_str().expect("text").to_string())
                .collect();
            let texts = texts.iter().cycle().take(256).cloned().collect();
            (format!("{fx}/vocab-merges"), texts)
        }
    }
}

fn bench(c: &mut Criterion) {
    let (model, texts) = setup();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let mut g = c.benchmark_group("score");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    for batch in [32usize, 64] {
        let clf = HateClassifier::params()
            .batch_size(batch)
            .load(&model)
            .expect("load");
        g.throughput(Throughput::Elements(refs.len() as u64));
        g.bench_with_input(BenchmarkId::new("batched", batch), &refs, |b, t| {
            b.iter(|| clf.score(t).expect("score"))
        });
    }
    let clf = HateClassifier::params().load(&model).expect("load");
    let first = &refs[..refs.len().min(32)];
    g.throughput(Throughput::Elements(first.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("one_per_call", first.len()),
        first,
        |b, t| {
            b.iter(|| {
                t.iter()
                    .map(|x| clf.score(&[x]).expect("score")[0])
                    .sum::<f32>()
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
