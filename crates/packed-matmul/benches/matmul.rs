//! Criterion bench: `PackedLinear::matmul` against the `gemm` crate (what candle's CPU matmul
//! runs) on the same weight stored transposed (`in × out` row-major), at the shapes of the
//! study's models: decoding 16 rows through peer-bench's Llama (768 → 4096, 2048 → 768), its
//! prefill (288 rows), and a batch of 32 classifier texts (1,312 real tokens) through RoBERTa's
//! feed-forward (768 → 3072, 3072 → 768). A second group puts quantized panels (`i8` codes,
//! groups of 32 with scales and mins, as from a Q4_K checkpoint) beside f32 panels of the same
//! dequantized weight at decoding's 1 and 16 rows, on Gemma-3-270M's widths: 640 → 2048 (its
//! feed-forward) and 640 → 32768 (an eighth of its 262,144-token tied head).
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench -p packed-matmul --bench matmul
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use packed_matmul::{PackedLinear, QuantRows};

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

fn gemm_product(x: &[f32], wt: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: x is m × k, wt is k × n and out is m × n, all row-major and in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            wt.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(10);
    for (m, k, n) in [
        (16, 768, 4096),
        (16, 2048, 768),
        (288, 768, 4096),
        (1312, 768, 3072),
        (1312, 3072, 768),
    ] {
        let wt = values(k * n, 1);
        let x = values(m * k, 2);
        let packed = PackedLinear::from_transposed(&wt, k, n, None).expect("pack");
        let mut out = vec![0f32; m * n];
        let id = format!("m{m}_k{k}_n{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::new("packed", &id), |b| {
            b.iter(|| packed.matmul(&x, m, &mut out).expect("matmul"))
        });
        group.bench_function(BenchmarkId::new("gemm", &id), |b| {
            b.iter(|| gemm_product(&x, &wt, m, k, n, &mut out))
        });
    }
    group.finish();
}

fn bench_quantized(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_quantized");
    group.sample_size(10);
    let g = 32;
    for (k, n) in [(640, 2048), (640, 32768)] {
        let q: Vec<i8> = values(n * k, 3)
            .iter()
            .map(|v| (v * 30.0).round() as i8)
            .collect();
        let scales: Vec<f32> = values(n * k / g, 4).iter().map(|v| v * 0.01).collect();
        let mins: Vec<f32> = values(n * k / g, 5).iter().map(|v| v * 0.01).collect();
        let rows = QuantRows {
            q: &q,
            scales: &scales,
            mins: Some(&mins),
            group: g,
        };
        let quant = PackedLinear::from_quantized(rows, n, k, None).expect("pack");
        let mut w = vec![0f32; n * k];
        for (j, row) in w.chunks_mut(k).enumerate() {
            quant.row(j, row).expect("row");
        }
        let f32_panels = PackedLinear::from_rows(&w, n, k, None).expect("pack");
        for m in [1, 16] {
            let x = values(m * k, 2);
            let mut out = vec![0f32; m * n];
            let id = format!("m{m}_k{k}_n{n}");
            group.throughput(Throughput::Elements((2 * m * k * n) as u64));
            group.bench_function(BenchmarkId::new("quantized", &id), |b| {
                b.iter(|| quant.matmul(&x, m, &mut out).expect("matmul"))
            });
            group.bench_function(BenchmarkId::new("f32", &id), |b| {
                b.iter(|| f32_panels.matmul(&x, m, &mut out).expect("matmul"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, bench_quantized);
criterion_main!(benches);
