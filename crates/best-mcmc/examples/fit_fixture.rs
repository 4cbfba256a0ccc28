//! Fits the paper's model to the parity fixture's 2 x 2,400 scores and prints wall time, bulk ESS
//! per second and the summary of `mu2 - mu1` (candidate − baseline).
//!
//! ```text
//! cargo run --release -p best-mcmc --example fit_fixture -- [repeats] [seed]
//! ```

use best_mcmc::{Best, Priors, compare_rates};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/best/scores.json"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let get = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    let (y1, y2) = (get("baseline"), get("candidate"));
    let mut args = std::env::args().skip(1);
    let repeats: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(7);
    for r in 0..repeats {
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        let fit = Best::params()
            .chains(4)
            .tune(1000)
            .draws(1000)
            .seed(seed + r as u64)
            .priors(Priors::Paper)
            .probabilities(true)
            .fit(&y1, &y2)?;
        let sampled = t.elapsed().as_secs_f64();
        let s = fit.summary();
        let total = t.elapsed().as_secs_f64();
        let min_ess = s
            .parameters
            .values()
            .map(|q| q.diagnostics.ess_bulk)
            .fold(f64::INFINITY, f64::min);
        let grads: u64 = fit.chain_stats().iter().map(|c| c.n_leapfrog).sum();
        let tune_grads: u64 = fit.chain_stats().iter().map(|c| c.n_leapfrog_tune).sum();
        let cpu = cpu_seconds() - cpu0;
        println!(
            "run {r}: sample {sampled:.3} s, +summary {total:.3} s; mu_diff {:.3e} (mcse {:.1e}) HDI [{:.3e}, {:.3e}]; \
             bulk ESS mu_diff {:.0}, min over params {min_ess:.0}; ESS/s {:.0}; cpu {cpu:.2} s; grads {grads} (tune {tune_grads}); depth {:.2}; div {}; warnings {:?}",
            s.mu_diff.mean,
            s.mu_diff.diagnostics.mcse_mean,
            s.mu_diff.hdi_low,
            s.mu_diff.hdi_high,
            s.mu_diff.diagnostics.ess_bulk,
            s.mu_diff.diagnostics.ess_bulk / total,
            s.chain_stats.iter().map(|c| c.mean_tree_depth).sum::<f64>() / 4.0,
            s.divergences,
            s.warnings
        );
    }
    let t = Instant::now();
    let k1 = y1.iter().filter(|&&y| y >= 0.5).count() as u64;
    let k2 = y2.iter().filter(|&&y| y >= 0.5).count() as u64;
    let r = compare_rates(k1, y1.len() as u64, k2, y2.len() as u64, 0.95)?;
    println!(
        "rates: {:?} in {:.1} ms",
        r.rate_diff,
        t.elapsed().as_secs_f64() * 1e3
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(hwm) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!("{}", hwm.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(())
}

/// User + system CPU seconds of this process (Linux `/proc/self/stat`; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the state field, in clock ticks.
    if f.len() > 12 {
        (f[10] + f[11]) / 100.0
    } else {
        0.0
    }
}
