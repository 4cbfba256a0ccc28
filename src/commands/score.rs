//! `toxdrift score`: the hate-speech classifier's score of every continuation in a generations
//! file (design §3–4), written as scores JSONL — each generation record's fields plus `score` and
//! `toxic` — and resumable after a kill (records are appended and fsynced a chunk at a time; ids
//! already in the output are skipped).

use std::path::PathBuf;

use hate_classifier::{Device, HateClassifier};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use toxdrift::error::{Error, Result};
use toxdrift::io::ResumableJsonl;
use toxdrift::records::{GenerationRecord, read_generations};

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

fn parse_device(spec: &str) -> Result<Device> {
    let bad = || {
        Error::BadInput(format!(
            "--device `{spec}`: expected `cpu`, `cuda` or `cuda:N`"
        ))
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n = s
                .strip_prefix("cuda:")
                .map_or(Ok(0), |n| n.parse().map_err(|_| bad()))?;
            Device::new_cuda(n).map_err(|e| Error::BadInput(format!("--device {spec}: {e}")))
        }
        _ => Err(bad()),
    }
}

/// Records appended (and fsynced) at a time: a kill loses at most this many scores.
const CHUNK: usize = 256;

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let gens = read_generations(&args.input)?;
    let mut out = ResumableJsonl::open(&args.out, "id")?;
    let todo: Vec<&GenerationRecord> = gens.iter().filter(|g| !out.contains(&g.id)).collect();
    if todo.is_empty() {
        eprintln!(
            "{}: all {} records already scored",
            args.out.display(),
            gens.len()
        );
        return Ok(());
    }
    let clf = HateClassifier::params()
        .label(args.label.clone())
        .threshold(args.threshold)
        .batch_size(args.batch_size)
        .device(parse_device(&args.device)?)
        .load(&args.classifier)?;
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} texts, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("score {}", args.input.display()));
    if !out.is_empty() {
        bar.println(format!(
            "resuming: {} records already in {}",
            out.len(),
            args.out.display()
        ));
    }
    for chunk in todo.chunks(CHUNK) {
        let texts: Vec<&str> = chunk.iter().map(|g| g.completion.as_str()).collect();
        let scores = clf.score(&texts)?;
        let records: Vec<(String, Map<String, Value>)> = chunk
            .iter()
            .zip(scores)
            .map(|(g, s)| {
                let mut rec = g.fields.clone();
                // The f32's shortest decimal form (as the runner's typed records write it), not
                // its f64 widening (0.1f32 would otherwise print as 0.10000000149011612).
                let short = s.to_string().parse::<f64>().unwrap_or(f64::from(s));
                rec.insert("score".into(), Value::from(short));
                rec.insert("toxic".into(), Value::Bool(clf.is_toxic(s)));
                (g.id.clone(), rec)
            })
            .collect();
        out.append_batch(&records)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(())
}
