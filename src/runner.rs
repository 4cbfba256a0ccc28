//! The study runner: plans the units of a study, runs those not done, then writes the report.
//!
//! A unit is skipped when its manifest exists with its key (see [`crate::plan`]); otherwise it
//! runs, resuming from whatever its directory already holds (record streams skip the ids they
//! have; the fine-tune resumes from its last checkpoint), and writes its manifest last. Killing
//! the runner at any point (even `kill -9`) and running it again gives the same outputs, byte for
//! byte, as an uninterrupted run.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::lock::RunLock;
use crate::plan::{Plan, Stage, Unit, relative};
use crate::report::{
    ComparisonReport, CsvRow, ModelReport, Report, ScoreRow, render_csv, toxic_rates, write_report,
};
use crate::stages::{self, SCORES_FILE, ScoreLine};
use crate::study::{DriftSource, ModelSource, Study};
use std::path::PathBuf;
use std::time::Instant;

/// How to run a study.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only print the plan (after checking that it can run: see [`check_runnable`]).
    pub dry_run: bool,
    /// Show progress bars (they are hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// When another run holds the output directory, wait for it instead of exiting.
    pub wait: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The plan's listing as printed before the run.
    pub plan: String,
    /// Units run (not skipped) in this invocation.
    pub ran: Vec<String>,
    /// The report files written (empty on a dry run).
    pub files: Vec<PathBuf>,
}

/// Runs a study: every pending unit, then the report. With `dry_run`, only checks that the plan
/// can run ([`check_runnable`]) and plans.
///
/// The output directory is locked for the whole run ([`RunLock`]): a second run on it exits 2
/// naming the first one's pid, or waits with [`RunOptions::wait`]. A unit is marked done only
/// once its records validate (every input id exactly once); a unit marked done whose records do
/// not validate (say, left so by a crash of an older version) is moved aside and rerun.
pub fn run(study: &Study, opts: &RunOptions) -> Result<RunSummary> {
    let plan = Plan::new(study);
    let listing = plan.describe();
    if opts.dry_run {
        check_runnable(study, &plan)?;
        return Ok(RunSummary {
            plan: listing,
            ran: vec![],
            files: vec![],
        });
    }
    let _lock = RunLock::acquire(&plan.out, opts.wait)?;
    tracing::info!("{}", listing.trim_end());
    if plan.pending().next().is_some() {
        // A device this build cannot use (`cuda:0` without the `cuda` feature) is bad input:
        // say so before any work starts.
        gen_engine::parse_device(&study.device)?;
    }
    let mut ran = Vec::new();
    let total = plan.units.len();
    for (i, unit) in plan.units.iter().enumerate() {
        let what = format!("{} {}", unit.stage.as_str(), unit.name);
        if unit.is_done() {
            match validate_unit(&plan, unit) {
                Ok(()) => {
                    tracing::debug!("skip {what} (done)");
                    continue;
                }
                Err(e) => {
                    let moved = quarantine(unit)?;
                    tracing::warn!(
                        "{what}: marked done but its records do not validate ({e}); moved to \
                         {} and rerunning it",
                        moved.display()
                    );
                }
            }
        }
        let t0 = Instant::now();
        tracing::info!("[{}/{total}] {what} ({})", i + 1, unit.short_key());
        crate::progress::set_interrupt_note(format!(
            "interrupted during {what}: {} of {total} units were finished and are kept, with \
             the records written so far; run the same command to resume",
            plan.units.iter().filter(|u| u.is_done()).count()
        ));
        std::fs::create_dir_all(&unit.dir).map_err(|e| Error::io(&unit.dir, e))?;
        // Run the unit and check its records: a unit is marked done only when they validate.
        let attempt = || {
            let outputs = run_unit(study, &plan, unit, opts)?;
            validate_unit(&plan, unit)?;
            Ok(outputs)
        };
        let outputs = match attempt() {
            Ok(o) => o,
            Err(e) if records_broken(&e) => {
                // The unit's own records are inconsistent (e.g. a duplicate id): start it over
                // once from nothing rather than fail the same way on every run.
                let moved = quarantine(unit)?;
                tracing::warn!(
                    "{what}: its records do not validate ({e}); moved to {} and rerunning it",
                    moved.display()
                );
                std::fs::create_dir_all(&unit.dir).map_err(|e| Error::io(&unit.dir, e))?;
                attempt().map_err(|e| name_model(study, unit, e))?
            }
            Err(e) => return Err(name_model(study, unit, e)),
        };
        unit.complete(outputs)?;
        tracing::info!(
            "done {} {} in {:.1}s",
            unit.stage.as_str(),
            unit.name,
            t0.elapsed().as_secs_f64()
        );
        ran.push(format!("{} {}", unit.stage.as_str(), unit.name));
    }
    let files = write_outputs(study, &plan)?;
    Ok(RunSummary {
        plan: listing,
        ran,
        files,
    })
}

/// What a dry run checks before it prints the plan: that the device can be used by this build
/// (`cuda:N` needs the `cuda` feature), that every local path exists, and, offline
/// (`HF_HUB_OFFLINE=1`), that every hub source the pending units read is in the cache. A plan
/// that cannot run is bad input (exit code 2), with every problem listed.
pub fn check_runnable(study: &Study, plan: &Plan) -> Result<()> {
    let mut problems = Vec::new();
    let pending = plan.pending().next().is_some();
    if pending && let Err(e) = gen_engine::parse_device(&study.device) {
        problems.push(format!("{}: device: {e}", study.file.display()));
    }
    if let Err(e) = study.check_local_paths() {
        problems.push(e.to_string());
    }
    let hub = hub_source::Hub::from_env();
    if hub.is_offline() {
        problems.extend(study.missing_from_cache(&hub, plan));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "the plan cannot run:\n  - {}",
            problems.join("\n  - ")
        )))
    }
}

/// Checks a unit's records before it is marked done: a generate unit holds every prompt of its
/// prompt set exactly once, a score unit every generation of its generate unit exactly once.
fn validate_unit(plan: &Plan, unit: &Unit) -> Result<()> {
    let ids_match = |got: Vec<String>, want: Vec<String>, file: &std::path::Path| {
        let got_set: std::collections::BTreeSet<&String> = got.iter().collect();
        let want_set: std::collections::BTreeSet<&String> = want.iter().collect();
        if got_set == want_set && got.len() == want.len() {
            return Ok(());
        }
        let missing = want_set.difference(&got_set).count();
        let extra = got_set.difference(&want_set).count();
        Err(Error::Internal(format!(
            "{}: {BROKEN_RECORDS}: {} records for {} inputs ({missing} missing, {extra} unknown)",
            file.display(),
            got.len(),
            want.len()
        )))
    };
    match unit.stage {
        Stage::Generate | Stage::DriftGenerate => {
            let prompts = stages::read_prompt_set(dep(plan, unit, Stage::Prompts)?)?;
            let path = unit.dir.join(stages::GENERATIONS_FILE);
            let gens = crate::records::read_generations(&path).map_err(|e| broken(&path, e))?;
            ids_match(
                gens.into_iter().map(|g| g.id).collect(),
                prompts.into_iter().map(|p| p.id).collect(),
                &path,
            )
        }
        Stage::Score | Stage::DriftScore => {
            let gen_stage = if unit.stage == Stage::Score {
                Stage::Generate
            } else {
                Stage::DriftGenerate
            };
            let gen_path = dep(plan, unit, gen_stage)?
                .dir
                .join(stages::GENERATIONS_FILE);
            let gens = crate::records::read_generations(&gen_path)?;
            let path = unit.dir.join(SCORES_FILE);
            let scores = stages::read_scores(&path).map_err(|e| broken(&path, e))?;
            ids_match(
                scores.into_iter().map(|s| s.id).collect(),
                gens.into_iter().map(|g| g.id).collect(),
                &path,
            )
        }
        _ => Ok(()),
    }
}

/// The marker of a unit whose own records are inconsistent (see [`records_broken`]).
const BROKEN_RECORDS: &str = "the unit's records do not validate";

fn broken(path: &std::path::Path, e: Error) -> Error {
    Error::Internal(format!("{}: {BROKEN_RECORDS}: {e}", path.display()))
}

fn records_broken(e: &Error) -> bool {
    matches!(e, Error::Internal(m) if m.contains(BROKEN_RECORDS))
}

/// Moves a unit's directory aside (`<dir>.invalid-<n>`), keeping it for inspection.
fn quarantine(unit: &Unit) -> Result<PathBuf> {
    let mut n = 1;
    let moved = loop {
        let mut name = unit.dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".invalid-{n}"));
        let candidate = unit.dir.with_file_name(name);
        if !candidate.exists() {
            break candidate;
        }
        n += 1;
    };
    std::fs::rename(&unit.dir, &moved).map_err(|e| Error::io(&unit.dir, e))?;
    Ok(moved)
}

/// Names the study model (and its line in the study file) in an error of a model's unit.
fn name_model(study: &Study, unit: &Unit, e: Error) -> Error {
    match unit.stage {
        Stage::Finetune | Stage::Generate | Stage::Score => match study.model(&unit.name) {
            Some(m) => e.for_model(m),
            None => e,
        },
        Stage::DriftGenerate | Stage::DriftScore => match drift_point(study, &unit.name) {
            Ok((d, _)) => Error::Model {
                model: unit.name.clone(),
                at: d.at.clone(),
                source: Box::new(e),
            },
            Err(_) => e,
        },
        _ => e,
    }
}

fn dep<'a>(plan: &'a Plan, unit: &Unit, stage: Stage) -> Result<&'a Unit> {
    unit.deps
        .iter()
        .map(|&i| &plan.units[i])
        .find(|u| u.stage == stage)
        .ok_or_else(|| {
            Error::Internal(format!(
                "plan: {} {} has no {} input",
                unit.stage.as_str(),
                unit.name,
                stage.as_str()
            ))
        })
}

fn run_unit(
    study: &Study,
    plan: &Plan,
    unit: &Unit,
    opts: &RunOptions,
) -> Result<serde_json::Value> {
    match unit.stage {
        Stage::Prompts => stages::build_prompts(study, unit),
        Stage::Finetune => {
            let model = study.model(&unit.name).ok_or_else(|| missing(&unit.name))?;
            let ModelSource::FinetuneFrom(from) = &model.source else {
                return Err(missing(&unit.name));
            };
            let base = study.model(from).ok_or_else(|| missing(from))?;
            // A drift over this fine-tune reads its checkpoints: keep every one of them.
            let watched = study
                .drifts
                .iter()
                .any(|d| d.source == DriftSource::Recipe(unit.name.clone()));
            if watched {
                let mut keep_all = study.clone();
                keep_all.finetune.train.keep_checkpoints = usize::MAX;
                return crate::model_stages::run_finetune(&keep_all, unit, base, opts.progress);
            }
            crate::model_stages::run_finetune(study, unit, base, opts.progress)
        }
        Stage::Generate => {
            let model = study.model(&unit.name).ok_or_else(|| missing(&unit.name))?;
            let prompts = dep(plan, unit, Stage::Prompts)?;
            let adapter = match &model.source {
                ModelSource::FinetuneFrom(_) => Some(
                    dep(plan, unit, Stage::Finetune)?
                        .dir
                        .join(stages::ADAPTER_DIR),
                ),
                ModelSource::Checkpoint { .. } | ModelSource::Endpoint(_) => None,
            };
            crate::model_stages::run_generate(
                study,
                unit,
                model,
                prompts,
                adapter.as_deref(),
                opts.progress,
            )
        }
        Stage::Score => {
            let model = study.model(&unit.name).ok_or_else(|| missing(&unit.name))?;
            let gens = dep(plan, unit, Stage::Generate)?;
            crate::model_stages::run_score(study, unit, model, gens, opts.progress)
        }
        Stage::DriftGenerate => {
            let (drift, step) = drift_point(study, &unit.name)?;
            let prompts = dep(plan, unit, Stage::Prompts)?;
            let trained = match drift.source {
                DriftSource::Recipe(_) => Some(dep(plan, unit, Stage::Finetune)?),
                _ => None,
            };
            crate::model_stages::run_drift_generate(
                study,
                unit,
                drift,
                step,
                prompts,
                trained,
                opts.progress,
            )
        }
        Stage::DriftScore => {
            let (drift, _) = drift_point(study, &unit.name)?;
            let gens = dep(plan, unit, Stage::DriftGenerate)?;
            crate::model_stages::run_drift_score(study, unit, drift, gens, opts.progress)
        }
        Stage::Compare => {
            let pair = study
                .comparisons
                .iter()
                .flat_map(|c| c.pairs.iter())
                .find(|p| crate::plan::pair_name(p) == unit.name)
                .ok_or_else(|| missing(&unit.name))?;
            let b = &plan.units[unit.deps[0]];
            let c = &plan.units[unit.deps[1]];
            stages::run_compare(
                study,
                unit,
                pair,
                &b.dir.join(SCORES_FILE),
                &c.dir.join(SCORES_FILE),
            )
        }
    }
}

/// The drift and step of a drift unit's name (`<drift>@step-<n>`).
fn drift_point<'a>(study: &'a Study, unit_name: &str) -> Result<(&'a crate::study::Drift, usize)> {
    study
        .drifts
        .iter()
        .find_map(|d| {
            d.points
                .iter()
                .find(|p| d.point_name(p.step) == unit_name)
                .map(|p| (d, p.step))
        })
        .ok_or_else(|| missing(unit_name))
}

fn missing(name: &str) -> Error {
    Error::Internal(format!("plan: `{name}` is not in the study"))
}

fn source_text(s: &ModelSource) -> String {
    match s {
        ModelSource::Checkpoint {
            model,
            adapter: None,
        } => model.to_string(),
        ModelSource::Checkpoint {
            model,
            adapter: Some(a),
        } => format!("{model} + adapter {a}"),
        ModelSource::FinetuneFrom(from) => format!("LoRA fine-tune of {from} (this study)"),
        ModelSource::Endpoint(e) => format!("`{}` served at {}", e.served_model, e.urls.join(", ")),
    }
}

/// Builds the report from the finished units and writes `report.md`, `report.json`,
/// `scores.csv` and the figures. Every file is written atomically and holds no timestamp.
pub fn write_outputs(study: &Study, plan: &Plan) -> Result<Vec<PathBuf>> {
    let out = &plan.out;
    let mut models = Vec::new();
    let mut all_scores: Vec<(String, String, String, Vec<ScoreLine>)> = Vec::new();
    for m in study.models() {
        let unit = plan
            .unit(Stage::Score, &m.name)
            .ok_or_else(|| missing(&m.name))?;
        let path = unit.dir.join(SCORES_FILE);
        let lines = stages::read_scores(&path)?;
        let rows: Vec<ScoreRow> = lines.iter().map(ScoreRow::from).collect();
        models.push(ModelReport {
            name: m.name.clone(),
            family: m.family.clone(),
            role: m.role.as_str().to_string(),
            source: source_text(&m.source),
            rates: toxic_rates(&rows),
            scores_file: relative(out, &path),
        });
        all_scores.push((
            m.name.clone(),
            m.family.clone(),
            m.role.as_str().to_string(),
            lines,
        ));
    }
    let mut files = Vec::new();
    let mut comparisons = Vec::new();
    let mut warnings = Vec::new();
    for c in &study.comparisons {
        let mut pairs = Vec::new();
        for p in &c.pairs {
            let unit = plan
                .unit(Stage::Compare, &crate::plan::pair_name(p))
                .ok_or_else(|| missing(&crate::plan::pair_name(p)))?;
            let (result, _) = stages::read_compare(unit)?;
            for (sub, r) in &result.subsets {
                if let Some(b) = &r.best {
                    for w in &b.warnings {
                        warnings.push(format!("{} vs {} ({sub}): {w}", p.baseline, p.candidate));
                    }
                }
            }
            pairs.push(result);
        }
        comparisons.push(ComparisonReport {
            id: c.id.clone(),
            title: c.title.clone(),
            pairs,
            // `write_report` draws the figures and lists them here.
            figures: vec![],
        });
    }
    // Drift: per-checkpoint rates, the hypothesis quantities and figures/drift-<name>.svg.
    let (drift, drift_files) = crate::drift::write_drifts(study, plan)?;
    files.extend(drift_files);
    let s = &study.sampler;
    let report = Report {
        study: study.name.clone(),
        threshold: study.classifier.threshold,
        hdi_mass: s.hdi_mass,
        sampler: format!(
            "{} chains × ({} tune + {} draws), seed {}, {} priors",
            s.chains,
            s.tune,
            s.draws,
            s.seed,
            match s.priors {
                crate::study::Priors::Paper => "paper",
                crate::study::Priors::Kruschke => "kruschke",
            }
        ),
        models,
        comparisons,
        warnings,
        drift,
    };
    files.extend(write_report(&report, study, out)?);
    let csv = render_csv(all_scores.iter().flat_map(|(model, family, role, lines)| {
        lines.iter().map(move |l| CsvRow {
            model,
            family,
            role,
            id: &l.id,
            subset: &l.subset,
            score: l.score,
            toxic: l.toxic,
            completion: &l.completion,
        })
    }));
    let csv_path = out.join("scores.csv");
    write_atomic(&csv_path, csv.as_bytes())?;
    files.push(csv_path);
    // Model-card sections, one per comparison pair: cards/<baseline>__vs__<candidate>.md.
    let by_model = all_scores
        .iter()
        .map(|(name, _, _, lines)| (name.as_str(), lines.as_slice()))
        .collect();
    files.extend(crate::gate::write_study_cards(
        study,
        plan,
        &by_model,
        source_text,
    )?);
    Ok(files)
}

/// Runs one comparison of a study file (the examples' entry point): keeps the comparison `id`
/// and its models, optionally reads hub checkpoints from `checkpoints/<model name>` when such a
/// directory exists, writes to `out` (default: the study's output directory), and returns the
/// run's summary. The report is in `<out>/report.md`.
pub fn run_comparison(
    study_file: &std::path::Path,
    id: &str,
    checkpoints: Option<&std::path::Path>,
    out: Option<&std::path::Path>,
    progress: bool,
) -> Result<(Study, RunSummary)> {
    let mut study = Study::load(study_file, out)?;
    study.retain_comparison(id)?;
    if let Some(dir) = checkpoints {
        let switched = study.use_checkpoint_dir(dir);
        tracing::info!("{} model(s) read from {}", switched.len(), dir.display());
    }
    study.check_local_paths()?;
    let summary = run(
        &study,
        &RunOptions {
            dry_run: false,
            progress,
            wait: false,
        },
    )?;
    Ok((study, summary))
}
