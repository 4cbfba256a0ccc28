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
    ALL, BestSummary, Interval, MuDiffDraws, PairResult, RateSummary, ScoreRow, SubsetResult,
};
use crate::study::{Location, Pair, Priors, SamplerSpec, Study};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
        .map_err(|e| Error::BadInput(format!("cannot serialise: {e}")))?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// The prompts unit: builds the seeded prompt set and writes `prompts.jsonl`.
pub fn build_prompts(study: &Study, unit: &Unit) -> Result<Value> {
    use toxprompts::hub::{CEB_DIR, Hub, HubRepo, RTP_FILE};
    let p = &study.prompts;
    let hub = Hub::from_env();
    let rtp = match &p.rtp {
        Location::Local(path) => path.clone(),
        Location::Hub { repo, revision } => {
            let r = HubRepo::dataset(repo)
                .and_then(|r| r.with_revision(revision))
                .map_err(toxprompts::Error::from)?;
            hub.get(&r, RTP_FILE).map_err(toxprompts::Error::from)?
        }
    };
    let policy = toxprompts::OnBadRecord::Fail;
    let ceb = match &p.ceb {
        Location::Local(dir) => toxprompts::CebSet::from_dir(dir, policy)?,
        Location::Hub { repo, revision } => {
            let r = HubRepo::dataset(repo)
                .and_then(|r| r.with_revision(revision))
                .map_err(toxprompts::Error::from)?;
            let files = toxprompts::CebAxis::ALL
                .iter()
                .map(|a| hub.get(&r, &format!("{CEB_DIR}/{}", a.file_name())))
                .collect::<std::result::Result<Vec<PathBuf>, _>>()
                .map_err(toxprompts::Error::from)?;
            toxprompts::CebSet::from_files(&files, policy)?
        }
    };
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
        .priors(match s.priors {
            Priors::Paper => best_mcmc::Priors::Paper,
            Priors::Kruschke => best_mcmc::Priors::Kruschke,
        });
    if let Some([lo, hi]) = s.rope {
        p = p.rope(lo, hi);
    }
    p
}

/// Compares two models' scores: BEST on the continuous scores and the toxic-rate posterior, for
/// all prompts and per subset. Returns the compact result, the full summaries (JSON) and the
/// draws of the mu difference.
pub fn compare_scores(
    pair: &Pair,
    baseline: &[ScoreRow],
    candidate: &[ScoreRow],
    sampler: &SamplerSpec,
) -> Result<(PairResult, Value, MuDiffDraws)> {
    let params = best_params(sampler);
    let mut subsets: Vec<String> = vec![ALL.to_string()];
    for r in baseline.iter().chain(candidate) {
        if !subsets.contains(&r.subset) {
            subsets.push(r.subset.clone());
        }
    }
    subsets[1..].sort();
    let mut result = PairResult {
        baseline: pair.baseline.clone(),
        candidate: pair.candidate.clone(),
        subsets: BTreeMap::new(),
        file: String::new(),
    };
    let mut full = serde_json::Map::new();
    let mut draws = MuDiffDraws {
        subsets: BTreeMap::new(),
    };
    for sub in &subsets {
        let pick = |rows: &[ScoreRow]| -> Vec<ScoreRow> {
            rows.iter()
                .filter(|r| sub == ALL || &r.subset == sub)
                .cloned()
                .collect()
        };
        let (b, c) = (pick(baseline), pick(candidate));
        let count = |rows: &[ScoreRow]| rows.iter().filter(|r| r.toxic).count() as u64;
        let rates = best_mcmc::compare_rates(
            count(&b),
            b.len() as u64,
            count(&c),
            c.len() as u64,
            sampler.hdi_mass,
        )?;
        let rate = RateSummary {
            rate_baseline: rates.rate_baseline,
            rate_candidate: rates.rate_candidate,
            rate_diff: Interval {
                mean: rates.rate_diff.mean,
                hdi_low: rates.rate_diff.hdi_low,
                hdi_high: rates.rate_diff.hdi_high,
            },
            p_candidate_higher: rates.p_candidate_higher,
        };
        let ys = |rows: &[ScoreRow]| rows.iter().map(|r| r.score).collect::<Vec<f64>>();
        let (best, note, best_json) = match params.fit(&ys(&b), &ys(&c)) {
            Ok(fit) => {
                let s = fit.summary();
                let params_diag = s.parameters.values().map(|q| q.diagnostics);
                let (mut max_rhat, mut min_bulk, mut min_tail) =
                    (f64::NEG_INFINITY, f64::INFINITY, f64::INFINITY);
                for d in params_diag {
                    max_rhat = max_rhat.max(d.rhat);
                    min_bulk = min_bulk.min(d.ess_bulk);
                    min_tail = min_tail.min(d.ess_tail);
                }
                let summary = BestSummary {
                    mu_diff: interval(&s.mu_diff),
                    credible: s.credible,
                    sigma_diff: interval(&s.sigma_diff),
                    effect_size: interval(&s.effect_size),
                    nu_mean: s.nu.mean,
                    p_positive: s.mu_diff.p_positive,
                    rope_share: s.rope.map(|r| r.share_inside),
                    max_rhat,
                    min_ess_bulk: min_bulk,
                    min_ess_tail: min_tail,
                    divergences: s.divergences,
                    warnings: s.warnings.clone(),
                };
                if let Some(d) = fit.draws("mu_diff") {
                    draws
                        .subsets
                        .insert(sub.clone(), d.iter().copied().collect());
                }
                let j = serde_json::to_value(&s).unwrap_or(Value::Null);
                (Some(summary), None, j)
            }
            // A subset where BEST cannot be fitted (a constant group, say, on tiny data) is
            // reported as such; any other failure stops the run.
            Err(e) if e.is_bad_input() => {
                let msg = e.to_string();
                (None, Some(msg.clone()), json!({ "not_fitted": msg }))
            }
            Err(e) => return Err(e.into()),
        };
        full.insert(
            sub.clone(),
            json!({
                "n_baseline": b.len(),
                "n_candidate": c.len(),
                "best": best_json,
                "rate": serde_json::to_value(rates).unwrap_or(Value::Null),
            }),
        );
        result.subsets.insert(
            sub.clone(),
            SubsetResult {
                n: [b.len(), c.len()],
                best,
                rate,
                note,
            },
        );
    }
    let full = json!({
        "baseline": pair.baseline,
        "candidate": pair.candidate,
        "difference": "baseline - candidate",
        "subsets": full,
    });
    Ok((result, full, draws))
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
    let (mut result, full, draws) = compare_scores(pair, &b, &c, &study.sampler)?;
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
    let result = serde_json::from_slice(&read(RESULT_FILE)?).map_err(|e| bad(RESULT_FILE, e))?;
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
        let keys: Vec<&str> = result.subsets.keys().map(String::as_str).collect();
        assert_eq!(keys, ["all", "random", "severe"]);
        let all = &result.subsets["all"];
        assert_eq!(all.n, [200, 200]);
        assert_eq!(all.rate.rate_baseline, 10.0 / 200.0);
        assert_eq!(all.rate.rate_candidate, 40.0 / 200.0);
        // The candidate is more often toxic and its bulk is higher: both differences negative.
        assert!(all.rate.p_candidate_higher > 0.99);
        let best = all.best.as_ref().unwrap();
        assert!(best.mu_diff.hdi_high < 0.0 && best.credible, "{best:?}");
        assert_eq!(draws.subsets["all"].len(), 2 * 200);
        assert_eq!(full["subsets"]["severe"]["n_baseline"], 100);
        assert!(full["subsets"]["all"]["best"]["mu_diff"]["mean"].is_f64());
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
