//! Criterion bench of one linear layer at the shapes of batched decoding: the packed f32 layout
//! that inference uses (`LoraLinear::into_packed`) against the transposed layout run through
//! candle's gemm (`LoraLinear::into_transposed`, what training uses). Shapes are those of
//! peer-bench's 124.7M Llama: fused QKV (768 → 1280), o_proj (768 → 768), fused gate/up
//! (768 → 4096), down_proj (2048 → 768) and the head (768 → 32,000), for 16 rows (one decode step
//! of a batch of 16), 1 row, and 288 rows (the batch's prefill). For the head, also the
//! checkpoint's `out × in` layout as the left operand of candle's gemm, which is how a head tied
//! to the embedding matrix ran before tied heads were packed too.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench -p gen-engine --bench linear
//! ```
//!
//! Weights small enough to stay in the 32 MiB L3 between iterations run faster here than in a
//! model, where the whole 475 MiB streams from memory at every step.

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gen_engine::LoraLinear;

fn bench(c: &mut Criterion) {
    let d = Device::Cpu;
    let mut group = c.benchmark_group("linear_f32");
    group.sample_size(20);
    let shapes = [
        ("qkv", 16, 768, 1280),
        ("o", 16, 768, 768),
        ("gate_up", 16, 768, 4096),
        ("down", 16, 2048, 768),
        ("head", 16, 768, 32_000),
        ("gate_up", 1, 768, 4096),
        ("gate_up", 288, 768, 4096),
    ];
    for (name, m, k, n) in shapes {
        let w = Tensor::randn(0f32, 0.02, (n, k), &d).expect("weight");
        let x = Tensor::randn(0f32, 1.0, (m, k), &d).expect("input");
        let plain = LoraLinear::plain(w, None, name);
        let packed = plain.clone().into_packed().expect("pack");
        let transposed = plain.clone().into_transposed().expect("transpose");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let id = format!("{name}_m{m}_k{k}_n{n}");
        group.bench_with_input(BenchmarkId::new("packed", &id), &x, |b, x| {
            b.iter(|| packed.forward(x).expect("forward"))
        });
        group.bench_with_input(BenchmarkId::new("candle_gemm", &id), &x, |b, x| {
            b.iter(|| transposed.forward(x).expect("forward"))
        });
        if name == "head" {
            // The checkpoint layout, as a tied head was run before it was packed.
            group.bench_with_input(BenchmarkId::new("candle_gemm_rows", &id), &x, |b, x| {
                b.iter(|| plain.forward(x).expect("forward"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
