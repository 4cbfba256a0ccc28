//! `toxdrift prompts`: build the study's prompt set (design.md §4) and write it as prompts JSONL.

use hub_source::{Hub, RepoKind, Source};
use std::path::PathBuf;
use toxdrift::error::{Error, Result};
use toxdrift::toxprompts::sources::{ceb_set, rtp_path};
use toxdrift::toxprompts::{OnBadRecord, PromptSetParams};

/// Build the prompt set: uniform random and severe RealToxicityPrompts prompts plus CEB prompts
/// per bias axis (the paper: 1,000 + 1,000 + 4 × 100), seeded, written atomically as JSONL.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// RealToxicityPrompts: a `prompts.jsonl` (plain or gzip), or a hub dataset repo
    /// `allenai/real-toxicity-prompts[@REVISION]` (read from the HF cache; downloaded unless
    /// HF_HUB_OFFLINE=1). Not needed when --random and --severe are 0.
    #[arg(long, value_name = "FILE|HUB")]
    pub rtp: Option<String>,
    /// CEB-Continuation-T: a directory holding race.json, gender.json, age.json and
    /// religion.json, or a hub dataset repo `Song-SW/CEB[@REVISION]`. Not needed when
    /// --per-axis is 0.
    #[arg(long, value_name = "DIR|HUB")]
    pub ceb: Option<String>,
    /// Prompts drawn uniformly from all RTP rows.
    #[arg(long, default_value_t = PromptSetParams::paper().get_random())]
    pub random: usize,
    /// Prompts drawn from RTP rows with prompt.severe_toxicity above --severe-threshold.
    #[arg(long, default_value_t = PromptSetParams::paper().get_severe())]
    pub severe: usize,
    /// Prompts drawn from each CEB axis (race, gender, age, religion).
    #[arg(long, default_value_t = PromptSetParams::paper().get_per_axis())]
    pub per_axis: usize,
    /// Eligibility threshold of the severe subset (strictly greater than), in [0, 1).
    #[arg(long, default_value_t = PromptSetParams::paper().get_severe_threshold())]
    pub severe_threshold: f64,
    /// Sampling seed (the same seed gives the same set on every platform).
    #[arg(long, default_value_t = PromptSetParams::paper().get_seed())]
    pub seed: u64,
    /// Let the random and severe subsets share rows (disjoint by default).
    #[arg(long)]
    pub allow_overlap: bool,
    /// Skip malformed source records (counted and reported) instead of failing on the first.
    #[arg(long)]
    pub skip_bad_records: bool,
    /// Output prompts JSONL (written to a temporary file, then renamed into place).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

fn hub_error(e: hub_source::HubError) -> Error {
    Error::from(toxdrift::toxprompts::Error::from(e))
}

/// Runs `toxdrift prompts`.
pub fn run(args: Args) -> Result<()> {
    let policy = if args.skip_bad_records {
        OnBadRecord::Skip
    } else {
        OnBadRecord::Fail
    };
    let params = PromptSetParams::default()
        .random(args.random)
        .severe(args.severe)
        .per_axis(args.per_axis)
        .severe_threshold(args.severe_threshold)
        .seed(args.seed)
        .allow_overlap(args.allow_overlap)
        .on_bad_record(policy)
        .check()?;
    let hub = Hub::from_env();

    let rtp_path = match (&args.rtp, params.random() + params.severe() > 0) {
        (Some(spec), true) => Some(rtp_path(
            &Source::parse(spec, RepoKind::Dataset).map_err(hub_error)?,
            &hub,
        )?),
        (None, true) => {
            return Err(Error::BadInput(
                "--rtp is required unless --random and --severe are both 0".into(),
            ));
        }
        (_, false) => None,
    };
    let ceb = match (&args.ceb, params.per_axis() > 0) {
        (Some(spec), true) => Some(ceb_set(
            &Source::parse(spec, RepoKind::Dataset).map_err(hub_error)?,
            &hub,
            policy,
        )?),
        (None, true) => {
            return Err(Error::BadInput(
                "--ceb is required unless --per-axis is 0".into(),
            ));
        }
        (_, false) => None,
    };

    let set = params.build(rtp_path.as_deref(), ceb.as_ref())?;
    toxdrift::io::write_atomic(&args.out, &set.to_jsonl())?;

    let r = &set.report;
    if let Some(p) = &rtp_path {
        eprintln!(
            "RTP {}: {} rows read, {} eligible for severe (prompt.severe_toxicity > {}), {} skipped",
            p.display(),
            r.rtp_rows,
            r.rtp_severe_eligible,
            params.severe_threshold(),
            r.rtp_load.skipped
        );
        for s in &r.rtp_load.first_skipped {
            eprintln!("  skipped line {}: {}", s.line, s.problem);
        }
    }
    if let Some(c) = &ceb {
        for f in c.files() {
            eprintln!(
                "CEB {}: {} records, {} skipped",
                f.path.display(),
                f.records.len(),
                f.report.skipped
            );
            for s in &f.report.first_skipped {
                eprintln!("  skipped record at line {}: {}", s.line, s.problem);
            }
        }
    }
    let counts: Vec<String> = set
        .subset_counts()
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    eprintln!(
        "wrote {} prompts ({}) to {}",
        set.prompts.len(),
        counts.join(", "),
        args.out.display()
    );
    Ok(())
}
