//! The stages that run neural networks: generate ([`gen_engine`]), score ([`hate_classifier`])
//! and fine-tune ([`lora_train`]).
//!
//! Generation and scoring append to their JSONL output in chunks that follow the prompt set's
//! order, one append + fsync per chunk; a resumed unit skips the ids already written, so the
//! file always lists the prompts in the prompt set's order, each once. The fine-tune resumes
//! from its last checkpoint inside the unit directory.

use crate::error::{Error, Result};
use crate::io::ResumableJsonl;
use crate::plan::Unit;
use crate::progress::{progress_bar, test_stall};
use crate::stages::{ADAPTER_DIR, GENERATIONS_FILE, SCORES_FILE, read_prompt_set};
use crate::study::{Dtype, Location, Model, ModelSource, Study, Template, TooLong};
use hub_source::{Hub, HubRepo, RepoKind, Source};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub use crate::records::{GenerationLine, GenerationRecord, ScoredRecord};

/// Prompts per append (and per fsync) in generation: a few batches.
const GEN_CHUNK_BATCHES: usize = 4;
/// Texts per append in scoring: a few batches.
const SCORE_CHUNK_BATCHES: usize = 8;

fn gen_dtype(d: Dtype) -> gen_engine::DTypeChoice {
    match d {
        Dtype::Auto => gen_engine::DTypeChoice::Auto,
        Dtype::F32 => gen_engine::DTypeChoice::F32,
        Dtype::F16 => gen_engine::DTypeChoice::F16,
        Dtype::Bf16 => gen_engine::DTypeChoice::BF16,
    }
}

/// The [`hub_source::Source`] of a study location (a hub repo of `kind`).
fn engine_source(l: &Location, kind: RepoKind) -> Result<Source> {
    Ok(match l {
        Location::Local(p) => Source::Local(p.clone()),
        Location::Hub { repo, revision } => Source::hub(
            HubRepo::new(repo, kind)
                .and_then(|r| r.with_revision(revision))
                .map_err(toxprompts::Error::from)?,
        ),
    })
}

/// A local directory for a PEFT adapter: as given, or its files fetched from the hub cache.
fn adapter_dir(l: &Location) -> Result<PathBuf> {
    let snap = match engine_source(l, RepoKind::Model)? {
        Source::Local(p) => return Ok(p),
        hub => hub.snapshot(&Hub::from_env()),
    };
    snap.file("adapter_model.safetensors")
        .map_err(toxprompts::Error::from)?;
    let cfg = snap
        .file("adapter_config.json")
        .map_err(toxprompts::Error::from)?;
    Ok(cfg.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// The checkpoint (and adapter) a model of the study generates with; `trained` is the adapter
/// this study trained for a `finetune_from` model.
fn weights_of(
    study: &Study,
    model: &Model,
    trained: Option<&Path>,
) -> Result<(Location, Option<PathBuf>)> {
    match &model.source {
        ModelSource::Checkpoint { model, adapter } => {
            let a = match adapter {
                Some(a) => Some(adapter_dir(a)?),
                None => None,
            };
            Ok((model.clone(), a))
        }
        ModelSource::FinetuneFrom(from) => {
            let base = study
                .model(from)
                .ok_or_else(|| Error::BadInput(format!("`{from}` is not a model of the study")))?;
            let ModelSource::Checkpoint { model: base, .. } = &base.source else {
                return Err(Error::BadInput(format!("`{from}` is not a checkpoint")));
            };
            let trained = trained.ok_or_else(|| {
                Error::BadInput(format!("`{}`: its trained adapter is missing", model.name))
            })?;
            Ok((base.clone(), Some(trained.to_path_buf())))
        }
    }
}

/// The generate unit: greedy continuations of every prompt, appended to `generations.jsonl`.
pub fn run_generate(
    study: &Study,
    unit: &Unit,
    model: &Model,
    prompts_unit: &Unit,
    trained_adapter: Option<&Path>,
    progress: bool,
) -> Result<Value> {
    let prompts = read_prompt_set(prompts_unit)?;
    let path = unit.dir.join(GENERATIONS_FILE);
    let mut out = ResumableJsonl::open(&path, "id")?;
    let todo = prompts.iter().filter(|p| !out.contains(&p.id)).count();
    if todo > 0 {
        let (ckpt, adapter) = weights_of(study, model, trained_adapter)?;
        let device = gen_engine::parse_device(&study.device)?;
        let mut opts = gen_engine::LoadOptions {
            dtype: gen_dtype(study.generation.dtype),
            device: Some(device),
            ..Default::default()
        };
        if let Some(dir) = &adapter {
            opts = opts.with_adapter(dir, true)?;
        }
        tracing::info!("loading {} ({})", model.name, ckpt);
        let lm = gen_engine::load(&engine_source(&ckpt, RepoKind::Model)?, &opts)?;
        let g = &study.generation;
        let params = gen_engine::GenerateParams::new()
            .max_new_tokens(g.max_new_tokens)
            .batch_size(g.batch_size)
            .chat_template(g.chat_template)
            .truncation(match g.prompt_too_long {
                TooLong::Error => gen_engine::TruncationPolicy::Error,
                TooLong::TruncateLeft => gen_engine::TruncationPolicy::LeftTruncate,
            })
            .check()?;
        let generator = gen_engine::Generator::new(
            lm.model.as_ref(),
            &lm.tokenizer,
            &lm.eos_token_ids,
            params,
        )?;
        let pb = progress_bar(
            progress,
            prompts.len() as u64,
            format!("generate {}", model.name),
        );
        pb.set_position((prompts.len() - todo) as u64);
        pb.reset_eta();
        generate_into(
            &generator,
            &prompts,
            &model.name,
            &mut out,
            g.batch_size * GEN_CHUNK_BATCHES,
            &mut |n| pb.inc(n as u64),
        )?;
        pb.finish_and_clear();
    }
    Ok(json!({ "file": GENERATIONS_FILE, "records": out.len() }))
}

/// The score unit: the classifier's score of every continuation, appended to `scores.jsonl`.
pub fn run_score(
    study: &Study,
    unit: &Unit,
    model: &Model,
    gen_unit: &Unit,
    progress: bool,
) -> Result<Value> {
    let gens_path = gen_unit.dir.join(GENERATIONS_FILE);
    let gens = crate::records::read_generations(&gens_path)?;
    // The study's own generations must be complete records, not just `id` + `completion`.
    for g in &gens {
        g.to_line(&gens_path)?;
    }
    let path = unit.dir.join(SCORES_FILE);
    let mut out = ResumableJsonl::open(&path, "id")?;
    let todo = gens.iter().filter(|g| !out.contains(&g.id)).count();
    if todo > 0 {
        let c = &study.classifier;
        let spec = c.source.to_arg();
        let clf = hate_classifier::HateClassifier::params()
            .label(c.label.clone())
            .threshold(c.threshold as f32)
            .batch_size(c.batch_size)
            .device(gen_engine::parse_device(&study.device)?)
            .load(&spec)?;
        let pb = progress_bar(progress, gens.len() as u64, format!("score {}", model.name));
        pb.set_position((gens.len() - todo) as u64);
        pb.reset_eta();
        score_into(
            &clf,
            &gens,
            &mut out,
            c.batch_size * SCORE_CHUNK_BATCHES,
            &mut |n| pb.inc(n as u64),
        )?;
        pb.finish_and_clear();
    }
    Ok(json!({ "file": SCORES_FILE, "records": out.len() }))
}

/// Generates a continuation for every prompt not yet in `out` and appends the records
/// ([`GenerationLine`], labelled `model`), `chunk` prompts at a time in the prompts' order, one
/// append + fsync per chunk; `progress(n)` after each batch of `n` prompts. What the study's
/// generate units and `toxdrift generate` both run. Returns the number of records appended.
pub fn generate_into(
    generator: &gen_engine::Generator<'_>,
    prompts: &[toxprompts::PromptRecord],
    model: &str,
    out: &mut ResumableJsonl,
    chunk: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let mut appended = 0;
    for chunk in prompts.chunks(chunk.max(1)) {
        let pending: Vec<&toxprompts::PromptRecord> =
            chunk.iter().filter(|p| !out.contains(&p.id)).collect();
        if pending.is_empty() {
            continue;
        }
        let texts: Vec<&str> = pending.iter().map(|p| p.text.as_str()).collect();
        let gens = generator.generate_with_progress(&texts, progress)?;
        let records: Vec<(String, GenerationLine)> = pending
            .iter()
            .zip(gens)
            .map(|(p, g)| {
                (
                    p.id.clone(),
                    GenerationLine {
                        id: p.id.clone(),
                        subset: p.subset.clone(),
                        model: model.to_string(),
                        prompt: p.text.clone(),
                        completion: g.text,
                        completion_token_ids: g.token_ids,
                        finish_reason: g.finish_reason.as_str().to_string(),
                    },
                )
            })
            .collect();
        out.append_batch(&records)?;
        appended += records.len();
        test_stall();
    }
    Ok(appended)
}

/// Scores the continuation of every generation not yet in `out` and appends the records — each
/// generation's fields plus `score` and `toxic` ([`ScoredRecord`]) — `chunk` texts at a time in
/// the file's order, one append + fsync per chunk; `progress(n)` after each chunk. What the
/// study's score units and `toxdrift score` both run. Returns the number of records appended.
pub fn score_into(
    classifier: &hate_classifier::HateClassifier,
    generations: &[GenerationRecord],
    out: &mut ResumableJsonl,
    chunk: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let mut appended = 0;
    for chunk in generations.chunks(chunk.max(1)) {
        let pending: Vec<&GenerationRecord> =
            chunk.iter().filter(|g| !out.contains(&g.id)).collect();
        if pending.is_empty() {
            continue;
        }
        let texts: Vec<&str> = pending.iter().map(|g| g.completion.as_str()).collect();
        let scores = classifier.score(&texts)?;
        let records: Vec<(String, ScoredRecord<'_>)> = pending
            .iter()
            .zip(scores)
            .map(|(g, score)| {
                (
                    g.id.clone(),
                    ScoredRecord {
                        fields: &g.fields,
                        score,
                        toxic: classifier.is_toxic(score),
                    },
                )
            })
            .collect();
        out.append_batch(&records)?;
        appended += records.len();
        progress(pending.len());
        test_stall();
    }
    Ok(appended)
}

/// The finetune unit: LoRA on `base` with the study's recipe; the PEFT adapter goes to
/// `adapter/` in the unit directory, with checkpoints beside it for resuming.
pub fn run_finetune(study: &Study, unit: &Unit, base: &Model, progress: bool) -> Result<Value> {
    let ModelSource::Checkpoint { model, adapter } = &base.source else {
        return Err(Error::BadInput(format!(
            "`{}` is fine-tuned by the study and cannot be fine-tuned again",
            base.name
        )));
    };
    if adapter.is_some() {
        return Err(Error::BadInput(format!(
            "`{}` has an adapter: fine-tuning on top of an adapter is not supported; name a \
             plain checkpoint in `finetune_from`",
            base.name
        )));
    }
    let r = &study.finetune;
    let hub = Hub::from_env();
    let model_dir = gen_engine::checkpoint_dir(&engine_source(model, RepoKind::Model)?, &hub)?;
    let data = engine_source(&r.data, RepoKind::Dataset)?
        .fetch_file(&hub, lora_train::data::DOLLY_FILE)
        .map_err(toxprompts::Error::from)?
        .display()
        .to_string();
    let targets = match &r.targets {
        Some(t) => t.clone(),
        None => gen_engine::models::default_lora_targets(&model_dir)?,
    };
    let device = gen_engine::parse_device(&study.device)?;
    let mut train = lora_train::trainer::TrainParams::default();
    train.adamw.lr = r.lr;
    train.adamw.weight_decay = r.weight_decay;
    train.warmup_steps = r.warmup_steps;
    train.micro_batch = r.batch_size;
    train.grad_accum = r.grad_accum;
    train.epochs = r.epochs;
    train.max_steps = r.max_steps;
    train.seed = r.seed;
    train.checkpoint_every = r.checkpoint_every;
    let spec = lora_train::finetune::FinetuneSpec {
        model: model_dir.display().to_string(),
        base_model_name: Some(match model {
            Location::Hub { repo, .. } => repo.clone(),
            Location::Local(p) => p.display().to_string(),
        }),
        data,
        fields: lora_train::data::Fields::dolly(),
        template: match r.template {
            Template::Inst => lora_train::template::Template::AuthorsInst,
            Template::Alpaca => lora_train::template::Template::Alpaca,
            Template::Chat => lora_train::template::Template::Chat,
        },
        max_len: r.max_seq_len,
        loss_on: lora_train::template::LossOn::All,
        limit: r.max_records,
        lora: lora_train::finetune::LoraParams {
            r: r.rank,
            alpha: r.alpha,
            dropout: r.dropout,
            targets,
            use_rslora: false,
            init_seed: r.seed,
        },
        init_adapter: None,
        train,
        dtype: gen_dtype(study.generation.dtype),
        device,
        out: unit.dir.join(ADAPTER_DIR),
        merged_out: None,
        resume: true,
    };
    let pb = progress_bar(progress, 0, format!("finetune {}", unit.name));
    let report = lora_train::finetune::finetune(
        &spec,
        &mut |steps, truncated| {
            pb.set_length(steps as u64);
            if truncated > 0 {
                tracing::warn!("{}: {truncated} sequences truncated", unit.name);
            }
        },
        &mut |log| {
            pb.set_position(log.step as u64);
            pb.set_message(format!("loss {:.4}", log.loss));
            test_stall();
        },
    )?;
    pb.finish_and_clear();
    let last = report.summary.log.last();
    Ok(json!({
        "adapter": ADAPTER_DIR,
        "records": report.records,
        "truncated": report.truncated,
        "trainable_params": report.trainable_params,
        "steps": report.summary.log.len(),
        "final_loss": last.map(|l| l.loss),
    }))
}
