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
use toxdrift::study::{DEFAULT_MAX_IN_FLIGHT, Dtype, EndpointSpec, TooLong};

/// Generate continuations for every prompt (greedy, left-padded batches, as the study ran it).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model: a local checkpoint directory, a GGUF file, a hub id `owner/name[@revision]`
    /// or a GGUF file of a hub repo `owner/name[@revision]:file.gguf` (not with --endpoint).
    #[arg(
        long,
        required_unless_present = "endpoint",
        conflicts_with = "endpoint"
    )]
    pub model: Option<String>,
    /// Generate through an OpenAI-compatible server instead (vLLM, llama.cpp's server, TGI):
    /// its base URL, e.g. `http://host:8000/v1`. Repeat for replicas; prompts are spread over
    /// them.
    #[arg(long = "endpoint", value_name = "URL", requires = "served_model")]
    pub endpoint: Vec<String>,
    /// The model name the server serves (checked against its `/v1/models`).
    #[arg(long, requires = "endpoint")]
    pub served_model: Option<String>,
    /// Requests in flight per endpoint.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// The server kind: auto (detected), llamacpp (llama.cpp's server), vllm, tgi or openai.
    #[arg(long, default_value = "auto")]
    pub server_kind: String,
    /// How long one request may keep retrying a failing server, in seconds (default: about
    /// two minutes); then the run stops, naming the endpoint, and a rerun resumes.
    #[arg(long, value_name = "SECS", requires = "endpoint")]
    pub retry_budget: Option<f64>,
    /// The environment variable that holds the server's API key (the key is never logged).
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
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
    /// Prompts per batch, or `auto`: on a GPU as many as its free memory holds (up to 512),
    /// on the CPU 16.
    #[arg(long, default_value_t = GenerateParams::default().get_batch_size())]
    pub batch_size: gen_engine::BatchSize,
    /// f32, f16, bf16 or auto (auto: f32 on the CPU, bf16 on a GPU).
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
        return Err(Error::BadInput(format!(
            "{}: no prompts to generate from (the file is empty)",
            args.prompts.display()
        )));
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
    let (backend, default_name) = match (&args.model, args.endpoint.is_empty()) {
        (Some(spec), true) => {
            let model = Source::parse(spec, RepoKind::Model).map_err(gen_engine::Error::from)?;
            let name = match &args.adapter {
                Some(a) => format!("{}+{}", model.display_name(), a.display()),
                None => model.display_name(),
            };
            let backend = GeneratorBackend::Local {
                model,
                adapter: args.adapter.as_ref().map(|a| AdapterSpec {
                    source: Source::Local(a.clone()),
                    merge: !args.no_merge,
                }),
                device: args.device.clone(),
                dtype: args.dtype,
            };
            (backend, name)
        }
        (None, false) => {
            if args.adapter.is_some() {
                return Err(Error::BadInput(
                    "--adapter applies to a local --model; a server applies its own adapters"
                        .into(),
                ));
            }
            let served = args.served_model.clone().unwrap_or_default();
            let e = EndpointSpec::new(
                args.endpoint.clone(),
                &served,
                args.max_in_flight,
                &args.server_kind,
                args.api_key_env.clone(),
            )
            .map_err(|m| Error::BadInput(format!("--endpoint: {m}")))?;
            (
                GeneratorBackend::Remote {
                    endpoint: e,
                    retry_budget: args
                        .retry_budget
                        .map(std::time::Duration::try_from_secs_f64)
                        .transpose()
                        .map_err(|e| Error::BadInput(format!("--retry-budget: {e}")))?,
                },
                served,
            )
        }
        _ => {
            return Err(Error::BadInput(
                "give either --model or --endpoint (with --served-model)".into(),
            ));
        }
    };
    let name = args.model_name.clone().unwrap_or(default_name);
    let spec = GeneratorSpec {
        backend,
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
    toxdrift::progress::set_interrupt_note(format!(
        "interrupted: the continuations generated so far are kept in {}; run the same command \
         to resume",
        args.out.display()
    ));
    generate_into(generator.as_ref(), &prompts, &name, &mut out, &mut |n| {
        bar.inc(n as u64)
    })?;
    bar.finish();
    Ok(())
}
