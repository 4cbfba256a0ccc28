//! The validated study: what a study file describes once [`super::validate`] has checked it.
//! Paths are absolute; every setting has its value (defaults filled in by [`super::defaults`]).

use super::paths::absolutize;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole study, parsed and validated. Paths are absolute (resolved against the study file's
/// directory).
#[derive(Debug, Clone)]
pub struct Study {
    /// The study file.
    pub file: PathBuf,
    /// A short name, used in the report's title.
    pub name: String,
    /// The output directory (`out` in the file; the CLI's `--out` overrides it).
    pub out: PathBuf,
    /// The compute device: `cpu` or `cuda:N`.
    pub device: String,
    /// Where the prompts come from and how many of each subset to draw.
    pub prompts: PromptsSpec,
    /// The toxicity classifier.
    pub classifier: ClassifierSpec,
    /// Generation settings shared by every model.
    pub generation: GenerationSpec,
    /// BEST sampler settings shared by every comparison.
    pub sampler: SamplerSpec,
    /// The recipe for the models this study fine-tunes itself (`finetune_from`).
    pub finetune: FinetuneRecipe,
    /// Model families, in file order.
    pub families: Vec<Family>,
    /// The comparisons, in file order.
    pub comparisons: Vec<Comparison>,
    /// Toxicity drift across fine-tunes (`[[drift]]`), in file order.
    pub drifts: Vec<Drift>,
}

pub use hub_source::Source;

/// The prompt set: sources and sampling.
#[derive(Debug, Clone, Serialize)]
pub struct PromptsSpec {
    /// RealToxicityPrompts `prompts.jsonl` (plain or `.gz`), or the hub dataset.
    pub rtp: Source,
    /// CEB-Continuation-T: a directory with the four JSON files, or the hub dataset.
    pub ceb: Source,
    /// Prompts drawn uniformly from RTP (`random` subset).
    pub random: usize,
    /// Prompts drawn from RTP rows with `prompt.severe_toxicity > severe_threshold`.
    pub severe: usize,
    /// The severe-toxicity threshold (strictly greater than).
    pub severe_threshold: f64,
    /// Prompts per CEB axis (race, gender, age, religion).
    pub per_axis: usize,
    /// Whether `random` and `severe` may share prompts (the default keeps them disjoint).
    pub allow_overlap: bool,
    /// The sampling seed.
    pub seed: u64,
}

/// The classifier that scores every continuation.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierSpec {
    /// Where the checkpoint is.
    pub source: Source,
    /// Texts per batch.
    pub batch_size: usize,
    /// A text is toxic when its score is at least this.
    pub threshold: f64,
    /// The `id2label` name whose probability is the score.
    pub label: String,
}

/// The numeric type models run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// bf16 on a GPU, f32 on the CPU (the engine's rule; the authors ran fp16 on their GPU:
    /// `f16` reproduces them exactly).
    Auto,
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    /// The concrete dtype for `device`, by the engine's rule
    /// ([`gen_engine::DTypeChoice::resolve_on`]: `auto` is f32 on the CPU, bf16 on a GPU).
    pub fn resolve(self, device: &str) -> Dtype {
        use gen_engine::DTypeChoice as D;
        match crate::engines::engine_dtype(self).concrete(!device.starts_with("cuda")) {
            D::BF16 => Dtype::Bf16,
            D::F16 => Dtype::F16,
            D::F32 | D::Auto => Dtype::F32,
        }
    }

    /// Parses `auto`, `f32`, `f16`, `bf16` (and the torch spellings `float32`, `float16`,
    /// `half`, `bfloat16`), as the engine does.
    pub fn parse(s: &str) -> std::result::Result<Dtype, String> {
        use gen_engine::DTypeChoice as D;
        Ok(match D::parse(s).map_err(|e| e.to_string())? {
            D::Auto => Dtype::Auto,
            D::F32 => Dtype::F32,
            D::F16 => Dtype::F16,
            D::BF16 => Dtype::Bf16,
        })
    }

    /// The spelling the CLI flags use.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::Auto => "auto",
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }
}

/// Generation settings (the authors': batches of 16, greedy, 50 new tokens, no chat template).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationSpec {
    /// Prompts per batch, or `auto`: on a GPU as many as its free memory holds (up to
    /// [`gen_engine::memory::AUTO_MAX_BATCH`]), on the CPU the study's 16.
    pub batch_size: gen_engine::BatchSize,
    /// New tokens per continuation at most.
    pub max_new_tokens: usize,
    /// The numeric type.
    pub dtype: Dtype,
    /// Wrap prompts in the model's chat template (off in the paper).
    #[serde(default)]
    pub chat_template: bool,
    /// A prompt that does not fit the context window with its new tokens: `error` (default)
    /// or `truncate-left` (keep its end).
    #[serde(default)]
    pub prompt_too_long: TooLong,
}

/// What to do with a prompt longer than the model's context window allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TooLong {
    /// Stop with an error naming the prompt.
    #[default]
    Error,
    /// Keep the prompt's last tokens (and its BOS).
    TruncateLeft,
}

/// The prior set of the BEST model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Priors {
    /// mu ~ Normal(0, 1), sigma ~ HalfCauchy(10), nu - 1 ~ Exponential(1/29): the paper's.
    Paper,
    /// Kruschke's (2013) data-scaled priors.
    Kruschke,
}

/// BEST sampler settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerSpec {
    /// Chains, run in parallel.
    pub chains: usize,
    /// Warm-up iterations per chain.
    pub tune: usize,
    /// Kept draws per chain.
    pub draws: usize,
    /// The sampler seed.
    pub seed: u64,
    /// The prior set.
    pub priors: Priors,
    /// The HDI's probability mass.
    pub hdi_mass: f64,
    /// An optional region of practical equivalence for mu_candidate - mu_baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope: Option<[f64; 2]>,
    /// Convergence: the largest R-hat of the mu difference for a verdict.
    pub rhat_max: f64,
    /// Convergence: the smallest bulk and tail ESS of the mu difference for a verdict.
    pub ess_min: f64,
    /// Convergence: the most divergent transitions (all chains, after tuning) for a verdict.
    pub max_divergences: usize,
    /// A default-length fit that does not converge is rerun once with this many times the
    /// tuning and kept draws (1: no retry).
    pub retry_scale: usize,
}

pub use lora_train::template::Template;

/// The fine-tune recipe, in lora-train's own types; the defaults are the paper's
/// ([`lora_train::finetune::FinetuneSpec::paper`], design.md §1).
#[derive(Debug, Clone)]
pub struct FinetuneRecipe {
    /// The instruction data (Dolly-15k JSONL or the hub dataset).
    pub data: Source,
    /// Use only the first N records (for smoke tests); all when absent.
    pub max_records: Option<usize>,
    /// The prompt template.
    pub template: Template,
    /// Sequences are truncated to this many tokens.
    pub max_seq_len: usize,
    /// The LoRA shape; empty `targets` means the family's own projections.
    pub lora: lora_train::finetune::LoraParams,
    /// The training loop (optimiser, schedule, batches, seed, checkpoints).
    pub train: lora_train::trainer::TrainParams,
    /// Train on a bitsandbytes 4-bit base (QLoRA, as the authors did with Unsloth's
    /// `*-bnb-4bit` checkpoints): a base that is not one is refused. A 4-bit base is trained as
    /// QLoRA whether or not this is set.
    pub base_4bit: bool,
}

impl FinetuneRecipe {
    /// The settings a finetune unit is keyed on, in the form run keys have always been hashed
    /// from (changing it would rerun every finished fine-tune).
    pub fn key(&self) -> serde_json::Value {
        let (l, t) = (&self.lora, &self.train);
        let mut key = serde_json::json!({
            "data": self.data,
            "max_records": self.max_records,
            "template": match self.template {
                Template::AuthorsInst => "inst",
                Template::Alpaca => "alpaca",
                Template::Chat => "chat",
            },
            "rank": l.r,
            "alpha": l.alpha,
            "dropout": l.dropout,
            "targets": (!l.targets.is_empty()).then_some(&l.targets),
            "epochs": t.epochs,
            "max_steps": t.max_steps,
            "batch_size": t.micro_batch,
            "grad_accum": t.grad_accum,
            "lr": t.adamw.lr,
            "warmup_steps": t.warmup_steps,
            "weight_decay": t.adamw.weight_decay,
            "seed": t.seed,
            "max_seq_len": self.max_seq_len,
            "checkpoint_every": t.checkpoint_every,
        });
        // Added later: only in the key when set, so earlier fine-tunes keep their keys.
        if self.base_4bit {
            key["base_4bit"] = serde_json::Value::Bool(true);
        }
        key
    }
}

/// What a model is in its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A pretrained base model.
    Base,
    /// The lab's instruction-tuned model.
    Instruct,
    /// The instruction-tuned model fine-tuned on Dolly (Comparison 2).
    DollyTuned,
    /// A community fine-tune from the hub (Comparison 3).
    Community,
    /// Your own fine-tune, the one you are checking before you publish it (any method: a
    /// PEFT adapter, merged weights, an endpoint): the candidate of your comparison.
    #[serde(rename = "fine-tune")]
    FineTune,
}

impl Role {
    /// The role as written in the study file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Base => "base",
            Role::Instruct => "instruct",
            Role::DollyTuned => "dolly-tuned",
            Role::Community => "community",
            Role::FineTune => "fine-tune",
        }
    }
}

/// How a model's weights are obtained.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// A checkpoint (local or hub), with an optional PEFT adapter applied on top.
    Checkpoint {
        /// The checkpoint.
        model: Source,
        /// An optional LoRA adapter.
        adapter: Option<Source>,
    },
    /// Fine-tuned by this study from another model of the study with [`Study::finetune`].
    FinetuneFrom(String),
    /// Served by OpenAI-compatible servers (vLLM, llama.cpp's server, TGI): generation goes
    /// over HTTP; the study keeps its own records, resumability and statistics.
    Endpoint(EndpointSpec),
}

/// A model behind one or more OpenAI-compatible servers (several URLs are replicas: requests
/// are spread over them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct EndpointSpec {
    /// The OpenAI base URLs (`http://host:8000/v1`), one per replica.
    pub urls: Vec<String>,
    /// The model name the servers serve (checked against `/v1/models` before any work).
    pub served_model: String,
    /// Requests in flight per endpoint.
    pub max_in_flight: usize,
    /// `auto` (detected), `llamacpp`, `vllm`, `tgi` or `openai` ([`remote_gen::ServerKind`]).
    pub server_kind: String,
    /// The environment variable holding the API key, if the servers want one (never logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
}

impl EndpointSpec {
    /// Checks and builds an endpoint model: http(s) URLs, each once; a served model name; at
    /// least one request in flight; a known server kind. The message says what is wrong.
    pub fn new(
        urls: Vec<String>,
        served_model: &str,
        max_in_flight: usize,
        server_kind: &str,
        api_key_env: Option<String>,
    ) -> std::result::Result<Self, String> {
        if urls.is_empty() {
            return Err("no server URL given".into());
        }
        for u in &urls {
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.contains(char::is_whitespace)
            {
                return Err(format!(
                    "`{u}` is not an http(s) URL (the OpenAI base URL, e.g. http://host:8000/v1)"
                ));
            }
        }
        let mut dedup = urls.clone();
        dedup.sort();
        dedup.dedup();
        if dedup.len() != urls.len() {
            return Err("a server URL is listed twice".into());
        }
        if served_model.trim().is_empty() {
            return Err("the served model name is empty".into());
        }
        if max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        let kind: remote_gen::ServerKind = server_kind.parse().map_err(|e| format!("{e}"))?;
        Ok(EndpointSpec {
            urls,
            served_model: served_model.to_string(),
            max_in_flight,
            server_kind: kind.as_str().to_string(),
            api_key_env,
        })
    }
}

/// One model of the study.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// A unique name (used in tables, file names and comparisons).
    pub name: String,
    /// The family it belongs to.
    pub family: String,
    /// Its role.
    pub role: Role,
    /// Where its weights come from.
    pub source: ModelSource,
    /// `file:line:column` of its entry in the study file, for errors found while running
    /// (not part of any run key).
    #[serde(skip)]
    pub at: String,
}

/// A group of related models (one base model and its fine-tunes).
#[derive(Debug, Clone, Serialize)]
pub struct Family {
    /// The family's name, e.g. `Llama-2-7B`.
    pub name: String,
    /// Its models in file order.
    pub models: Vec<Model>,
}

/// One (baseline, candidate) pair; every reported difference is candidate − baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// The baseline model's name.
    pub baseline: String,
    /// The candidate model's name.
    pub candidate: String,
}

/// A comparison: a titled list of pairs (the paper has three).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// A short identifier, used in file names.
    pub id: String,
    /// The title shown in the report.
    pub title: String,
    /// The pairs.
    pub pairs: Vec<Pair>,
}

/// A fine-tune watched across its checkpoints (`[[drift]]`): every checkpoint is evaluated on
/// the prompt set like a model, and the report plots its toxic rate against the training step
/// with the reference models' rates as lines (see `docs/drift.md`).
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// A unique name (file names: `figures/drift-<name>.svg`); the fine-tuned model's name
    /// for `model = ...`.
    pub name: String,
    /// The model the checkpoints' adapters apply to (a plain checkpoint of the study).
    pub base: String,
    /// Where the checkpoints come from.
    pub source: DriftSource,
    /// The checkpoints, by ascending step.
    pub points: Vec<DriftPoint>,
    /// Models of the study drawn as reference lines (typically the base and the instruct model).
    pub references: Vec<String>,
    /// `file:line:column` of the section, for errors found while running.
    pub at: String,
}

/// Where a drift's checkpoints come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftSource {
    /// The study's own fine-tune of this model (`model = "..."`): the checkpoints the recipe
    /// writes every `checkpoint_every` steps, and the final adapter.
    Recipe(String),
    /// A directory in HF Trainer's layout: `checkpoint-<step>/` with a PEFT adapter each.
    Directory(std::path::PathBuf),
    /// Revisions of a hub adapter repository.
    Revisions(String),
}

/// One checkpoint of a drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftPoint {
    /// Its training step.
    pub step: usize,
    /// Its PEFT adapter; `None` for a [`DriftSource::Recipe`] point (the adapter is inside the
    /// fine-tune's unit, known once it has run).
    pub adapter: Option<Source>,
}

impl Drift {
    /// The unit name of the point at `step` (`<name>@step-<step>`; `@` never occurs in model
    /// names).
    pub fn point_name(&self, step: usize) -> String {
        format!("{}@step-{step}", self.name)
    }
}

impl Study {
    /// The drift named `name`.
    pub fn drift(&self, name: &str) -> Option<&Drift> {
        self.drifts.iter().find(|d| d.name == name)
    }

    /// Every model, family by family, in file order.
    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.families.iter().flat_map(|f| f.models.iter())
    }

    /// The model with this name.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models().find(|m| m.name == name)
    }

    /// Keeps only the comparison `id` and the models it needs (its pairs' models and the
    /// checkpoints those are fine-tuned from).
    pub fn retain_comparison(&mut self, id: &str) -> Result<()> {
        let Some(c) = self.comparisons.iter().find(|c| c.id == id).cloned() else {
            let ids: Vec<&str> = self.comparisons.iter().map(|c| c.id.as_str()).collect();
            return Err(Error::BadInput(format!(
                "{}: no comparison `{id}` (defined: {})",
                self.file.display(),
                ids.join(", ")
            )));
        };
        let mut keep: Vec<String> = Vec::new();
        for p in &c.pairs {
            for n in [&p.baseline, &p.candidate] {
                if !keep.contains(n) {
                    keep.push(n.clone());
                }
                if let Some(ModelSource::FinetuneFrom(from)) = self.model(n).map(|m| &m.source)
                    && !keep.contains(from)
                {
                    keep.push(from.clone());
                }
            }
        }
        for f in &mut self.families {
            f.models.retain(|m| keep.contains(&m.name));
        }
        self.families.retain(|f| !f.models.is_empty());
        self.comparisons = vec![c];
        self.drifts.clear();
        Ok(())
    }

    /// Replaces each hub checkpoint by `dir/<model name>` when that directory exists (a local
    /// mirror of the study's checkpoints); returns the names of the models switched.
    pub fn use_checkpoint_dir(&mut self, dir: &Path) -> Vec<String> {
        let mut switched = Vec::new();
        for f in &mut self.families {
            for m in &mut f.models {
                if let ModelSource::Checkpoint { model, .. } = &mut m.source
                    && matches!(model, Source::Hub { .. })
                    && dir.join(&m.name).is_dir()
                {
                    *model = Source::Local(absolutize(
                        &dir.join(&m.name),
                        &std::env::current_dir().unwrap_or_default(),
                    ));
                    switched.push(m.name.clone());
                }
            }
        }
        switched
    }

    /// The hub sources that the plan's pending units read and that are not in `hub`'s cache,
    /// one line each naming the study key and the repository (what a dry run reports when
    /// `HF_HUB_OFFLINE=1`). Checks the file each source is read from first (a model's
    /// `config.json`, an adapter's `adapter_config.json`, the datasets' data files).
    pub fn missing_from_cache(
        &self,
        hub: &hub_source::Hub,
        plan: &crate::plan::Plan,
    ) -> Vec<String> {
        use crate::plan::Stage;
        let pending = |stage: Stage| {
            plan.pending()
                .filter(move |u| u.stage == stage)
                .map(|u| u.name.as_str())
        };
        let mut wanted: Vec<(String, &Source, &str)> = Vec::new();
        if pending(Stage::Prompts).next().is_some() {
            wanted.push((
                "prompts.rtp".into(),
                &self.prompts.rtp,
                toxprompts::sources::RTP_FILE,
            ));
            wanted.push((
                "prompts.ceb".into(),
                &self.prompts.ceb,
                "data/CEB-Continuation-T/race.json",
            ));
        }
        let scoring =
            pending(Stage::Score).next().is_some() || pending(Stage::DriftScore).next().is_some();
        if scoring {
            wanted.push(("classifier".into(), &self.classifier.source, "config.json"));
        }
        if pending(Stage::Finetune).next().is_some() {
            wanted.push((
                "finetune.data".into(),
                &self.finetune.data,
                lora_train::data::DOLLY_FILE,
            ));
        }
        let generating: Vec<&str> = pending(Stage::Generate)
            .chain(pending(Stage::Finetune))
            .collect();
        for m in self
            .models()
            .filter(|m| generating.contains(&m.name.as_str()))
        {
            if let ModelSource::Checkpoint { model, adapter } = &m.source {
                wanted.push((
                    format!("{}: model `{}`", m.at, m.name),
                    model,
                    "config.json",
                ));
                if let Some(a) = adapter {
                    wanted.push((
                        format!("{}: model `{}`: adapter", m.at, m.name),
                        a,
                        "adapter_config.json",
                    ));
                }
            }
        }
        let mut missing = Vec::new();
        for (what, source, default_file) in wanted {
            if let Source::Hub { repo, file } = source {
                let file = file.as_deref().unwrap_or(default_file);
                if hub.cached(repo, file).is_none() {
                    missing.push(format!(
                        "{what}: {} (revision {}) is not in the cache {} and HF_HUB_OFFLINE is set",
                        repo.id(),
                        repo.revision(),
                        hub.cache_dir().display()
                    ));
                }
            }
        }
        missing
    }

    /// Checks that every local path the study names exists.
    pub fn check_local_paths(&self) -> Result<()> {
        let mut named: Vec<(String, &Source)> = vec![
            ("prompts.rtp".into(), &self.prompts.rtp),
            ("prompts.ceb".into(), &self.prompts.ceb),
            ("classifier".into(), &self.classifier.source),
        ];
        if self
            .models()
            .any(|m| matches!(m.source, ModelSource::FinetuneFrom(_)))
        {
            named.push(("finetune.data".into(), &self.finetune.data));
        }
        let file = self.file.display().to_string();
        let mut at: Vec<&str> = vec![&file; named.len()];
        for m in self.models() {
            if let ModelSource::Checkpoint { model, adapter } = &m.source {
                named.push((format!("model `{}`", m.name), model));
                at.push(&m.at);
                if let Some(a) = adapter {
                    named.push((format!("model `{}`: adapter", m.name), a));
                    at.push(&m.at);
                }
            }
        }
        for ((what, l), at) in named.into_iter().zip(at) {
            if let Source::Local(p) = l
                && !p.exists()
            {
                return Err(Error::BadInput(format!(
                    "{at}: {what}: {} does not exist",
                    p.display()
                )));
            }
        }
        Ok(())
    }
}
