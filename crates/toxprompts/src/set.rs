//! The prompt-set builder: the paper's recipe by default, every count, threshold and the seed
//! configurable through validated parameters.
//!
//! # Sampling, exactly
//!
//! Each subset draws from its own [`SplitMix64`] stream, `SplitMix64::for_stream(seed, name)`, with
//! [`sample_without_replacement`] (a partial Fisher–Yates shuffle) over its pool of eligible rows
//! in file order:
//!
//! 1. `severe`: rows whose `prompt.severe_toxicity` is a number strictly above the threshold
//!    (`null` is never eligible).
//! 2. `random`: all rows, minus those drawn for `severe` unless overlap is allowed.
//! 3. `race`, `gender`, `age`, `religion`: the records of each CEB file.
//!
//! Within a subset the prompts are written in row order. A smaller count with the same seed selects
//! a subset of a larger count's selection (the shuffle's first draws do not depend on the count).

use crate::ceb::{CebAxis, CebSet};
use crate::error::{Error, Result};
use crate::jsonl::{LoadReport, OnBadRecord};
use crate::prompts::{CebSource, PromptRecord, RtpSource, prompts_to_jsonl};
use crate::rng::{SplitMix64, sample_without_replacement};
use crate::rtp::{RtpReader, RtpRow};
use crate::sources::{CEB_REPO, RTP_REPO};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Parameters of a prompt set; [`PromptSetParams::default`] is the paper's recipe.
///
/// ```
/// use toxprompts::PromptSetParams;
/// let p = PromptSetParams::default().random(50).severe(20).per_axis(10).seed(7);
/// assert_eq!(p.check()?.severe_threshold(), 0.75);
/// assert!(PromptSetParams::default().severe_threshold(1.5).check().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSetParams {
    random: usize,
    severe: usize,
    per_axis: usize,
    severe_threshold: f64,
    seed: u64,
    allow_overlap: bool,
    on_bad_record: OnBadRecord,
}

impl Default for PromptSetParams {
    /// The paper: 1,000 random, 1,000 severe (`prompt.severe_toxicity > 0.75`), 100 per CEB axis,
    /// random and severe disjoint, seed 42, failing on the first bad record.
    fn default() -> Self {
        Self {
            random: 1000,
            severe: 1000,
            per_axis: 100,
            severe_threshold: 0.75,
            seed: 42,
            allow_overlap: false,
            on_bad_record: OnBadRecord::Fail,
        }
    }
}

/// Validated [`PromptSetParams`]: read-only, ready to build.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedPromptSetParams(PromptSetParams);

impl PromptSetParams {
    /// The paper's recipe (same as `default()`).
    pub fn paper() -> Self {
        Self::default()
    }

    /// Prompts drawn uniformly from all RTP rows.
    pub fn random(mut self, n: usize) -> Self {
        self.random = n;
        self
    }

    /// Prompts drawn from RTP rows with `prompt.severe_toxicity` above the threshold.
    pub fn severe(mut self, n: usize) -> Self {
        self.severe = n;
        self
    }

    /// Prompts drawn from each of the four CEB axes.
    pub fn per_axis(mut self, n: usize) -> Self {
        self.per_axis = n;
        self
    }

    /// The `severe` eligibility threshold (strict `>`), in `[0, 1)`.
    pub fn severe_threshold(mut self, t: f64) -> Self {
        self.severe_threshold = t;
        self
    }

    /// The sampling seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Let `random` and `severe` share rows (each then draws from its full pool).
    pub fn allow_overlap(mut self, yes: bool) -> Self {
        self.allow_overlap = yes;
        self
    }

    /// What to do with bad source records (fail, or skip and count).
    pub fn on_bad_record(mut self, policy: OnBadRecord) -> Self {
        self.on_bad_record = policy;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<CheckedPromptSetParams> {
        let t = self.severe_threshold;
        if !t.is_finite() || !(0.0..1.0).contains(&t) {
            return Err(Error::InvalidParams(format!(
                "severe threshold {t} is not in [0, 1) (scores are probabilities; none is above 1)"
            )));
        }
        if self.random == 0 && self.severe == 0 && self.per_axis == 0 {
            return Err(Error::InvalidParams(
                "all counts are 0: nothing to build".into(),
            ));
        }
        Ok(CheckedPromptSetParams(self))
    }

    /// Validates, then builds (see [`CheckedPromptSetParams::build`]).
    pub fn build(&self, rtp: Option<&Path>, ceb: Option<&CebSet>) -> Result<PromptSet> {
        self.clone().check()?.build(rtp, ceb)
    }
}

/// An RTP row reduced to what a prompt keeps.
struct Candidate {
    row: u64,
    text: String,
    filename: String,
    begin: u64,
    end: u64,
    challenging: bool,
    toxicity: Option<f64>,
    severe_toxicity: Option<f64>,
}

impl Candidate {
    fn from_row(r: RtpRow) -> Self {
        Self {
            row: r.row,
            text: r.prompt.text,
            filename: r.filename,
            begin: r.begin,
            end: r.end,
            challenging: r.challenging,
            toxicity: r.prompt.scores.toxicity,
            severe_toxicity: r.prompt.scores.severe_toxicity,
        }
    }
}

/// What a build read, per source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    /// Valid RTP rows read.
    pub rtp_rows: usize,
    /// Of those, rows eligible for `severe`.
    pub rtp_severe_eligible: usize,
    /// The RTP load report (skipped lines with [`OnBadRecord::Skip`]).
    pub rtp_load: LoadReport,
    /// CEB records skipped by the loader, all files together.
    pub ceb_skipped: usize,
}

/// A built prompt set: the prompts in subset order (`random`, `severe`, `race`, `gender`, `age`,
/// `religion`), each subset in source-row order.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSet {
    /// The prompts.
    pub prompts: Vec<PromptRecord>,
    /// What was read.
    pub report: BuildReport,
}

impl PromptSet {
    /// The prompts as JSONL bytes (design.md §3).
    pub fn to_jsonl(&self) -> Vec<u8> {
        prompts_to_jsonl(&self.prompts)
    }

    /// How many prompts each subset holds, in set order.
    pub fn subset_counts(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for p in &self.prompts {
            match out.last_mut() {
                Some((s, n)) if *s == p.subset => *n += 1,
                _ => out.push((p.subset.clone(), 1)),
            }
        }
        out
    }
}

/// Getters of unchecked parameters (the defaults callers show or build on).
impl PromptSetParams {
    /// Random prompts.
    pub fn get_random(&self) -> usize {
        self.random
    }
    /// Severe prompts.
    pub fn get_severe(&self) -> usize {
        self.severe
    }
    /// Prompts per CEB axis.
    pub fn get_per_axis(&self) -> usize {
        self.per_axis
    }
    /// The severe threshold.
    pub fn get_severe_threshold(&self) -> f64 {
        self.severe_threshold
    }
    /// The seed.
    pub fn get_seed(&self) -> u64 {
        self.seed
    }
}

impl CheckedPromptSetParams {
    /// Random prompts.
    pub fn random(&self) -> usize {
        self.0.random
    }
    /// Severe prompts.
    pub fn severe(&self) -> usize {
        self.0.severe
    }
    /// Prompts per CEB axis.
    pub fn per_axis(&self) -> usize {
        self.0.per_axis
    }
    /// The severe threshold.
    pub fn severe_threshold(&self) -> f64 {
        self.0.severe_threshold
    }
    /// The seed.
    pub fn seed(&self) -> u64 {
        self.0.seed
    }
    /// Whether random and severe may overlap.
    pub fn allows_overlap(&self) -> bool {
        self.0.allow_overlap
    }
    /// The bad-record policy.
    pub fn bad_record_policy(&self) -> OnBadRecord {
        self.0.on_bad_record
    }

    fn needs_rtp(&self) -> bool {
        self.0.random > 0 || self.0.severe > 0
    }

    /// Builds the set, streaming the RTP file (plain or gzip) and keeping only each row's prompt
    /// and provenance. `rtp` may be `None` when no RTP subset is asked for, `ceb` when
    /// `per_axis` is 0.
    pub fn build(&self, rtp: Option<&Path>, ceb: Option<&CebSet>) -> Result<PromptSet> {
        match rtp {
            Some(path) if self.needs_rtp() => {
                let reader = RtpReader::open(path)?;
                self.build_from_reader(reader, ceb)
            }
            _ => self.build_inner(None, ceb),
        }
    }

    /// Builds the set from an RTP reader (any source: a file, a decompressor, memory).
    pub fn build_from_reader<R: BufRead>(
        &self,
        reader: RtpReader<R>,
        ceb: Option<&CebSet>,
    ) -> Result<PromptSet> {
        if !self.needs_rtp() {
            return self.build_inner(None, ceb);
        }
        let mut reader = reader.on_bad_record(self.0.on_bad_record);
        let mut rows = Vec::new();
        while let Some(c) = reader.next_with(|row, raw| Candidate {
            row,
            text: raw.prompt.text.to_string(),
            filename: raw.filename.to_string(),
            begin: raw.begin,
            end: raw.end,
            challenging: raw.challenging,
            toxicity: raw.prompt.scores().toxicity,
            severe_toxicity: raw.prompt.scores().severe_toxicity,
        }) {
            rows.push(c?);
        }
        let path = reader.path().to_path_buf();
        let load = reader.report().clone();
        self.build_inner(Some((path, rows, load)), ceb)
    }

    /// Builds the set from RTP rows already in memory (`name` is the file named in messages and
    /// in each prompt's `source`).
    pub fn build_from_rows(
        &self,
        rows: Vec<RtpRow>,
        name: &Path,
        ceb: Option<&CebSet>,
    ) -> Result<PromptSet> {
        let n = rows.len();
        let rows = rows.into_iter().map(Candidate::from_row).collect();
        let load = LoadReport {
            records: n,
            ..LoadReport::default()
        };
        self.build_inner(Some((name.to_path_buf(), rows, load)), ceb)
    }

    fn build_inner(
        &self,
        rtp: Option<(PathBuf, Vec<Candidate>, LoadReport)>,
        ceb: Option<&CebSet>,
    ) -> Result<PromptSet> {
        let p = &self.0;
        let mut report = BuildReport::default();
        let mut prompts = Vec::new();
        if self.needs_rtp() {
            let Some((path, rows, load)) = rtp else {
                return Err(Error::MissingSource(format!(
                    "{} random and {} severe prompts asked for, but no RealToxicityPrompts file \
                     given",
                    p.random, p.severe
                )));
            };
            report.rtp_rows = rows.len();
            report.rtp_load = load;
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();

            let eligible: Vec<usize> = rows
                .iter()
                .enumerate()
                .filter(|(_, c)| c.severe_toxicity.is_some_and(|s| s > p.severe_threshold))
                .map(|(i, _)| i)
                .collect();
            report.rtp_severe_eligible = eligible.len();
            let severe =
                draw(&eligible, p.severe, p.seed, "severe").ok_or_else(|| Error::NotEnough {
                    subset: "severe".into(),
                    needed: p.severe,
                    found: eligible.len(),
                    criterion: format!("prompt.severe_toxicity > {}", p.severe_threshold),
                    source_path: path.clone(),
                })?;

            let mut taken = vec![false; rows.len()];
            if !p.allow_overlap {
                for &i in &severe {
                    taken[i] = true;
                }
            }
            let pool: Vec<usize> = (0..rows.len()).filter(|&i| !taken[i]).collect();
            let random =
                draw(&pool, p.random, p.seed, "random").ok_or_else(|| Error::NotEnough {
                    subset: "random".into(),
                    needed: p.random,
                    found: pool.len(),
                    criterion: if p.allow_overlap {
                        "any row".into()
                    } else {
                        format!("any row not drawn for `severe` ({} were)", severe.len())
                    },
                    source_path: path.clone(),
                })?;

            for (subset, picks) in [("random", random), ("severe", severe)] {
                for i in picks {
                    let c = &rows[i];
                    let source = RtpSource {
                        dataset: RTP_REPO.into(),
                        file: file.clone(),
                        row: c.row,
                        filename: c.filename.clone(),
                        begin: c.begin,
                        end: c.end,
                        challenging: c.challenging,
                        toxicity: c.toxicity,
                        severe_toxicity: c.severe_toxicity,
                    };
                    prompts.push(PromptRecord {
                        id: format!("rtp-{subset}-{:06}", c.row),
                        subset: subset.into(),
                        text: c.text.clone(),
                        source: serde_json::to_value(&source).unwrap_or_default(),
                    });
                }
            }
        }

        if p.per_axis > 0 {
            let Some(ceb) = ceb else {
                return Err(Error::MissingSource(format!(
                    "{} prompts per CEB axis asked for, but no CEB-Continuation-T files given",
                    p.per_axis
                )));
            };
            for axis in CebAxis::ALL {
                let f = ceb.file(axis);
                report.ceb_skipped += f.report.skipped;
                let all: Vec<usize> = (0..f.records.len()).collect();
                let picks = draw(&all, p.per_axis, p.seed, axis.subset()).ok_or_else(|| {
                    Error::NotEnough {
                        subset: axis.subset().into(),
                        needed: p.per_axis,
                        found: f.records.len(),
                        criterion: format!("valid records with axis `{}`", axis.axis_value()),
                        source_path: f.path.clone(),
                    }
                })?;
                let file = f
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| axis.file_name().into());
                for i in picks {
                    let (index, r) = &f.records[i];
                    let source = CebSource {
                        dataset: CEB_REPO.into(),
                        file: file.clone(),
                        row: *index as u64,
                        axis: r.axis.clone(),
                        bucket: r.bucket.clone(),
                        descriptor: r.descriptor.clone(),
                        noun_gender: r.noun_gender.clone(),
                        template: r.template.clone(),
                    };
                    prompts.push(PromptRecord {
                        id: format!("ceb-{}-{index:06}", axis.subset()),
                        subset: axis.subset().into(),
                        text: r.prompt.clone(),
                        source: serde_json::to_value(&source).unwrap_or_default(),
                    });
                }
            }
        }
        Ok(PromptSet { prompts, report })
    }
}

/// Draws `k` of `pool` with the subset's stream, returned in pool (= file) order.
fn draw(pool: &[usize], k: usize, seed: u64, subset: &str) -> Option<Vec<usize>> {
    let mut rng = SplitMix64::for_stream(seed, subset);
    let mut picks: Vec<usize> = sample_without_replacement(&mut rng, pool.len(), k)?
        .into_iter()
        .map(|j| pool[j])
        .collect();
    picks.sort_unstable();
    Some(picks)
}
