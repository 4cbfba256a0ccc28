//! The estimator: a validated builder, the fit (draws of every chain) and its summary.

use crate::diagnostics::{self, Diagnostics};
use crate::error::{Error, Result};
use crate::model::{BestModel, DIM, PriorParams, Priors};
use crate::nuts::{self, ChainOutput, LogDensity, NutsSettings};
use ndarray::{Array2, ArrayView2};
use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use std::io::Write;

/// Entry point of the builder: `Best::params()`.
#[derive(Debug, Clone, Copy)]
pub struct Best;

impl Best {
    /// Default parameters: 4 chains of 1,000 tuning and 1,000 kept draws, seed 0, the paper's
    /// priors, target acceptance 0.8, tree depth 10, a 95% HDI, no ROPE, scores not required to
    /// be probabilities; converged when `mu_diff` has R-hat ≤ 1.01, bulk and tail ESS ≥ 400 and
    /// there is no divergence; a default-length fit that does not converge is retried once with
    /// 4× longer chains.
    pub fn params() -> BestParams {
        BestParams::default()
    }
}

/// A region of practical equivalence for `mu_diff = mu2 - mu1` (candidate − baseline).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rope {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// Parameters of a BEST fit (linfa-style builder; [`BestParams::fit`] checks them first).
#[derive(Debug, Clone, PartialEq)]
pub struct BestParams {
    chains: usize,
    tune: usize,
    draws: usize,
    seed: u64,
    priors: Priors,
    target_accept: f64,
    max_depth: usize,
    hdi_prob: f64,
    rope: Option<Rope>,
    probabilities: bool,
    threads: bool,
    rhat_max: f64,
    ess_min: f64,
    max_divergences: usize,
    retry_scale: usize,
}

/// Default kept draws per chain; a fit of at least this many draws and [`DEFAULT_TUNE`] tuning
/// iterations is a *default-length* fit, retried once with longer chains when it does not
/// converge (see [`BestParams::retry_scale`]).
pub const DEFAULT_DRAWS: usize = 1000;
/// Default tuning iterations per chain.
pub const DEFAULT_TUNE: usize = 1000;
/// Default largest R-hat of `mu_diff` for a converged fit.
pub const DEFAULT_RHAT_MAX: f64 = 1.01;
/// Default smallest bulk and tail ESS of `mu_diff` for a converged fit.
pub const DEFAULT_ESS_MIN: f64 = 400.0;
/// Default factor by which a default-length fit that did not converge is lengthened (tuning
/// and kept draws) for its one retry.
pub const DEFAULT_RETRY_SCALE: usize = 4;

impl Default for BestParams {
    fn default() -> Self {
        Self {
            chains: 4,
            tune: DEFAULT_TUNE,
            draws: DEFAULT_DRAWS,
            seed: 0,
            priors: Priors::Paper,
            target_accept: 0.8,
            max_depth: 10,
            hdi_prob: 0.95,
            rope: None,
            probabilities: false,
            threads: true,
            rhat_max: DEFAULT_RHAT_MAX,
            ess_min: DEFAULT_ESS_MIN,
            max_divergences: 0,
            retry_scale: DEFAULT_RETRY_SCALE,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: $ty) -> Self {
            self.$name = $name;
            self
        }
    };
}

impl BestParams {
    setter!(
        /// Number of chains (>= 1; R-hat needs >= 2). Each runs in its own thread.
        chains: usize
    );
    setter!(
        /// Tuning (warm-up) iterations per chain, discarded.
        tune: usize
    );
    setter!(
        /// Kept draws per chain (>= 4).
        draws: usize
    );
    setter!(
        /// Seed; chain `c` uses a generator seeded from `(seed, c)`, so results do not depend on
        /// thread scheduling.
        seed: u64
    );
    setter!(
        /// The prior set.
        priors: Priors
    );
    setter!(
        /// Target mean acceptance statistic of step-size adaptation, in (0, 1).
        target_accept: f64
    );
    setter!(
        /// Maximum tree depth of NUTS (1..=20).
        max_depth: usize
    );
    setter!(
        /// Mass of the highest-density intervals, in (0, 1).
        hdi_prob: f64
    );
    setter!(
        /// Require every score to lie in [0, 1] (classifier probabilities).
        probabilities: bool
    );
    setter!(
        /// Run chains in parallel threads (default) or one after another.
        threads: bool
    );
    setter!(
        /// Convergence: the largest R-hat of `mu_diff` (default 1.01; finite, ≥ 1).
        rhat_max: f64
    );
    setter!(
        /// Convergence: the smallest bulk and tail ESS of `mu_diff` (default 400; finite, ≥ 0).
        ess_min: f64
    );
    setter!(
        /// Convergence: the most divergent transitions after tuning, all chains (default 0).
        max_divergences: usize
    );
    setter!(
        /// A *default-length* fit (at least [`DEFAULT_TUNE`] tuning iterations and
        /// [`DEFAULT_DRAWS`] kept draws per chain) that does not converge is run once more, from
        /// scratch with the same seed, with `retry_scale` times as many tuning iterations and kept
        /// draws; the summary then describes the longer fit and keeps the first one's figures in
        /// [`Convergence::first_attempt`]. Shorter fits were asked to be short and are not
        /// retried. 1 turns the retry off; at most 16. Default 4.
        retry_scale: usize
    );

    /// A region of practical equivalence for `mu2 - mu1`: the summary reports the posterior share
    /// inside it and Kruschke's HDI+ROPE decision.
    pub fn rope(mut self, low: f64, high: f64) -> Self {
        self.rope = Some(Rope { low, high });
        self
    }

    /// Number of chains.
    pub fn get_chains(&self) -> usize {
        self.chains
    }
    /// Tuning iterations per chain.
    pub fn get_tune(&self) -> usize {
        self.tune
    }
    /// Kept draws per chain.
    pub fn get_draws(&self) -> usize {
        self.draws
    }
    /// The seed.
    pub fn get_seed(&self) -> u64 {
        self.seed
    }
    /// The prior set.
    pub fn get_priors(&self) -> Priors {
        self.priors
    }
    /// Mass of the highest-density intervals.
    pub fn get_hdi_prob(&self) -> f64 {
        self.hdi_prob
    }
    /// The largest R-hat of `mu_diff` of a converged fit.
    pub fn get_rhat_max(&self) -> f64 {
        self.rhat_max
    }
    /// The smallest bulk and tail ESS of `mu_diff` of a converged fit.
    pub fn get_ess_min(&self) -> f64 {
        self.ess_min
    }
    /// The most divergent transitions of a converged fit.
    pub fn get_max_divergences(&self) -> usize {
        self.max_divergences
    }
    /// The retry's lengthening factor (1: no retry).
    pub fn get_retry_scale(&self) -> usize {
        self.retry_scale
    }

    /// Whether this is a default-length fit, retried once when it does not converge.
    pub fn retries(&self) -> bool {
        self.retry_scale > 1 && self.tune >= DEFAULT_TUNE && self.draws >= DEFAULT_DRAWS
    }

    /// Checks every parameter; [`BestParams::fit`] calls it before sampling.
    pub fn check(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidParam { name, reason });
        if self.chains == 0 {
            return bad("chains", "must be at least 1".into());
        }
        if self.draws < 4 {
            return bad(
                "draws",
                format!("{} < 4 (diagnostics need at least 4 draws)", self.draws),
            );
        }
        if !(self.target_accept > 0.0 && self.target_accept < 1.0) {
            return bad(
                "target_accept",
                format!("{} is not in (0, 1)", self.target_accept),
            );
        }
        if !(1..=20).contains(&self.max_depth) {
            return bad("max_depth", format!("{} is not in 1..=20", self.max_depth));
        }
        if !(self.hdi_prob > 0.0 && self.hdi_prob < 1.0) {
            return bad("hdi_prob", format!("{} is not in (0, 1)", self.hdi_prob));
        }
        if (self.hdi_prob * (self.chains * self.draws) as f64).floor() as usize
            >= self.chains * self.draws
        {
            return bad("hdi_prob", "too close to 1 for this number of draws".into());
        }
        if let Some(r) = self.rope
            && !(r.low.is_finite() && r.high.is_finite() && r.low < r.high)
        {
            return bad(
                "rope",
                format!(
                    "({}, {}) is not a finite interval with low < high",
                    r.low, r.high
                ),
            );
        }
        if !(self.rhat_max.is_finite() && self.rhat_max >= 1.0) {
            return bad(
                "rhat_max",
                format!("{} is not a finite number ≥ 1", self.rhat_max),
            );
        }
        if !(self.ess_min.is_finite() && self.ess_min >= 0.0) {
            return bad(
                "ess_min",
                format!("{} is not a finite number ≥ 0", self.ess_min),
            );
        }
        if !(1..=16).contains(&self.retry_scale) {
            return bad(
                "retry_scale",
                format!("{} is not in 1..=16", self.retry_scale),
            );
        }
        if let Priors::Custom(p) = &self.priors {
            p.check()?;
        }
        Ok(())
    }

    /// Checks the parameters and the data, then samples the posterior.
    /// The differences reported are `candidate - baseline` (`mu2 - mu1`).
    ///
    /// A default-length fit that does not converge is retried once with longer chains (see
    /// [`BestParams::retry_scale`]); [`BestFit::convergence`] tells whether the returned fit
    /// converged.
    pub fn fit(&self, baseline: &[f64], candidate: &[f64]) -> Result<BestFit> {
        self.check()?;
        let model = BestModel::new(baseline, candidate, &self.priors, self.probabilities)?;
        let first = self.sample(&model)?;
        if !self.retries() {
            return Ok(first);
        }
        let before = first.convergence();
        if before.converged {
            return Ok(first);
        }
        let longer = BestParams {
            tune: self.tune * self.retry_scale,
            draws: self.draws * self.retry_scale,
            ..self.clone()
        };
        let mut second = longer.sample(&model)?;
        second.first_attempt = Some(Box::new(before));
        Ok(second)
    }

    /// One run of every chain with these settings (no retry).
    fn sample(&self, model: &BestModel) -> Result<BestFit> {
        let settings = NutsSettings {
            tune: self.tune,
            draws: self.draws,
            target_accept: self.target_accept,
            max_depth: self.max_depth,
            max_energy_error: 1000.0,
        };
        let run = |chain: usize| -> Result<ChainOutput<DIM>> {
            run_one(model, chain, self.seed, &settings)
        };
        let outputs: Vec<ChainOutput<DIM>> = if self.threads && self.chains > 1 {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..self.chains)
                    .map(|c| scope.spawn(move || run(c)))
                    .collect();
                handles
                    .into_iter()
                    .enumerate()
                    .map(|(c, h)| h.join().map_err(|_| Error::ThreadPanic { chain: c })?)
                    .collect::<Result<Vec<_>>>()
            })?
        } else {
            (0..self.chains).map(run).collect::<Result<Vec<_>>>()?
        };
        Ok(BestFit::from_chains(model, outputs, self.clone()))
    }
}

struct Target<'a>(&'a BestModel);

impl LogDensity<DIM> for Target<'_> {
    fn logp_grad(&self, x: &[f64; DIM], grad: &mut [f64; DIM]) -> f64 {
        self.0.logp_grad(x, grad)
    }
}

/// SplitMix64 finaliser: decorrelates the per-chain seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn run_one(
    model: &BestModel,
    chain: usize,
    seed: u64,
    settings: &NutsSettings,
) -> Result<ChainOutput<DIM>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix(seed ^ mix(chain as u64 + 1)));
    let start = model.initial_point();
    let tries = 100;
    let mut init = None;
    let mut grad = [0.0; DIM];
    for _ in 0..tries {
        // PyMC's jitter+adapt_diag start: the prior moment plus Uniform(-1, 1) jitter.
        let x: [f64; DIM] = std::array::from_fn(|i| start[i] + rng.random_range(-1.0..1.0));
        let lp = model.logp_grad(&x, &mut grad);
        if lp.is_finite() && grad.iter().all(|g| g.is_finite()) {
            init = Some(x);
            break;
        }
    }
    let init = init.ok_or(Error::Initialization { chain, tries })?;
    nuts::run_chain(&Target(model), init, settings, rng)
        .map_err(|reason| Error::StepSize { chain, reason })
}

/// The names of the constrained parameters and derived quantities, in [`BestFit`]'s order.
pub const QUANTITIES: [&str; 10] = [
    "mu1",
    "mu2",
    "sigma1",
    "sigma2",
    "nu",
    "mu_diff",
    "sigma_diff",
    "effect_size",
    "log10_nu",
    "nu_minus_one",
];

/// Sampler statistics of one chain.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChainStats {
    /// Divergent transitions among the kept draws.
    pub divergences: usize,
    /// Divergent transitions during tuning (not counted as a problem by themselves).
    pub tune_divergences: usize,
    /// Adapted step size.
    pub step_size: f64,
    /// Mean tree depth of the kept draws.
    pub mean_tree_depth: f64,
    /// Kept draws that hit the maximum tree depth.
    pub max_depth_hits: usize,
    /// Gradient evaluations, tuning included.
    pub n_leapfrog: u64,
    /// Gradient evaluations during tuning.
    pub n_leapfrog_tune: u64,
    /// Mean acceptance statistic of the kept draws.
    pub mean_accept: f64,
    /// Energy Bayesian fraction of missing information (below 0.3 is a warning sign).
    pub ebfmi: f64,
    /// Adapted inverse metric (diagonal, unconstrained coordinates).
    pub inv_metric: Vec<f64>,
}

/// The posterior draws of a fit: every quantity as a `chains x draws` array.
#[derive(Debug, Clone)]
pub struct BestFit {
    draws: Vec<Array2<f64>>,
    stats: Vec<ChainStats>,
    params: BestParams,
    priors: PriorParams,
    n: [usize; 2],
    first_attempt: Option<Box<Convergence>>,
}

impl BestFit {
    fn from_chains(model: &BestModel, outputs: Vec<ChainOutput<DIM>>, params: BestParams) -> Self {
        let chains = outputs.len();
        let n = params.draws;
        let mut draws = vec![Array2::zeros((chains, n)); QUANTITIES.len()];
        for (c, out) in outputs.iter().enumerate() {
            for (d, theta) in out.draws.iter().enumerate() {
                let [mu1, mu2, s1, s2, nu] = model.constrain(theta);
                let vals = [
                    mu1,
                    mu2,
                    s1,
                    s2,
                    nu,
                    mu2 - mu1,
                    s2 - s1,
                    (mu2 - mu1) / ((s1 * s1 + s2 * s2) / 2.0).sqrt(),
                    nu.log10(),
                    theta[4].exp(),
                ];
                for (q, v) in vals.into_iter().enumerate() {
                    draws[q][[c, d]] = v;
                }
            }
        }
        let stats = outputs
            .iter()
            .map(|o| ChainStats {
                divergences: o.divergences,
                tune_divergences: o.tune_divergences,
                step_size: o.step_size,
                mean_tree_depth: o.mean_tree_depth,
                max_depth_hits: o.max_depth_hits,
                n_leapfrog: o.n_leapfrog,
                n_leapfrog_tune: o.n_leapfrog_tune,
                mean_accept: o.mean_accept,
                ebfmi: diagnostics::bfmi(&o.energy),
                inv_metric: o.inv_metric.to_vec(),
            })
            .collect();
        Self {
            draws,
            stats,
            priors: *model.priors(),
            n: [model.data(0).len(), model.data(1).len()],
            params,
            first_attempt: None,
        }
    }

    /// The draws of one quantity (a name of [`QUANTITIES`]) as `chains x draws`.
    pub fn draws(&self, name: &str) -> Option<ArrayView2<'_, f64>> {
        QUANTITIES
            .iter()
            .position(|q| *q == name)
            .map(|i| self.draws[i].view())
    }

    /// Per-chain sampler statistics.
    pub fn chain_stats(&self) -> &[ChainStats] {
        &self.stats
    }

    /// The resolved prior parameters used.
    pub fn priors(&self) -> &PriorParams {
        &self.priors
    }

    /// Total divergent transitions among kept draws.
    pub fn divergences(&self) -> usize {
        self.stats.iter().map(|s| s.divergences).sum()
    }

    /// Writes every kept draw as CSV: `chain,draw,` then the [`QUANTITIES`].
    pub fn write_csv<W: Write>(&self, mut w: W) -> Result<()> {
        writeln!(w, "chain,draw,{}", QUANTITIES.join(","))?;
        let (chains, n) = self.draws[0].dim();
        for c in 0..chains {
            for d in 0..n {
                write!(w, "{c},{d}")?;
                for q in &self.draws {
                    write!(w, ",{:e}", q[[c, d]])?;
                }
                writeln!(w)?;
            }
        }
        w.flush()?;
        Ok(())
    }

    /// Whether this fit converged by the builder's rule (R-hat, bulk and tail ESS of `mu_diff`,
    /// divergences), with the figures behind the answer.
    pub fn convergence(&self) -> Convergence {
        let i = QUANTITIES
            .iter()
            .position(|q| *q == "mu_diff")
            .expect("known quantity");
        let d = Diagnostics::of(self.draws[i].view());
        let p = &self.params;
        let divergences = self.divergences();
        let mut problems = Vec::new();
        if d.rhat.is_nan() {
            problems.push("no R-hat (it needs at least 2 chains)".to_string());
        } else if d.rhat > p.rhat_max {
            problems.push(format!("R-hat {:.3} > {}", d.rhat, p.rhat_max));
        }
        for (what, ess) in [("bulk", d.ess_bulk), ("tail", d.ess_tail)] {
            if ess.is_nan() || ess < p.ess_min {
                problems.push(format!("{what} ESS {ess:.0} < {}", p.ess_min));
            }
        }
        if divergences > p.max_divergences {
            problems.push(if p.max_divergences == 0 {
                format!("{divergences} divergent transitions")
            } else {
                format!(
                    "{divergences} divergent transitions > {}",
                    p.max_divergences
                )
            });
        }
        Convergence {
            converged: problems.is_empty(),
            rhat: d.rhat,
            ess_bulk: d.ess_bulk,
            ess_tail: d.ess_tail,
            divergences,
            max_depth_hits: self.stats.iter().map(|s| s.max_depth_hits).sum(),
            rhat_max: p.rhat_max,
            ess_min: p.ess_min,
            max_divergences: p.max_divergences,
            chains: p.chains,
            tune: p.tune,
            draws: p.draws,
            problems,
            attempts: 1 + usize::from(self.first_attempt.is_some()),
            first_attempt: self.first_attempt.clone(),
        }
    }

    fn quantity(&self, i: usize) -> QuantitySummary {
        QuantitySummary::of(self.draws[i].view(), self.params.hdi_prob)
    }

    /// The posterior summary with the builder's HDI mass and ROPE.
    pub fn summary(&self) -> BestSummary {
        let idx = |name: &str| {
            QUANTITIES
                .iter()
                .position(|q| *q == name)
                .expect("known quantity")
        };
        let mu_diff = self.quantity(idx("mu_diff"));
        let convergence = self.convergence();
        let converged = convergence.converged;
        // Verdicts only from a converged sampler.
        let credible = converged.then_some(mu_diff.hdi_low > 0.0 || mu_diff.hdi_high < 0.0);
        let rope = self.params.rope.map(|r| {
            let x = &self.draws[idx("mu_diff")];
            let inside =
                x.iter().filter(|v| **v >= r.low && **v <= r.high).count() as f64 / x.len() as f64;
            let decision = if mu_diff.hdi_low >= r.low && mu_diff.hdi_high <= r.high {
                RopeDecision::Equivalent
            } else if mu_diff.hdi_high < r.low || mu_diff.hdi_low > r.high {
                RopeDecision::Different
            } else {
                RopeDecision::Undecided
            };
            RopeSummary {
                low: r.low,
                high: r.high,
                share_inside: inside,
                decision: converged.then_some(decision),
            }
        });
        let parameters: Vec<(String, QuantitySummary)> = ["mu1", "mu2", "sigma1", "sigma2", "nu"]
            .iter()
            .map(|n| (n.to_string(), self.quantity(idx(n))))
            .collect();
        let divergences = self.divergences();
        let mut warnings = Vec::new();
        let mut all: Vec<(&str, &QuantitySummary)> =
            parameters.iter().map(|(n, q)| (n.as_str(), q)).collect();
        all.push(("mu_diff", &mu_diff));
        for (name, q) in &all {
            let d = &q.diagnostics;
            if d.rhat.is_nan() {
                warnings.push(format!("{name}: no R-hat (it needs at least 2 chains)"));
            } else if d.rhat > 1.01 {
                warnings.push(format!("{name}: R-hat {:.4} > 1.01", d.rhat));
            }
            if d.ess_bulk.is_nan() || d.ess_bulk < 400.0 {
                warnings.push(format!("{name}: bulk ESS {:.0} < 400", d.ess_bulk));
            }
            if d.ess_tail.is_nan() || d.ess_tail < 400.0 {
                warnings.push(format!("{name}: tail ESS {:.0} < 400", d.ess_tail));
            }
        }
        if divergences > 0 {
            warnings.push(format!("{divergences} divergent transitions after tuning"));
        }
        let hits: usize = self.stats.iter().map(|s| s.max_depth_hits).sum();
        if hits > 0 {
            warnings.push(format!(
                "{hits} transitions hit the maximum tree depth {}",
                self.params.max_depth
            ));
        }
        for (c, s) in self.stats.iter().enumerate() {
            if s.ebfmi < 0.3 {
                warnings.push(format!("chain {c}: E-BFMI {:.2} < 0.3", s.ebfmi));
            }
        }
        BestSummary {
            n_baseline: self.n[0],
            n_candidate: self.n[1],
            chains: self.params.chains,
            tune: self.params.tune,
            draws: self.params.draws,
            seed: self.params.seed,
            priors: self.priors,
            hdi_prob: self.params.hdi_prob,
            converged,
            convergence,
            credible,
            rope,
            sigma_diff: self.quantity(idx("sigma_diff")),
            effect_size: self.quantity(idx("effect_size")),
            nu: self.quantity(idx("nu")),
            log10_nu: self.quantity(idx("log10_nu")),
            mu_diff,
            parameters: parameters.into_iter().collect(),
            divergences,
            chain_stats: self.stats.clone(),
            warnings,
        }
    }
}

/// Posterior summary of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QuantitySummary {
    /// Posterior mean.
    pub mean: f64,
    /// Posterior median.
    pub median: f64,
    /// Posterior standard deviation.
    pub sd: f64,
    /// Lower bound of the HDI.
    pub hdi_low: f64,
    /// Upper bound of the HDI.
    pub hdi_high: f64,
    /// `P(quantity > 0)`.
    pub p_positive: f64,
    /// Convergence diagnostics.
    pub diagnostics: Diagnostics,
}

impl QuantitySummary {
    /// Summarises `chains x draws` draws with an HDI of mass `hdi_prob`.
    pub fn of(x: ArrayView2<f64>, hdi_prob: f64) -> Self {
        let n = x.len() as f64;
        let mean = x.sum() / n;
        let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let mut sorted: Vec<f64> = x.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let (hdi_low, hdi_high) = diagnostics::hdi_sorted(&sorted, hdi_prob);
        let median = diagnostics::median(sorted);
        Self {
            mean,
            median,
            sd,
            hdi_low,
            hdi_high,
            p_positive: x.iter().filter(|v| **v > 0.0).count() as f64 / n,
            diagnostics: Diagnostics::of(x),
        }
    }
}

/// Kruschke's HDI+ROPE decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeDecision {
    /// The HDI lies inside the ROPE: practically equivalent.
    Equivalent,
    /// The HDI lies entirely outside the ROPE: a credible, practically relevant difference.
    Different,
    /// The HDI and the ROPE overlap partly.
    Undecided,
}

/// The ROPE part of a summary.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RopeSummary {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Posterior share of `mu_diff` inside the ROPE.
    pub share_inside: f64,
    /// The decision; `None` when the sampler did not converge (no verdict from it).
    pub decision: Option<RopeDecision>,
}

/// The posterior summary of a BEST comparison.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BestSummary {
    /// Baseline observations.
    pub n_baseline: usize,
    /// Candidate observations.
    pub n_candidate: usize,
    /// Chains.
    pub chains: usize,
    /// Tuning iterations per chain.
    pub tune: usize,
    /// Kept draws per chain.
    pub draws: usize,
    /// Seed.
    pub seed: u64,
    /// The resolved priors.
    pub priors: PriorParams,
    /// HDI mass.
    pub hdi_prob: f64,
    /// `mu2 - mu1` (candidate − baseline; positive: the candidate scores higher).
    pub mu_diff: QuantitySummary,
    /// Whether the sampler converged ([`Convergence::converged`]).
    pub converged: bool,
    /// The convergence check and the figures behind it.
    pub convergence: Convergence,
    /// Whether the HDI of `mu_diff` excludes 0; `None` when the sampler did not converge (the
    /// draws cannot be trusted for a verdict).
    pub credible: Option<bool>,
    /// ROPE share and decision, when a ROPE was given.
    pub rope: Option<RopeSummary>,
    /// `sigma2 - sigma1`.
    pub sigma_diff: QuantitySummary,
    /// `(mu2 - mu1) / sqrt((sigma1^2 + sigma2^2) / 2)`.
    pub effect_size: QuantitySummary,
    /// The shared degrees of freedom.
    pub nu: QuantitySummary,
    /// `log10(nu)`.
    pub log10_nu: QuantitySummary,
    /// `mu1, mu2, sigma1, sigma2, nu` with their diagnostics.
    pub parameters: std::collections::BTreeMap<String, QuantitySummary>,
    /// Divergent transitions after tuning, all chains.
    pub divergences: usize,
    /// Per-chain sampler statistics.
    pub chain_stats: Vec<ChainStats>,
    /// Convergence warnings (R-hat > 1.01, ESS < 400, divergences, tree depth, E-BFMI).
    pub warnings: Vec<String>,
}

/// Whether a fit converged: the R-hat of `mu_diff` at most `rhat_max`, its bulk and tail ESS at
/// least `ess_min`, at most `max_divergences` divergent transitions after tuning (defaults 1.01,
/// 400 and 0; see the builder), with the figures behind the answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Convergence {
    /// Whether every criterion holds.
    pub converged: bool,
    /// Rank-normalised split R-hat of `mu_diff` (NaN, serialised as null, with one chain).
    pub rhat: f64,
    /// Bulk ESS of `mu_diff`.
    pub ess_bulk: f64,
    /// Tail ESS of `mu_diff`.
    pub ess_tail: f64,
    /// Divergent transitions after tuning, all chains.
    pub divergences: usize,
    /// Kept draws that hit the maximum tree depth, all chains (context; not a criterion).
    pub max_depth_hits: usize,
    /// The R-hat threshold used.
    pub rhat_max: f64,
    /// The ESS threshold used.
    pub ess_min: f64,
    /// The divergence threshold used.
    pub max_divergences: usize,
    /// Chains of this fit.
    pub chains: usize,
    /// Tuning iterations per chain of this fit.
    pub tune: usize,
    /// Kept draws per chain of this fit.
    pub draws: usize,
    /// Each failed criterion in words (`R-hat 2.338 > 1.01`, `bulk ESS 3 < 400`); empty when
    /// converged.
    pub problems: Vec<String>,
    /// 1, or 2 when the fit was retried with longer chains.
    pub attempts: usize,
    /// The first (shorter) fit's check, when this fit is its retry.
    pub first_attempt: Option<Box<Convergence>>,
}

impl Convergence {
    /// The figures in words: `R-hat 2.338, bulk ESS 3, tail ESS 18, 0 divergences`.
    pub fn figures(&self) -> String {
        let rhat = if self.rhat.is_nan() {
            "no R-hat".to_string()
        } else {
            format!("R-hat {:.3}", self.rhat)
        };
        format!(
            "{rhat}, bulk ESS {:.0}, tail ESS {:.0}, {} divergence{}",
            self.ess_bulk,
            self.ess_tail,
            self.divergences,
            if self.divergences == 1 { "" } else { "s" }
        )
    }
}
