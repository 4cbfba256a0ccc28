//! `toxdrift generate`: greedy continuations of a prompt set with one model (plus an optional
//! PEFT adapter), written as generations JSONL (design §3), resumable after a kill.

use std::path::PathBuf;

use hub_source::{RepoKind, Source};
use toxdrift::engines::{AdapterSpec, GeneratorBackend, GeneratorSpec, open_generator};
use toxdrift::error::{Error, Result};
use toxdrift::gen_engine::{self, GenerateParams};
use toxdrift::generate_into;
use toxdrift::io::ResumableJsonl;
use toxdrift::progress::progress_bar;
use toxdrift::study::{Dtype, TooLong};

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
    #[arg(long, default_value_t = GenerateParams::default().get_max_new_tokens())]
    pub max_new_tokens: usize,
    /// Prompts per batch.
    #[arg(long, default_value_t = GenerateParams::default().get_batch_size())]
    pub batch_size: usize,
    /// f32, f16, bf16 or auto (auto: f32 on CPU, the checkpoint's dtype on GPU).
    #[arg(long, default_value = "auto", value_parser = Dtype::parse)]
    pub dtype: Dtype,
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
    let model = Source::parse(&args.model, RepoKind::Model).map_err(gen_engine::Error::from)?;
    let name = args
        .model_name
        .clone()
        .unwrap_or_else(|| match &args.adapter {
            Some(a) => format!("{}+{}", model.display_name(), a.display()),
            None => model.display_name(),
        });
    let spec = GeneratorSpec {
        backend: GeneratorBackend::Local {
            model,
            adapter: args.adapter.as_ref().map(|a| AdapterSpec {
                source: Source::Local(a.clone()),
                merge: !args.no_merge,
            }),
            device: args.device.clone(),
            dtype: args.dtype,
        },
        name: name.clone(),
        batch_size: args.batch_size,
        max_new_tokens: args.max_new_tokens,
        chat_template: args.chat_template,
        prompt_too_long: if args.truncate {
            TooLong::TruncateLeft
        } else {
            TooLong::Error
        },
    };
    let generator = open_generator(&spec)?;
    let bar = progress_bar(true, prompts.len() as u64, format!("generate {name}"));
    if !out.is_empty() {
        bar.println(format!(
            "resuming: {} records already in {}",
            out.len(),
            args.out.display()
        ));
    }
    bar.set_position((prompts.len() - todo) as u64);
    bar.reset_eta();
    generate_into(generator.as_ref(), &prompts, &name, &mut out, &mut |n| {
        bar.inc(n as u64)
    })?;
    bar.finish();
    Ok(())
}
