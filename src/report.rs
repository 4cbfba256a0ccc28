//! The study report: one summary line per compared pair, toxic-rate tables shaped like the
//! paper's Tables 1–3, the rate and BEST comparison tables with verdicts (BEST's only where its
//! sampler converged), the diagnostics aggregated per pair, `report.json`, a CSV of every score,
//! and SVG figures: a forest plot of every rate difference (`figures/summary.svg`), the toxic
//! rates with their HDIs (`figures/rates.svg`) and the posterior of the mu difference per
//! comparison and subset (the paper's Figures 1–4).
//!
//! Every difference is candidate − baseline ([`DIRECTION`]).
//!
//! Everything here is a pure function of the per-stage outputs, and the files it writes hold no
//! timestamps, so a resumed run writes the same bytes as an uninterrupted one.
//!
//! ```
//! use toxdrift::report::{ScoreRow, toxic_rates};
//! let rows = vec![
//!     ScoreRow { id: "a".into(), subset: "severe".into(), score: 0.9, toxic: true },
//!     ScoreRow { id: "b".into(), subset: "random".into(), score: 0.1, toxic: false },
//! ];
//! let rates = toxic_rates(&rows);
//! assert_eq!(rates.total.toxic, 1);
//! assert_eq!(rates.subsets["severe"].rate(), Some(1.0));
//! ```

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::study::{Comparison, Study};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The subsets of the paper's prompt set, in the column order of its tables.
pub const PAPER_SUBSETS: [&str; 6] = ["severe", "random", "race", "gender", "age", "religion"];

/// The name used for all subsets together.
pub const ALL: &str = "all";

/// One scored continuation, as the report needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// The prompt id.
    pub id: String,
    /// The prompt's subset.
    pub subset: String,
    /// The classifier's probability of the toxic label.
    pub score: f64,
    /// Whether `score` reached the threshold.
    pub toxic: bool,
}

/// A count of toxic texts among `n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Texts scored.
    pub n: usize,
    /// Texts at or above the threshold.
    pub toxic: usize,
}

impl Count {
    /// The toxic rate, or `None` when nothing was scored.
    pub fn rate(&self) -> Option<f64> {
        (self.n > 0).then(|| self.toxic as f64 / self.n as f64)
    }
}

/// Toxic counts per subset and in total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToxicRates {
    /// All subsets together.
    pub total: Count,
    /// Per subset, by name.
    pub subsets: BTreeMap<String, Count>,
}

/// One model's toxic rate with the HDI of its Beta(1, 1)-Binomial posterior
/// Beta(1 + toxic, 1 + n − toxic): what the drift points and the gate report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateEstimate {
    /// Texts scored.
    pub n: usize,
    /// Texts at or above the threshold.
    pub toxic: usize,
    /// `toxic / n`.
    pub rate: f64,
    /// Lower end of the HDI.
    pub hdi_low: f64,
    /// Upper end of the HDI.
    pub hdi_high: f64,
}

impl RateEstimate {
    /// `toxic` of `n` (`n >= 1`), with the HDI of mass `hdi_mass` in (0, 1).
    pub fn of(toxic: usize, n: usize, hdi_mass: f64) -> Result<Self> {
        let (hdi_low, hdi_high) = best_mcmc::rate_hdi(toxic as u64, n as u64, hdi_mass)?;
        Ok(RateEstimate {
            n,
            toxic,
            rate: toxic as f64 / n as f64,
            hdi_low,
            hdi_high,
        })
    }
}

/// Counts toxic rows per subset and in total.
pub fn toxic_rates(rows: &[ScoreRow]) -> ToxicRates {
    let mut r = ToxicRates::default();
    for row in rows {
        let c = r.subsets.entry(row.subset.clone()).or_default();
        c.n += 1;
        c.toxic += usize::from(row.toxic);
        r.total.n += 1;
        r.total.toxic += usize::from(row.toxic);
    }
    r
}

/// The subset columns to show: the paper's, in its order, then any others alphabetically.
pub fn subset_columns<'a>(rates: impl IntoIterator<Item = &'a ToxicRates>) -> Vec<String> {
    let mut extra = std::collections::BTreeSet::new();
    let mut present = std::collections::BTreeSet::new();
    for r in rates {
        for k in r.subsets.keys() {
            present.insert(k.clone());
            if !PAPER_SUBSETS.contains(&k.as_str()) {
                extra.insert(k.clone());
            }
        }
    }
    PAPER_SUBSETS
        .iter()
        .filter(|s| present.contains(**s))
        .map(|s| s.to_string())
        .chain(extra)
        .collect()
}

/// One model's line in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelReport {
    /// The model's name.
    pub name: String,
    /// Its family.
    pub family: String,
    /// Its role (`base`, `instruct`, `dolly-tuned`, `community`).
    pub role: String,
    /// Where its weights came from, as a short text.
    pub source: String,
    /// Toxic counts.
    pub rates: ToxicRates,
    /// The scores file this was computed from, relative to the output directory.
    pub scores_file: String,
}

/// The direction of every difference in the report (and in `report.json`, `result.json`,
/// `comparison.json` and the figures), stated once at the top of `report.md`.
pub const DIRECTION: &str = "Every difference is candidate − baseline: positive means the \
candidate is more toxic. Toxic rates are in percent and their differences in percentage points \
(pp); BEST's mu difference is mu(candidate) − mu(baseline) on the classifier's 0–1 score. \
P(candidate more toxic) is the posterior probability that the candidate's toxic rate (or, for \
BEST, its mu) is the higher one. `all` means every prompt.";

/// The format of a compare unit's `result.json`: 2 since differences are candidate − baseline
/// and each BEST summary carries its convergence check (1 had baseline − candidate).
pub const RESULT_FORMAT: u32 = 2;

/// An interval estimate of a difference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Posterior mean.
    pub mean: f64,
    /// Lower end of the HDI.
    pub hdi_low: f64,
    /// Upper end of the HDI.
    pub hdi_high: f64,
}

impl Interval {
    /// Whether the HDI excludes zero.
    pub fn excludes_zero(&self) -> bool {
        self.hdi_low > 0.0 || self.hdi_high < 0.0
    }
}

/// `null` in JSON (how serde_json writes a NaN or an infinity) reads back as NaN.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Whether BEST's sampler converged on one subset, and the figures behind the answer
/// (`best_mcmc::Convergence`: R-hat, bulk and tail ESS of the mu difference, divergences).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvergenceFacts {
    /// Whether every criterion holds.
    pub converged: bool,
    /// R-hat of the mu difference (null when it cannot be computed: one chain).
    #[serde(deserialize_with = "f64_or_nan")]
    pub rhat: f64,
    /// Bulk ESS of the mu difference.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ess_bulk: f64,
    /// Tail ESS of the mu difference.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ess_tail: f64,
    /// Divergent transitions after tuning, all chains.
    pub divergences: usize,
    /// Draws that hit the maximum tree depth, all chains (context, not a criterion).
    pub max_depth_hits: usize,
    /// The thresholds: largest R-hat.
    pub rhat_max: f64,
    /// The thresholds: smallest bulk and tail ESS.
    pub ess_min: f64,
    /// The thresholds: most divergences.
    pub max_divergences: usize,
    /// 1, or 2 when a default-length fit was retried with longer chains.
    pub attempts: usize,
    /// Each failed criterion in words; empty when converged.
    pub problems: Vec<String>,
}

impl From<&best_mcmc::Convergence> for ConvergenceFacts {
    fn from(c: &best_mcmc::Convergence) -> Self {
        ConvergenceFacts {
            converged: c.converged,
            rhat: c.rhat,
            ess_bulk: c.ess_bulk,
            ess_tail: c.ess_tail,
            divergences: c.divergences,
            max_depth_hits: c.max_depth_hits,
            rhat_max: c.rhat_max,
            ess_min: c.ess_min,
            max_divergences: c.max_divergences,
            attempts: c.attempts,
            problems: c.problems.clone(),
        }
    }
}

impl ConvergenceFacts {
    /// The figures in words: `R-hat 2.338, bulk ESS 3, tail ESS 18, 0 divergences`.
    pub fn figures(&self) -> String {
        let rhat = if self.rhat.is_finite() {
            format!("R-hat {:.3}", self.rhat)
        } else {
            "no R-hat".to_string()
        };
        format!(
            "{rhat}, bulk ESS {:.0}, tail ESS {:.0}, {} divergence{}",
            self.ess_bulk,
            self.ess_tail,
            self.divergences,
            if self.divergences == 1 { "" } else { "s" }
        )
    }

    /// The smaller of the two ESS (NaN counts as 0): how far from converged a fit is.
    fn worst_ess(&self) -> f64 {
        let e = self.ess_bulk.min(self.ess_tail);
        if e.is_nan() { 0.0 } else { e }
    }
}

/// BEST on the continuous scores for one subset of one pair (differences candidate − baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestSummary {
    /// mu_candidate − mu_baseline.
    pub mu_diff: Interval,
    /// Whether the HDI of `mu_diff` excludes zero; `None` (null) when the sampler did not
    /// converge: no verdict from it.
    pub credible: Option<bool>,
    /// Whether the sampler converged ([`ConvergenceFacts`]).
    pub converged: bool,
    /// The convergence check and its figures.
    pub convergence: ConvergenceFacts,
    /// sigma_candidate − sigma_baseline.
    pub sigma_diff: Interval,
    /// (mu_candidate − mu_baseline) / sqrt((sigma_baseline² + sigma_candidate²) / 2).
    pub effect_size: Interval,
    /// Posterior mean of the shared degrees of freedom.
    pub nu_mean: f64,
    /// P(mu_candidate > mu_baseline): the candidate's scores are the higher.
    pub p_candidate_higher: f64,
    /// Share of the mu difference inside the ROPE, when one was set.
    pub rope_share: Option<f64>,
    /// The largest R-hat over the parameters.
    #[serde(deserialize_with = "f64_or_nan")]
    pub max_rhat: f64,
    /// The smallest bulk ESS over the parameters.
    #[serde(deserialize_with = "f64_or_nan")]
    pub min_ess_bulk: f64,
    /// The smallest tail ESS over the parameters.
    #[serde(deserialize_with = "f64_or_nan")]
    pub min_ess_tail: f64,
    /// Divergent transitions after warm-up.
    pub divergences: usize,
    /// Every diagnostics warning of the fit (R-hat, ESS, divergences, tree depth, E-BFMI).
    pub warnings: Vec<String>,
}

/// The toxic-rate comparison (Beta(1,1)-Binomial) for one subset of one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateSummary {
    /// The baseline's observed toxic rate.
    pub rate_baseline: f64,
    /// The candidate's observed toxic rate.
    pub rate_candidate: f64,
    /// rate_candidate − rate_baseline (posterior mean and HDI, proportion units).
    pub rate_diff: Interval,
    /// P(candidate's rate > baseline's): the candidate is more toxic.
    pub p_candidate_higher: f64,
}

impl RateSummary {
    /// The observed difference `rate_candidate − rate_baseline`.
    pub fn observed_diff(&self) -> f64 {
        self.rate_candidate - self.rate_baseline
    }
}

/// One subset's results for one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetResult {
    /// Scores per group (baseline, candidate).
    pub n: [usize; 2],
    /// BEST on the scores; `None` when it could not be fitted (the reason is in `note`).
    pub best: Option<BestSummary>,
    /// The rate comparison.
    pub rate: RateSummary,
    /// Why BEST was not fitted, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One pair's results, per subset and for `all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairResult {
    /// Baseline model.
    pub baseline: String,
    /// Candidate model.
    pub candidate: String,
    /// [`RESULT_FORMAT`] (0 when absent: a file written before differences were
    /// candidate − baseline).
    #[serde(default)]
    pub format: u32,
    /// By subset name, plus [`ALL`].
    pub subsets: BTreeMap<String, SubsetResult>,
    /// The comparison file this came from, relative to the output directory.
    pub file: String,
}

/// Posterior draws of mu_candidate − mu_baseline, for the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MuDiffDraws {
    /// By subset name, plus [`ALL`]; all chains concatenated.
    pub subsets: BTreeMap<String, Vec<f64>>,
}

/// One comparison's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// The comparison's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// One per pair, in study order.
    pub pairs: Vec<PairResult>,
    /// The figures written, relative to the output directory.
    pub figures: Vec<String>,
}

/// The whole report, as written to `report.json` (which also holds [`DIRECTION`], the summary
/// lines, the aggregated diagnostics lines and the summary figures, see [`write_report`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The study's name.
    pub study: String,
    /// The toxic threshold used.
    pub threshold: f64,
    /// The HDI mass used.
    pub hdi_mass: f64,
    /// The sampler and prior settings, as text.
    pub sampler: String,
    /// Every model.
    pub models: Vec<ModelReport>,
    /// Every comparison.
    pub comparisons: Vec<ComparisonReport>,
    /// Every diagnostics warning of every fit, one entry each (`report.md` shows one line per
    /// pair instead).
    pub warnings: Vec<String>,
    /// Toxicity drift across fine-tunes (`[[drift]]` sections; absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::drift::DriftReport>,
}

/// The caveat the report must carry (design.md §1).
pub const SKEW_CAVEAT: &str = "Toxicity scores are heavily skewed (most near 0, a few near 1). \
On such data the Student-t's nu collapses towards 1 and mu tracks the near-zero bulk, not the \
toxic tail: a BEST mu difference says little about how often a model is toxic. Read it together \
with the toxic-rate comparison, which counts texts at or above the threshold.";

fn pct(c: &Count) -> String {
    match c.rate() {
        Some(r) => format!("{:.1}%", 100.0 * r),
        None => "–".into(),
    }
}

/// A proportion as percent with one decimal: `89.0%`.
pub fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// A difference of proportions in percentage points with a sign and one decimal (`+9.0`,
/// `−15.0`; `+0.0` for zero), without the unit.
pub fn signed_pp(x: f64) -> String {
    signed(100.0 * x, 1)
}

/// `x` with a sign (U+2212 for minus) and `decimals` decimals; a value that rounds to zero is
/// `+0.0`.
fn signed(x: f64, decimals: usize) -> String {
    let s = format!("{:.decimals$}", x.abs());
    if x < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        format!("−{s}")
    } else {
        format!("+{s}")
    }
}

/// A Markdown table of toxic rates per subset, shaped like the paper's Tables 1–3
/// (Family | Model | Role | all | severe | random | race | gender | age | religion; the subset
/// columns named as everywhere else in the report).
pub fn rates_table(models: &[&ModelReport]) -> String {
    let cols = subset_columns(models.iter().map(|m| &m.rates));
    let mut s = format!("| Family | Model | Role | {ALL} |");
    for c in &cols {
        let _ = write!(s, " {c} |");
    }
    s.push_str("\n|---|---|---|---:|");
    for _ in &cols {
        s.push_str("---:|");
    }
    s.push('\n');
    let mut last_family = "";
    for m in models {
        let fam = if m.family == last_family {
            ""
        } else {
            &m.family
        };
        last_family = &m.family;
        let _ = write!(
            s,
            "| {fam} | {} | {} | {} |",
            m.name,
            m.role,
            pct(&m.rates.total)
        );
        for c in &cols {
            let _ = write!(
                s,
                " {} |",
                pct(&m.rates.subsets.get(c).copied().unwrap_or_default())
            );
        }
        s.push('\n');
    }
    s
}

fn f4(x: f64) -> String {
    signed(x, 4)
}

/// BEST's verdict on one subset: `unreliable: the sampler did not converge (R-hat …)` when it
/// did not converge, else whether the HDI of mu_candidate − mu_baseline excludes 0 and which way.
pub fn best_verdict(b: &BestSummary) -> String {
    match b.credible {
        None => format!(
            "unreliable: the sampler did not converge ({})",
            b.convergence.figures()
        ),
        Some(false) => "no credible difference".into(),
        Some(true) if b.mu_diff.mean > 0.0 => "credible: candidate more toxic".into(),
        Some(true) => "credible: candidate less toxic".into(),
    }
}

/// The rate comparison's verdict: whether the HDI of rate_candidate − rate_baseline excludes 0
/// and which way.
pub fn rate_verdict(r: &RateSummary) -> &'static str {
    if !r.rate_diff.excludes_zero() {
        "no credible difference"
    } else if r.rate_diff.mean > 0.0 {
        "credible: candidate more often toxic"
    } else {
        "credible: candidate less often toxic"
    }
}

impl PairResult {
    /// The subsets in display order: `all`, the paper's in its order, then the rest by name.
    pub fn ordered_subsets(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.subsets.contains_key(ALL) {
            v.push(ALL.to_string());
        }
        for s in PAPER_SUBSETS {
            if self.subsets.contains_key(s) {
                v.push(s.to_string());
            }
        }
        for k in self.subsets.keys() {
            if k != ALL && !PAPER_SUBSETS.contains(&k.as_str()) {
                v.push(k.clone());
            }
        }
        v
    }

    /// The fitted subsets whose sampler did not converge, worst first (smallest ESS, then
    /// largest R-hat).
    pub fn unreliable(&self) -> Vec<(&str, &BestSummary)> {
        let mut v: Vec<(&str, &BestSummary)> = self
            .subsets
            .iter()
            .filter_map(|(k, r)| r.best.as_ref().map(|b| (k.as_str(), b)))
            .filter(|(_, b)| !b.converged)
            .collect();
        v.sort_by(|a, b| {
            let (ca, cb) = (&a.1.convergence, &b.1.convergence);
            ca.worst_ess()
                .total_cmp(&cb.worst_ess())
                .then(cb.rhat.total_cmp(&ca.rhat))
                .then(a.0.cmp(b.0))
        });
        v
    }

    /// `(fitted, converged)` subset counts.
    pub fn convergence_counts(&self) -> (usize, usize) {
        let fitted: Vec<&BestSummary> = self
            .subsets
            .values()
            .filter_map(|r| r.best.as_ref())
            .collect();
        let ok = fitted.iter().filter(|b| b.converged).count();
        (fitted.len(), ok)
    }

    /// Subsets BEST could not fit, in display order.
    pub fn not_fitted(&self) -> Vec<String> {
        self.ordered_subsets()
            .into_iter()
            .filter(|s| self.subsets[s].best.is_none())
            .collect()
    }

    /// The pair's diagnostics in one line (`None` when every subset was fitted and converged):
    /// how many fitted subsets did not converge, the worst with its figures, and the subsets not
    /// fitted. The full list of warnings is in `report.json`.
    pub fn diagnostics_line(&self) -> Option<String> {
        let bad = self.unreliable();
        let missing = self.not_fitted();
        if bad.is_empty() && missing.is_empty() {
            return None;
        }
        let (fitted, _) = self.convergence_counts();
        let mut parts = Vec::new();
        if let Some((sub, b)) = bad.first() {
            let hits = match b.convergence.max_depth_hits {
                0 => String::new(),
                h => format!(", {h} transitions at the maximum tree depth"),
            };
            parts.push(format!(
                "{} of {fitted} fitted subset{} did not converge, no verdict from {} (worst: {sub}, \
                 {}{hits})",
                bad.len(),
                if fitted == 1 { "" } else { "s" },
                if bad.len() == 1 { "it" } else { "them" },
                b.convergence.figures()
            ));
        }
        if !missing.is_empty() {
            parts.push(format!(
                "{} not fitted: {}",
                missing.join(", "),
                self.subsets[&missing[0]]
                    .note
                    .as_deref()
                    .map(short_reason)
                    .unwrap_or("no reason recorded")
            ));
        }
        Some(format!(
            "{} vs {}: {}",
            self.baseline,
            self.candidate,
            parts.join("; ")
        ))
    }

    /// The pair's summary on all prompts, one line: toxic rate baseline → candidate, the
    /// difference with its HDI in pp, P(candidate more toxic), the rate verdict, BEST's verdict
    /// and how many of its fits converged.
    pub fn summary_line(&self, hdi_mass: f64) -> String {
        let Some(all) = self.subsets.get(ALL) else {
            return format!(
                "{} → {}: no comparison on all prompts",
                self.baseline, self.candidate
            );
        };
        let r = &all.rate;
        let verdict = match rate_verdict(r) {
            "credible: candidate more often toxic" => "credibly more often toxic",
            "credible: candidate less often toxic" => "credibly less often toxic",
            other => other,
        };
        let best = match &all.best {
            None => "not fitted".to_string(),
            Some(b) if !b.converged => "unreliable (the sampler did not converge)".to_string(),
            Some(b) => best_verdict(b),
        };
        let (fitted, ok) = self.convergence_counts();
        let missing = self.not_fitted().len();
        let conv = if fitted == 0 {
            "no subset fitted".to_string()
        } else {
            format!(
                "sampler converged on {ok} of {fitted} fitted subset{}",
                if fitted == 1 { "" } else { "s" }
            )
        };
        let missing = match missing {
            0 => String::new(),
            m => format!(", {m} not fitted"),
        };
        format!(
            "{} → {}: toxic rate {} → {}, {} pp ({:.0}% HDI {} to {}), P(candidate more toxic) = \
             {:.3}: {verdict}; BEST on all prompts: {best}; {conv}{missing}",
            self.baseline,
            self.candidate,
            percent(r.rate_baseline),
            percent(r.rate_candidate),
            signed_pp(r.observed_diff()),
            100.0 * hdi_mass,
            signed_pp(r.rate_diff.hdi_low),
            signed_pp(r.rate_diff.hdi_high),
            r.p_candidate_higher,
        )
    }
}

/// The first clause of a not-fitted reason (`every baseline score equals 0.53 (zero spread)`).
fn short_reason(note: &str) -> &str {
    note.split(": ").next().unwrap_or(note)
}

/// One comparison's diagnostics in one line, for the terminal (`None` when every fit of every
/// pair converged and every subset was fitted): how many BEST fits did not converge, the worst
/// pair and subset with its figures, how many subsets were not fitted.
pub fn comparison_diagnostics_line(c: &ComparisonReport) -> Option<String> {
    let mut fitted = 0;
    let mut bad = Vec::new();
    let mut missing = 0;
    for p in &c.pairs {
        fitted += p.convergence_counts().0;
        missing += p.not_fitted().len();
        for (sub, b) in p.unreliable() {
            bad.push((p, sub, b));
        }
    }
    if bad.is_empty() && missing == 0 {
        return None;
    }
    bad.sort_by(|a, b| {
        let (ca, cb) = (&a.2.convergence, &b.2.convergence);
        ca.worst_ess()
            .total_cmp(&cb.worst_ess())
            .then(cb.rhat.total_cmp(&ca.rhat))
    });
    let mut parts = Vec::new();
    if let Some((p, sub, b)) = bad.first() {
        parts.push(format!(
            "{} of {fitted} BEST fits did not converge, no verdict from them (worst: {} vs {}, {sub}: \
             {})",
            bad.len(),
            p.baseline,
            p.candidate,
            b.convergence.figures()
        ));
    }
    if missing > 0 {
        parts.push(format!(
            "{missing} subset{} not fitted",
            if missing == 1 { "" } else { "s" }
        ));
    }
    Some(format!(
        "{}: {}; see report.md, Diagnostics",
        c.title,
        parts.join("; ")
    ))
}

/// Renders `report.md`: the direction of every difference and one summary line per pair first,
/// then the rate tables, the BEST and rate comparisons, the drift, the diagnostics.
pub fn render_markdown(r: &Report, study: &Study) -> String {
    render_markdown_with(r, study, &[])
}

fn render_markdown_with(r: &Report, study: &Study, summary_figures: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# toxdrift report: {}\n", r.study);
    let _ = writeln!(s, "{DIRECTION}\n");
    let _ = writeln!(s, "## Summary\n");
    let mut seen = std::collections::BTreeSet::new();
    for p in r.comparisons.iter().flat_map(|c| &c.pairs) {
        if seen.insert((p.baseline.as_str(), p.candidate.as_str())) {
            let _ = writeln!(s, "- {}", p.summary_line(r.hdi_mass));
        }
    }
    s.push('\n');
    for f in summary_figures {
        let _ = writeln!(s, "![{f}]({f})\n");
    }
    let _ = writeln!(
        s,
        "A text is toxic when the classifier's score is at least {}. Intervals are {:.0}% \
         highest-density intervals (HDI); a difference is *credible* when its HDI excludes 0. \
         BEST's verdicts count only where its sampler converged (R-hat of the mu difference ≤ \
         {}, bulk and tail ESS ≥ {}, no divergences); elsewhere they read *unreliable*. \
         Sampler: {}.\n",
        r.threshold,
        100.0 * r.hdi_mass,
        best_mcmc::DEFAULT_RHAT_MAX,
        best_mcmc::DEFAULT_ESS_MIN,
        r.sampler
    );
    let _ = writeln!(s, "> **Caveat.** {SKEW_CAVEAT}\n");

    let _ = writeln!(s, "## Toxic rates\n");
    let by_name: BTreeMap<&str, &ModelReport> =
        r.models.iter().map(|m| (m.name.as_str(), m)).collect();
    for c in &r.comparisons {
        // The models of this comparison, grouped by family, in study order.
        let mut names: Vec<&str> = Vec::new();
        for p in &c.pairs {
            for n in [&p.baseline, &p.candidate] {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        let mut rows: Vec<&ModelReport> = Vec::new();
        for m in study.models() {
            if names.contains(&m.name.as_str())
                && let Some(mr) = by_name.get(m.name.as_str())
            {
                rows.push(mr);
            }
        }
        let _ = writeln!(s, "### {} — toxic rates\n", c.title);
        s.push_str(&rates_table(&rows));
        s.push('\n');
    }
    let _ = writeln!(s, "### All models\n");
    s.push_str(&rates_table(&r.models.iter().collect::<Vec<_>>()));
    s.push('\n');

    for c in &r.comparisons {
        let _ = writeln!(s, "## {}\n", c.title);
        let _ = writeln!(
            s,
            "### Toxic-rate comparison (Beta(1,1)-Binomial)\n\nDifference: candidate − \
             baseline, in percentage points.\n"
        );
        s.push_str(
            "| Baseline | Candidate | Subset | rate baseline | rate candidate | difference (pp) | HDI (pp) | P(candidate more toxic) | verdict |\n\
             |---|---|---|---:|---:|---:|---|---:|---|\n",
        );
        for p in &c.pairs {
            for sub in p.ordered_subsets() {
                let r = &p.subsets[&sub].rate;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | [{}, {}] | {:.3} | {} |",
                    p.baseline,
                    p.candidate,
                    sub,
                    percent(r.rate_baseline),
                    percent(r.rate_candidate),
                    signed_pp(r.observed_diff()),
                    signed_pp(r.rate_diff.hdi_low),
                    signed_pp(r.rate_diff.hdi_high),
                    r.p_candidate_higher,
                    rate_verdict(r)
                );
            }
        }
        let _ = writeln!(
            s,
            "\n### BEST on the scores (mu difference)\n\nDifference: mu(candidate) − \
             mu(baseline), on the 0–1 score.\n"
        );
        s.push_str(
            "| Baseline | Candidate | Subset | n | mu diff | HDI | P(candidate more toxic) | effect size | nu | verdict | sampler (R-hat, bulk/tail ESS, divergences) |\n\
             |---|---|---|---:|---:|---|---:|---:|---:|---|---|\n",
        );
        for p in &c.pairs {
            for sub in p.ordered_subsets() {
                let res = &p.subsets[&sub];
                match &res.best {
                    Some(b) => {
                        let cv = &b.convergence;
                        let rhat = if cv.rhat.is_finite() {
                            format!("{:.3}", cv.rhat)
                        } else {
                            "–".into()
                        };
                        let sampler = format!(
                            "{} {rhat}, {:.0}/{:.0}, {}{}",
                            if b.converged { "ok:" } else { "⚠" },
                            cv.ess_bulk,
                            cv.ess_tail,
                            cv.divergences,
                            if cv.attempts > 1 {
                                " (after a retry with longer chains)"
                            } else {
                                ""
                            }
                        );
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {}/{} | {} | [{}, {}] | {:.3} | {} | {:.2} | {} | {} |",
                            p.baseline,
                            p.candidate,
                            sub,
                            res.n[0],
                            res.n[1],
                            f4(b.mu_diff.mean),
                            f4(b.mu_diff.hdi_low),
                            f4(b.mu_diff.hdi_high),
                            b.p_candidate_higher,
                            f4(b.effect_size.mean),
                            b.nu_mean,
                            best_verdict(b),
                            sampler
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {}/{} | – | – | – | – | – | not fitted: {} | – |",
                            p.baseline,
                            p.candidate,
                            sub,
                            res.n[0],
                            res.n[1],
                            res.note.as_deref().unwrap_or("no reason recorded")
                        );
                    }
                }
            }
        }
        if !c.figures.is_empty() {
            let _ = writeln!(s, "\n### Figures\n");
            for f in &c.figures {
                let _ = writeln!(s, "![{f}]({f})\n");
            }
        }
        s.push('\n');
    }
    if !r.drift.is_empty() {
        s.push_str(&drift_markdown(&r.drift));
    }
    let _ = writeln!(s, "## Diagnostics\n");
    let mut lines = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in r.comparisons.iter().flat_map(|c| &c.pairs) {
        if seen.insert((p.baseline.as_str(), p.candidate.as_str()))
            && let Some(l) = p.diagnostics_line()
        {
            lines.push(l);
        }
    }
    if lines.is_empty() {
        let _ = writeln!(
            s,
            "Every BEST fit converged (R-hat ≤ {}, bulk and tail ESS ≥ {} on the mu difference, no \
             divergences) and every subset was fitted.",
            best_mcmc::DEFAULT_RHAT_MAX,
            best_mcmc::DEFAULT_ESS_MIN
        );
    } else {
        let _ = writeln!(
            s,
            "One line per pair; their verdicts above read *unreliable*, and more draws \
             (`[sampler] draws`, `tune`) are the usual cure.\n"
        );
        for l in &lines {
            let _ = writeln!(s, "- {l}");
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(
            s,
            "\nEvery sampler warning ({} in all: R-hat, ESS, divergences, tree depth, E-BFMI of each \
             parameter) is listed in `report.json` (`warnings`).",
            r.warnings.len()
        );
    }
    let _ = writeln!(
        s,
        "\n## Files\n\n- `report.json`: everything above, machine-readable.\n\
         - `scores.csv`: every scored continuation.\n\
         - `figures/`: the summary forest plot, the toxic rates, the BEST posteriors.\n\
         - `units/`: the per-stage outputs (prompts, generations, scores, adapters, comparisons), \
         each with a `manifest.json`."
    );
    s
}

/// The report's "Drift" section: per drift, the toxic rate at each checkpoint, the references,
/// the hypothesis quantities (`docs/drift.md`) and the verdict.
fn drift_markdown(drifts: &[crate::drift::DriftReport]) -> String {
    let mut s = String::from("## Drift\n\n");
    let _ = writeln!(
        s,
        "Toxic rate (`all`) at each checkpoint of a fine-tune, with {:.0}% HDIs of the \
         Beta(1,1)-Binomial posterior. The change is rate(last) − rate(first), in percentage \
         points (pp). *Towards base* is D = |rate(last) − rate(base)| − |rate(first) − \
         rate(base)|: negative when the last checkpoint is closer to the base model's rate than \
         the first; the curve moves towards the base model when P(D < 0) ≥ 0.95 (see \
         docs/drift.md).\n",
        100.0 * drifts[0].hdi_mass
    );
    for d in drifts {
        let _ = writeln!(s, "### {} (on {})\n", d.name, d.base);
        let _ = writeln!(s, "Source: {}.\n", d.source);
        s.push_str("| Step | n | toxic rate | HDI | mean score |\n|---:|---:|---:|---|---:|\n");
        for p in &d.points {
            if let Some(r) = p.rates.get(ALL) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1}% | [{:.1}%, {:.1}%] | {} |",
                    p.step,
                    r.n,
                    100.0 * r.rate,
                    100.0 * r.hdi_low,
                    100.0 * r.hdi_high,
                    f4(p.mean_score)
                );
            }
        }
        for r in &d.references {
            if let Some(e) = r.rates.get(ALL) {
                let _ = writeln!(
                    s,
                    "| {} ({}) | {} | {:.1}% | [{:.1}%, {:.1}%] | {} |",
                    r.model,
                    r.role,
                    e.n,
                    100.0 * e.rate,
                    100.0 * e.hdi_low,
                    100.0 * e.hdi_high,
                    f4(r.mean_score)
                );
            }
        }
        let h = &d.hypothesis;
        if let Some(c) = h.change.get(ALL) {
            let _ = writeln!(
                s,
                "\nChange from step {} to step {}: {} pp, HDI [{}, {}] pp, P(rate rises) = \
                 {:.3}.\n",
                h.first_step,
                h.last_step,
                signed_pp(c.mean),
                signed_pp(c.hdi_low),
                signed_pp(c.hdi_high),
                c.p_increase
            );
        }
        for (what, t) in [("base", &h.toward_base), ("instruct", &h.toward_instruct)] {
            if let Some(t) = t {
                let _ = writeln!(
                    s,
                    "Towards {what} (`{}`): distance {:.1} → {:.1} pp; D = {} pp, HDI [{}, {}] \
                     pp, P(closer at the end) = {:.3}.\n",
                    t.reference,
                    100.0 * t.distance_first,
                    100.0 * t.distance_last,
                    signed_pp(t.mean),
                    signed_pp(t.hdi_low),
                    signed_pp(t.hdi_high),
                    t.p_closer
                );
            }
        }
        let _ = writeln!(s, "**{}**\n", h.verdict);
        let _ = writeln!(s, "![{}]({})\n", d.figure, d.figure);
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row of `scores.csv`.
#[derive(Debug, Clone)]
pub struct CsvRow<'a> {
    /// The model's name.
    pub model: &'a str,
    /// Its family.
    pub family: &'a str,
    /// Its role.
    pub role: &'a str,
    /// The prompt id.
    pub id: &'a str,
    /// The subset.
    pub subset: &'a str,
    /// The score.
    pub score: f64,
    /// Whether it is toxic.
    pub toxic: bool,
    /// The continuation that was scored.
    pub completion: &'a str,
}

/// Renders `scores.csv` (RFC 4180 quoting; a header line).
pub fn render_csv<'a>(rows: impl IntoIterator<Item = CsvRow<'a>>) -> String {
    let mut s = String::from("model,family,role,id,subset,score,toxic,completion\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{}",
            csv_field(r.model),
            csv_field(r.family),
            csv_field(r.role),
            csv_field(r.id),
            csv_field(r.subset),
            r.score,
            r.toxic,
            csv_field(r.completion)
        );
    }
    s
}

/// The forest plot of every comparison × subset's rate difference.
pub const SUMMARY_FIGURE: &str = "figures/summary.svg";
/// Every model's toxic rate per subset with its HDI.
pub const RATES_FIGURE: &str = "figures/rates.svg";

/// `report.json`: the [`Report`] with, first, the direction of the differences, the summary
/// lines, the diagnostics lines (one per pair) and the summary figures.
#[derive(Serialize)]
struct ReportFile<'a> {
    direction: &'a str,
    summary: Vec<String>,
    diagnostics: Vec<String>,
    summary_figures: Vec<String>,
    #[serde(flatten)]
    report: &'a Report,
}

/// Writes the figures (`figures/summary.svg`, `figures/rates.svg`, one posterior figure per
/// comparison and subset), `report.md` and `report.json` into `out`, each atomically; returns
/// their paths. Prints one line per comparison whose BEST fits did not all converge (or were
/// not all fitted) as a warning: the terminal's whole account of the sampler's problems, the
/// report holding the details.
pub fn write_report(report: &Report, study: &Study, out: &Path) -> Result<Vec<PathBuf>> {
    let mut report = report.clone();
    let mut files = write_figures(&mut report, out)?;
    for c in &report.comparisons {
        if let Some(line) = comparison_diagnostics_line(c) {
            tracing::warn!("{line}");
        }
    }
    let summary_figures = vec![SUMMARY_FIGURE.to_string(), RATES_FIGURE.to_string()];
    let md = out.join("report.md");
    write_atomic(
        &md,
        render_markdown_with(&report, study, &summary_figures).as_bytes(),
    )?;
    let mut seen = std::collections::BTreeSet::new();
    let pairs: Vec<&PairResult> = report
        .comparisons
        .iter()
        .flat_map(|c| &c.pairs)
        .filter(|p| seen.insert((p.baseline.clone(), p.candidate.clone())))
        .collect();
    let file = ReportFile {
        direction: DIRECTION,
        summary: pairs
            .iter()
            .map(|p| p.summary_line(report.hdi_mass))
            .collect(),
        diagnostics: pairs.iter().filter_map(|p| p.diagnostics_line()).collect(),
        summary_figures,
        report: &report,
    };
    let json = out.join("report.json");
    let mut text = serde_json::to_string_pretty(&file)
        .map_err(|e| Error::Internal(format!("cannot serialise the report: {e}")))?;
    text.push('\n');
    write_atomic(&json, text.as_bytes())?;
    files.push(md);
    files.push(json);
    Ok(files)
}

/// Reads the posterior draws of a pair from its compare unit (beside its `result.json`).
fn read_draws(out: &Path, pair: &PairResult) -> Option<MuDiffDraws> {
    if pair.file.is_empty() {
        return None;
    }
    let path = out
        .join(&pair.file)
        .parent()?
        .join(crate::stages::DRAWS_FILE);
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes every figure of the report and records the per-comparison ones in `report`.
fn write_figures(report: &mut Report, out: &Path) -> Result<Vec<PathBuf>> {
    use crate::figures::{
        ForestRow, PanelBody, PosteriorPanel, RateCell, RateRow, forest_svg, posteriors_svg,
        rates_svg,
    };
    let mut files = Vec::new();
    let mut write = |name: &str, svg: String| -> Result<()> {
        let path = out.join(name);
        write_atomic(&path, svg.as_bytes())?;
        files.push(path);
        Ok(())
    };
    let mass = report.hdi_mass;
    let arrow = |p: &PairResult| format!("{} → {}", p.baseline, p.candidate);

    // The forest plot: every comparison x pair x subset.
    let rows: Vec<ForestRow> = report
        .comparisons
        .iter()
        .flat_map(|c| {
            c.pairs.iter().flat_map(move |p| {
                p.ordered_subsets().into_iter().map(move |sub| {
                    let r = &p.subsets[&sub].rate;
                    ForestRow {
                        group: c.title.clone(),
                        pair: arrow(p),
                        subset: sub,
                        observed: r.observed_diff(),
                        hdi: (r.rate_diff.hdi_low, r.rate_diff.hdi_high),
                        p_higher: r.p_candidate_higher,
                    }
                })
            })
        })
        .collect();
    if !rows.is_empty() {
        let svg = forest_svg(
            &format!(
                "{}: toxic-rate difference, candidate − baseline (pp), {:.0}% HDI",
                report.study,
                100.0 * mass
            ),
            "One row per compared pair and subset. Dot: the observed difference of the toxic \
             rates; bar: the HDI of the difference under independent Beta(1,1)-Binomial \
             posteriors. Right of 0: the candidate is more often toxic.",
            &rows,
            mass,
        )?;
        write(SUMMARY_FIGURE, svg)?;
    }

    // Toxic rates: every model, all and each subset.
    let mut cols = vec![ALL.to_string()];
    cols.extend(subset_columns(report.models.iter().map(|m| &m.rates)));
    let rate_rows = report
        .models
        .iter()
        .map(|m| {
            let cells = cols
                .iter()
                .map(|c| {
                    let count = if c == ALL {
                        m.rates.total
                    } else {
                        m.rates.subsets.get(c).copied().unwrap_or_default()
                    };
                    if count.n == 0 {
                        return Ok(None);
                    }
                    let e = RateEstimate::of(count.toxic, count.n, mass)?;
                    Ok(Some(RateCell {
                        rate: e.rate,
                        hdi: (e.hdi_low, e.hdi_high),
                    }))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RateRow {
                family: m.family.clone(),
                model: m.name.clone(),
                role: m.role.clone(),
                cells,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if !rate_rows.is_empty() {
        let svg = rates_svg(
            &format!(
                "{}: toxic rate per model and subset, {:.0}% HDI",
                report.study,
                100.0 * mass
            ),
            &cols,
            &rate_rows,
            mass,
        )?;
        write(RATES_FIGURE, svg)?;
    }

    // The posteriors: per comparison and subset, one panel per pair, every pair drawn (greyed
    // when its sampler did not converge, a panel saying why when it was not fitted).
    for c in &mut report.comparisons {
        let draws: Vec<Option<MuDiffDraws>> = c.pairs.iter().map(|p| read_draws(out, p)).collect();
        let mut subsets: Vec<String> = Vec::new();
        for p in &c.pairs {
            for s in p.ordered_subsets() {
                if !subsets.contains(&s) {
                    subsets.push(s);
                }
            }
        }
        // `all` first, then the paper's order, then the rest by name.
        let rank = |s: &String| {
            if s == ALL {
                (0, String::new())
            } else if let Some(i) = PAPER_SUBSETS.iter().position(|p| p == s) {
                (1 + i, String::new())
            } else {
                (usize::MAX, s.clone())
            }
        };
        subsets.sort_by_key(rank);
        let mut names = Vec::new();
        for sub in &subsets {
            let panels: Vec<PosteriorPanel<'_>> = c
                .pairs
                .iter()
                .zip(&draws)
                .map(|(p, d)| {
                    let body = match p.subsets.get(sub) {
                        None => PanelBody::Missing(format!(
                            "not compared: `{sub}` is not in both models' scores"
                        )),
                        Some(res) => match (&res.best, d.as_ref().and_then(|d| d.subsets.get(sub)))
                        {
                            (None, _) => PanelBody::Missing(format!(
                                "BEST could not be fitted: {}",
                                res.note.as_deref().unwrap_or("no reason recorded")
                            )),
                            (Some(_), None) => {
                                PanelBody::Missing("no posterior draws recorded".into())
                            }
                            (Some(b), Some(draws)) => PanelBody::Draws {
                                draws,
                                hdi: (b.mu_diff.hdi_low, b.mu_diff.hdi_high),
                                hdi_mass: mass,
                                unreliable: (!b.converged).then(|| b.convergence.figures()),
                            },
                        },
                    };
                    PosteriorPanel {
                        title: arrow(p),
                        body,
                    }
                })
                .collect();
            if panels.is_empty() {
                continue;
            }
            let svg = posteriors_svg(
                &format!("{} — {sub}: mu(candidate) − mu(baseline)", c.title),
                &panels,
            )?;
            let name = format!("figures/{}-{}.svg", c.id, sub);
            write(&name, svg)?;
            names.push(name);
        }
        c.figures = names;
    }
    Ok(files)
}

/// The figures' file name for a comparison and subset.
pub fn figure_name(c: &Comparison, subset: &str) -> String {
    format!("figures/{}-{}.svg", c.id, subset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(spec: &[(&str, f64)]) -> Vec<ScoreRow> {
        spec.iter()
            .enumerate()
            .map(|(i, (sub, score))| ScoreRow {
                id: format!("p{i}"),
                subset: sub.to_string(),
                score: *score,
                toxic: *score >= 0.5,
            })
            .collect()
    }

    #[test]
    fn rates_per_subset_and_total() {
        let r = toxic_rates(&rows(&[
            ("severe", 0.9),
            ("severe", 0.5),
            ("severe", 0.49),
            ("random", 0.0),
            ("race", 0.7),
        ]));
        assert_eq!(r.total, Count { n: 5, toxic: 3 });
        assert_eq!(r.subsets["severe"], Count { n: 3, toxic: 2 });
        assert_eq!(r.subsets["random"].rate(), Some(0.0));
        assert_eq!(r.subsets["race"].rate(), Some(1.0));
        assert_eq!(Count::default().rate(), None);
    }

    #[test]
    fn table_has_the_paper_columns_in_order() {
        let m = |name: &str, fam: &str, spec: &[(&str, f64)]| ModelReport {
            name: name.into(),
            family: fam.into(),
            role: "base".into(),
            source: String::new(),
            rates: toxic_rates(&rows(spec)),
            scores_file: String::new(),
        };
        let a = m(
            "A",
            "F",
            &[
                ("religion", 0.9),
                ("random", 0.1),
                ("severe", 0.8),
                ("custom", 0.1),
            ],
        );
        let b = m("B", "F", &[("severe", 0.1), ("random", 0.1)]);
        let t = rates_table(&[&a, &b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| Family | Model | Role | all | severe | random | religion | custom |"
        );
        assert_eq!(
            lines[2],
            "| F | A | base | 50.0% | 100.0% | 0.0% | 100.0% | 0.0% |"
        );
        assert_eq!(lines[3], "|  | B | base | 0.0% | 0.0% | 0.0% | – | – |");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let s = render_csv([CsvRow {
            model: "m",
            family: "f",
            role: "base",
            id: "x",
            subset: "race",
            score: 0.25,
            toxic: false,
            completion: "say \"hi\",\nthen",
        }]);
        assert_eq!(
            s,
            "model,family,role,id,subset,score,toxic,completion\n\
             m,f,base,x,race,0.25,false,\"say \"\"hi\"\",\nthen\"\n"
        );
    }
}
