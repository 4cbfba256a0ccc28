//! The stages that run neural networks: generate and score through the engine seams
//! ([`engine_api::TextGenerator`], [`engine_api::TextScorer`], built by [`crate::engines`]) and
//! fine-tune ([`lora_train`]).
//!
//! Generation and scoring append to their JSONL output in chunks that follow the prompt set's
//! order, one append + fsync per chunk; a resumed unit skips the ids already written, so the
//! file always lists the prompts in the prompt set's order, each once. The fine-tune resumes
//! from its last checkpoint inside the unit directory.

use crate::engines::{self, GeneratorSpec, ScorerSpec};
use crate::error::{Error, Result};
use crate::io::{ResumableJsonl, write_atomic};
use crate::plan::Unit;
use crate::progress::{progress_bar, test_stall};
use crate::stages::{ADAPTER_DIR, GENERATIONS_FILE, SCORES_FILE, read_prompt_set};
use crate::study::{Drift, DriftSource, Model, ModelSource, Source, Study};
use engine_api::{Completion, TextGenerator, TextScorer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::records::{GenerationLine, GenerationRecord, ScoredRecord};

/// The generator's self-description, beside a generate unit's records.
const ENGINE_FILE: &str = "engine.json";
/// Prompts per append (and per fsync) in generation: this many of the generator's batches.
const GEN_CHUNK_BATCHES: usize = 4;
/// Texts per append (and per fsync) in scoring: this many of the scorer's batches.
const SCORE_CHUNK_BATCHES: usize = 8;

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
        let spec = GeneratorSpec::for_study_model(study, model, trained_adapter)?;
        let generator = engines::open_generator(&spec)?;
        // What generated the records (backend, model, server versions, settings), for the
        // manifest; rewritten whenever the unit (re)opens its generator.
        let info = serde_json::to_vec_pretty(&generator.describe())
            .map_err(|e| Error::Internal(format!("cannot serialise the engine info: {e}")))?;
        write_atomic(unit.dir.join(ENGINE_FILE), &info)?;
        let pb = progress_bar(
            progress,
            prompts.len() as u64,
            format!("generate {}", model.name),
        );
        pb.set_position((prompts.len() - todo) as u64);
        pb.reset_eta();
        generate_into(
            generator.as_ref(),
            &prompts,
            &model.name,
            &mut out,
            &mut |n| pb.inc(n as u64),
        )?;
        pb.finish_and_clear();
    }
    let engine: Option<Value> = std::fs::read(unit.dir.join(ENGINE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(json!({ "file": GENERATIONS_FILE, "records": out.len(), "engine": engine }))
}

/// The score unit: the scorer's toxicity of every continuation, appended to `scores.jsonl`.
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
        let scorer = engines::open_scorer(&ScorerSpec::for_study(study))?;
        let pb = progress_bar(progress, gens.len() as u64, format!("score {}", model.name));
        pb.set_position((gens.len() - todo) as u64);
        pb.reset_eta();
        score_into(scorer.as_ref(), &gens, &mut out, &mut |n| pb.inc(n as u64))?;
        pb.finish_and_clear();
    }
    Ok(json!({ "file": SCORES_FILE, "records": out.len() }))
}

/// Generates a continuation for every prompt not yet in `out` and appends the records
/// ([`GenerationLine`], labelled `model`) in the prompts' order as the generator hands them over:
/// each time a run of consecutive prompts of at least a few of the generator's batches is
/// complete, one append + fsync (a server backend keeps its requests in flight meanwhile). When
/// the generator fails, the consecutive completions it finished are still written, so a rerun
/// continues after them. `progress(n)` as prompts finish. What the study's generate units and
/// `toxdrift generate` both run, whatever the backend. Returns the number of records appended.
pub fn generate_into(
    generator: &dyn TextGenerator,
    prompts: &[toxprompts::PromptRecord],
    model: &str,
    out: &mut ResumableJsonl,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let pending: Vec<&toxprompts::PromptRecord> =
        prompts.iter().filter(|p| !out.contains(&p.id)).collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let flush_at = generator.preferred_batch_size().max(1) * GEN_CHUNK_BATCHES;
    let texts: Vec<&str> = pending.iter().map(|p| p.text.as_str()).collect();
    let mut ready: BTreeMap<usize, Completion> = BTreeMap::new();
    let mut next = 0; // the first pending prompt not written yet
    let mut write_error: Option<Error> = None;
    // Appends the consecutive completions from `next` on, when there are at least `min` of
    // them (or they reach the end).
    let mut flush = |ready: &mut BTreeMap<usize, Completion>, next: &mut usize, min: usize| {
        let mut run = 0;
        while ready.contains_key(&(*next + run)) {
            run += 1;
        }
        if run == 0 || (run < min && *next + run < pending.len()) {
            return Ok(());
        }
        let records: Vec<(String, GenerationLine)> = (*next..*next + run)
            .filter_map(|i| ready.remove(&i).map(|c| (pending[i], c)))
            .map(|(p, c)| {
                (
                    p.id.clone(),
                    GenerationLine {
                        id: p.id.clone(),
                        subset: p.subset.clone(),
                        model: model.to_string(),
                        prompt: p.text.clone(),
                        completion: c.text,
                        completion_token_ids: c.token_ids,
                        finish_reason: c.finish_reason.as_str().to_string(),
                    },
                )
            })
            .collect();
        out.append_batch(&records)?;
        *next += run;
        test_stall();
        Ok::<(), Error>(())
    };
    let result = generator.complete_each(&texts, progress, &mut |i, c| {
        if i >= pending.len() || ready.contains_key(&i) || i < next {
            return Err(engine_api::Error::internal(format!(
                "the generator handed over prompt {i} twice or out of range"
            )));
        }
        ready.insert(i, c);
        flush(&mut ready, &mut next, flush_at).map_err(|e| {
            let msg = e.to_string();
            write_error = Some(e);
            engine_api::Error::internal(msg)
        })
    });
    if let Some(e) = write_error {
        return Err(e);
    }
    if let Err(e) = result {
        // Keep what is finished and consecutive: the rerun starts after it.
        flush(&mut ready, &mut next, 1)?;
        return Err(match e.prompt_index().and_then(|i| pending.get(i)) {
            Some(p) => Error::OnPrompt {
                id: p.id.clone(),
                source: e,
            },
            None => e.into(),
        });
    }
    flush(&mut ready, &mut next, 1)?;
    if next != pending.len() {
        return Err(Error::Internal(format!(
            "the generator finished {next} of {} prompts",
            pending.len()
        )));
    }
    Ok(next)
}

/// Scores the continuation of every generation not yet in `out` and appends the records — each
/// generation's fields plus `score` and `toxic` ([`ScoredRecord`]) — in the file's order, a few
/// of the scorer's batches per append + fsync; `progress(n)` after each append. What the
/// study's score units and `toxdrift score` both run, whatever the scorer. Returns the number of
/// records appended.
pub fn score_into(
    scorer: &dyn TextScorer,
    generations: &[GenerationRecord],
    out: &mut ResumableJsonl,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let chunk = scorer.preferred_batch_size().max(1) * SCORE_CHUNK_BATCHES;
    let mut appended = 0;
    for chunk in generations.chunks(chunk) {
        let pending: Vec<&GenerationRecord> =
            chunk.iter().filter(|g| !out.contains(&g.id)).collect();
        if pending.is_empty() {
            continue;
        }
        let texts: Vec<&str> = pending.iter().map(|g| g.completion.as_str()).collect();
        let scores = scorer.toxicity(&texts)?;
        engine_api::Error::check_count("scores", texts.len(), scores.len())?;
        let records: Vec<(String, ScoredRecord<'_>)> = pending
            .iter()
            .zip(scores)
            .map(|(g, (score, toxic))| {
                (
                    g.id.clone(),
                    ScoredRecord {
                        fields: &g.fields,
                        score,
                        toxic,
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
    let spec = engines::finetune_spec(study, model, unit.dir.join(ADAPTER_DIR))?;
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

/// A drift checkpoint as a model of the study: the drift's base with the checkpoint's adapter
/// (for the study's own fine-tune, `checkpoint-<step>` inside its unit, or its final adapter
/// when `step` is the run's last).
fn drift_point_model(
    study: &Study,
    drift: &Drift,
    step: usize,
    trained: Option<&Unit>,
) -> Result<Model> {
    let base = study.model(&drift.base).ok_or_else(|| {
        Error::Internal(format!("drift `{}`: no model `{}`", drift.name, drift.base))
    })?;
    let ModelSource::Checkpoint { model, .. } = &base.source else {
        return Err(Error::Internal(format!(
            "drift `{}`: `{}` is not a checkpoint",
            drift.name, drift.base
        )));
    };
    let adapter = match (&drift.source, trained) {
        (DriftSource::Recipe(m), Some(ft)) => {
            let adapter = ft.dir.join(ADAPTER_DIR);
            let ckpt = adapter
                .join("checkpoints")
                .join(format!("checkpoint-{step}"));
            let total = ft.manifest()?.outputs["steps"].as_u64().unwrap_or(0) as usize;
            if step == total {
                adapter
            } else if ckpt.join("adapter_model.safetensors").is_file() {
                ckpt
            } else if step > total {
                return Err(Error::BadInput(format!(
                    "{}: drift `{}`: step {step} is past the end of `{m}`'s fine-tune ({total} \
                     steps)",
                    drift.at, drift.name
                )));
            } else {
                return Err(Error::BadInput(format!(
                    "{}: drift `{}`: `{m}`'s fine-tune has no checkpoint at step {step} ({} is \
                     missing: the fine-tune ran before the drift section was added and kept \
                     only its newest checkpoints; delete {} to train it again, which gives the \
                     same adapter)",
                    drift.at,
                    drift.name,
                    ckpt.display(),
                    ft.dir.display()
                )));
            }
        }
        (DriftSource::Recipe(_), None) => {
            return Err(Error::Internal(format!(
                "plan: drift `{}` has no finetune input",
                drift.name
            )));
        }
        _ => {
            let p = drift.points.iter().find(|p| p.step == step);
            match p.and_then(|p| p.adapter.as_ref()) {
                Some(Source::Local(p)) => p.clone(),
                Some(hub @ Source::Hub { .. }) => engines::adapter_dir(hub)?,
                None => {
                    return Err(Error::Internal(format!(
                        "drift `{}`: no adapter at step {step}",
                        drift.name
                    )));
                }
            }
        }
    };
    Ok(Model {
        name: drift.point_name(step),
        family: base.family.clone(),
        role: base.role,
        source: ModelSource::Checkpoint {
            model: model.clone(),
            adapter: Some(Source::Local(adapter)),
        },
        at: drift.at.clone(),
    })
}

/// A drift checkpoint's generate unit: like a model's ([`run_generate`]), on the drift's base
/// with the checkpoint's adapter merged.
pub fn run_drift_generate(
    study: &Study,
    unit: &Unit,
    drift: &Drift,
    step: usize,
    prompts_unit: &Unit,
    trained: Option<&Unit>,
    progress: bool,
) -> Result<Value> {
    let model = drift_point_model(study, drift, step, trained)?;
    run_generate(study, unit, &model, prompts_unit, None, progress)
}

/// A drift checkpoint's score unit: like a model's ([`run_score`]).
pub fn run_drift_score(
    study: &Study,
    unit: &Unit,
    drift: &Drift,
    gen_unit: &Unit,
    progress: bool,
) -> Result<Value> {
    let model = Model {
        name: unit.name.clone(),
        family: String::new(),
        role: crate::study::Role::DollyTuned,
        source: ModelSource::FinetuneFrom(drift.base.clone()),
        at: drift.at.clone(),
    };
    run_score(study, unit, &model, gen_unit, progress)
}
