//! The two-group BEST model: priors, transforms and the log density with its analytic gradient.
//!
//! Parameters live on an unconstrained space `theta = [mu1, mu2, u1, u2, v]`, in the order and
//! with the transforms PyMC uses for the same model, so [`BestModel::log_density`] equals PyMC's
//! `model.compile_logp(jacobian=...)` at the same point:
//! - `mu_j` untransformed;
//! - `sigma_j = exp(u_j)` for a half-Cauchy prior (PyMC's `log` transform, Jacobian `u_j`), or
//!   `sigma_j = sigmoid(u_j) * b + (1 - sigmoid(u_j)) * a` for a uniform prior on `(a, b)` (PyMC's
//!   `interval` transform, Jacobian `log(b - a) - 2 softplus(-u_j) - u_j`);
//! - `nu = 1 + exp(v)` (PyMC's `log` transform of `nu - 1`, Jacobian `v`).

use crate::error::{Error, Group, Result};
use statrs::function::gamma::{digamma, ln_gamma};
use std::f64::consts::PI;

/// Number of unconstrained parameters.
pub const DIM: usize = 5;

/// Names of the unconstrained coordinates, as PyMC names its value variables (half-Cauchy case).
pub const PARAM_NAMES: [&str; DIM] = [
    "mu1",
    "mu2",
    "sigma1_log__",
    "sigma2_log__",
    "nu_minus_one_log__",
];

/// The prior on each group's scale sigma.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum SigmaPrior {
    /// Half-Cauchy with scale `beta` (sampled as `log sigma`).
    HalfCauchy {
        /// Scale.
        beta: f64,
    },
    /// Uniform on `(low, high)` (sampled through the log-odds of its position in the interval).
    Uniform {
        /// Lower bound (> 0).
        low: f64,
        /// Upper bound.
        high: f64,
    },
}

/// Explicit prior parameters, the same for both groups.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PriorParams {
    /// Mean of the normal prior on each `mu`.
    pub mu_mean: f64,
    /// Standard deviation of the normal prior on each `mu`.
    pub mu_sd: f64,
    /// Prior on each `sigma`.
    pub sigma: SigmaPrior,
    /// Rate of the exponential prior on `nu - 1`.
    pub nu_minus_one_rate: f64,
}

/// Which prior set to use.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priors {
    /// The paper's priors: `mu ~ Normal(0, 1)`, `sigma ~ HalfCauchy(10)`, `nu - 1 ~ Exponential(1/29)`.
    Paper,
    /// Kruschke's (2013) data-scaled priors, from the pooled data's mean `m` and sample standard
    /// deviation `s` (n - 1 denominator): `mu ~ Normal(m, 1000 s)`, `sigma ~ Uniform(s/1000, 1000 s)`,
    /// `nu - 1 ~ Exponential(1/29)`.
    Kruschke,
    /// User-given parameters.
    Custom(PriorParams),
}

impl Priors {
    /// The concrete prior parameters for these pooled data.
    pub fn resolve(&self, baseline: &[f64], candidate: &[f64]) -> PriorParams {
        match *self {
            Priors::Paper => PriorParams {
                mu_mean: 0.0,
                mu_sd: 1.0,
                sigma: SigmaPrior::HalfCauchy { beta: 10.0 },
                nu_minus_one_rate: 1.0 / 29.0,
            },
            Priors::Kruschke => {
                let n = (baseline.len() + candidate.len()) as f64;
                let mean = baseline.iter().chain(candidate).sum::<f64>() / n;
                let ss: f64 = baseline
                    .iter()
                    .chain(candidate)
                    .map(|y| (y - mean) * (y - mean))
                    .sum();
                let sd = (ss / (n - 1.0)).sqrt();
                PriorParams {
                    mu_mean: mean,
                    mu_sd: 1000.0 * sd,
                    sigma: SigmaPrior::Uniform {
                        low: sd / 1000.0,
                        high: 1000.0 * sd,
                    },
                    nu_minus_one_rate: 1.0 / 29.0,
                }
            }
            Priors::Custom(p) => p,
        }
    }
}

impl PriorParams {
    /// Checks that every parameter is finite and in its domain.
    pub fn check(&self) -> Result<()> {
        let bad = |name, reason: &str| {
            Err(Error::InvalidParam {
                name,
                reason: reason.to_string(),
            })
        };
        if !self.mu_mean.is_finite() {
            return bad("priors.mu_mean", "must be finite");
        }
        if !(self.mu_sd.is_finite() && self.mu_sd > 0.0) {
            return bad("priors.mu_sd", "must be finite and > 0");
        }
        match self.sigma {
            SigmaPrior::HalfCauchy { beta } => {
                if !(beta.is_finite() && beta > 0.0) {
                    return bad("priors.sigma.beta", "must be finite and > 0");
                }
            }
            SigmaPrior::Uniform { low, high } => {
                if !(low.is_finite() && high.is_finite() && low > 0.0 && high > low) {
                    return bad("priors.sigma", "uniform bounds need 0 < low < high < inf");
                }
            }
        }
        if !(self.nu_minus_one_rate.is_finite() && self.nu_minus_one_rate > 0.0) {
            return bad("priors.nu_minus_one_rate", "must be finite and > 0");
        }
        Ok(())
    }
}

/// Checks one group's data: non-empty, finite, in [0, 1] if `probabilities`, not constant.
pub(crate) fn check_group(y: &[f64], group: Group, probabilities: bool) -> Result<()> {
    if y.is_empty() {
        return Err(Error::EmptyGroup { group });
    }
    for (index, &value) in y.iter().enumerate() {
        if !value.is_finite() {
            return Err(Error::NonFinite {
                group,
                index,
                value,
            });
        }
        if probabilities && !(0.0..=1.0).contains(&value) {
            return Err(Error::OutOfRange {
                group,
                index,
                value,
            });
        }
    }
    if y.iter().all(|&v| v == y[0]) {
        return Err(Error::ConstantGroup { group, value: y[0] });
    }
    Ok(())
}

/// The model: validated data of both groups and resolved priors.
#[derive(Debug, Clone)]
pub struct BestModel {
    y: [Vec<f64>; 2],
    priors: PriorParams,
}

/// Sufficient sums of one group for the Student-t likelihood at (mu, sigma, nu).
struct GroupSums {
    /// sum log(nu + z^2)
    log_w: f64,
    /// sum z / (nu + z^2)
    z_over_w: f64,
    /// sum 1 / (nu + z^2)
    inv_w: f64,
}

/// Numerically stable log(1 + exp(x)).
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Splits a finite `x >= 1` into `(mantissa in [1, 2), binary exponent)`.
#[inline]
fn split_exponent(x: f64) -> (f64, i64) {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    (
        f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | (1023u64 << 52)),
        e,
    )
}

fn group_sums(y: &[f64], mu: f64, sigma: f64, nu: f64) -> GroupSums {
    let inv_s = 1.0 / sigma;
    // sum log w as the log of a running product whose binary exponent is moved into an integer
    // after every block of 8 (w >= nu > 1, so only overflow is possible, and a block whose
    // product overflows falls back to logarithms). One logarithm per group instead of one per
    // observation; the product's rounding error grows like sqrt(n) ulps.
    let mut mant = 1.0f64;
    let mut expo = 0i64;
    let mut log_w = 0.0;
    let mut zw = [0.0f64; 8];
    let mut iw = [0.0f64; 8];
    let chunks = y.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        let mut z = [0.0f64; 8];
        let mut w = [0.0f64; 8];
        for j in 0..8 {
            z[j] = (c[j] - mu) * inv_s;
            w[j] = nu + z[j] * z[j];
        }
        let p = ((w[0] * w[1]) * (w[2] * w[3])) * ((w[4] * w[5]) * (w[6] * w[7]));
        let q = mant * p;
        if q.is_finite() {
            let (m, e) = split_exponent(q);
            mant = m;
            expo += e;
        } else {
            log_w += w.iter().map(|v| v.ln()).sum::<f64>();
        }
        for j in 0..8 {
            let inv = 1.0 / w[j];
            zw[j] += z[j] * inv;
            iw[j] += inv;
        }
    }
    let mut z_over_w = zw.iter().sum::<f64>();
    let mut inv_w = iw.iter().sum::<f64>();
    for &yi in rest {
        let z = (yi - mu) * inv_s;
        let w = nu + z * z;
        log_w += w.ln();
        z_over_w += z / w;
        inv_w += 1.0 / w;
    }
    log_w += mant.ln() + expo as f64 * std::f64::consts::LN_2;
    GroupSums {
        log_w,
        z_over_w,
        inv_w,
    }
}

impl BestModel {
    /// Builds the model after checking the data (see [`crate::Error`] for what is rejected) and
    /// the prior parameters. `probabilities`: the scores must lie in [0, 1].
    pub fn new(
        baseline: &[f64],
        candidate: &[f64],
        priors: &Priors,
        probabilities: bool,
    ) -> Result<Self> {
        check_group(baseline, Group::Baseline, probabilities)?;
        check_group(candidate, Group::Candidate, probabilities)?;
        let priors = priors.resolve(baseline, candidate);
        priors.check()?;
        Ok(Self {
            y: [baseline.to_vec(), candidate.to_vec()],
            priors,
        })
    }

    /// The resolved prior parameters.
    pub fn priors(&self) -> &PriorParams {
        &self.priors
    }

    /// The observations of group `j` (0 = baseline, 1 = candidate).
    pub fn data(&self, j: usize) -> &[f64] {
        &self.y[j]
    }

    /// Maps an unconstrained point to `[mu1, mu2, sigma1, sigma2, nu]`.
    pub fn constrain(&self, theta: &[f64; DIM]) -> [f64; DIM] {
        [
            theta[0],
            theta[1],
            self.sigma_of(theta[2]),
            self.sigma_of(theta[3]),
            1.0 + theta[4].exp(),
        ]
    }

    fn sigma_of(&self, u: f64) -> f64 {
        match self.priors.sigma {
            SigmaPrior::HalfCauchy { .. } => u.exp(),
            SigmaPrior::Uniform { low, high } => {
                let s = sigmoid(u);
                s * high + (1.0 - s) * low
            }
        }
    }

    /// The prior "moment" PyMC starts its chains from (before jitter), unconstrained.
    pub fn initial_point(&self) -> [f64; DIM] {
        let p = &self.priors;
        let u = match p.sigma {
            SigmaPrior::HalfCauchy { beta } => beta.ln(),
            SigmaPrior::Uniform { .. } => 0.0,
        };
        [p.mu_mean, p.mu_mean, u, u, (1.0 / p.nu_minus_one_rate).ln()]
    }

    /// Log density (up to PyMC's normalisation, which it matches) at an unconstrained point,
    /// with or without the log-Jacobian of the transforms.
    pub fn log_density(&self, theta: &[f64; DIM], jacobian: bool) -> f64 {
        let mut g = [0.0; DIM];
        self.eval(theta, &mut g, jacobian)
    }

    /// Log density with the Jacobian (the sampler's target) and its gradient in `grad`.
    pub fn logp_grad(&self, theta: &[f64; DIM], grad: &mut [f64; DIM]) -> f64 {
        self.eval(theta, grad, true)
    }

    /// Log density and gradient, with or without the Jacobian.
    pub fn log_density_grad(
        &self,
        theta: &[f64; DIM],
        grad: &mut [f64; DIM],
        jacobian: bool,
    ) -> f64 {
        self.eval(theta, grad, jacobian)
    }

    fn eval(&self, theta: &[f64; DIM], grad: &mut [f64; DIM], jacobian: bool) -> f64 {
        let p = &self.priors;
        let v = theta[4];
        let nu_m1 = v.exp();
        let nu = 1.0 + nu_m1;
        let mut lp = 0.0;

        // nu - 1 ~ Exponential(rate); d/dnu collects into dnu.
        let lam = p.nu_minus_one_rate;
        lp += lam.ln() - lam * nu_m1;
        let mut dnu = -lam;

        // Student-t constant per observation and its derivative in nu.
        let c_nu = ln_gamma(0.5 * (nu + 1.0)) - ln_gamma(0.5 * nu) - 0.5 * (nu * PI).ln();
        let dc_nu = 0.5 * digamma(0.5 * (nu + 1.0)) - 0.5 * digamma(0.5 * nu) - 0.5 / nu;
        let ln_nu = nu.ln();

        let ln_2pi = (2.0 * PI).ln();
        for j in 0..2 {
            let mu = theta[j];
            let u = theta[2 + j];
            // mu_j ~ Normal(mu_mean, mu_sd)
            let zmu = (mu - p.mu_mean) / p.mu_sd;
            lp += -0.5 * ln_2pi - p.mu_sd.ln() - 0.5 * zmu * zmu;
            let mut dmu = -zmu / p.mu_sd;

            let sigma = self.sigma_of(u);
            // Prior on sigma, derivative w.r.t. sigma.
            let mut dsigma;
            // d sigma / d u and d(log-Jacobian)/du.
            let (dsig_du, djac);
            match p.sigma {
                SigmaPrior::HalfCauchy { beta } => {
                    let r = sigma / beta;
                    lp += std::f64::consts::LN_2 - PI.ln() - beta.ln() - (r * r).ln_1p();
                    dsigma = -2.0 * sigma / (beta * beta + sigma * sigma);
                    dsig_du = sigma;
                    if jacobian {
                        lp += u;
                    }
                    djac = 1.0;
                }
                SigmaPrior::Uniform { low, high } => {
                    lp += -(high - low).ln();
                    dsigma = 0.0;
                    let s = sigmoid(u);
                    dsig_du = (high - low) * s * (1.0 - s);
                    if jacobian {
                        lp += (high - low).ln() - 2.0 * softplus(-u) - u;
                    }
                    djac = 1.0 - 2.0 * s;
                }
            }

            // Likelihood.
            let y = &self.y[j];
            let n = y.len() as f64;
            let s = group_sums(y, mu, sigma, nu);
            let half_nu1 = 0.5 * (nu + 1.0);
            let sum_log1p = s.log_w - n * ln_nu;
            lp += n * (c_nu - sigma.ln()) - half_nu1 * sum_log1p;
            // sum z^2 / (nu + z^2) = n - nu * sum 1/w
            let sum_z2w = n - nu * s.inv_w;
            dmu += (nu + 1.0) / sigma * s.z_over_w;
            dsigma += (-n + (nu + 1.0) * sum_z2w) / sigma;
            dnu += n * dc_nu - 0.5 * sum_log1p + half_nu1 * sum_z2w / nu;

            grad[j] = dmu;
            grad[2 + j] = dsigma * dsig_du + if jacobian { djac } else { 0.0 };
        }
        grad[4] = dnu * nu_m1 + if jacobian { 1.0 } else { 0.0 };
        if jacobian {
            lp += v;
        }
        lp
    }
}
