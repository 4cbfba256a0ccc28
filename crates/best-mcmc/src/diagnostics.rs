//! Convergence diagnostics and interval summaries of MCMC draws, computed as ArviZ 0.23 does.
//!
//! All functions take draws as a `chains x draws` array. They follow Vehtari, Gelman, Simpson,
//! Carpenter and Bürkner (2021), "Rank-normalization, folding, and localization: an improved
//! R-hat", in ArviZ's implementation: chains are split in halves (the middle draw of an odd
//! length is dropped), ranks are averaged over ties and mapped to normal scores with Blom's
//! offset 3/8, and the ESS uses Geyer's initial positive and monotone sequences. The
//! autocovariances are computed directly (not by FFT), lazily up to the lag where Geyer's
//! sequence stops; results agree with ArviZ to rounding.

use ndarray::{Array2, ArrayView2, s};
use statrs::distribution::{ContinuousCDF, Normal};

/// ArviZ's split: the first and last `n / 2` draws of every chain as separate chains.
fn split_chains(x: ArrayView2<f64>) -> Array2<f64> {
    let (c, n) = x.dim();
    let half = n / 2;
    let mut out = Array2::zeros((2 * c, half));
    out.slice_mut(s![..c, ..]).assign(&x.slice(s![.., ..half]));
    out.slice_mut(s![c.., ..])
        .assign(&x.slice(s![.., n - half..]));
    out
}

/// Rank-normalised normal scores of all elements (average ranks for ties).
fn z_scale(x: &Array2<f64>) -> Array2<f64> {
    let flat: Vec<f64> = x.iter().copied().collect();
    let n = flat.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| flat[a].total_cmp(&flat[b]));
    let mut ranks = vec![0.0; n];
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && flat[idx[j]] == flat[idx[i]] {
            j += 1;
        }
        // 1-based ranks i+1..=j share their average.
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        i = j;
    }
    let normal = Normal::standard();
    let size = n as f64;
    let z: Vec<f64> = ranks
        .iter()
        .map(|r| normal.inverse_cdf((r - 0.375) / (size - 0.75 + 1.0)))
        .collect();
    Array2::from_shape_vec(x.dim(), z).expect("same number of elements")
}

fn var_ddof1(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = v.clone().count() as f64;
    let m = v.clone().sum::<f64>() / n;
    v.map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
}

/// R-hat of already split (or not) chains, ArviZ's `_rhat`.
fn rhat_raw(x: &Array2<f64>) -> f64 {
    let n = x.ncols() as f64;
    let chain_mean: Vec<f64> = x.rows().into_iter().map(|r| r.sum() / n).collect();
    let chain_var: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|r| var_ddof1(r.iter().copied()))
        .collect();
    let between = n * var_ddof1(chain_mean.iter().copied());
    let within = chain_var.iter().sum::<f64>() / chain_var.len() as f64;
    ((between / within + n - 1.0) / n).sqrt()
}

/// The rank-normalised split R-hat: the larger of the bulk (rank-normalised) and tail (folded
/// around the median, then rank-normalised) split R-hats. NaN with fewer than 2 chains or 4 draws.
pub fn rhat(x: ArrayView2<f64>) -> f64 {
    let (c, n) = x.dim();
    if c < 2 || n < 4 || x.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let split = split_chains(x);
    let bulk = rhat_raw(&z_scale(&split));
    let med = median(split.iter().copied().collect());
    let folded = split.mapv(|v| (v - med).abs());
    let tail = rhat_raw(&z_scale(&folded));
    bulk.max(tail)
}

/// The classic split R-hat (no rank normalisation).
pub fn rhat_split(x: ArrayView2<f64>) -> f64 {
    let (c, n) = x.dim();
    if c < 2 || n < 4 || x.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    rhat_raw(&split_chains(x))
}

/// Effective sample size of the given chains (no splitting), ArviZ's `_ess`.
fn ess_raw(x: &Array2<f64>) -> f64 {
    let (c, n) = x.dim();
    if x.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let (mn, mx) = x
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if mx - mn < 1e-15 {
        return (c * n) as f64;
    }
    let nf = n as f64;
    let centred: Vec<Vec<f64>> = x
        .rows()
        .into_iter()
        .map(|r| {
            let m = r.sum() / nf;
            r.iter().map(|v| v - m).collect()
        })
        .collect();
    let chain_mean: Vec<f64> = x.rows().into_iter().map(|r| r.sum() / nf).collect();
    // Mean over chains of the biased autocovariance at lag t.
    let mean_acov = |t: usize| -> f64 {
        centred
            .iter()
            .map(|r| {
                r[..n - t]
                    .iter()
                    .zip(&r[t..])
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    / nf
            })
            .sum::<f64>()
            / c as f64
    };
    let acov0 = mean_acov(0);
    let mean_var = acov0 * nf / (nf - 1.0);
    let mut var_plus = mean_var * (nf - 1.0) / nf;
    if c > 1 {
        var_plus += var_ddof1(chain_mean.iter().copied());
    }
    let mut rho = vec![0.0; n];
    let mut rho_even = 1.0;
    rho[0] = rho_even;
    let mut rho_odd = 1.0 - (mean_var - mean_acov(1)) / var_plus;
    rho[1] = rho_odd;
    let mut t = 1usize;
    while t + 3 < n && rho_even + rho_odd > 0.0 {
        rho_even = 1.0 - (mean_var - mean_acov(t + 1)) / var_plus;
        rho_odd = 1.0 - (mean_var - mean_acov(t + 2)) / var_plus;
        if rho_even + rho_odd >= 0.0 {
            rho[t + 1] = rho_even;
            rho[t + 2] = rho_odd;
        }
        t += 2;
    }
    // ArviZ's max_t = t - 2 >= -1; keep it shifted by one to stay unsigned: head = max_t + 1.
    let head = t - 1;
    if rho_even > 0.0 {
        rho[head] = rho_even;
    }
    let mut t = 1usize;
    while t + 3 <= head {
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t] {
            rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0;
            rho[t + 2] = rho[t + 1];
        }
        t += 2;
    }
    let ess = (c * n) as f64;
    let mut tau = -1.0 + 2.0 * rho[..head].iter().sum::<f64>();
    if head < n {
        tau += rho[head];
    }
    let tau = tau.max(1.0 / ess.log10());
    ess / tau
}

/// Bulk effective sample size: ESS of the rank-normalised split chains.
pub fn ess_bulk(x: ArrayView2<f64>) -> f64 {
    if x.ncols() < 4 {
        return f64::NAN;
    }
    ess_raw(&z_scale(&split_chains(x)))
}

/// Type-7 (R's default, linear interpolation) quantile of all draws, as ArviZ's `quantile`.
pub fn quantile(x: ArrayView2<f64>, prob: f64) -> f64 {
    let mut v: Vec<f64> = x.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    quantile_sorted(&v, prob)
}

fn quantile_sorted(v: &[f64], prob: f64) -> f64 {
    // scipy.stats.mstats.mquantiles with alphap = betap = 1.
    let n = v.len() as f64;
    let m = 1.0 - prob;
    let aleph = n * prob + m;
    let k = (aleph.floor()).clamp(1.0, n - 1.0);
    let gamma = (aleph - k).clamp(0.0, 1.0);
    let k = k as usize;
    (1.0 - gamma) * v[k - 1] + gamma * v[k]
}

fn ess_quantile(x: ArrayView2<f64>, prob: f64) -> f64 {
    let q = quantile(x, prob);
    let ind = x.mapv(|v| if v <= q { 1.0 } else { 0.0 });
    ess_raw(&split_chains(ind.view()))
}

/// Tail effective sample size: the smaller ESS of the indicators of the 5% and 95% quantiles.
pub fn ess_tail(x: ArrayView2<f64>) -> f64 {
    if x.ncols() < 4 {
        return f64::NAN;
    }
    ess_quantile(x, 0.05).min(ess_quantile(x, 0.95))
}

/// ESS for the mean: ESS of the split chains, no rank normalisation.
pub fn ess_mean(x: ArrayView2<f64>) -> f64 {
    if x.ncols() < 4 {
        return f64::NAN;
    }
    ess_raw(&split_chains(x))
}

/// Monte Carlo standard error of the posterior mean: sd / sqrt(ESS_mean).
pub fn mcse_mean(x: ArrayView2<f64>) -> f64 {
    let sd = var_ddof1(x.iter().copied()).sqrt();
    sd / ess_mean(x).sqrt()
}

/// Monte Carlo standard error of the posterior standard deviation (ArviZ's delta-method form).
pub fn mcse_sd(x: ArrayView2<f64>) -> f64 {
    let n = x.len() as f64;
    let mean = x.sum() / n;
    let c2 = x.mapv(|v| (v - mean) * (v - mean));
    let ess = ess_mean(c2.view());
    let evar = c2.sum() / n;
    let varvar = (c2.iter().map(|v| v * v).sum::<f64>() / n - evar * evar) / ess;
    (varvar / evar / 4.0).sqrt()
}

/// The highest-density interval: the narrowest interval holding `floor(prob * n) + 1` of the
/// sorted draws (ArviZ's rule: the first of equally narrow intervals wins).
pub fn hdi(draws: &[f64], prob: f64) -> (f64, f64) {
    let mut v = draws.to_vec();
    v.sort_by(f64::total_cmp);
    hdi_sorted(&v, prob)
}

pub(crate) fn hdi_sorted(v: &[f64], prob: f64) -> (f64, f64) {
    let n = v.len();
    let inc = (prob * n as f64).floor() as usize;
    let n_int = n - inc;
    let mut best = 0;
    let mut width = f64::INFINITY;
    for i in 0..n_int {
        let w = v[i + inc] - v[i];
        if w < width {
            width = w;
            best = i;
        }
    }
    (v[best], v[best + inc])
}

/// The median of a vector (mean of the two middle values for an even length).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Energy Bayesian fraction of missing information of one chain's energies (ArviZ's `bfmi`):
/// the mean squared successive difference over the sample variance (n - 1 denominator). Below 0.3 suggests the momentum
/// resampling explores the energy distribution poorly.
pub fn bfmi(energy: &[f64]) -> f64 {
    let n = energy.len() as f64;
    let mean = energy.iter().sum::<f64>() / n;
    let var = energy.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let msd = energy
        .windows(2)
        .map(|w| (w[1] - w[0]).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    msd / var
}

/// All diagnostics of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Diagnostics {
    /// Rank-normalised split R-hat.
    pub rhat: f64,
    /// Bulk effective sample size.
    pub ess_bulk: f64,
    /// Tail effective sample size.
    pub ess_tail: f64,
    /// Monte Carlo standard error of the mean.
    pub mcse_mean: f64,
    /// Monte Carlo standard error of the standard deviation.
    pub mcse_sd: f64,
}

impl Diagnostics {
    /// Computes every diagnostic of a `chains x draws` array.
    pub fn of(x: ArrayView2<f64>) -> Self {
        Self {
            rhat: rhat(x),
            ess_bulk: ess_bulk(x),
            ess_tail: ess_tail(x),
            mcse_mean: mcse_mean(x),
            mcse_sd: mcse_sd(x),
        }
    }
}
