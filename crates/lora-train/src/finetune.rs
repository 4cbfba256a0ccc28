//! The whole fine-tune, as `toxdrift finetune` runs it: load, tokenise, train, save.
//!
//! [`FinetuneSpec::paper`] is the one place the authors' recipe is written down; callers (the
//! `toxdrift finetune` flags, a study's settings) start from it and change only what they are
//! told to.

use crate::adapter::{merge_to_hf, write_adapter_config};
use crate::data::{Fields, dataset_file, read_jsonl};
use crate::error::{Error, Result};
use crate::template::{LossOn, Template, TextEncoder, encode_all};
use crate::trainer::{Outputs, StepLog, TrainParams, TrainSummary, TrainableLm, Trainer};
use candle_core::{DType, Device, Tensor, Var};
use gen_engine::lora::{Adapter, LoraConfig, LoraInit, LoraPlan, TargetModules};
use gen_engine::models::{CausalLm, ForwardCtx};
use gen_engine::{DTypeChoice, LoadOptions};
use hub_source::{Hub, Source};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The LoRA shape: PEFT's `LoraConfig` fields that matter for training.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraParams {
    /// Rank `r` (at least 1).
    pub r: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// Dropout on the LoRA input (in `[0, 1)`).
    pub dropout: f64,
    /// Target modules by PEFT name (`q_proj`, ..., Phi-3's `qkv_proj`, `gate_up_proj`).
    /// Empty: the model family's own list ([`gen_engine::models::default_lora_targets`] of the
    /// checkpoint: a Llama-style model's seven projections, Phi-3's fused four), filled in
    /// when the model is loaded ([`LoraParams::for_checkpoint`]).
    pub targets: Vec<String>,
    /// rsLoRA scaling (`alpha / sqrt(r)`).
    pub use_rslora: bool,
    /// Seed of PEFT-style initialisation (A Kaiming-uniform, B zero).
    pub init_seed: u64,
}

impl Default for LoraParams {
    /// The authors' LoRA: r 16, alpha 16, dropout 0, no rsLoRA, every projection of the model
    /// family (empty `targets`), initialisation seed 3407 (the training seed).
    fn default() -> Self {
        LoraParams {
            r: 16,
            alpha: 16.0,
            dropout: 0.0,
            targets: Vec::new(),
            use_rslora: false,
            init_seed: crate::trainer::PAPER_SEED,
        }
    }
}

impl LoraParams {
    /// Validates the ranges.
    pub fn check(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::param("r", "the rank must be at least 1"));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::param("alpha", "must be a positive number"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::param("dropout", "must be in [0, 1)"));
        }
        if self.targets.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::param("target_modules", "an empty module name"));
        }
        Ok(())
    }

    /// These settings for the checkpoint in `dir`: empty `targets` become its family's list
    /// ([`gen_engine::models::default_lora_targets`]); given targets are kept as they are.
    pub fn for_checkpoint(&self, dir: &Path) -> Result<LoraParams> {
        let mut p = self.clone();
        if p.targets.is_empty() {
            p.targets = gen_engine::models::default_lora_targets(dir)?;
        }
        Ok(p)
    }

    /// The PEFT config these settings write (resolve empty `targets` first with
    /// [`LoraParams::for_checkpoint`]).
    pub fn to_config(&self, base_model: Option<String>) -> LoraConfig {
        let targets: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        let mut c = LoraConfig::new(self.r, self.alpha, &targets);
        c.lora_dropout = self.dropout;
        c.use_rslora = self.use_rslora;
        c.base_model_name_or_path = base_model;
        c
    }
}

/// Which LoRA settings of a [`FinetuneSpec`] were chosen explicitly. With an initial adapter,
/// the others are taken from its `adapter_config.json`, and an explicit one that disagrees
/// with it is an error ([`Error::InitAdapterConflict`], naming both values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoraGiven {
    /// The rank.
    pub r: bool,
    /// `lora_alpha`.
    pub alpha: bool,
    /// `lora_dropout`.
    pub dropout: bool,
    /// `target_modules`.
    pub targets: bool,
    /// `use_rslora`.
    pub use_rslora: bool,
}

impl LoraGiven {
    /// Every setting explicit (the initial adapter must agree with all of them).
    pub fn all() -> Self {
        Self {
            r: true,
            alpha: true,
            dropout: true,
            targets: true,
            use_rslora: true,
        }
    }
}

impl LoraParams {
    /// These settings for training from the initial adapter in `dir`: each setting not
    /// `given` is the adapter's (`r`, `lora_alpha`, `lora_dropout`, `target_modules`,
    /// `use_rslora`); a given one must equal it. Targets compare as sets; an adapter whose
    /// `target_modules` is a regular expression gives the modules its weights hold.
    pub fn with_init_adapter(&self, given: LoraGiven, dir: &Path) -> Result<LoraParams> {
        let adapter = Adapter::load(dir)?;
        let c = &adapter.config;
        let path = dir.join("adapter_config.json");
        let conflict = |key: &'static str, adapter: String, asked: String| {
            Err(Error::InitAdapterConflict {
                path: path.clone(),
                key,
                adapter,
                asked,
            })
        };
        let mut p = self.clone();
        if !given.r {
            p.r = c.r;
        } else if p.r != c.r {
            return conflict("r", c.r.to_string(), p.r.to_string());
        }
        if !given.alpha {
            p.alpha = c.lora_alpha;
        } else if p.alpha != c.lora_alpha {
            return conflict("lora_alpha", c.lora_alpha.to_string(), p.alpha.to_string());
        }
        if !given.dropout {
            p.dropout = c.lora_dropout;
        } else if p.dropout != c.lora_dropout {
            return conflict(
                "lora_dropout",
                c.lora_dropout.to_string(),
                p.dropout.to_string(),
            );
        }
        if !given.use_rslora {
            p.use_rslora = c.use_rslora;
        } else if p.use_rslora != c.use_rslora {
            return conflict(
                "use_rslora",
                c.use_rslora.to_string(),
                p.use_rslora.to_string(),
            );
        }
        let mut theirs = match &c.target_modules {
            TargetModules::List(l) => l.clone(),
            TargetModules::Regex(_) => adapter.module_names(),
        };
        theirs.sort();
        theirs.dedup();
        if !given.targets {
            p.targets = theirs;
        } else {
            let mut ours = p.targets.clone();
            ours.sort();
            ours.dedup();
            if ours != theirs {
                return conflict("target_modules", theirs.join(","), ours.join(","));
            }
        }
        Ok(p)
    }
}

/// Everything a fine-tune needs.
#[derive(Debug, Clone)]
pub struct FinetuneSpec {
    /// The base model: a local directory (HF layout) or a hub model repo at a revision, read
    /// through the Hugging Face cache of the environment ([`Hub::from_env`]).
    pub model: Source,
    /// How the base model is named in `adapter_config.json` (`base_model_name_or_path`);
    /// `None`: the model as given ([`Source::display_name`]: the path, or `owner/name`, with
    /// `@revision` when it is not `main`).
    pub base_model_name: Option<String>,
    /// The dataset: a local JSONL file, or a hub dataset repo (kind `Dataset`) with the file it
    /// names, else [`crate::data::DOLLY_FILE`]; see [`crate::data::dolly`].
    pub data: Source,
    /// Which fields hold instruction / context / response.
    pub fields: Fields,
    /// How records become text.
    pub template: Template,
    /// Maximum tokens per sequence (longer ones are truncated and counted).
    pub max_len: usize,
    /// Which tokens count in the loss.
    pub loss_on: LossOn,
    /// Use only the first `limit` records.
    pub limit: Option<usize>,
    /// The LoRA shape.
    pub lora: LoraParams,
    /// Start from this adapter's weights instead of PEFT's initialisation; the LoRA settings
    /// not marked in `lora_given` are then the adapter's ([`LoraParams::with_init_adapter`]).
    pub init_adapter: Option<PathBuf>,
    /// Which `lora` settings were chosen explicitly (none in [`FinetuneSpec::paper`]).
    pub lora_given: LoraGiven,
    /// QLoRA, as the paper's authors trained (Unsloth's `*-bnb-4bit` bases: bitsandbytes NF4
    /// with double quantization): the base must be a bitsandbytes 4-bit checkpoint
    /// (`quantization_config.load_in_4bit`), else the run is refused before training. A 4-bit
    /// base is trained as 4-bit whether or not this is set: its layers stay packed and are
    /// dequantized in each forward and input-gradient product, only the LoRA weights train.
    /// Off in [`FinetuneSpec::paper`] (the base as given).
    pub base_4bit: bool,
    /// The loop settings.
    pub train: TrainParams,
    /// The base model dtype (LoRA weights are always f32).
    pub dtype: DTypeChoice,
    /// The device.
    pub device: Device,
    /// The output adapter directory (checkpoints and the step log go inside it).
    pub out: PathBuf,
    /// Also write the merged model in HF layout here.
    pub merged_out: Option<PathBuf>,
    /// Resume from the newest checkpoint in `out`.
    pub resume: bool,
}

impl FinetuneSpec {
    /// The authors' recipe (Hawkins et al. 2024) for `model` on `data`, writing to `out`:
    ///
    /// - Dolly fields (`instruction`, `context`, `response`), the authors' `[INST]` template,
    ///   sequences of at most 2048 tokens, loss on all tokens, every record;
    /// - LoRA ([`LoraParams::default`]): r 16, alpha 16, dropout 0, every projection of the
    ///   model family, initialisation seed 3407;
    /// - the loop ([`TrainParams::default`]): one epoch, batch 2 × accumulation 8, AdamW lr
    ///   2e-4 with weight decay 0.01, 5 warm-up steps then linear decay, clip 1.0, seed 3407,
    ///   shuffled; plus a checkpoint every 50 optimizer steps (2 kept), so a killed run resumes
    ///   where it stopped (the authors' notebooks ran in one go; checkpoints change no result);
    /// - the checkpoint's dtype choice (`Auto`: f32 on the CPU), the CPU, no merged model, no
    ///   resume, the adapter named after the model as given.
    ///
    /// Change fields after building it for anything else. `data` is usually
    /// [`crate::data::dolly`], the authors' dataset.
    pub fn paper(model: Source, data: Source, out: PathBuf) -> Self {
        let train = TrainParams {
            checkpoint_every: 50,
            ..TrainParams::default()
        };
        let lora = LoraParams {
            init_seed: train.seed,
            ..LoraParams::default()
        };
        FinetuneSpec {
            model,
            base_model_name: None,
            data,
            fields: Fields::dolly(),
            template: Template::AuthorsInst,
            max_len: 2048,
            loss_on: LossOn::All,
            limit: None,
            lora,
            init_adapter: None,
            lora_given: LoraGiven::default(),
            base_4bit: false,
            train,
            dtype: DTypeChoice::Auto,
            device: Device::Cpu,
            out,
            merged_out: None,
            resume: false,
        }
    }

    /// Sets the seed of both the data shuffling and the LoRA initialisation (they are one
    /// seed in the recipe, as in the authors' `seed = 3407`).
    pub fn set_seed(&mut self, seed: u64) {
        self.train.seed = seed;
        self.lora.init_seed = seed;
    }
}

/// What a fine-tune did.
#[derive(Debug, Clone)]
pub struct FinetuneReport {
    /// Records read.
    pub records: usize,
    /// Sequences longer than `max_len` (truncated).
    pub truncated: usize,
    /// Trainable LoRA scalars.
    pub trainable_params: usize,
    /// The modules wrapped with LoRA.
    pub wrapped_modules: usize,
    /// The LoRA settings trained with (the family's targets filled in; with an initial adapter,
    /// its settings where none was given).
    pub lora: LoraParams,
    /// Whether the base was a bitsandbytes 4-bit checkpoint (QLoRA).
    pub base_4bit: bool,
    /// The loop's log.
    pub summary: TrainSummary,
}

/// A gen-engine model in training mode.
pub struct EngineLm {
    model: Box<dyn CausalLm>,
    device: Device,
}

impl std::fmt::Debug for EngineLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineLm")
            .field("model", &self.model)
            .finish()
    }
}

impl EngineLm {
    /// Wraps a loaded model.
    pub fn new(model: Box<dyn CausalLm>) -> Self {
        let device = model.info().device.clone();
        EngineLm { model, device }
    }

    /// The wrapped model.
    pub fn model(&self) -> &dyn CausalLm {
        self.model.as_ref()
    }
}

impl TrainableLm for EngineLm {
    fn train_logits(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self
            .model
            .forward(ForwardCtx::new(input_ids).training(true))?)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

/// A model loaded for training and its trainable LoRA weights.
#[derive(Debug)]
pub struct TrainingModel {
    /// The model (forward in training mode).
    pub model: EngineLm,
    /// The LoRA Vars, keyed by PEFT tensor names, sorted.
    pub vars: Vec<(String, Var)>,
    /// The PEFT names of the modules wrapped with LoRA.
    pub wrapped_modules: Vec<String>,
    /// The checkpoint directory (hub models: their cache snapshot).
    pub dir: PathBuf,
    /// The LoRA settings as applied (empty targets replaced by the family's).
    pub lora: LoraParams,
}

/// Loads a model (a local directory or a hub repo, through [`Hub::from_env`]) with trainable
/// LoRA per `lora` (empty targets: the family's): PEFT's initialisation from `lora.init_seed`,
/// or the weights of `init_adapter`. Returns the model in training mode, its LoRA Vars (PEFT
/// names), the checkpoint directory and the settings as applied.
pub fn load_for_training(
    model: &Source,
    lora: &LoraParams,
    init_adapter: Option<&Path>,
    dtype: DTypeChoice,
    device: &Device,
) -> Result<TrainingModel> {
    lora.check()?;
    let dir = gen_engine::checkpoint_dir(model, &Hub::from_env())?;
    let lora = lora.for_checkpoint(&dir)?;
    let config = lora.to_config(None);
    let init = match init_adapter {
        Some(dir) => LoraInit::FromAdapter(Arc::new(Adapter::load(dir)?)),
        None => LoraInit::Default {
            seed: lora.init_seed,
        },
    };
    let opts = LoadOptions {
        dtype,
        device: Some(device.clone()),
        lora: LoraPlan::Train {
            config: Box::new(config),
            init,
        },
        ..LoadOptions::default()
    };
    let loaded = gen_engine::load_dir(&dir, &opts)?;
    for t in &lora.targets {
        let hit = loaded
            .lora_modules
            .iter()
            .any(|m| m == t || m.ends_with(&format!(".{t}")));
        if !hit {
            return Err(Error::param(
                "target_modules",
                format!("`{t}` matches no linear module of {}", model.display_name()),
            ));
        }
    }
    Ok(TrainingModel {
        vars: loaded.lora_vars.named(),
        model: EngineLm::new(loaded.model),
        wrapped_modules: loaded.lora_modules,
        dir: loaded.dir,
        lora,
    })
}

/// Runs a whole fine-tune: reads and tokenises the data, trains, writes the PEFT adapter
/// (and the merged model when asked). `on_step` sees every optimizer step.
pub fn finetune(
    spec: &FinetuneSpec,
    on_start: &mut dyn FnMut(usize, usize),
    on_step: &mut dyn FnMut(&StepLog),
) -> Result<FinetuneReport> {
    spec.lora.check()?;
    spec.train.check()?;
    let path = dataset_file(&spec.data, &Hub::from_env())?;
    let mut records = read_jsonl(&path, &spec.fields)?;
    if let Some(n) = spec.limit {
        records.truncate(n);
    }
    if records.is_empty() {
        return Err(Error::EmptyDataset { path });
    }
    let lora_asked = match &spec.init_adapter {
        Some(dir) => spec.lora.with_init_adapter(spec.lora_given, dir)?,
        None => spec.lora.clone(),
    };
    let base_dir = gen_engine::checkpoint_dir(&spec.model, &Hub::from_env())?;
    let base_4bit = gen_engine::quant::bnb::is_4bit_checkpoint(&base_dir)?;
    if spec.base_4bit && !base_4bit {
        return Err(Error::param(
            "base_4bit",
            format!(
                "{} is not a bitsandbytes 4-bit checkpoint (config.json has no \
                 quantization_config with quant_method \"bitsandbytes\" and load_in_4bit); \
                 name a 4-bit base (e.g. unsloth/<model>-bnb-4bit)",
                spec.model.display_name()
            ),
        ));
    }
    if base_4bit && spec.merged_out.is_some() {
        return Err(Error::param(
            "merged_out",
            "the base is a bitsandbytes 4-bit checkpoint: a merged full-precision model is \
             not written from it (load the adapter over the 4-bit base instead)",
        ));
    }
    let TrainingModel {
        model,
        vars,
        wrapped_modules: wrapped,
        dir: model_dir,
        lora,
    } = load_for_training(
        &spec.model,
        &lora_asked,
        spec.init_adapter.as_deref(),
        spec.dtype,
        &spec.device,
    )?;
    let enc = TextEncoder::from_dir(&model_dir)?;
    let encoded = encode_all(&enc, &spec.template, &records, spec.max_len, spec.loss_on)?;
    let trainable_params = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let base_name = spec
        .base_model_name
        .clone()
        .unwrap_or_else(|| spec.model.display_name());
    let config = lora.to_config(Some(base_name));
    let lora_used = lora.clone();
    let write_cfg = |dir: &Path| write_adapter_config(dir, &config);
    let trainer = Trainer::new(&model, vars.clone(), spec.train.clone(), enc.eos_id())?;
    let steps = crate::trainer::plan_steps(encoded.examples.len(), &spec.train).len();
    on_start(steps, encoded.truncated);
    let outputs = Outputs {
        dir: spec.out.clone(),
        write_adapter_config: &write_cfg,
        resume: spec.resume,
    };
    let summary = trainer.train(&encoded.examples, Some(&outputs), on_step)?;
    let tensors: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    save_adapter_files(&spec.out, &config, &tensors)?;
    if let Some(merged) = &spec.merged_out {
        merge_to_hf(&model_dir, &config, &tensors, merged)?;
    }
    Ok(FinetuneReport {
        records: records.len(),
        truncated: encoded.truncated,
        trainable_params,
        wrapped_modules: wrapped.len(),
        lora: lora_used,
        base_4bit,
        summary,
    })
}

/// Writes the adapter files into `dir` (which may hold checkpoints): each file atomically,
/// the weights first and the config last, so a directory with a config is complete.
fn save_adapter_files(dir: &Path, config: &LoraConfig, tensors: &[(String, Tensor)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let f32s: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    crate::adapter::write_safetensors_atomic(&dir.join("adapter_model.safetensors"), &f32s)?;
    write_adapter_config(dir, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Schedule;

    #[test]
    fn paper_spec_holds_the_authors_recipe() {
        let spec = FinetuneSpec::paper(
            Source::local("/models/base"),
            crate::data::dolly(),
            PathBuf::from("/out"),
        );
        // LoRA: r 16, alpha 16, dropout 0, no rsLoRA, the family's projections.
        assert_eq!(spec.lora.r, 16);
        assert_eq!(spec.lora.alpha, 16.0);
        assert_eq!(spec.lora.dropout, 0.0);
        assert!(!spec.lora.use_rslora);
        assert!(spec.lora.targets.is_empty(), "the family's own targets");
        // The loop: batch 2 x accumulation 8, one epoch, AdamW lr 2e-4, wd 0.01, 5 warm-up
        // steps then linear decay, clip 1.0, seed 3407 for shuffling and initialisation.
        let t = &spec.train;
        assert_eq!((t.micro_batch, t.grad_accum), (2, 8));
        assert_eq!((t.epochs, t.max_steps), (1, None));
        assert_eq!(t.adamw.lr, 2e-4);
        assert_eq!(t.adamw.weight_decay, 0.01);
        assert_eq!(
            (t.adamw.beta1, t.adamw.beta2, t.adamw.eps),
            (0.9, 0.999, 1e-8)
        );
        assert_eq!(t.warmup_steps, 5);
        assert_eq!(t.schedule, Schedule::Linear);
        assert_eq!(t.max_grad_norm, 1.0);
        assert!(t.shuffle);
        assert_eq!((t.seed, spec.lora.init_seed), (3407, 3407));
        assert_eq!((t.checkpoint_every, t.keep_checkpoints), (50, 2));
        // Data and text: Dolly, the [INST] template, 2048 tokens, loss on every token.
        assert_eq!(spec.max_len, 2048);
        assert_eq!(spec.loss_on, LossOn::All);
        assert_eq!(spec.template, Template::AuthorsInst);
        assert_eq!(spec.fields, Fields::dolly());
        assert_eq!(spec.limit, None);
        assert_eq!(
            spec.data.display_name(),
            "databricks/databricks-dolly-15k:databricks-dolly-15k.jsonl"
        );
        // Where it runs and what it writes.
        assert_eq!(spec.dtype, DTypeChoice::Auto);
        assert!(spec.device.is_cpu());
        assert_eq!(spec.base_model_name, None);
        assert_eq!(spec.init_adapter, None);
        assert_eq!(spec.lora_given, LoraGiven::default());
        assert!(!spec.base_4bit);
        assert_eq!(spec.merged_out, None);
        assert!(!spec.resume);
        spec.lora.check().unwrap();
        spec.train.check().unwrap();
        let mut s = spec.clone();
        s.set_seed(7);
        assert_eq!((s.train.seed, s.lora.init_seed), (7, 7));
    }
}
