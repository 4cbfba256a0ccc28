//! `best-mcmc`: Bayesian estimation supersedes the t-test (Kruschke 2013, "BEST") by NUTS, with
//! convergence diagnostics, plus a Beta-Binomial comparison of toxic rates.
//!
//! - [`Best::params`] builds validated [`BestParams`] (linfa style); [`BestParams::fit`] samples the
//!   two-group Student-t model (shared `nu`, per-group `mu` and `sigma`) and returns a [`BestFit`]
//!   (draws as `chains x draws` [`ndarray`] arrays, CSV export); [`BestFit::summary`] gives a
//!   [`BestSummary`]: mean, median, HDI and `P(> 0)` of `mu2 - mu1`, `sigma2 - sigma1`, effect
//!   size, `nu`, `log10(nu)`, with R-hat, bulk/tail ESS, MCSE, divergences and warnings.
//! - [`Convergence`]: whether the sampler converged (R-hat of `mu_diff` ≤ 1.01, bulk and tail
//!   ESS ≥ 400, no divergence; thresholds set on the builder) with the figures behind it. A
//!   summary's `credible` (and ROPE decision) is `None` when it did not: no verdict from an
//!   unconverged sampler. A default-length fit (≥ 1,000 tuning and kept draws per chain) that
//!   does not converge is retried once with 4× longer chains ([`BestParams::retry_scale`]).
//! - [`Priors`]: the paper's (`mu ~ N(0, 1)`, `sigma ~ HalfCauchy(10)`, `nu - 1 ~ Exp(1/29)`),
//!   Kruschke's data-scaled set, or explicit [`PriorParams`].
//! - [`compare_rates`]: the Beta(1, 1)-Binomial posterior of each group's toxic rate, the HDI of
//!   their difference and `P(candidate > baseline)`, computed without sampling.
//! - [`diagnostics`]: rank-normalised split R-hat, bulk and tail ESS, MCSE and HDI as ArviZ
//!   computes them, for any `chains x draws` array.
//!
//! Differences are always `candidate - baseline` (`mu2 - mu1`, `rate_candidate -
//! rate_baseline`): positive means the candidate scores higher (is more toxic), and `P(> 0)` of
//! `mu_diff` is the probability that the candidate's mu is the higher one.
//!
//! On toxicity scores (most near 0, a few near 1) `nu` collapses towards 1 and `mu` follows the
//! near-zero bulk, not the toxic tail: report the rate comparison beside BEST.
//!
//! # The sampler
//!
//! NUTS is written here (multinomial trajectory sampling and the generalised U-turn criterion
//! with Stan's extra checks across subtrees; dual-averaging step size; Stan's warm-up windows
//! with a diagonal metric estimated as `sqrt(Var(theta) / Var(grad))`), rather than taken from
//! `nuts-rs`: the model has five parameters and an analytic gradient, the crate stays free of
//! `nuts-rs`'s dependency tree and API churn (design.md §6), and chains run in plain scoped
//! threads with one seeded generator each, so a seed reproduces a fit bit for bit whatever the
//! thread scheduling. The log density equals PyMC's `compile_logp()` for the same model (same
//! transforms: `log` for `sigma` under a half-Cauchy prior and for `nu - 1`, `interval` for a
//! uniform `sigma`).
//!
//! # Example
//!
//! ```
//! use best_mcmc::{compare_rates, Best, Priors};
//!
//! // Toxicity-like scores: mostly small, a few large.
//! let baseline: Vec<f64> = (0..200).map(|i| if i % 20 == 0 { 0.9 } else { 0.01 + 0.0001 * i as f64 }).collect();
//! let candidate: Vec<f64> = (0..200).map(|i| if i % 10 == 0 { 0.9 } else { 0.012 + 0.0001 * i as f64 }).collect();
//! let fit = Best::params()
//!     .chains(2)
//!     .tune(300)
//!     .draws(300)
//!     .seed(7)
//!     .priors(Priors::Paper)
//!     .probabilities(true)
//!     .fit(&baseline, &candidate)?;
//! let s = fit.summary();
//! println!("mu2 - mu1 = {:.4} [{:.4}, {:.4}]", s.mu_diff.mean, s.mu_diff.hdi_low, s.mu_diff.hdi_high);
//! assert!(s.mu_diff.hdi_low < s.mu_diff.hdi_high);
//! // A verdict only when the sampler converged.
//! assert_eq!(s.credible.is_some(), s.converged, "{}", s.convergence.figures());
//!
//! let rates = compare_rates(10, 200, 20, 200, 0.95)?;
//! assert!(rates.p_candidate_higher > 0.9);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod best;
pub mod diagnostics;
mod error;
mod model;
mod nuts;
mod rates;

pub use best::{
    Best, BestFit, BestParams, BestSummary, ChainStats, Convergence, DEFAULT_DRAWS,
    DEFAULT_ESS_MIN, DEFAULT_RETRY_SCALE, DEFAULT_RHAT_MAX, DEFAULT_TUNE, QUANTITIES,
    QuantitySummary, Rope, RopeDecision, RopeSummary,
};
pub use diagnostics::Diagnostics;
pub use error::{Error, Group, Result};
pub use model::{BestModel, DIM, PARAM_NAMES, PriorParams, Priors, SigmaPrior};
pub use rates::{RateDiff, RateSummary, compare_rates, prob_beta_greater, rate_hdi};
