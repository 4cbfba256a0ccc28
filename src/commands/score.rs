//! `toxdrift score`: the hate-speech classifier's score of every continuation in a generations
//! file (design §3–4), written as scores JSONL — each generation record's fields plus `score` and
//! `toxic` — and resumable after a kill (records are appended and fsynced a chunk at a time; ids
//! already in the output are skipped).

use std::path::PathBuf;

use hub_source::{RepoKind, Source};
use toxdrift::engines::{ScorerSpec, open_scorer};
use toxdrift::error::{Error, Result};
use toxdrift::gen_engine;
use toxdrift::io::ResumableJsonl;
use toxdrift::progress::progress_bar;
use toxdrift::records::read_generations;
use toxdrift::score_into;

/// Score the continuations of a generations file with the RoBERTa hate-speech classifier.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The classifier: a local checkpoint directory or a hub id `owner/name[@revision]`.
    #[arg(long, default_value = hate_classifier::DEFAULT_MODEL)]
    pub classifier: String,
    /// Generations JSONL (`{"id", "subset", "model", "prompt", "completion", ...}` per line).
    #[arg(long)]
    pub input: PathBuf,
    /// Output scores JSONL; an existing file is resumed (ids already present are skipped).
    #[arg(long)]
    pub out: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = hate_classifier::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// A text is toxic when its score is at least this.
    #[arg(long, default_value_t = hate_classifier::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// The `id2label` label whose probability is the score.
    #[arg(long, default_value = hate_classifier::DEFAULT_LABEL)]
    pub label: String,
    /// cpu or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let gens = read_generations(&args.input)?;
    if gens.is_empty() {
        return Err(Error::BadInput(format!(
            "{}: no generation records to score (the file is empty)",
            args.input.display()
        )));
    }
    let mut out = ResumableJsonl::open(&args.out, "id")?;
    let todo = gens.iter().filter(|g| !out.contains(&g.id)).count();
    if todo == 0 {
        eprintln!(
            "{}: all {} records already scored",
            args.out.display(),
            gens.len()
        );
        return Ok(());
    }
    let spec = ScorerSpec {
        source: Source::parse(&args.classifier, RepoKind::Model)
            .map_err(gen_engine::Error::from)?,
        label: args.label.clone(),
        threshold: f64::from(args.threshold),
        batch_size: args.batch_size,
        device: args.device.clone(),
    };
    let scorer = open_scorer(&spec)?;
    let bar = progress_bar(
        true,
        gens.len() as u64,
        format!("score {}", args.input.display()),
    );
    if !out.is_empty() {
        bar.println(format!(
            "resuming: {} records already in {}",
            out.len(),
            args.out.display()
        ));
    }
    bar.set_position((gens.len() - todo) as u64);
    bar.reset_eta();
    toxdrift::progress::set_interrupt_note(format!(
        "interrupted: the records scored so far are kept in {}; run the same command to resume",
        args.out.display()
    ));
    score_into(scorer.as_ref(), &gens, &mut out, &mut |n| bar.inc(n as u64))?;
    bar.finish();
    Ok(())
}
