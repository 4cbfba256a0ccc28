//! `toxdrift score`: the hate-speech classifier's score of every continuation in a generations
//! file (design §3–4), written as scores JSONL — each generation record's fields plus `score` and
//! `toxic` — and resumable after a kill (records are appended and fsynced a chunk at a time; ids
//! already in the output are skipped).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hate_classifier::{Device, HateClassifier};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use toxdrift::error::{Error, Result};
use toxdrift::io::ResumableJsonl;

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

/// One generation record: its fields in file order, plus the two the scorer needs.
struct Generation {
    id: String,
    completion: String,
    fields: Map<String, Value>,
}

/// Reads a generations file; every problem names the file and line.
fn read_generations(path: &Path) -> Result<Vec<Generation>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = std::str::from_utf8(raw).map_err(|e| {
            Error::BadInput(format!(
                "{}: not valid UTF-8 (byte {} of the line)",
                at(),
                e.valid_up_to() + 1
            ))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::BadInput(format!("{}: invalid JSON: {e}", at())))?;
        let Value::Object(fields) = value else {
            return Err(Error::BadInput(format!("{}: not a JSON object", at())));
        };
        let field = |k: &str| -> Result<String> {
            fields
                .get(k)
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| Error::BadInput(format!("{}: missing string field `{k}`", at())))
        };
        let id = field("id")?;
        let completion = field("completion")?;
        if fields.contains_key("score") || fields.contains_key("toxic") {
            return Err(Error::BadInput(format!(
                "{}: the record already has `score`/`toxic` (a scores file given as input?)",
                at()
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(Error::BadInput(format!("{}: duplicate id `{id}`", at())));
        }
        out.push(Generation {
            id,
            completion,
            fields,
        });
    }
    Ok(out)
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
    let todo: Vec<&Generation> = gens.iter().filter(|g| !out.contains(&g.id)).collect();
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
                rec.insert("score".into(), Value::from(s));
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
