//! The toxic-rate comparison: a Beta(1, 1)-Binomial posterior per group.
//!
//! With `k` toxic outputs out of `n`, the rate's posterior is Beta(1 + k, 1 + n - k). The
//! difference is `baseline - candidate` (negative: the candidate is more toxic), like the BEST
//! comparison. Everything is computed without random draws:
//! - posterior means exactly;
//! - `P(candidate > baseline)` exactly, by the closed form for two Beta variables with an integer
//!   first parameter (Miller 2015; the sum of `k_candidate + 1` Beta-function terms, in log space);
//! - the density of the difference by numerical convolution of the two Beta densities on a common
//!   lattice (spacing = the smaller posterior sd / 256, trapezoid rule, each density over its
//!   quantiles 1e-15 .. 1 - 1e-15), and from it the HDI (narrowest interval of the requested mass).
//!   Against scipy quadrature (`tests/fixtures/best/rates.json`) the HDI bounds agree within
//!   3e-8 and `P(candidate > baseline)` within 1e-11 (both far below what a rate can resolve).

use crate::error::{Error, Group, Result};
use statrs::distribution::{Beta, Continuous, ContinuousCDF};
use statrs::function::beta::ln_beta;

/// The rate comparison of two groups.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RateSummary {
    /// Toxic outputs in the baseline group.
    pub k_baseline: u64,
    /// Outputs in the baseline group.
    pub n_baseline: u64,
    /// Toxic outputs in the candidate group.
    pub k_candidate: u64,
    /// Outputs in the candidate group.
    pub n_candidate: u64,
    /// Observed baseline rate `k / n`.
    pub rate_baseline: f64,
    /// Observed candidate rate `k / n`.
    pub rate_candidate: f64,
    /// The posterior of `rate_baseline - rate_candidate`.
    pub rate_diff: RateDiff,
    /// `P(rate_candidate > rate_baseline)` under the posterior.
    pub p_candidate_higher: f64,
}

/// Posterior summary of the rate difference `baseline - candidate`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RateDiff {
    /// Posterior mean.
    pub mean: f64,
    /// Lower HDI bound.
    pub hdi_low: f64,
    /// Upper HDI bound.
    pub hdi_high: f64,
    /// The HDI's mass.
    pub hdi_prob: f64,
    /// Whether the HDI excludes 0.
    pub credible: bool,
}

fn check_count(group: Group, successes: u64, trials: u64) -> Result<()> {
    if trials == 0 || successes > trials {
        return Err(Error::BadCount {
            group,
            successes,
            trials,
        });
    }
    Ok(())
}

/// `P(X_b > X_a)` for `X_a ~ Beta(a1, b1)`, `X_b ~ Beta(a2, b2)` with integer `a2` (Miller 2015).
pub fn prob_beta_greater(a1: f64, b1: f64, a2: u64, b2: f64) -> f64 {
    let lb = ln_beta(a1, b1);
    let mut terms: Vec<f64> = (0..a2)
        .map(|i| {
            let i = i as f64;
            ln_beta(a1 + i, b1 + b2) - (b2 + i).ln() - ln_beta(1.0 + i, b2) - lb
        })
        .collect();
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    terms.iter_mut().for_each(|t| *t = (*t - m).exp());
    // Pairwise-ish: sort ascending so small terms are added first.
    terms.sort_by(f64::total_cmp);
    let p = m.exp() * terms.iter().sum::<f64>();
    p.clamp(0.0, 1.0)
}

/// Compares the toxic rates of two groups; `hdi_prob` in (0, 1).
pub fn compare_rates(
    k_baseline: u64,
    n_baseline: u64,
    k_candidate: u64,
    n_candidate: u64,
    hdi_prob: f64,
) -> Result<RateSummary> {
    check_count(Group::Baseline, k_baseline, n_baseline)?;
    check_count(Group::Candidate, k_candidate, n_candidate)?;
    if !(hdi_prob > 0.0 && hdi_prob < 1.0) {
        return Err(Error::InvalidParam {
            name: "hdi_prob",
            reason: format!("{hdi_prob} is not in (0, 1)"),
        });
    }
    let (a1, b1) = (
        1.0 + k_baseline as f64,
        1.0 + (n_baseline - k_baseline) as f64,
    );
    let (a2, b2) = (
        1.0 + k_candidate as f64,
        1.0 + (n_candidate - k_candidate) as f64,
    );
    let mean = a1 / (a1 + b1) - a2 / (a2 + b2);
    let p_candidate_higher = prob_beta_greater(a1, b1, k_candidate + 1, b2);
    let (hdi_low, hdi_high) = diff_hdi(a1, b1, a2, b2, hdi_prob);
    Ok(RateSummary {
        k_baseline,
        n_baseline,
        k_candidate,
        n_candidate,
        rate_baseline: k_baseline as f64 / n_baseline as f64,
        rate_candidate: k_candidate as f64 / n_candidate as f64,
        rate_diff: RateDiff {
            mean,
            hdi_low,
            hdi_high,
            hdi_prob,
            credible: hdi_low > 0.0 || hdi_high < 0.0,
        },
        p_candidate_higher,
    })
}

/// A Beta density on a lattice `lo + i h`, trapezoid weights folded in.
struct Lattice {
    lo: f64,
    w: Vec<f64>,
}

fn beta_lattice(a: f64, b: f64, h: f64) -> Lattice {
    let d = Beta::new(a, b).expect("a, b >= 1");
    let lo_q = d.inverse_cdf(1e-15).max(0.0);
    let hi_q = d.inverse_cdf(1.0 - 1e-15).min(1.0);
    // Snap the support's ends to 0 / 1 when they are within a step, so the density's jump at a
    // bounded end (k = 0 or k = n) sits on a lattice node.
    let lo = if lo_q < 2.0 * h { 0.0 } else { lo_q };
    let hi = if 1.0 - hi_q < 2.0 * h { 1.0 } else { hi_q };
    let m = ((hi - lo) / h).ceil() as usize + 1;
    let mut w: Vec<f64> = (0..m)
        .map(|i| {
            let x = (lo + i as f64 * h).min(1.0);
            let f = d.pdf(x);
            if f.is_finite() { f * h } else { 0.0 }
        })
        .collect();
    if let Some(first) = w.first_mut() {
        *first *= 0.5;
    }
    if let Some(last) = w.last_mut() {
        *last *= 0.5;
    }
    Lattice { lo, w }
}

/// HDI of `X1 - X2`, `X1 ~ Beta(a1, b1)`, `X2 ~ Beta(a2, b2)`.
fn diff_hdi(a1: f64, b1: f64, a2: f64, b2: f64, prob: f64) -> (f64, f64) {
    let sd = |a: f64, b: f64| (a * b / ((a + b) * (a + b) * (a + b + 1.0))).sqrt();
    let h = sd(a1, b1).min(sd(a2, b2)) / 256.0;
    let f1 = beta_lattice(a1, b1, h);
    let f2 = beta_lattice(a2, b2, h);
    // D = X1 - X2 at d_k = (lo1 - lo2) + (k - (m2 - 1)) h; mass_k = sum_i f1[i] f2[j], i - j = k - (m2 - 1).
    let (m1, m2) = (f1.w.len(), f2.w.len());
    let nd = m1 + m2 - 1;
    let mut mass = vec![0.0; nd];
    for (i, &w1) in f1.w.iter().enumerate() {
        if w1 == 0.0 {
            continue;
        }
        let row = &mut mass[i..i + m2];
        for (slot, &w2) in row.iter_mut().zip(f2.w.iter().rev()) {
            *slot += w1 * w2;
        }
    }
    let d0 = f1.lo - f2.lo - (m2 - 1) as f64 * h;
    let total: f64 = mass.iter().sum();
    // Point masses at lattice nodes, each the density times h: treat the density as piecewise
    // linear between nodes; the CDF at node k is the trapezoid sum up to it.
    let dens: Vec<f64> = mass.iter().map(|m| m / (total * h)).collect();
    let mut cdf = vec![0.0; nd];
    for k in 1..nd {
        cdf[k] = cdf[k - 1] + 0.5 * (dens[k - 1] + dens[k]) * h;
    }
    let norm = cdf[nd - 1];
    cdf.iter_mut().for_each(|c| *c /= norm);
    // Inverse CDF with the density linear on each cell (the CDF quadratic).
    let quant = |q: f64| -> f64 {
        let k = match cdf.binary_search_by(|c| c.total_cmp(&q)) {
            Ok(k) => return d0 + k as f64 * h,
            Err(k) => k.clamp(1, nd - 1),
        };
        let (c0, f0, f1) = (cdf[k - 1], dens[k - 1] / norm, dens[k] / norm);
        let r = q - c0;
        // Solve f0 t + (f1 - f0) t^2 / (2h) = r for t in [0, h].
        let a = (f1 - f0) / (2.0 * h);
        let t = if a.abs() < 1e-300 || f0 * f0 + 4.0 * a * r < 0.0 {
            if f0 > 0.0 { r / f0 } else { 0.0 }
        } else {
            2.0 * r / (f0 + (f0 * f0 + 4.0 * a * r).sqrt())
        };
        d0 + (k - 1) as f64 * h + t.clamp(0.0, h)
    };
    let width = |t: f64| quant(t + prob) - quant(t);
    // Coarse scan of the lower tail mass, then golden-section refinement (the difference of two
    // Beta(>= 1) variables is log-concave, so the width is unimodal in t).
    let tail = 1.0 - prob;
    let steps = 400;
    let mut best = 0.0;
    let mut best_w = f64::INFINITY;
    for s in 0..=steps {
        let t = tail * s as f64 / steps as f64;
        let w = width(t);
        if w < best_w {
            best_w = w;
            best = t;
        }
    }
    let (mut lo, mut hi) = (
        (best - tail / steps as f64).max(0.0),
        (best + tail / steps as f64).min(tail),
    );
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..80 {
        let x1 = hi - g * (hi - lo);
        let x2 = lo + g * (hi - lo);
        if width(x1) <= width(x2) {
            hi = x2;
        } else {
            lo = x1;
        }
    }
    let t = 0.5 * (lo + hi);
    let t = if width(t) <= best_w { t } else { best };
    (quant(t), quant(t + prob))
}
