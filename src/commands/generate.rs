//! `toxdrift generate`: greedy continuations of a prompt set with one model (plus an optional
//! PEFT adapter), written as generations JSONL (design §3), resumable after a kill.

use std::path::PathBuf;

use gen_engine::{
    DTypeChoice, GenerateParams, Generator, LoadOptions, ModelSource, TruncationPolicy,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use toxdrift::error::{Error, Result};
use toxdrift::io::ResumableJsonl;

/// Generate continuations for every prompt (greedy, left-padded batches, as the study ran it).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model: a local checkpoint directory or a hub id `owner/name[@revision]`.
    #[arg(long)]
    pub model: String,
    /// A PEFT LoRA adapter directory to apply to the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Keep the adapter as a separate low-rank path instead of merging it into the weights.
    #[arg(long)]
    pub no_merge: bool,
    /// Prompts JSONL (`{"id", "subset", "text", "source"}` per line).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output generations JSONL; an existing file is resumed (ids already present are skipped).
    #[arg(long)]
    pub out: PathBuf,
    /// New tokens per prompt at most.
    #[arg(long, default_value_t = 50)]
    pub max_new_tokens: usize,
    /// Prompts per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// f32, f16, bf16 or auto (auto: f32 on CPU, the checkpoint's dtype on GPU).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// cpu or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Wrap each prompt in the model's chat template (off in the study).
    #[arg(long)]
    pub chat_template: bool,
    /// Left-truncate prompts that do not fit the context window (default: refuse them).
    #[arg(long)]
    pub truncate: bool,
    /// The `model` label written in each record (default: the --model value, plus the adapter).
    #[arg(long)]
    pub model_name: Option<String>,
}

#[derive(Serialize)]
struct Record<'a> {
    id: &'a str,
    subset: &'a str,
    model: &'a str,
    prompt: &'a str,
    completion: String,
    completion_token_ids: Vec<u32>,
    finish_reason: &'static str,
}

struct Prompt {
    id: String,
    subset: String,
    text: String,
}

fn read_prompts(path: &PathBuf) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::BadInput(format!("{}: invalid JSON: {e}", at())))?;
        let field = |k: &str| -> Result<String> {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(String::from)
                .ok_or_else(|| Error::BadInput(format!("{}: missing string field `{k}`", at())))
        };
        let id = field("id")?;
        if !seen.insert(id.clone()) {
            return Err(Error::BadInput(format!("{}: duplicate id `{id}`", at())));
        }
        out.push(Prompt {
            id,
            subset: field("subset")?,
            text: field("text")?,
        });
    }
    Ok(out)
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let prompts = read_prompts(&args.prompts)?;
    if prompts.is_empty() {
        return Err(Error::from(gen_engine::Error::EmptyPrompts));
    }
    let mut out = ResumableJsonl::open(&args.out, "id")?;
    let todo: Vec<&Prompt> = prompts.iter().filter(|p| !out.contains(&p.id)).collect();
    if todo.is_empty() {
        eprintln!(
            "{}: all {} prompts already generated",
            args.out.display(),
            prompts.len()
        );
        return Ok(());
    }
    let source = ModelSource::parse(&args.model);
    let mut opts = LoadOptions {
        dtype: DTypeChoice::parse(&args.dtype)?,
        device: Some(gen_engine::parse_device(&args.device)?),
        ..LoadOptions::default()
    };
    if let Some(a) = &args.adapter {
        opts = opts.with_adapter(a, !args.no_merge)?;
    }
    let model_label = args
        .model_name
        .clone()
        .unwrap_or_else(|| match &args.adapter {
            Some(a) => format!("{}+{}", source.display_name(), a.display()),
            None => source.display_name(),
        });
    let loaded = gen_engine::load(&source, &opts)?;
    let params = GenerateParams::new()
        .max_new_tokens(args.max_new_tokens)
        .batch_size(args.batch_size)
        .chat_template(args.chat_template)
        .truncation(if args.truncate {
            TruncationPolicy::LeftTruncate
        } else {
            TruncationPolicy::Error
        });
    let generator = Generator::new(
        loaded.model.as_ref(),
        &loaded.tokenizer,
        &loaded.eos_token_ids,
        params,
    )?;
    let texts: Vec<&str> = todo.iter().map(|p| p.text.as_str()).collect();
    let encoded = generator.encode(&texts)?;
    let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} prompts, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("generate {model_label}"));
    if !out.is_empty() {
        bar.println(format!(
            "resuming: {} records already in {}",
            out.len(),
            args.out.display()
        ));
    }
    for batch in generator.plan_batches(&lengths) {
        let ids: Vec<Vec<u32>> = batch.iter().map(|&i| encoded[i].clone()).collect();
        let gens = generator.generate_batch(&ids)?;
        let records: Vec<(String, Record<'_>)> = batch
            .iter()
            .zip(gens)
            .map(|(&i, g)| {
                let p = todo[i];
                (
                    p.id.clone(),
                    Record {
                        id: &p.id,
                        subset: &p.subset,
                        model: &model_label,
                        prompt: &p.text,
                        completion: g.text,
                        completion_token_ids: g.token_ids,
                        finish_reason: g.finish_reason.as_str(),
                    },
                )
            })
            .collect();
        out.append_batch(&records)?;
        bar.inc(batch.len() as u64);
    }
    bar.finish();
    Ok(())
}
