//! `toxdrift finetune`: LoRA fine-tuning with the authors' recipe, saved as a PEFT adapter.

use clap::ValueEnum;
use hub_source::{RepoKind, Source};
use indicatif::{ProgressBar, ProgressStyle};
use lora_train::data::Fields;
use lora_train::finetune::{FinetuneSpec, LoraGiven, finetune};
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
/// Every setting left out takes the authors' recipe (`lora_train::finetune::FinetuneSpec::paper`):
/// r 16, alpha 16, dropout 0, every projection of the model family (Llama-style seven, Phi-3's
/// fused four), one epoch, batch 2 × accumulation 8, AdamW lr 2e-4 with weight decay 0.01, 5
/// warm-up steps then linear decay, clip 1.0, seed 3407, max length 2048, loss on all tokens,
/// the `[INST]` template.
/// Checkpoints go to OUT/checkpoints/; `--resume` continues a killed run exactly.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base model: a directory (HF layout: config.json, safetensors, tokenizer files) or a hub
    /// id `owner/name[@rev]` read through the HF cache.
    #[arg(long)]
    pub model: String,
    /// Dataset: a JSONL file, or a hub dataset `owner/name[@rev][:file]` read through the HF
    /// cache (HF_HUB_OFFLINE=1 never downloads). [default: the paper's,
    /// databricks/databricks-dolly-15k:databricks-dolly-15k.jsonl]
    #[arg(long)]
    pub data: Option<String>,
    /// Output adapter directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Record layout of the dataset. [default: dolly, the paper's]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
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
    /// [default: authors, the paper's]
    #[arg(long)]
    pub template: Option<String>,
    /// Maximum tokens per sequence; longer ones are truncated (and counted).
    /// [default: 2048, the paper's]
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Tokens in the loss: all or response. [default: all, the paper's]
    #[arg(long)]
    pub loss_on: Option<String>,
    /// Use only the first N records. [default: every record]
    #[arg(long)]
    pub limit: Option<usize>,
    /// LoRA rank (with --init-adapter: the adapter's unless given). [default: 16, the paper's]
    #[arg(long, alias = "rank")]
    pub r: Option<usize>,
    /// LoRA alpha (with --init-adapter: the adapter's unless given). [default: 16, the paper's]
    #[arg(long)]
    pub alpha: Option<f64>,
    /// LoRA dropout (with --init-adapter: the adapter's unless given). [default: 0, the paper's]
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Target modules (PEFT names, comma separated). [default: the model family's projections,
    /// the paper's: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj; Phi-3:
    /// qkv_proj,o_proj,gate_up_proj,down_proj; with --init-adapter: the adapter's unless given]
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// rsLoRA scaling (alpha / sqrt(r); with --init-adapter: the adapter's unless given).
    /// [default: off, the paper's]
    #[arg(long)]
    pub rslora: bool,
    /// Start from this PEFT adapter's weights instead of a fresh initialisation. Rank, alpha,
    /// dropout, targets and rsLoRA come from its adapter_config.json unless given; a given one
    /// that disagrees with it is an error naming both values.
    #[arg(long, value_name = "DIR")]
    pub init_adapter: Option<PathBuf>,
    /// Require a bitsandbytes 4-bit base (QLoRA, as the paper's authors trained on Unsloth's
    /// *-bnb-4bit checkpoints). A 4-bit base trains as 4-bit with or without this flag.
    #[arg(long)]
    pub base_4bit: bool,
    /// Peak learning rate. [default: 2e-4, the paper's]
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW weight decay (decoupled). [default: 0.01, the paper's]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// AdamW beta1. [default: 0.9, torch's]
    #[arg(long)]
    pub beta1: Option<f64>,
    /// AdamW beta2. [default: 0.999, torch's]
    #[arg(long)]
    pub beta2: Option<f64>,
    /// AdamW epsilon. [default: 1e-8, torch's]
    #[arg(long)]
    pub eps: Option<f64>,
    /// Learning-rate schedule: linear, cosine, constant (all after linear warm-up).
    /// [default: linear, the paper's]
    #[arg(long)]
    pub schedule: Option<String>,
    /// Warm-up optimizer steps. [default: 5, the paper's]
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Sequences per micro-batch. [default: 2, the paper's]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step. [default: 8, the paper's]
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Gradient clipping (global L2 norm); 0 disables. [default: 1.0, HF Trainer's]
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// Epochs. [default: 1, the paper's]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Seed for initialisation and shuffling. [default: 3407, the paper's]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the dataset order. [default: shuffled each epoch]
    #[arg(long)]
    pub no_shuffle: bool,
    /// Write a checkpoint every N optimizer steps (0: never). [default: 50]
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Checkpoints to keep. [default: 2]
    #[arg(long)]
    pub keep_checkpoints: Option<usize>,
    /// Resume from the newest checkpoint in OUT.
    #[arg(long)]
    pub resume: bool,
    /// Also write the merged model (HF layout) to this directory.
    #[arg(long, value_name = "DIR")]
    pub merged_out: Option<PathBuf>,
    /// Name of the base model in adapter_config.json. [default: --model as given]
    #[arg(long)]
    pub base_model_name: Option<String>,
    /// Base model dtype (LoRA weights are always f32). [default: auto]
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Device: cpu or cuda:N. [default: cpu]
    #[arg(long)]
    pub device: Option<String>,
}

/// The spec of a run: [`FinetuneSpec::paper`], changed only where a flag is given.
fn spec_from(args: Args) -> Result<FinetuneSpec> {
    let hub_err = lora_train::Error::from;
    let model = Source::parse(&args.model, RepoKind::Model).map_err(hub_err)?;
    let data = match &args.data {
        Some(d) => Source::parse(d, RepoKind::Dataset).map_err(hub_err)?,
        None => lora_train::data::dolly(),
    };
    let mut spec = FinetuneSpec::paper(model, data, args.out);
    match args.format {
        Some(Format::Dolly) => spec.fields = Fields::dolly(),
        Some(Format::Alpaca) => spec.fields = Fields::alpaca(),
        None => {}
    }
    if let Some(f) = args.instruction_field {
        spec.fields.instruction = f;
    }
    if let Some(f) = args.context_field {
        spec.fields.context = (!f.is_empty()).then_some(f);
    }
    if let Some(f) = args.response_field {
        spec.fields.response = f;
    }
    if let Some(t) = args.template {
        spec.template = t.parse()?;
    }
    set(&mut spec.max_len, args.max_len);
    if let Some(l) = args.loss_on {
        spec.loss_on = l.parse()?;
    }
    spec.limit = args.limit.or(spec.limit);
    spec.lora_given = LoraGiven {
        r: args.r.is_some(),
        alpha: args.alpha.is_some(),
        dropout: args.dropout.is_some(),
        targets: args.targets.is_some(),
        use_rslora: args.rslora,
    };
    spec.base_4bit |= args.base_4bit;
    let lora = &mut spec.lora;
    set(&mut lora.r, args.r);
    set(&mut lora.alpha, args.alpha);
    set(&mut lora.dropout, args.dropout);
    set(&mut lora.targets, args.targets);
    lora.use_rslora |= args.rslora;
    spec.init_adapter = args.init_adapter.or(spec.init_adapter);
    let train = &mut spec.train;
    set(&mut train.adamw.lr, args.lr);
    set(&mut train.adamw.weight_decay, args.weight_decay);
    set(&mut train.adamw.beta1, args.beta1);
    set(&mut train.adamw.beta2, args.beta2);
    set(&mut train.adamw.eps, args.eps);
    if let Some(s) = args.schedule {
        train.schedule = s.parse()?;
    }
    set(&mut train.warmup_steps, args.warmup_steps);
    set(&mut train.micro_batch, args.batch_size);
    set(&mut train.grad_accum, args.grad_accum);
    set(&mut train.max_grad_norm, args.max_grad_norm);
    set(&mut train.epochs, args.epochs);
    train.max_steps = args.max_steps.or(train.max_steps);
    train.shuffle &= !args.no_shuffle;
    set(&mut train.checkpoint_every, args.checkpoint_every);
    set(&mut train.keep_checkpoints, args.keep_checkpoints);
    if let Some(seed) = args.seed {
        spec.set_seed(seed);
    }
    spec.resume |= args.resume;
    spec.merged_out = args.merged_out.or(spec.merged_out);
    spec.base_model_name = args.base_model_name.or(spec.base_model_name);
    if let Some(d) = args.dtype {
        spec.dtype = match d {
            Dtype::Auto => DTypeChoice::Auto,
            Dtype::F32 => DTypeChoice::F32,
            Dtype::F16 => DTypeChoice::F16,
            Dtype::Bf16 => DTypeChoice::BF16,
        };
    }
    if let Some(d) = args.device {
        spec.device = gen_engine::parse_device(&d).map_err(lora_train::Error::from)?;
    }
    Ok(spec)
}

/// `*field = v` when the flag was given.
fn set<T>(field: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *field = v;
    }
}

/// Runs `toxdrift finetune`.
pub fn run(args: Args) -> Result<()> {
    let spec = spec_from(args)?;
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
        "{} records ({} truncated), {} LoRA modules (r {}, alpha {}{}), {} trainable parameters; \
         adapter written to {}",
        report.records,
        report.truncated,
        report.wrapped_modules,
        report.lora.r,
        report.lora.alpha,
        if report.base_4bit {
            ", over a 4-bit base"
        } else {
            ""
        },
        report.trainable_params,
        spec.out.display()
    );
    if let Some(m) = &spec.merged_out {
        eprintln!("merged model written to {}", m.display());
    }
    Ok(())
}
