//! The one place where settings — a study's or a subcommand's — become concrete engines.
//!
//! The generate and score stages (the study runner's units and the `generate` / `score`
//! subcommands alike) only see the [`engine_api`] seams: a [`TextGenerator`] that turns prompts
//! into completions and a [`TextScorer`] that turns texts into label probabilities plus the rule
//! that makes one toxic. This module is where those trait objects are built: today the local
//! candle engine ([`gen_engine::LocalGenerator`]) and the RoBERTa classifier
//! ([`hate_classifier::HateClassifier`]); a new generation backend or scorer is one more arm
//! here (see `docs/architecture.md`). The study's fine-tunes get their
//! [`lora_train::finetune::FinetuneSpec`] here too.

use crate::error::{Error, Result};
use crate::study::{Dtype, EndpointSpec, Model, ModelSource, Study, TooLong};
use engine_api::{TextGenerator, TextScorer};
use hub_source::{Hub, Source};
use lora_train::finetune::FinetuneSpec;
use std::path::{Path, PathBuf};

/// A PEFT adapter to apply on top of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSpec {
    /// The adapter: a local directory or a hub repo holding `adapter_config.json` and
    /// `adapter_model.safetensors`.
    pub source: Source,
    /// Fold `scale · B·A` into the base weights (the study's choice) or keep a separate path.
    pub merge: bool,
}

/// Which engine generates.
#[derive(Debug, Clone)]
pub enum GeneratorBackend {
    /// The local candle engine (gen-engine) on a checkpoint.
    Local {
        /// The checkpoint.
        model: Source,
        /// An optional PEFT adapter.
        adapter: Option<AdapterSpec>,
        /// `cpu` or `cuda:N`.
        device: String,
        /// The numeric type.
        dtype: Dtype,
    },
    /// OpenAI-compatible servers (vLLM, llama.cpp's server, TGI): remote-gen.
    Remote {
        /// The servers and the model they serve.
        endpoint: EndpointSpec,
        /// How long one request may keep retrying a failing server (remote-gen's default,
        /// about two minutes, when `None`).
        retry_budget: Option<std::time::Duration>,
    },
}

/// Everything that decides which generator is built and what it writes.
#[derive(Debug, Clone)]
pub struct GeneratorSpec {
    /// The engine.
    pub backend: GeneratorBackend,
    /// The model's name in the records it writes.
    pub name: String,
    /// Prompts per batch (local engine).
    pub batch_size: gen_engine::BatchSize,
    /// New tokens per continuation at most.
    pub max_new_tokens: usize,
    /// Wrap prompts in the model's chat template.
    pub chat_template: bool,
    /// What to do with a prompt that does not fit the context window.
    pub prompt_too_long: TooLong,
}

/// Everything that decides which scorer is built.
#[derive(Debug, Clone)]
pub struct ScorerSpec {
    /// The classifier checkpoint.
    pub source: Source,
    /// The label whose probability is the toxicity score.
    pub label: String,
    /// A text is toxic when its score is at least this.
    pub threshold: f64,
    /// Texts per batch.
    pub batch_size: usize,
    /// `cpu` or `cuda:N`.
    pub device: String,
}

impl GeneratorSpec {
    /// How a model of `study` generates: its checkpoint (a `finetune_from` model: its base),
    /// its adapter (merged, as the study runs it; for a `finetune_from` model the adapter this
    /// study trained, `trained`), and the study's generation settings.
    pub fn for_study_model(study: &Study, model: &Model, trained: Option<&Path>) -> Result<Self> {
        let g = &study.generation;
        let local = |model: Source, adapter: Option<Source>| GeneratorBackend::Local {
            model,
            adapter: adapter.map(|source| AdapterSpec {
                source,
                merge: true,
            }),
            device: study.device.clone(),
            dtype: g.dtype,
        };
        let backend = match &model.source {
            ModelSource::Checkpoint { model, adapter } => local(model.clone(), adapter.clone()),
            ModelSource::Endpoint(e) => GeneratorBackend::Remote {
                endpoint: e.clone(),
                retry_budget: None,
            },
            ModelSource::FinetuneFrom(from) => {
                let base = study.model(from).ok_or_else(|| {
                    Error::Internal(format!("`{from}` is not a model of the study"))
                })?;
                let ModelSource::Checkpoint { model: base, .. } = &base.source else {
                    return Err(Error::Internal(format!("`{from}` is not a checkpoint")));
                };
                let trained = trained.ok_or_else(|| {
                    Error::Internal(format!("`{}`: its trained adapter is missing", model.name))
                })?;
                local(base.clone(), Some(Source::Local(trained.to_path_buf())))
            }
        };
        Ok(GeneratorSpec {
            backend,
            name: model.name.clone(),
            batch_size: g.batch_size,
            max_new_tokens: g.max_new_tokens,
            chat_template: g.chat_template,
            prompt_too_long: g.prompt_too_long,
        })
    }
}

impl ScorerSpec {
    /// The study's classifier on the study's device.
    pub fn for_study(study: &Study) -> Self {
        let c = &study.classifier;
        ScorerSpec {
            source: c.source.clone(),
            label: c.label.clone(),
            threshold: c.threshold,
            batch_size: c.batch_size,
            device: study.device.clone(),
        }
    }
}

/// The fine-tune a study runs on the plain checkpoint `base`: the study's recipe (lora-train's
/// types, the paper's defaults) on the study's device and dtype, resumable, its PEFT adapter
/// written to `out` with `base_model_name_or_path` naming the checkpoint as the study does.
pub fn finetune_spec(study: &Study, base: &Source, out: PathBuf) -> Result<FinetuneSpec> {
    let r = &study.finetune;
    let mut spec = FinetuneSpec::paper(base.clone(), r.data.clone(), out);
    spec.base_model_name = Some(match base {
        Source::Hub { repo, .. } => repo.id().to_string(),
        Source::Local(p) => p.display().to_string(),
    });
    spec.template = r.template.clone();
    spec.max_len = r.max_seq_len;
    spec.limit = r.max_records;
    spec.lora = r.lora.clone();
    spec.train = r.train.clone();
    spec.base_4bit = r.base_4bit;
    spec.dtype = engine_dtype(study.generation.dtype);
    spec.device = gen_engine::parse_device(&study.device)?;
    spec.resume = true;
    Ok(spec)
}

/// Checks that this build can run on `device` (`cuda:N` needs the `cuda` feature): bad input
/// otherwise, said before any work starts.
pub fn check_device(device: &str) -> Result<()> {
    gen_engine::parse_device(device)?;
    Ok(())
}

/// The engine's dtype choice for a study or CLI dtype.
pub fn engine_dtype(d: Dtype) -> gen_engine::DTypeChoice {
    match d {
        Dtype::Auto => gen_engine::DTypeChoice::Auto,
        Dtype::F32 => gen_engine::DTypeChoice::F32,
        Dtype::F16 => gen_engine::DTypeChoice::F16,
        Dtype::Bf16 => gen_engine::DTypeChoice::BF16,
    }
}

/// A local directory holding a PEFT adapter: as given, or its two files fetched into the
/// Hugging Face cache.
pub fn adapter_dir(source: &Source) -> Result<PathBuf> {
    match source {
        Source::Local(p) => Ok(p.clone()),
        Source::Hub { .. } => {
            let snap = source.snapshot(&Hub::from_env());
            snap.file("adapter_model.safetensors")
                .map_err(gen_engine::Error::from)?;
            let cfg = snap
                .file("adapter_config.json")
                .map_err(gen_engine::Error::from)?;
            Ok(cfg.parent().map(Path::to_path_buf).unwrap_or_default())
        }
    }
}

/// Builds the generator `spec` describes: the local candle engine, or a client of
/// OpenAI-compatible servers.
pub fn open_generator(spec: &GeneratorSpec) -> Result<Box<dyn TextGenerator>> {
    match &spec.backend {
        GeneratorBackend::Local {
            model,
            adapter,
            device,
            dtype,
        } => {
            let mut opts = gen_engine::LoadOptions {
                dtype: engine_dtype(*dtype),
                device: Some(gen_engine::parse_device(device)?),
                ..Default::default()
            };
            if let Some(a) = adapter {
                opts = opts.with_adapter(&adapter_dir(&a.source)?, a.merge)?;
            }
            tracing::info!("loading {} ({model})", spec.name);
            let loaded = gen_engine::load(model, &opts)?;
            let params = gen_engine::GenerateParams::new()
                .max_new_tokens(spec.max_new_tokens)
                .batch_size(spec.batch_size)
                .chat_template(spec.chat_template)
                .truncation(match spec.prompt_too_long {
                    TooLong::Error => gen_engine::TruncationPolicy::Error,
                    TooLong::TruncateLeft => gen_engine::TruncationPolicy::LeftTruncate,
                });
            let generator =
                gen_engine::LocalGenerator::new(loaded, params)?.with_model_name(&spec.name);
            Ok(Box::new(generator))
        }
        GeneratorBackend::Remote {
            endpoint,
            retry_budget,
        } => open_remote(spec, endpoint, *retry_budget),
    }
}

fn open_remote(
    spec: &GeneratorSpec,
    e: &EndpointSpec,
    retry_budget: Option<std::time::Duration>,
) -> Result<Box<dyn TextGenerator>> {
    let api_key = match &e.api_key_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            Error::BadInput(format!(
                "`{}`: the API key variable `{var}` is not set",
                spec.name
            ))
        })?),
        None => None,
    };
    let kind: remote_gen::ServerKind = e
        .server_kind
        .parse()
        .map_err(|err| Error::BadInput(format!("`{}`: {err}", spec.name)))?;
    let mut params = remote_gen::RemoteParams::new()
        .endpoints(e.urls.iter().cloned())
        .served_model(&e.served_model)
        .max_in_flight(e.max_in_flight)
        .server_kind(kind)
        .api_key(api_key)
        .max_new_tokens(spec.max_new_tokens)
        .chat_template(spec.chat_template);
    if let Some(b) = retry_budget {
        params = params.retry_budget(b);
    }
    tracing::info!(
        "connecting to `{}` at {}",
        e.served_model,
        e.urls.join(", ")
    );
    let generator =
        remote_gen::RemoteGenerator::connect(params).map_err(engine_api::Error::from)?;
    for w in generator.warnings() {
        tracing::warn!("{}: {w}", spec.name);
    }
    Ok(Box::new(generator))
}

/// Builds the scorer `spec` describes (today: the RoBERTa hate-speech classifier).
pub fn open_scorer(spec: &ScorerSpec) -> Result<Box<dyn TextScorer>> {
    let classifier = hate_classifier::HateClassifier::params()
        .label(spec.label.clone())
        .threshold(spec.threshold as f32)
        .batch_size(spec.batch_size)
        .device(gen_engine::parse_device(&spec.device)?)
        .load_source(&spec.source)?;
    Ok(Box::new(classifier))
}
