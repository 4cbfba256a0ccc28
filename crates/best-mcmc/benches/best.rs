//! Criterion benchmarks: the log density gradient and the full paper-model fit on the parity
//! fixture's 2 x 2,400 scores (4 chains x (1,000 tune + 1,000 draws)), plus the diagnostics and
//! the rate comparison.
//!
//! ```text
//! CARGO_TARGET_DIR=target/best cargo bench -p best-mcmc --bench best
//! ```

use best_mcmc::{Best, BestModel, Priors, compare_rates, diagnostics};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

fn scores() -> (Vec<f64>, Vec<f64>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/best/scores.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture scores.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let get = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    };
    (get("baseline"), get("candidate"))
}

fn bench(c: &mut Criterion) {
    let (y1, y2) = scores();
    let model = BestModel::new(&y1, &y2, &Priors::Paper, true).expect("valid data");
    let theta = [
        0.003,
        0.0031,
        (0.0037f64).ln(),
        (0.0038f64).ln(),
        (0.001f64).ln(),
    ];
    c.bench_function("logp_grad_2x2400", |b| {
        let mut g = [0.0; 5];
        b.iter(|| black_box(model.logp_grad(black_box(&theta), &mut g)))
    });

    let mut group = c.benchmark_group("fit_paper_2x2400");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for threads in [true, false] {
        group.bench_with_input(
            BenchmarkId::new(
                "4x(1000+1000)",
                if threads { "threads" } else { "sequential" },
            ),
            &threads,
            |b, &threads| {
                b.iter(|| {
                    let fit = Best::params()
                        .chains(4)
                        .tune(1000)
                        .draws(1000)
                        .seed(7)
                        .threads(threads)
                        .fit(&y1, &y2)
                        .expect("fit");
                    black_box(fit.summary())
                })
            },
        );
    }
    group.finish();

    let fit = Best::params().seed(7).fit(&y1, &y2).expect("fit");
    let x = fit.draws("mu_diff").expect("mu_diff").to_owned();
    c.bench_function("diagnostics_4x1000", |b| {
        b.iter(|| black_box(best_mcmc::Diagnostics::of(x.view())))
    });
    c.bench_function("hdi_4000", |b| {
        let flat: Vec<f64> = x.iter().copied().collect();
        b.iter(|| black_box(diagnostics::hdi(&flat, 0.95)))
    });
    c.bench_function("compare_rates_2400", |b| {
        b.iter(|| black_box(compare_rates(118, 2400, 191, 2400, 0.95)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
