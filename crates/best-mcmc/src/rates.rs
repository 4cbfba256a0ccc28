//! The toxic-rate comparison: a Beta(1, 1)-Binomial posterior per group.
//!
//! With `k` toxic outputs out of `n`, the rate's posterior is Beta(1 + k, 1 + n - k). The
//! difference is `candidate - baseline` (positive: the candidate is more toxic), like the BEST
//! comparison. Everything is computed without random draws:
//! - posterior means exactly;
//! - `P(candidate > baseline)` exactly, by the closed form for two Beta variables with an integer
//!   first parameter (Miller 2015; the sum of `k_candidate + 1` Beta-function terms, in log space);
//! - the density of the difference by numerical convolution of the two Beta densities on a common
//!   lattice (spacing = the smaller posterior sd / 256, trapezoid rule, each density over its
//!   quantiles 1e-15 .. 1 - 1e-15), and from it the HDI (narrowest interval of the requested mass).
//!   Against scipy quadrature (`tests/fixtures/best/rates.json`) the HDI bounds agree within
//!   3e-8 and `P(candidate > baseline)` within 1e-11 (both far below what a rate can resolve).
//! - `P(rate_candidate - rate_baseline > margin)` for a margin in (-1, 1)
//!   ([`RateSummary::p_increase_above`], a release gate's question) by adaptive Gauss-Kronrod
//!   quadrature (G7/K15) of `f_baseline(x) * S_candidate(x + margin)` over the baseline's
//!   support, split where the candidate's survival function leaves 1 and reaches 0; each piece is
//!   refined until the Gauss-Kronrod error estimate is below 1e-12 in all. At margin 0 it equals
//!   the closed form within 1e-10; against Monte-Carlo it agrees within sampling error.
//! - the HDI of one group's rate ([`RateSummary::baseline_hdi`], [`RateSummary::candidate_hdi`]):
//!   the narrowest interval of Beta(1 + k, 1 + n - k) with the requested mass (from 0 when
//!   `k = 0`, up to 1 when `k = n`), by golden-section search on the lower tail mass.

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
    /// The posterior of `rate_candidate - rate_baseline`.
    pub rate_diff: RateDiff,
    /// `P(rate_candidate > rate_baseline)` under the posterior.
    pub p_candidate_higher: f64,
}

/// Posterior summary of the rate difference `candidate - baseline` (proportion units).
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
    let mean = a2 / (a2 + b2) - a1 / (a1 + b1);
    let p_candidate_higher = prob_beta_greater(a1, b1, k_candidate + 1, b2);
    // The HDI of baseline − candidate, negated: candidate − baseline.
    let (low, high) = diff_hdi(a1, b1, a2, b2, hdi_prob);
    let (hdi_low, hdi_high) = (-high, -low);
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
    let t = golden_min(
        &width,
        (best - tail / steps as f64).max(0.0),
        (best + tail / steps as f64).min(tail),
        80,
    );
    let t = if width(t) <= best_w { t } else { best };
    (quant(t), quant(t + prob))
}

impl RateSummary {
    /// `P(rate_candidate - rate_baseline > margin)` under the two Beta(1, 1)-Binomial
    /// posteriors, for `margin` in (-1, 1) (proportion units: 0.01 is one percentage point).
    /// At `margin = 0` this is [`RateSummary::p_candidate_higher`]. Numeric integration, accurate
    /// to about 1e-10 (see the module docs).
    pub fn p_increase_above(&self, margin: f64) -> Result<f64> {
        if !(margin.is_finite() && margin > -1.0 && margin < 1.0) {
            return Err(Error::InvalidParam {
                name: "margin",
                reason: format!("{margin} is not in (-1, 1)"),
            });
        }
        let (a1, b1) = posterior(self.k_baseline, self.n_baseline);
        let (a2, b2) = posterior(self.k_candidate, self.n_candidate);
        Ok(prob_diff_above(a1, b1, a2, b2, margin))
    }

    /// The HDI of the baseline's rate posterior, Beta(1 + k, 1 + n - k), with mass `prob` in
    /// (0, 1).
    pub fn baseline_hdi(&self, prob: f64) -> Result<(f64, f64)> {
        rate_hdi(self.k_baseline, self.n_baseline, prob)
    }

    /// The HDI of the candidate's rate posterior, Beta(1 + k, 1 + n - k), with mass `prob` in
    /// (0, 1).
    pub fn candidate_hdi(&self, prob: f64) -> Result<(f64, f64)> {
        rate_hdi(self.k_candidate, self.n_candidate, prob)
    }
}

/// The HDI, with mass `prob` in (0, 1), of one toxic rate's posterior Beta(1 + k, 1 + n - k)
/// (`k` toxic of `n`, `n >= 1`).
pub fn rate_hdi(k: u64, n: u64, prob: f64) -> Result<(f64, f64)> {
    check_count(Group::Candidate, k, n)?;
    check_prob(prob)?;
    let (a, b) = posterior(k, n);
    Ok(beta_hdi(a, b, prob))
}

fn check_prob(prob: f64) -> Result<()> {
    if !(prob > 0.0 && prob < 1.0) {
        return Err(Error::InvalidParam {
            name: "hdi_prob",
            reason: format!("{prob} is not in (0, 1)"),
        });
    }
    Ok(())
}

/// The Beta(1, 1)-Binomial posterior's parameters for `k` of `n`.
fn posterior(k: u64, n: u64) -> (f64, f64) {
    (1.0 + k as f64, 1.0 + (n - k) as f64)
}

/// The narrowest interval of mass `prob` of Beta(a, b), `a, b >= 1`, not both 1.
fn beta_hdi(a: f64, b: f64, prob: f64) -> (f64, f64) {
    let d = Beta::new(a, b).expect("a, b >= 1");
    // Monotone densities: the HDI starts at the mode.
    if a <= 1.0 && b > 1.0 {
        return (0.0, d.inverse_cdf(prob));
    }
    if b <= 1.0 && a > 1.0 {
        return (d.inverse_cdf(1.0 - prob), 1.0);
    }
    let width = |t: f64| d.inverse_cdf(t + prob) - d.inverse_cdf(t);
    // Unimodal density: the width is unimodal in the lower tail mass t.
    let t = golden_min(&width, 0.0, 1.0 - prob, 100);
    (d.inverse_cdf(t), d.inverse_cdf(t + prob))
}

/// The minimiser of a unimodal `f` on `[lo, hi]` by `iters` steps of golden-section search
/// (the midpoint of the last bracket).
fn golden_min(f: &dyn Fn(f64) -> f64, mut lo: f64, mut hi: f64, iters: usize) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..iters {
        let x1 = hi - g * (hi - lo);
        let x2 = lo + g * (hi - lo);
        if f(x1) <= f(x2) {
            hi = x2;
        } else {
            lo = x1;
        }
    }
    0.5 * (lo + hi)
}

/// `P(X2 - X1 > margin)` for `X1 ~ Beta(a1, b1)` (baseline), `X2 ~ Beta(a2, b2)` (candidate):
/// `F1(A) + integral over [A, B] of f1(x) S2(x + margin) dx`, where below `A` (the candidate's
/// lower quantile 1e-15 minus the margin) `S2 = 1` and above `B` (its upper quantile minus the
/// margin) `S2 = 0`, to 1e-15.
fn prob_diff_above(a1: f64, b1: f64, a2: f64, b2: f64, margin: f64) -> f64 {
    let d1 = Beta::new(a1, b1).expect("a, b >= 1");
    let d2 = Beta::new(a2, b2).expect("a, b >= 1");
    let support = |d: &Beta| {
        let (lo, hi) = (d.inverse_cdf(1e-15), d.inverse_cdf(1.0 - 1e-15));
        // A density with its mode at a bound (k = 0 or k = n) starts right there.
        let lo = if d.shape_a() <= 1.0 { 0.0 } else { lo };
        let hi = if d.shape_b() <= 1.0 { 1.0 } else { hi };
        (lo.max(0.0), hi.min(1.0))
    };
    let (lo1, hi1) = support(&d1);
    let (lo2, hi2) = support(&d2);
    let a = (lo2 - margin).clamp(lo1, hi1);
    let b = (hi2 - margin).clamp(lo1, hi1);
    let below = if a <= lo1 { 0.0 } else { d1.cdf(a) };
    if b <= a {
        return below.clamp(0.0, 1.0);
    }
    let f = |x: f64| {
        let y = x + margin;
        let s = if y <= 0.0 {
            1.0
        } else if y >= 1.0 {
            0.0
        } else {
            d2.sf(y)
        };
        let p = d1.pdf(x);
        if p.is_finite() { p * s } else { 0.0 }
    };
    // Start from 16 pieces so that no feature narrower than the interval is stepped over.
    let pieces = 16;
    let tol = 1e-12 / pieces as f64;
    let h = (b - a) / pieces as f64;
    let inside: f64 = (0..pieces)
        .map(|i| {
            let (x0, x1) = (
                a + i as f64 * h,
                if i + 1 == pieces {
                    b
                } else {
                    a + (i + 1) as f64 * h
                },
            );
            adaptive_gk(&f, x0, x1, tol, 40)
        })
        .sum();
    (below + inside).clamp(0.0, 1.0)
}

/// Gauss-Kronrod 7/15 nodes (the positive half; the last is 0) and weights (QUADPACK's qk15).
const XGK: [f64; 8] = [
    0.991_455_371_120_812_6,
    0.949_107_912_342_758_5,
    0.864_864_423_359_769_1,
    0.741_531_185_599_394_4,
    0.586_087_235_467_691_1,
    0.405_845_151_377_397_2,
    0.207_784_955_007_898_5,
    0.0,
];
const WGK: [f64; 8] = [
    0.022_935_322_010_529_22,
    0.063_092_092_629_978_55,
    0.104_790_010_322_250_18,
    0.140_653_259_715_525_92,
    0.169_004_726_639_267_9,
    0.190_350_578_064_785_4,
    0.204_432_940_075_298_9,
    0.209_482_141_084_727_83,
];
/// The 7-point Gauss weights, for the Kronrod nodes 1, 3, 5 and 7 (0).
const WG: [f64; 4] = [
    0.129_484_966_168_869_7,
    0.279_705_391_489_276_7,
    0.381_830_050_505_118_9,
    0.417_959_183_673_469_4,
];

/// The K15 estimate of the integral over [a, b] and |K15 - G7|.
fn gk15(f: &impl Fn(f64) -> f64, a: f64, b: f64) -> (f64, f64) {
    let c = 0.5 * (a + b);
    let r = 0.5 * (b - a);
    let fc = f(c);
    let mut k = WGK[7] * fc;
    let mut g = WG[3] * fc;
    for j in 0..7 {
        let x = r * XGK[j];
        let s = f(c - x) + f(c + x);
        k += WGK[j] * s;
        if j % 2 == 1 {
            g += WG[j / 2] * s;
        }
    }
    (k * r, (k - g).abs() * r)
}

/// Bisects until each piece's Gauss-Kronrod error estimate is below its share of `tol`.
fn adaptive_gk(f: &impl Fn(f64) -> f64, a: f64, b: f64, tol: f64, depth: u32) -> f64 {
    let (k, err) = gk15(f, a, b);
    if err <= tol || depth == 0 {
        return k;
    }
    let m = 0.5 * (a + b);
    adaptive_gk(f, a, m, 0.5 * tol, depth - 1) + adaptive_gk(f, m, b, 0.5 * tol, depth - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;
    use rand_distr::Distribution;

    /// Monte-Carlo `P(X_c - X_b > margin)` from `n` paired draws of the two posteriors.
    fn monte_carlo(s: &RateSummary, margin: f64, n: usize, seed: u64) -> f64 {
        let (a1, b1) = posterior(s.k_baseline, s.n_baseline);
        let (a2, b2) = posterior(s.k_candidate, s.n_candidate);
        let d1 = rand_distr::Beta::new(a1, b1).unwrap();
        let d2 = rand_distr::Beta::new(a2, b2).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let hits = (0..n)
            .filter(|_| d2.sample(&mut rng) - d1.sample(&mut rng) > margin)
            .count();
        hits as f64 / n as f64
    }

    const CASES: [(u64, u64, u64, u64); 8] = [
        (10, 200, 20, 200),
        (0, 100, 0, 100),
        (0, 50, 3, 40),
        (29, 2400, 35, 2400),
        (5, 5, 4, 9),
        (3, 1000, 0, 20),
        (120, 400, 100, 2400),
        (1, 1, 0, 1),
    ];

    #[test]
    fn margin_zero_is_the_closed_form() {
        for (kb, nb, kc, nc) in CASES {
            let s = compare_rates(kb, nb, kc, nc, 0.95).unwrap();
            let p = s.p_increase_above(0.0).unwrap();
            assert!(
                (p - s.p_candidate_higher).abs() < 1e-10,
                "{kb}/{nb} vs {kc}/{nc}: {p} vs {}",
                s.p_candidate_higher
            );
        }
    }

    #[test]
    fn agrees_with_monte_carlo_at_several_margins() {
        let n = 400_000;
        for (i, (kb, nb, kc, nc)) in CASES.into_iter().enumerate() {
            let s = compare_rates(kb, nb, kc, nc, 0.95).unwrap();
            for (j, margin) in [-0.05, -0.01, 0.005, 0.01, 0.03, 0.2]
                .into_iter()
                .enumerate()
            {
                let p = s.p_increase_above(margin).unwrap();
                let mc = monte_carlo(&s, margin, n, (10 * i + j) as u64);
                // Five standard errors of the Monte-Carlo estimate (and a floor for p near 0/1).
                let se = (p * (1.0 - p) / n as f64).sqrt().max(1.0 / n as f64);
                assert!(
                    (p - mc).abs() < 5.0 * se,
                    "{kb}/{nb} vs {kc}/{nc} margin {margin}: {p} vs MC {mc}"
                );
                assert!((0.0..=1.0).contains(&p));
            }
        }
    }

    #[test]
    fn decreases_with_the_margin_and_has_the_right_limits() {
        let s = compare_rates(12, 400, 20, 400, 0.95).unwrap();
        let ps: Vec<f64> = [-0.99, -0.5, -0.05, 0.0, 0.01, 0.02, 0.05, 0.5, 0.99]
            .iter()
            .map(|&m| s.p_increase_above(m).unwrap())
            .collect();
        assert!(ps.windows(2).all(|w| w[0] >= w[1]), "{ps:?}");
        assert!((ps[0] - 1.0).abs() < 1e-12 && ps[8] < 1e-12, "{ps:?}");
        // Swapping the groups: P(c - b > m) = 1 - P(b - c > -m) (continuous).
        let swapped = compare_rates(20, 400, 12, 400, 0.95).unwrap();
        for m in [-0.03, 0.0, 0.01, 0.025] {
            let p = s.p_increase_above(m).unwrap();
            let q = swapped.p_increase_above(-m).unwrap();
            assert!((p + q - 1.0).abs() < 1e-9, "margin {m}: {p} + {q}");
        }
    }

    #[test]
    fn bad_margins_are_typed_errors() {
        let s = compare_rates(1, 10, 2, 10, 0.95).unwrap();
        for m in [-1.0, 1.0, 2.0, f64::NAN, f64::INFINITY] {
            let e = s.p_increase_above(m).unwrap_err();
            assert!(
                matches!(e, Error::InvalidParam { name: "margin", .. }),
                "{e}"
            );
            assert!(e.is_bad_input());
        }
        assert!(s.baseline_hdi(1.0).is_err() && s.candidate_hdi(0.0).is_err());
    }

    #[test]
    fn single_rate_hdis_hold_their_mass_and_are_narrowest() {
        for (k, n) in [(0u64, 50u64), (50, 50), (7, 100), (30, 2400), (1, 3)] {
            let s = compare_rates(k, n, k, n, 0.95).unwrap();
            let (lo, hi) = s.baseline_hdi(0.95).unwrap();
            assert_eq!((lo, hi), s.candidate_hdi(0.95).unwrap());
            let (a, b) = posterior(k, n);
            let d = Beta::new(a, b).unwrap();
            assert!(((d.cdf(hi) - d.cdf(lo)) - 0.95).abs() < 1e-9, "{k}/{n}");
            assert!(lo <= k as f64 / n as f64 && k as f64 / n as f64 <= hi);
            if k == 0 {
                assert_eq!(lo, 0.0);
            } else if k == n {
                assert_eq!(hi, 1.0);
            } else {
                // At the HDI's ends the density is the same (the narrowest interval).
                let (fl, fh) = (d.pdf(lo), d.pdf(hi));
                assert!((fl - fh).abs() < 1e-4 * fl.max(fh), "{k}/{n}: {fl} vs {fh}");
            }
        }
    }
}
