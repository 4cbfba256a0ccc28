//! `toxdrift generate`: greedy continuations of a prompt set with one model (plus an optional
//! PEFT adapter), written as generations JSONL (design §3), resumable after a kill.

use std::path::PathBuf;

use gen_engine::{DTypeChoice, GenerateParams, Generator, LoadOptions, TruncationPolicy};
use toxdrift::error::{Error, Result};
use toxdrift::io::ResumableJsonl;
use toxdrift::model_stages::generate_into;
use toxdrift::progress::progress_bar;

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
    /// Prompts JSONL (`{"id", "subset", "text", "source"}` per line; `subset` defaults to
    /// `custom`).
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

/// Prompts per append (and fsync): a kill loses at most this many batches of work.
const CHUNK_BATCHES: usize = 4;

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let prompts = toxprompts::read_prompts(&args.prompts, toxprompts::OnBadRecord::Fail)?.records;
    if prompts.is_empty() {
        return Err(Error::from(gen_engine::Error::EmptyPrompts));
    }
    let mut out = ResumableJsonl::open(&args.out, "id")?;
    let todo = prompts.iter().filter(|p| !out.contains(&p.id)).count();
    if todo == 0 {
        eprintln!(
            "{}: all {} prompts already generated",
            args.out.display(),
            prompts.len()
        );
        return Ok(());
    }
    let source = hub_source::Source::parse(&args.model, hub_source::RepoKind::Model)
        .map_err(gen_engine::Error::from)?;
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
    let bar = progress_bar(
        true,
        prompts.len() as u64,
        format!("generate {model_label}"),
    );
    if !out.is_empty() {
        bar.println(format!(
            "resuming: {} records already in {}",
            out.len(),
            args.out.display()
        ));
    }
    bar.set_position((prompts.len() - todo) as u64);
    bar.reset_eta();
    generate_into(
        &generator,
        &prompts,
        &model_label,
        &mut out,
        args.batch_size.max(1) * CHUNK_BATCHES,
        &mut |n| bar.inc(n as u64),
    )?;
    bar.finish();
    Ok(())
}
