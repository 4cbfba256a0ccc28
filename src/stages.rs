//! The work of each unit of a study, on the workspace crates: building the prompt set
//! ([`toxprompts`]), fine-tuning ([`lora_train`]), generating ([`gen_engine`]), scoring
//! ([`hate_classifier`]) and comparing ([`best_mcmc`]).
//!
//! Every stage writes its outputs inside its unit directory so that a kill at any point loses
//! nothing: record streams go through [`ResumableJsonl`] (append + fsync, torn-line recovery,
//! skip the ids already present), whole files through [`write_atomic`], and the unit's manifest
//! is written last.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::plan::Unit;
use crate::report::{
    ALL, BestSummary, ConvergenceFacts, Interval, MuDiffDraws, PairResult, RESULT_FORMAT,
    RateSummary, ScoreRow, SubsetResult,
};
use crate::study::{Pair, Priors, SamplerSpec, Study};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The prompt set file of the prompts unit.
pub const PROMPTS_FILE: &str = "prompts.jsonl";
/// The generations file of a generate unit.
pub const GENERATIONS_FILE: &str = "generations.jsonl";
/// The scores file of a score unit.
pub const SCORES_FILE: &str = "scores.jsonl";
/// The adapter directory of a finetune unit.
pub const ADAPTER_DIR: &str = "adapter";
/// The compact result of a compare unit (what the report reads).
pub const RESULT_FILE: &str = "result.json";
/// The full BEST and rate summaries of a compare unit (design.md §3).
pub const COMPARISON_FILE: &str = "comparison.json";
/// The posterior draws of the mu difference of a compare unit (for the figures).
pub const DRAWS_FILE: &str = "mu_diff_draws.json";

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Internal(format!("cannot serialise: {e}")))?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// The prompts unit: builds the seeded prompt set and writes `prompts.jsonl`.
pub fn build_prompts(study: &Study, unit: &Unit) -> Result<Value> {
    let p = &study.prompts;
    let hub = hub_source::Hub::from_env();
    let rtp = toxprompts::sources::rtp_path(&p.rtp, &hub)?;
    let ceb = toxprompts::sources::ceb_set(&p.ceb, &hub, toxprompts::OnBadRecord::Fail)?;
    let set = toxprompts::PromptSetParams::default()
        .random(p.random)
        .severe(p.severe)
        .per_axis(p.per_axis)
        .severe_threshold(p.severe_threshold)
        .allow_overlap(p.allow_overlap)
        .seed(p.seed)
        .build(Some(&rtp), Some(&ceb))?;
    write_atomic(unit.dir.join(PROMPTS_FILE), &set.to_jsonl())?;
    let counts: BTreeMap<String, usize> = set.subset_counts().into_iter().collect();
    Ok(json!({ "file": PROMPTS_FILE, "records": set.prompts.len(), "subsets": counts }))
}

/// Reads the prompt set a prompts unit wrote.
pub fn read_prompt_set(unit: &Unit) -> Result<Vec<toxprompts::PromptRecord>> {
    let loaded =
        toxprompts::read_prompts(unit.dir.join(PROMPTS_FILE), toxprompts::OnBadRecord::Fail)?;
    Ok(loaded.records)
}

pub use crate::records::{ScoreLine, read_scores};

impl From<&ScoreLine> for ScoreRow {
    fn from(s: &ScoreLine) -> Self {
        ScoreRow {
            id: s.id.clone(),
            subset: s.subset.clone(),
            score: s.score,
            toxic: s.toxic,
        }
    }
}

fn interval(q: &best_mcmc::QuantitySummary) -> Interval {
    Interval {
        mean: q.mean,
        hdi_low: q.hdi_low,
        hdi_high: q.hdi_high,
    }
}

/// The BEST parameters of a study's sampler settings.
pub fn best_params(s: &SamplerSpec) -> best_mcmc::BestParams {
    let mut p = best_mcmc::Best::params()
        .chains(s.chains)
        .tune(s.tune)
        .draws(s.draws)
        .seed(s.seed)
        .hdi_prob(s.hdi_mass)
        .probabilities(true)
        .rhat_max(s.rhat_max)
        .ess_min(s.ess_min)
        .max_divergences(s.max_divergences)
        .retry_scale(s.retry_scale)
        .priors(match s.priors {
            Priors::Paper => best_mcmc::Priors::Paper,
            Priors::Kruschke => best_mcmc::Priors::Kruschke,
        });
    if let Some([lo, hi]) = s.rope {
        p = p.rope(lo, hi);
    }
    p
}

/// One side of a comparison document: the model, how many scored records, and the scores
/// file it was read from where there is one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareSide {
    /// The scores file, if the rows came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The model name (the study's model name, or the `model` field of the scores file).
    pub model: Option<String>,
    /// Scored records on this side.
    pub n: usize,
}

/// The BEST and rate settings recorded in a comparison document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareSettings {
    /// MCMC chains.
    pub chains: usize,
    /// Tuning iterations per chain.
    pub tune: usize,
    /// Kept draws per chain.
    pub draws: usize,
    /// Sampler seed (the same for every subset).
    pub seed: u64,
    /// Prior set.
    pub priors: Priors,
    /// Mass of the highest-density intervals.
    pub hdi_prob: f64,
    /// Region of practical equivalence for mu_candidate - mu_baseline.
    pub rope: Option<[f64; 2]>,
    /// The direction of every difference: `candidate - baseline` (positive: the candidate is
    /// more toxic).
    pub difference: String,
    /// When a BEST fit counts as converged (a verdict is given only then), and the retry.
    pub convergence: String,
    /// The sampler used.
    pub sampler: String,
}

impl From<&SamplerSpec> for CompareSettings {
    fn from(s: &SamplerSpec) -> Self {
        CompareSettings {
            chains: s.chains,
            tune: s.tune,
            draws: s.draws,
            seed: s.seed,
            priors: s.priors,
            hdi_prob: s.hdi_mass,
            rope: s.rope,
            difference: "candidate - baseline".into(),
            convergence: {
                let p = best_params(s);
                format!(
                    "R-hat of mu_diff <= {}, bulk and tail ESS >= {}, at most {} divergences; a \
                     fit of at least {} tune + {} draws per chain that fails is retried once with \
                     {}x longer chains",
                    p.get_rhat_max(),
                    p.get_ess_min(),
                    p.get_max_divergences(),
                    best_mcmc::DEFAULT_TUNE,
                    best_mcmc::DEFAULT_DRAWS,
                    p.get_retry_scale()
                )
            },
            sampler: "best-mcmc NUTS (diagonal metric, Stan warm-up windows)".into(),
        }
    }
}

/// The comparison of one subset (or `all`): BEST on the scores and the toxic-rate comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubsetComparison {
    /// Baseline records in the subset.
    pub n_baseline: usize,
    /// Candidate records in the subset.
    pub n_candidate: usize,
    /// The BEST summary (differences candidate − baseline; `credible` null when the sampler
    /// did not converge); absent when BEST could not be fitted (see `not_fitted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<best_mcmc::BestSummary>,
    /// Why BEST could not be fitted on this subset (a constant group, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_fitted: Option<String>,
    /// The toxic-rate comparison.
    pub rate: best_mcmc::RateSummary,
}

/// The comparison document (design.md §3), written by the study runner's compare units and by
/// `toxdrift compare`. Differences are candidate - baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonDoc {
    /// The baseline side.
    pub baseline: CompareSide,
    /// The candidate side.
    pub candidate: CompareSide,
    /// The settings used.
    pub settings: CompareSettings,
    /// Per subset present in both files, and `all` (every record of each file).
    pub comparisons: BTreeMap<String, SubsetComparison>,
    /// Subsets not compared, subsets not fitted, and every sampler warning.
    pub warnings: Vec<String>,
}

/// A comparison document with the BEST fits behind it (by subset), for draws and figures.
#[derive(Debug, Clone)]
pub struct Compared {
    /// The document.
    pub doc: ComparisonDoc,
    /// The BEST fit of each fitted subset.
    pub fits: BTreeMap<String, best_mcmc::BestFit>,
    /// The warnings about the input (subsets in one file only), for the terminal; the sampler's
    /// are summed up by [`PairResult::diagnostics_line`] (all of them are in `doc.warnings`).
    pub input_warnings: Vec<String>,
}

/// Builds the comparison document of two models' scored rows: `all` pools every record of each
/// side; a subset is compared when both sides have it, and one found on one side only is left
/// out with a warning. A subset where BEST cannot be fitted (a constant group, say) is reported
/// with its `not_fitted` reason and a warning; other failures stop the comparison.
/// `on_subset` is called with each subset's name before it is compared (for progress).
pub fn build_comparison(
    baseline: CompareSide,
    candidate: CompareSide,
    baseline_rows: &[ScoreRow],
    candidate_rows: &[ScoreRow],
    sampler: &SamplerSpec,
    mut on_subset: impl FnMut(&str),
) -> Result<Compared> {
    let params = best_params(sampler);
    params.check()?;
    let names = |rows: &[ScoreRow]| {
        rows.iter()
            .map(|r| r.subset.clone())
            .collect::<std::collections::BTreeSet<String>>()
    };
    let (bs, cs) = (names(baseline_rows), names(candidate_rows));
    let mut warnings = Vec::new();
    for name in bs.difference(&cs) {
        warnings.push(format!(
            "subset `{name}` is only in the baseline file: not compared"
        ));
    }
    for name in cs.difference(&bs) {
        warnings.push(format!(
            "subset `{name}` is only in the candidate file: not compared"
        ));
    }
    if bs != cs {
        warnings.push(
            "`all` pools every record of each file, including subsets not in the other".into(),
        );
    }
    let input_warnings = warnings.clone();
    let mut subsets: Vec<String> = vec![ALL.to_string()];
    subsets.extend(bs.intersection(&cs).filter(|s| *s != ALL).cloned());
    let mut comparisons = BTreeMap::new();
    let mut fits = BTreeMap::new();
    for sub in subsets {
        on_subset(&sub);
        let pick = |rows: &[ScoreRow]| -> (Vec<f64>, u64) {
            let mut y = Vec::new();
            let mut k = 0;
            for r in rows.iter().filter(|r| sub == ALL || r.subset == sub) {
                y.push(r.score);
                k += r.toxic as u64;
            }
            (y, k)
        };
        let ((yb, kb), (yc, kc)) = (pick(baseline_rows), pick(candidate_rows));
        let rate =
            best_mcmc::compare_rates(kb, yb.len() as u64, kc, yc.len() as u64, sampler.hdi_mass)
                .map_err(|e| {
                    if e.is_bad_input() {
                        Error::BadInput(format!("subset `{sub}`: {e}"))
                    } else {
                        Error::from(e)
                    }
                })?;
        let (best, not_fitted) = match params.fit(&yb, &yc) {
            Ok(fit) => {
                let s = fit.summary();
                for w in &s.warnings {
                    warnings.push(format!("{sub}: {w}"));
                }
                fits.insert(sub.clone(), fit);
                (Some(s), None)
            }
            Err(e) if e.is_bad_input() => {
                let msg = e.to_string();
                warnings.push(format!("subset `{sub}` not fitted: {msg}"));
                (None, Some(msg))
            }
            Err(e) => return Err(e.into()),
        };
        comparisons.insert(
            sub,
            SubsetComparison {
                n_baseline: yb.len(),
                n_candidate: yc.len(),
                best,
                not_fitted,
                rate,
            },
        );
    }
    Ok(Compared {
        doc: ComparisonDoc {
            baseline,
            candidate,
            settings: CompareSettings::from(sampler),
            comparisons,
            warnings,
        },
        fits,
        input_warnings,
    })
}

impl ComparisonDoc {
    /// The compact result of this document (what the report reads; its summary and diagnostics
    /// lines): per subset, the BEST summary with its convergence check and the rate comparison,
    /// differences candidate − baseline. `file` is left empty.
    pub fn pair_result(&self, baseline: &str, candidate: &str) -> PairResult {
        pair_result(baseline, candidate, self)
    }
}

fn pair_result(baseline: &str, candidate: &str, doc: &ComparisonDoc) -> PairResult {
    let mut result = PairResult {
        baseline: baseline.to_string(),
        candidate: candidate.to_string(),
        format: RESULT_FORMAT,
        subsets: BTreeMap::new(),
        file: String::new(),
    };
    for (sub, c) in &doc.comparisons {
        let best = c.best.as_ref().map(|s| {
            let (mut max_rhat, mut min_bulk, mut min_tail) =
                (f64::NEG_INFINITY, f64::INFINITY, f64::INFINITY);
            for d in s.parameters.values().map(|q| q.diagnostics) {
                max_rhat = max_rhat.max(d.rhat);
                min_bulk = min_bulk.min(d.ess_bulk);
                min_tail = min_tail.min(d.ess_tail);
            }
            BestSummary {
                mu_diff: interval(&s.mu_diff),
                credible: s.credible,
                converged: s.converged,
                convergence: ConvergenceFacts::from(&s.convergence),
                sigma_diff: interval(&s.sigma_diff),
                effect_size: interval(&s.effect_size),
                nu_mean: s.nu.mean,
                p_candidate_higher: s.mu_diff.p_positive,
                rope_share: s.rope.map(|r| r.share_inside),
                max_rhat,
                min_ess_bulk: min_bulk,
                min_ess_tail: min_tail,
                divergences: s.divergences,
                warnings: s.warnings.clone(),
            }
        });
        let r = &c.rate;
        result.subsets.insert(
            sub.clone(),
            SubsetResult {
                n: [c.n_baseline, c.n_candidate],
                best,
                rate: RateSummary {
                    rate_baseline: r.rate_baseline,
                    rate_candidate: r.rate_candidate,
                    rate_diff: Interval {
                        mean: r.rate_diff.mean,
                        hdi_low: r.rate_diff.hdi_low,
                        hdi_high: r.rate_diff.hdi_high,
                    },
                    p_candidate_higher: r.p_candidate_higher,
                },
                note: c.not_fitted.clone(),
            },
        );
    }
    result
}

/// Compares two models' scores: BEST on the continuous scores and the toxic-rate posterior, for
/// all prompts and per subset (see [`build_comparison`]). Returns the compact result, the
/// comparison document and the draws of the mu difference (candidate − baseline).
pub fn compare_scores(
    pair: &Pair,
    baseline: &[ScoreRow],
    candidate: &[ScoreRow],
    sampler: &SamplerSpec,
) -> Result<(PairResult, ComparisonDoc, MuDiffDraws)> {
    let side = |model: &str, rows: &[ScoreRow]| CompareSide {
        path: None,
        model: Some(model.to_string()),
        n: rows.len(),
    };
    let Compared { doc, fits, .. } = build_comparison(
        side(&pair.baseline, baseline),
        side(&pair.candidate, candidate),
        baseline,
        candidate,
        sampler,
        |_| {},
    )?;
    let result = pair_result(&pair.baseline, &pair.candidate, &doc);
    let mut draws = MuDiffDraws {
        subsets: BTreeMap::new(),
    };
    for (sub, fit) in &fits {
        if let Some(d) = fit.draws("mu_diff") {
            draws
                .subsets
                .insert(sub.clone(), d.iter().copied().collect());
        }
    }
    Ok((result, doc, draws))
}

/// The compare unit: reads both score files, compares, writes the three result files.
pub fn run_compare(
    study: &Study,
    unit: &Unit,
    pair: &Pair,
    baseline_scores: &Path,
    candidate_scores: &Path,
) -> Result<Value> {
    let rows = |p: &Path| -> Result<Vec<ScoreRow>> {
        Ok(read_scores(p)?.iter().map(ScoreRow::from).collect())
    };
    let (b, c) = (rows(baseline_scores)?, rows(candidate_scores)?);
    let ids = |r: &[ScoreRow]| {
        r.iter()
            .map(|x| x.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    if ids(&b) != ids(&c) {
        tracing::warn!(
            "{} and {} were not scored on the same prompts ({} vs {} records)",
            pair.baseline,
            pair.candidate,
            b.len(),
            c.len()
        );
    }
    let (mut result, mut full, draws) = compare_scores(pair, &b, &c, &study.sampler)?;
    // Relative to the study's output directory, so that the file does not depend on where it is.
    full.baseline.path = Some(crate::plan::relative(&study.out, baseline_scores));
    full.candidate.path = Some(crate::plan::relative(&study.out, candidate_scores));
    // The input's warnings (subsets in one file only) as they are; the sampler's in one line
    // per pair, and only with -v: the report's end writes one line per comparison to the
    // terminal. Every warning is kept in comparison.json and report.json.
    for w in full
        .warnings
        .iter()
        .filter(|w| w.contains(" is only in the ") || w.starts_with("`all` pools"))
    {
        tracing::warn!("{} vs {}: {w}", pair.baseline, pair.candidate);
    }
    if let Some(line) = result.diagnostics_line() {
        tracing::info!("{line}");
    }
    result.file = crate::plan::relative(&study.out, &unit.dir.join(RESULT_FILE));
    write_atomic(unit.dir.join(COMPARISON_FILE), &to_json(&full)?)?;
    write_atomic(unit.dir.join(DRAWS_FILE), &to_json(&draws)?)?;
    write_atomic(unit.dir.join(RESULT_FILE), &to_json(&result)?)?;
    Ok(json!({ "files": [RESULT_FILE, COMPARISON_FILE, DRAWS_FILE] }))
}

/// Reads a compare unit's compact result and draws.
pub fn read_compare(unit: &Unit) -> Result<(PairResult, MuDiffDraws)> {
    let read = |name: &str| -> Result<Vec<u8>> {
        let p = unit.dir.join(name);
        std::fs::read(&p).map_err(|e| Error::io(&p, e))
    };
    let bad = |name: &str, e: serde_json::Error| {
        Error::BadInput(format!("{}: {e}", unit.dir.join(name).display()))
    };
    let result: PairResult =
        serde_json::from_slice(&read(RESULT_FILE)?).map_err(|e| bad(RESULT_FILE, e))?;
    if result.format != RESULT_FORMAT {
        return Err(Error::BadInput(format!(
            "{}: written by an older toxdrift (format {}, differences baseline − candidate, no \
             convergence check); delete the directory {} and run again to recompute it",
            unit.dir.join(RESULT_FILE).display(),
            result.format,
            unit.dir.display()
        )));
    }
    let draws = serde_json::from_slice(&read(DRAWS_FILE)?).map_err(|e| bad(DRAWS_FILE, e))?;
    Ok((result, draws))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, toxic_every: usize, shift: f64) -> Vec<ScoreRow> {
        (0..n)
            .map(|i| {
                let subset = if i % 2 == 0 { "severe" } else { "random" };
                let score = if i % toxic_every == 0 {
                    0.9
                } else {
                    0.01 + shift + 0.0003 * (i % 50) as f64
                };
                ScoreRow {
                    id: format!("p{i}"),
                    subset: subset.into(),
                    score,
                    toxic: score >= 0.5,
                }
            })
            .collect()
    }

    #[test]
    fn compares_all_prompts_and_each_subset() {
        let sampler = SamplerSpec {
            chains: 2,
            tune: 200,
            draws: 200,
            ..SamplerSpec::default()
        };
        let pair = Pair {
            baseline: "a".into(),
            candidate: "b".into(),
        };
        let (b, c) = (rows(200, 20, 0.0), rows(200, 5, 0.02));
        let (result, full, draws) = compare_scores(&pair, &b, &c, &sampler).unwrap();
        let full = serde_json::to_value(&full).unwrap();
        let keys: Vec<&str> = result.subsets.keys().map(String::as_str).collect();
        assert_eq!(keys, ["all", "random", "severe"]);
        let all = &result.subsets["all"];
        assert_eq!(all.n, [200, 200]);
        assert_eq!(all.rate.rate_baseline, 10.0 / 200.0);
        assert_eq!(all.rate.rate_candidate, 40.0 / 200.0);
        // The candidate is more often toxic and its bulk is higher: both differences
        // (candidate − baseline) positive.
        assert!(all.rate.p_candidate_higher > 0.99);
        assert!(all.rate.rate_diff.hdi_low > 0.0, "{:?}", all.rate);
        let best = all.best.as_ref().unwrap();
        assert!(best.mu_diff.hdi_low > 0.0, "{best:?}");
        // 2 chains x 200 draws: a verdict only where the sampler converged.
        assert_eq!(best.credible.is_some(), best.converged, "{best:?}");
        assert_eq!(best.converged, best.convergence.converged);
        assert_eq!(draws.subsets["all"].len(), 2 * 200);
        assert_eq!(full["comparisons"]["severe"]["n_baseline"], 100);
        assert!(full["comparisons"]["all"]["best"]["mu_diff"]["mean"].is_f64());
        // The same seed gives the same result.
        let (again, _, _) = compare_scores(&pair, &b, &c, &sampler).unwrap();
        assert_eq!(again, result);
    }

    #[test]
    fn a_constant_subset_is_reported_not_fitted() {
        let sampler = SamplerSpec {
            chains: 2,
            tune: 100,
            draws: 100,
            ..SamplerSpec::default()
        };
        let pair = Pair {
            baseline: "a".into(),
            candidate: "b".into(),
        };
        let mut b = rows(40, 7, 0.0);
        for r in b.iter_mut().filter(|r| r.subset == "severe") {
            r.score = 0.25;
            r.toxic = false;
        }
        let c = rows(40, 3, 0.01);
        let (result, _, draws) = compare_scores(&pair, &b, &c, &sampler).unwrap();
        let severe = &result.subsets["severe"];
        assert!(severe.best.is_none());
        assert!(
            severe.note.as_deref().unwrap().contains("zero spread"),
            "{severe:?}"
        );
        assert_eq!(severe.rate.rate_baseline, 0.0);
        assert!(!draws.subsets.contains_key("severe"));
        assert!(result.subsets["all"].best.is_some());
    }
}
