//! `toxdrift finetune`: LoRA fine-tuning with the authors' recipe, saved as a PEFT adapter.

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use lora_train::data::Fields;
use lora_train::finetune::{FinetuneSpec, LoraParams, finetune};
use lora_train::optim::{AdamWParams, Schedule};
use lora_train::template::{LossOn, Template};
use lora_train::trainer::TrainParams;
use std::path::PathBuf;
use toxdrift::error::Result;
use toxdrift::gen_engine::{self, DTypeChoice};

/// Dataset record layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Dolly-15k: `instruction`, `context`, `response`.
    Dolly,
    /// Alpaca: `instruction`, `input` (optional), `output`.
    Alpaca,
}

/// Model dtypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// f32 on the CPU, the checkpoint's dtype on a GPU.
    Auto,
    /// 32-bit float (the reference form).
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

/// Fine-tune a model with LoRA on an instruction dataset (Dolly-15k by default) and save a PEFT
/// adapter (`adapter_config.json` + `adapter_model.safetensors`) that Python's PEFT loads.
///
/// Defaults are the authors' recipe: r 16, alpha 16, dropout 0, every projection of the model
/// family (Llama-style seven, Phi-3's fused four), one epoch, batch 2 × accumulation 8, AdamW
/// lr 2e-4 with weight decay 0.01, 5 warm-up steps then linear decay, clip 1.0, seed 3407, max
/// length 2048, loss on all tokens, the `[INST]` template.
/// Checkpoints go to OUT/checkpoints/; `--resume` continues a killed run exactly.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base model: a directory (HF layout: config.json, safetensors, tokenizer files) or a hub
    /// id `owner/name[@rev]` read through the HF cache.
    #[arg(long)]
    pub model: String,
    /// Dataset: a JSONL file, or a hub dataset `owner/name[:file]` read through the HF cache
    /// (HF_HUB_OFFLINE=1 never downloads).
    #[arg(long, default_value = "databricks/databricks-dolly-15k")]
    pub data: String,
    /// Output adapter directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Record layout of the dataset.
    #[arg(long, value_enum, default_value_t = Format::Dolly)]
    pub format: Format,
    /// Override the instruction field name.
    #[arg(long)]
    pub instruction_field: Option<String>,
    /// Override the context field name ("" for none).
    #[arg(long)]
    pub context_field: Option<String>,
    /// Override the response field name.
    #[arg(long)]
    pub response_field: Option<String>,
    /// Prompt template: authors (`<s>[INST] ... [/INST] ...`), alpaca, chat (the model's own).
    #[arg(long, default_value = "authors")]
    pub template: String,
    /// Maximum tokens per sequence; longer ones are truncated (and counted).
    #[arg(long, default_value_t = 2048)]
    pub max_len: usize,
    /// Tokens in the loss: all (the authors) or response.
    #[arg(long, default_value = "all")]
    pub loss_on: String,
    /// Use only the first N records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub r: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Target modules (PEFT names, comma separated). Default: the model family's projections
    /// (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj; Phi-3:
    /// qkv_proj,o_proj,gate_up_proj,down_proj).
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// rsLoRA scaling (alpha / sqrt(r)).
    #[arg(long)]
    pub rslora: bool,
    /// Start from this PEFT adapter's weights instead of a fresh initialisation.
    #[arg(long, value_name = "DIR")]
    pub init_adapter: Option<PathBuf>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// AdamW weight decay (decoupled).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// AdamW beta1.
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// AdamW beta2.
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// AdamW epsilon.
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f64,
    /// Learning-rate schedule: linear, cosine, constant (all after linear warm-up).
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// Warm-up optimizer steps.
    #[arg(long, default_value_t = 5)]
    pub warmup_steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 2)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub grad_accum: usize,
    /// Gradient clipping (global L2 norm); 0 disables.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 3407)]
    pub seed: u64,
    /// Keep the dataset order.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Write a checkpoint every N optimizer steps (0: never).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Resume from the newest checkpoint in OUT.
    #[arg(long)]
    pub resume: bool,
    /// Also write the merged model (HF layout) to this directory.
    #[arg(long, value_name = "DIR")]
    pub merged_out: Option<PathBuf>,
    /// Name of the base model in adapter_config.json (default: --model as given).
    #[arg(long)]
    pub base_model_name: Option<String>,
    /// Base model dtype (LoRA weights are always f32).
    #[arg(long, value_enum, default_value_t = Dtype::Auto)]
    pub dtype: Dtype,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The LoRA targets of the family of `model` (a directory or a hub id, resolved through the HF
/// cache as the fine-tune itself will).
fn family_targets(model: &str) -> Result<Vec<String>> {
    let source = hub_source::Source::parse(model, hub_source::RepoKind::Model)
        .map_err(gen_engine::Error::from)?;
    let dir = gen_engine::checkpoint_dir(&source, &hub_source::Hub::from_env())?;
    Ok(gen_engine::models::default_lora_targets(&dir)?)
}

/// Runs `toxdrift finetune`.
pub fn run(args: Args) -> Result<()> {
    let mut fields = match args.format {
        Format::Dolly => Fields::dolly(),
        Format::Alpaca => Fields::alpaca(),
    };
    if let Some(f) = args.instruction_field {
        fields.instruction = f;
    }
    if let Some(f) = args.context_field {
        fields.context = (!f.is_empty()).then_some(f);
    }
    if let Some(f) = args.response_field {
        fields.response = f;
    }
    let template: Template = args.template.parse()?;
    let loss_on: LossOn = args.loss_on.parse()?;
    let schedule: Schedule = args.schedule.parse()?;
    let targets = match args.targets {
        Some(t) => t,
        None => family_targets(&args.model)?,
    };
    let spec = FinetuneSpec {
        model: args.model.clone(),
        base_model_name: args.base_model_name,
        data: args.data,
        fields,
        template,
        max_len: args.max_len,
        loss_on,
        limit: args.limit,
        lora: LoraParams {
            r: args.r,
            alpha: args.alpha,
            dropout: args.dropout,
            targets,
            use_rslora: args.rslora,
            init_seed: args.seed,
        },
        init_adapter: args.init_adapter,
        train: TrainParams {
            adamw: AdamWParams {
                lr: args.lr,
                beta1: args.beta1,
                beta2: args.beta2,
                eps: args.eps,
                weight_decay: args.weight_decay,
            },
            schedule,
            warmup_steps: args.warmup_steps,
            micro_batch: args.batch_size,
            grad_accum: args.grad_accum,
            max_grad_norm: args.max_grad_norm,
            epochs: args.epochs,
            max_steps: args.max_steps,
            shuffle: !args.no_shuffle,
            seed: args.seed,
            checkpoint_every: args.checkpoint_every,
            keep_checkpoints: args.keep_checkpoints,
        },
        dtype: match args.dtype {
            Dtype::Auto => DTypeChoice::Auto,
            Dtype::F32 => DTypeChoice::F32,
            Dtype::F16 => DTypeChoice::F16,
            Dtype::Bf16 => DTypeChoice::BF16,
        },
        device: gen_engine::parse_device(&args.device).map_err(lora_train::Error::from)?,
        out: args.out.clone(),
        merged_out: args.merged_out.clone(),
        resume: args.resume,
    };
    let bar = ProgressBar::hidden();
    let mut on_start = |steps: usize, truncated: usize| {
        if truncated > 0 {
            eprintln!(
                "{truncated} sequences longer than --max-len {} were truncated",
                spec.max_len
            );
        }
        bar.set_length(steps as u64);
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    };
    let mut on_step = |s: &lora_train::trainer::StepLog| {
        bar.set_position(s.step as u64);
        bar.set_message(format!(
            "loss {:.4}  lr {:.3e}  |g| {:.3}",
            s.loss, s.lr, s.grad_norm
        ));
    };
    let report = finetune(&spec, &mut on_start, &mut on_step)?;
    bar.finish();
    eprintln!(
        "{} records ({} truncated), {} LoRA modules, {} trainable parameters; adapter written to {}",
        report.records,
        report.truncated,
        report.wrapped_modules,
        report.trainable_params,
        args.out.display()
    );
    if let Some(m) = &args.merged_out {
        eprintln!("merged model written to {}", m.display());
    }
    Ok(())
}
