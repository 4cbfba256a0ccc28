//! The study runner: plans the units of a study, runs those not done, then writes the report.
//!
//! A unit is skipped when its manifest exists with its key (see [`crate::plan`]); otherwise it
//! runs, resuming from whatever its directory already holds (record streams skip the ids they
//! have; the fine-tune resumes from its last checkpoint), and writes its manifest last. Killing
//! the runner at any point (even `kill -9`) and running it again gives the same outputs, byte for
//! byte, as an uninterrupted run.

use crate::error::{Error, Result};
use crate::figures::{Panel, posterior_svg};
use crate::io::write_atomic;
use crate::plan::{Plan, Stage, Unit, relative};
use crate::report::{
    ALL, ComparisonReport, CsvRow, ModelReport, PAPER_SUBSETS, Report, ScoreRow, figure_name,
    render_csv, toxic_rates, write_report,
};
use crate::stages::{self, SCORES_FILE, ScoreLine};
use crate::study::{DriftSource, ModelSource, Study};
use std::path::PathBuf;
use std::time::Instant;

/// How to run a study.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only print the plan.
    pub dry_run: bool,
    /// Show progress bars (they are hidden anyway when stderr is not a terminal).
    pub progress: bool,
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

/// Runs a study: every pending unit, then the report. With `dry_run`, only plans.
pub fn run(study: &Study, opts: &RunOptions) -> Result<RunSummary> {
    let plan = Plan::new(study);
    let listing = plan.describe();
    if opts.dry_run {
        return Ok(RunSummary {
            plan: listing,
            ran: vec![],
            files: vec![],
        });
    }
    tracing::info!("{}", listing.trim_end());
    if plan.pending().next().is_some() {
        // A device this build cannot use (`cuda:0` without the `cuda` feature) is bad input:
        // say so before any work starts.
        gen_engine::parse_device(&study.device)?;
    }
    let mut ran = Vec::new();
    for (i, unit) in plan.units.iter().enumerate() {
        if unit.is_done() {
            tracing::debug!("skip {} {} (done)", unit.stage.as_str(), unit.name);
            continue;
        }
        let t0 = Instant::now();
        tracing::info!(
            "[{}/{}] {} {} ({})",
            i + 1,
            plan.units.len(),
            unit.stage.as_str(),
            unit.name,
            unit.short_key()
        );
        std::fs::create_dir_all(&unit.dir).map_err(|e| Error::io(&unit.dir, e))?;
        let outputs = run_unit(study, &plan, unit, opts)?;
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
        let mut draws = Vec::new();
        for p in &c.pairs {
            let unit = plan
                .unit(Stage::Compare, &crate::plan::pair_name(p))
                .ok_or_else(|| missing(&crate::plan::pair_name(p)))?;
            let (result, d) = stages::read_compare(unit)?;
            for (sub, r) in &result.subsets {
                if let Some(b) = &r.best {
                    for w in &b.warnings {
                        warnings.push(format!("{} vs {} ({sub}): {w}", p.baseline, p.candidate));
                    }
                }
            }
            pairs.push(result);
            draws.push(d);
        }
        // Figures: one per subset present, `all` first, then the paper's order.
        let mut subsets: Vec<String> = vec![ALL.to_string()];
        for s in PAPER_SUBSETS {
            if draws.iter().any(|d| d.subsets.contains_key(s)) {
                subsets.push(s.to_string());
            }
        }
        for d in &draws {
            for k in d.subsets.keys() {
                if !subsets.contains(k) {
                    subsets.push(k.clone());
                }
            }
        }
        let mut figures = Vec::new();
        for sub in &subsets {
            let panels: Vec<Panel<'_>> = pairs
                .iter()
                .zip(&draws)
                .filter_map(|(p, d)| {
                    let draws = d.subsets.get(sub)?;
                    let best = p.subsets.get(sub)?.best.as_ref()?;
                    Some(Panel {
                        title: format!("{} − {}", p.baseline, p.candidate),
                        draws,
                        hdi: (best.mu_diff.hdi_low, best.mu_diff.hdi_high),
                        hdi_mass: study.sampler.hdi_mass,
                    })
                })
                .collect();
            if panels.is_empty() {
                continue;
            }
            let svg = posterior_svg(&format!("{} — {sub}", c.title), &panels)?;
            let name = figure_name(c, sub);
            let path = out.join(&name);
            write_atomic(&path, svg.as_bytes())?;
            files.push(path);
            figures.push(name);
        }
        comparisons.push(ComparisonReport {
            id: c.id.clone(),
            title: c.title.clone(),
            pairs,
            figures,
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
        },
    )?;
    Ok((study, summary))
}
