//! The whole fine-tune, as `toxdrift finetune` runs it: load, tokenise, train, save.

use crate::adapter::{merge_to_hf, write_adapter_config};
use crate::data::{Fields, read_jsonl, resolve_dataset};
use crate::error::{Error, Result};
use crate::template::{LossOn, Template, TextEncoder, encode_all};
use crate::trainer::{Outputs, StepLog, TrainParams, TrainSummary, TrainableLm, Trainer};
use candle_core::{DType, Device, Tensor, Var};
use gen_engine::lora::{Adapter, LoraConfig, LoraInit, LoraPlan};
use gen_engine::models::{CausalLm, ForwardCtx};
use gen_engine::{DTypeChoice, LoadOptions};
use hub_source::{RepoKind, Source};
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
    /// Target modules by PEFT name (`q_proj`, ..., Phi-3's `qkv_proj`, `gate_up_proj`); each
    /// family's own list is [`gen_engine::models::lora_targets`] /
    /// [`gen_engine::models::default_lora_targets`].
    pub targets: Vec<String>,
    /// rsLoRA scaling (`alpha / sqrt(r)`).
    pub use_rslora: bool,
    /// Seed of PEFT-style initialisation (A Kaiming-uniform, B zero).
    pub init_seed: u64,
}

impl Default for LoraParams {
    /// The authors' LoRA: r 16, alpha 16, dropout 0, the seven projections of a Llama-style
    /// model (gen-engine's list; for another family take
    /// [`gen_engine::models::default_lora_targets`] of its checkpoint).
    fn default() -> Self {
        LoraParams {
            r: 16,
            alpha: 16.0,
            dropout: 0.0,
            targets: gen_engine::models::lora_targets("LlamaForCausalLM")
                .unwrap_or_default()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            use_rslora: false,
            init_seed: 3407,
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
        if self.targets.is_empty() {
            return Err(Error::param("target_modules", "give at least one module"));
        }
        Ok(())
    }

    /// The PEFT config these settings write.
    pub fn to_config(&self, base_model: Option<String>) -> LoraConfig {
        let targets: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        let mut c = LoraConfig::new(self.r, self.alpha, &targets);
        c.lora_dropout = self.dropout;
        c.use_rslora = self.use_rslora;
        c.base_model_name_or_path = base_model;
        c
    }
}

/// Everything a fine-tune needs.
#[derive(Debug, Clone)]
pub struct FinetuneSpec {
    /// The base model: a local directory (HF layout) or a hub id `owner/name[@rev]`.
    pub model: String,
    /// How the base model is named in `adapter_config.json` (default: `model`).
    pub base_model_name: Option<String>,
    /// The dataset: a local JSONL file or a hub dataset (`owner/name[:file]`).
    pub data: String,
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
    /// Start from this adapter's weights instead of PEFT's initialisation.
    pub init_adapter: Option<PathBuf>,
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
}

/// Loads a model (a local directory or a hub id, as `gen_engine::load`) with trainable LoRA
/// per `lora`: PEFT's initialisation from `lora.init_seed`, or the weights of `init_adapter`.
/// Returns the model in training mode, its LoRA Vars (PEFT names) and the checkpoint directory.
pub fn load_for_training(
    model: &str,
    lora: &LoraParams,
    init_adapter: Option<&Path>,
    dtype: DTypeChoice,
    device: &Device,
) -> Result<TrainingModel> {
    lora.check()?;
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
        hub: None,
    };
    let loaded = gen_engine::load(&Source::parse(model, RepoKind::Model)?, &opts)?;
    for t in &lora.targets {
        let hit = loaded
            .lora_modules
            .iter()
            .any(|m| m == t || m.ends_with(&format!(".{t}")));
        if !hit {
            return Err(Error::param(
                "target_modules",
                format!("`{t}` matches no linear module of {model}"),
            ));
        }
    }
    Ok(TrainingModel {
        vars: loaded.lora_vars.named(),
        model: EngineLm::new(loaded.model),
        wrapped_modules: loaded.lora_modules,
        dir: loaded.dir,
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
    let path = resolve_dataset(&spec.data)?;
    let mut records = read_jsonl(&path, &spec.fields)?;
    if let Some(n) = spec.limit {
        records.truncate(n);
    }
    if records.is_empty() {
        return Err(Error::EmptyDataset { path });
    }
    let TrainingModel {
        model,
        vars,
        wrapped_modules: wrapped,
        dir: model_dir,
    } = load_for_training(
        &spec.model,
        &spec.lora,
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
        .unwrap_or_else(|| spec.model.clone());
    let config = spec.lora.to_config(Some(base_name));
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
