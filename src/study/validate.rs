//! Validation: the raw form ([`super::schema`]) checked and resolved into a [`super::Study`],
//! every error naming the study file, line and column.

use super::defaults::DEFAULT_MAX_IN_FLIGHT;
use super::model::*;
use super::paths::absolutize;
use super::schema::*;
use crate::error::{Error, Result};
use hub_source::{HubRepo, RepoKind};
use lora_train::data::DOLLY_REPO;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Turns byte offsets of one file into `file:line:column` error messages.
pub(super) struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn err(&self, span: Range<usize>, msg: impl std::fmt::Display) -> Error {
        let (line, col) = self.line_col(span.start);
        Error::BadInput(format!("{}:{line}:{col}: {msg}", self.file.display()))
    }
}

/// Parses and validates a study from text (see [`Study::from_str`]).
pub(super) fn parse(text: &str, file: &Path) -> Result<Study> {
    let loc = Locator { file, text };
    let raw: RawStudy = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        loc.err(span, e.message().trim_end())
    })?;
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = absolutize(&base, &std::env::current_dir().unwrap_or_default());
    let resolve =
        |kind, s: &Spanned<RawSource>, what: &str| resolve_source(&loc, &base, kind, s, what);

    let device = raw.device.trim().to_string();
    if !valid_device(&device) {
        return Err(Error::BadInput(format!(
            "{}: device `{device}`: expected `cpu` or `cuda:N`",
            file.display()
        )));
    }

    let p = &raw.prompts;
    if !(0.0..=1.0).contains(&p.severe_threshold) {
        return Err(loc.err(
            p.rtp.span(),
            format!(
                "prompts.severe_threshold = {} must be in [0, 1]",
                p.severe_threshold
            ),
        ));
    }
    let prompts = PromptsSpec {
        rtp: resolve(RepoKind::Dataset, &p.rtp, "prompts.rtp")?,
        ceb: resolve(RepoKind::Dataset, &p.ceb, "prompts.ceb")?,
        random: p.random,
        severe: p.severe,
        severe_threshold: p.severe_threshold,
        per_axis: p.per_axis,
        allow_overlap: p.allow_overlap,
        seed: p.seed,
    };
    if prompts.random + prompts.severe + prompts.per_axis == 0 {
        return Err(bad(
            file,
            "prompts: every count is 0, so there is nothing to do",
        ));
    }

    let c = &raw.classifier;
    let classifier = ClassifierSpec {
        source: location(
            &base,
            RepoKind::Model,
            c.path.as_ref(),
            c.hub.as_ref(),
            c.revision.as_ref(),
        )
        .map_err(|m| bad(file, format!("classifier: {m}")))?,
        batch_size: c.batch_size,
        threshold: c.threshold,
        label: c.label.clone(),
    };
    if classifier.batch_size == 0 {
        return Err(bad(file, "classifier.batch_size must be at least 1"));
    }
    if !(0.0..=1.0).contains(&classifier.threshold) {
        return Err(bad(file, "classifier.threshold must be in [0, 1]"));
    }

    let g = &raw.generation;
    if g.batch_size == gen_engine::BatchSize::Fixed(0) || g.max_new_tokens == 0 {
        return Err(bad(
            file,
            "generation.batch_size and generation.max_new_tokens must be at least 1",
        ));
    }
    let s = &raw.sampler;
    if s.chains == 0 || s.draws == 0 {
        return Err(bad(
            file,
            "sampler.chains and sampler.draws must be at least 1",
        ));
    }
    if !(s.hdi_mass > 0.0 && s.hdi_mass < 1.0) {
        return Err(bad(
            file,
            "sampler.hdi_mass must be strictly between 0 and 1",
        ));
    }
    if let Some([lo, hi]) = s.rope
        && (lo >= hi || !lo.is_finite() || !hi.is_finite())
    {
        return Err(bad(
            file,
            "sampler.rope must be [low, high] with low < high",
        ));
    }
    // The rest of the ranges (R-hat, ESS, retry scale, …) are best-mcmc's own checks.
    crate::stages::best_params(s)
        .check()
        .map_err(|e| bad(file, format!("sampler: {e}")))?;

    // Models: unique names, one source each, no duplicate sources.
    let mut families = Vec::new();
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let mut sources: HashMap<ModelSource, (String, Range<usize>)> = HashMap::new();
    let mut finetune_refs = Vec::new();
    for fam in &raw.family {
        if fam.name.get_ref().trim().is_empty() {
            return Err(loc.err(fam.name.span(), "family name is empty"));
        }
        let mut models = Vec::new();
        for m in &fam.models {
            let span = m.span();
            let m = m.get_ref();
            let name = m.name.get_ref().trim().to_string();
            if name.is_empty() || !name.chars().all(name_char) {
                return Err(loc.err(
                    m.name.span(),
                    format!(
                        "model name `{name}`: use letters, digits, `-`, `_` and `.` only \
                         (it names files)"
                    ),
                ));
            }
            if let Some(first) = seen.get(&name) {
                let (line, _) = loc.line_col(first.start);
                return Err(loc.err(
                    m.name.span(),
                    format!("model `{name}` is listed twice (first at line {line})"),
                ));
            }
            seen.insert(name.clone(), m.name.span());
            let source = match (&m.finetune_from, &m.path, &m.hub) {
                _ if m.endpoint.is_some() => {
                    if m.finetune_from.is_some()
                        || m.path.is_some()
                        || m.hub.is_some()
                        || m.revision.is_some()
                        || m.adapter.is_some()
                    {
                        return Err(loc.err(
                            span,
                            format!(
                                "model `{name}`: an `endpoint` model takes no `path`, `hub`, \
                                 `revision`, `adapter` or `finetune_from` (the server holds \
                                 the weights)"
                            ),
                        ));
                    }
                    let e = m.endpoint.as_ref().map(|e| (e.span(), e.get_ref()));
                    let Some((espan, e)) = e else {
                        return Err(Error::Internal("endpoint vanished".into()));
                    };
                    ModelSource::Endpoint(endpoint_spec(e).map_err(|msg| {
                        loc.err(espan, format!("model `{name}`: endpoint: {msg}"))
                    })?)
                }
                (Some(from), None, None) => {
                    if m.adapter.is_some() || m.revision.is_some() {
                        return Err(loc.err(
                            span,
                            format!(
                                "model `{name}`: `finetune_from` takes no `adapter` or \
                                 `revision` (the adapter is what the study trains)"
                            ),
                        ));
                    }
                    finetune_refs.push((name.clone(), from.clone()));
                    ModelSource::FinetuneFrom(from.get_ref().clone())
                }
                (None, _, _) => {
                    let model = location(
                        &base,
                        RepoKind::Model,
                        m.path.as_ref(),
                        m.hub.as_ref(),
                        m.revision.as_ref(),
                    )
                    .map_err(|msg| loc.err(span.clone(), format!("model `{name}`: {msg}")))?;
                    let adapter = match &m.adapter {
                        Some(a) => Some(resolve(
                            RepoKind::Model,
                            a,
                            &format!("model `{name}`: adapter"),
                        )?),
                        None => None,
                    };
                    ModelSource::Checkpoint { model, adapter }
                }
                (Some(_), _, _) => {
                    return Err(loc.err(
                        span,
                        format!(
                            "model `{name}`: give either `finetune_from` or a checkpoint \
                             (`path` / `hub`), not both"
                        ),
                    ));
                }
            };
            if let Some((other, first)) = sources.get(&source) {
                let (line, _) = loc.line_col(first.start);
                return Err(loc.err(
                    m.name.span(),
                    format!(
                        "model `{name}` is listed twice: same weights as `{other}` \
                         (line {line})"
                    ),
                ));
            }
            sources.insert(source.clone(), (name.clone(), m.name.span()));
            let (line, col) = loc.line_col(span.start);
            models.push(Model {
                name,
                family: fam.name.get_ref().clone(),
                role: m.role,
                source,
                at: format!("{}:{line}:{col}", loc.file.display()),
            });
        }
        families.push(Family {
            name: fam.name.get_ref().clone(),
            models,
        });
    }
    let by_name: HashMap<&str, &Model> = families
        .iter()
        .flat_map(|f| f.models.iter())
        .map(|m| (m.name.as_str(), m))
        .collect();
    let known = |n: &str| -> String {
        let mut names: Vec<&str> = by_name.keys().copied().collect();
        names.sort_unstable();
        format!(
            "`{n}` is not a model of this study (defined: {})",
            names.join(", ")
        )
    };
    for (name, from) in &finetune_refs {
        match by_name.get(from.get_ref().as_str()) {
            None => return Err(loc.err(from.span(), known(from.get_ref()))),
            Some(base_model) => {
                if let ModelSource::Endpoint(_) = base_model.source {
                    return Err(loc.err(
                        from.span(),
                        format!(
                            "model `{name}`: `finetune_from = \"{}\"` names a model behind an \
                             endpoint; name a checkpoint (its weights are trained here)",
                            from.get_ref()
                        ),
                    ));
                }
                if let ModelSource::FinetuneFrom(_) = base_model.source {
                    return Err(loc.err(
                        from.span(),
                        format!(
                            "model `{name}`: `finetune_from = \"{}\"` names a model that is \
                             itself fine-tuned by the study; name a checkpoint",
                            from.get_ref()
                        ),
                    ));
                }
            }
        }
    }

    let finetune = match &raw.finetune {
        Some(ft) => Some(finetune_recipe(
            &loc,
            ft,
            resolve(RepoKind::Dataset, &ft.get_ref().data, "finetune.data")?,
        )?),
        None => None,
    };
    let finetune = match finetune {
        Some(f) => f,
        None if finetune_refs.is_empty() => FinetuneRecipe::paper(Source::hub(
            HubRepo::dataset(DOLLY_REPO).map_err(|e| Error::Internal(e.to_string()))?,
        )),
        None => {
            let (name, from) = &finetune_refs[0];
            return Err(loc.err(
                from.span(),
                format!(
                    "model `{name}` is fine-tuned by the study but there is no [finetune] table"
                ),
            ));
        }
    };

    let mut comparisons = Vec::new();
    let mut ids: HashMap<String, Range<usize>> = HashMap::new();
    for c in &raw.comparison {
        let id = c.id.get_ref().trim().to_string();
        if id.is_empty() || !id.chars().all(name_char) {
            return Err(loc.err(
                c.id.span(),
                format!("comparison id `{id}`: use letters, digits, `-`, `_` and `.` only"),
            ));
        }
        if let Some(first) = ids.get(&id) {
            let (line, _) = loc.line_col(first.start);
            return Err(loc.err(
                c.id.span(),
                format!("comparison `{id}` is defined twice (first at line {line})"),
            ));
        }
        ids.insert(id.clone(), c.id.span());
        if c.pairs.is_empty() {
            return Err(loc.err(c.id.span(), format!("comparison `{id}` has no pairs")));
        }
        let mut pairs = Vec::new();
        for pair in &c.pairs {
            let (b, k) = pair.get_ref();
            for n in [b, k] {
                if !by_name.contains_key(n.get_ref().as_str()) {
                    return Err(loc.err(n.span(), known(n.get_ref())));
                }
            }
            if b.get_ref() == k.get_ref() {
                return Err(loc.err(
                    pair.span(),
                    format!("comparison `{id}` compares `{}` with itself", b.get_ref()),
                ));
            }
            let p = Pair {
                baseline: b.get_ref().clone(),
                candidate: k.get_ref().clone(),
            };
            if pairs.contains(&p) {
                return Err(loc.err(
                    pair.span(),
                    format!("comparison `{id}` lists the pair twice"),
                ));
            }
            pairs.push(p);
        }
        comparisons.push(Comparison {
            title: c.title.clone().unwrap_or_else(|| id.clone()),
            id,
            pairs,
        });
    }
    let drifts = drift_sections(&loc, &base, &raw.drift, &families, &finetune)?;
    if families.iter().all(|f| f.models.is_empty()) {
        return Err(bad(
            file,
            "the study defines no model ([[family]] with models = [...])",
        ));
    }

    let name = raw.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "study".into())
    });
    let out = match &raw.out {
        Some(o) => absolutize(o.get_ref(), &base),
        None => base.join("runs").join(&name),
    };
    Ok(Study {
        file: file.to_path_buf(),
        name,
        out,
        device,
        prompts,
        classifier,
        generation: raw.generation,
        sampler: raw.sampler,
        finetune,
        families,
        comparisons,
        drifts,
    })
}

/// The `[[drift]]` sections: each names its checkpoints (listing a local checkpoint directory,
/// the one place validation reads the file system) and its references.
fn drift_sections(
    loc: &Locator<'_>,
    base_dir: &Path,
    raw: &[Spanned<RawDrift>],
    families: &[Family],
    recipe: &FinetuneRecipe,
) -> Result<Vec<Drift>> {
    let model = |n: &str| {
        families
            .iter()
            .flat_map(|f| &f.models)
            .find(|m| m.name == n)
    };
    let known = |n: &str| -> String {
        let mut names: Vec<&str> = families
            .iter()
            .flat_map(|f| &f.models)
            .map(|m| m.name.as_str())
            .collect();
        names.sort_unstable();
        format!(
            "`{n}` is not a model of this study (defined: {})",
            names.join(", ")
        )
    };
    let mut out: Vec<Drift> = Vec::new();
    for d in raw {
        let span = d.span();
        let (line, col) = loc.line_col(span.start);
        let at = format!("{}:{line}:{col}", loc.file.display());
        let d = d.get_ref();
        let err = |sp: Range<usize>, msg: String| loc.err(sp, format!("drift: {msg}"));
        // The model the adapters apply to must be a plain checkpoint of the study.
        let plain_base = |name: &Spanned<String>| -> Result<String> {
            let n = name.get_ref();
            match model(n).map(|m| &m.source) {
                None => Err(err(name.span(), known(n))),
                Some(ModelSource::Checkpoint { adapter: None, .. }) => Ok(n.clone()),
                Some(_) => Err(err(
                    name.span(),
                    format!(
                        "`{n}` is not a plain checkpoint (a drift's adapters apply to a model \
                         with `path` or `hub` and no `adapter`)"
                    ),
                )),
            }
        };
        let (name, base, source, points) = match (&d.model, &d.checkpoints) {
            (Some(m), None) => {
                if d.base.is_some() {
                    return Err(err(
                        span,
                        "`model` takes no `base` (the fine-tune's own `finetune_from` is)".into(),
                    ));
                }
                let n = m.get_ref();
                let from = match model(n).map(|x| &x.source) {
                    None => return Err(err(m.span(), known(n))),
                    Some(ModelSource::FinetuneFrom(from)) => from.clone(),
                    Some(_) => {
                        return Err(err(
                            m.span(),
                            format!(
                                "`{n}` is not fine-tuned by this study (no `finetune_from`): \
                                 name a `finetune_from` model, or give `checkpoints` and `base`"
                            ),
                        ));
                    }
                };
                let Some(steps) = &d.steps else {
                    return Err(err(
                        span,
                        format!(
                            "`model = \"{n}\"` needs `steps = [...]`: the training steps to \
                             evaluate (multiples of finetune.checkpoint_every = {}, the last may \
                             be the final step)",
                            recipe.train.checkpoint_every
                        ),
                    ));
                };
                let every = recipe.train.checkpoint_every;
                let list = steps.get_ref();
                check_steps(list).map_err(|m| err(steps.span(), m))?;
                if let Some(bad) = list[..list.len() - 1].iter().find(|s| **s % every != 0) {
                    return Err(err(
                        steps.span(),
                        format!(
                            "step {bad} is not a checkpoint: the recipe writes one every \
                             {every} steps (finetune.checkpoint_every); only the last step may \
                             be the final one"
                        ),
                    ));
                }
                let name = d.name.as_ref().map_or(n.clone(), |x| x.get_ref().clone());
                let points = list
                    .iter()
                    .map(|&step| DriftPoint {
                        step,
                        adapter: None,
                    })
                    .collect();
                (name, from, DriftSource::Recipe(n.clone()), points)
            }
            (None, Some(c)) => {
                let Some(b) = &d.base else {
                    return Err(err(
                        span,
                        "`checkpoints` needs `base = \"<model>\"`: the study's model the \
                         adapters apply to"
                            .into(),
                    ));
                };
                let base = plain_base(b)?;
                let Some(name) = &d.name else {
                    return Err(err(
                        span,
                        "`checkpoints` needs a `name` (it names the figure and the units)".into(),
                    ));
                };
                if d.steps.is_some() {
                    return Err(err(
                        span,
                        "`steps` goes inside `checkpoints = { ... }` for checkpoints".into(),
                    ));
                }
                let cspan = c.span();
                let c = c.get_ref();
                let (source, points) = match (&c.path, &c.hub, &c.revisions) {
                    (Some(p), None, None) => {
                        let dir = absolutize(p, base_dir);
                        let mut points =
                            trainer_checkpoints(&dir).map_err(|m| err(cspan.clone(), m))?;
                        if let Some(want) = &c.steps {
                            check_steps(want).map_err(|m| err(cspan.clone(), m))?;
                            if let Some(s) =
                                want.iter().find(|s| !points.iter().any(|p| p.step == **s))
                            {
                                return Err(err(
                                    cspan,
                                    format!("{}: no checkpoint-{s}", dir.display()),
                                ));
                            }
                            points.retain(|p| want.contains(&p.step));
                        }
                        (DriftSource::Directory(dir), points)
                    }
                    (None, Some(h), Some(revs)) => {
                        let points = revision_points(h, revs, c.steps.as_deref())
                            .map_err(|m| err(cspan.clone(), m))?;
                        (DriftSource::Revisions(h.clone()), points)
                    }
                    (None, Some(_), None) => {
                        return Err(err(
                            cspan,
                            "`checkpoints = { hub = ... }` needs `revisions = [...]`".into(),
                        ));
                    }
                    _ => {
                        return Err(err(
                            cspan,
                            "`checkpoints` takes either `path` (a directory of checkpoint-<step>/) \
                             or `hub` with `revisions`"
                                .into(),
                        ));
                    }
                };
                if points.len() < 2 {
                    return Err(err(
                        cspan,
                        format!(
                            "{} checkpoint(s) found; a drift needs at least 2",
                            points.len()
                        ),
                    ));
                }
                (name.get_ref().clone(), base, source, points)
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    span,
                    "give either `model` (the study's fine-tune) or `checkpoints`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(err(
                    span,
                    "needs `model = \"<a finetune_from model>\"` or `checkpoints = { path = ... }`"
                        .into(),
                ));
            }
        };
        let name_span = d.name.as_ref().map_or(span.clone(), |n| n.span());
        if name.is_empty() || !name.chars().all(name_char) {
            return Err(err(
                name_span,
                format!("name `{name}`: use letters, digits, `-`, `_` and `.` only"),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(err(name_span, format!("`{name}` is defined twice")));
        }
        let mut references = Vec::new();
        for r in &d.references {
            if model(r.get_ref()).is_none() {
                return Err(err(r.span(), known(r.get_ref())));
            }
            if references.contains(r.get_ref()) {
                return Err(err(
                    r.span(),
                    format!("reference `{}` listed twice", r.get_ref()),
                ));
            }
            references.push(r.get_ref().clone());
        }
        out.push(Drift {
            name,
            base,
            source,
            points,
            references,
            at,
        });
    }
    Ok(out)
}

/// At least two steps, each at least 1, strictly ascending.
fn check_steps(steps: &[usize]) -> std::result::Result<(), String> {
    if steps.len() < 2 {
        return Err(format!(
            "{} step(s) given; a drift needs at least 2",
            steps.len()
        ));
    }
    if steps[0] == 0 || steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err("steps must be at least 1 and strictly ascending".into());
    }
    Ok(())
}

/// The checkpoints of a directory in HF Trainer's layout: `checkpoint-<step>/`, each with
/// `adapter_config.json` and `adapter_model.safetensors`, by ascending step.
fn trainer_checkpoints(dir: &Path) -> std::result::Result<Vec<DriftPoint>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    let mut points = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            if !path.join(f).is_file() {
                return Err(format!(
                    "{}: no {f} (a drift reads PEFT adapter checkpoints)",
                    path.display()
                ));
            }
        }
        points.push(DriftPoint {
            step,
            adapter: Some(Source::Local(path)),
        });
    }
    if points.is_empty() {
        return Err(format!(
            "{}: no checkpoint-<step>/ directory with a PEFT adapter (HF Trainer's layout)",
            dir.display()
        ));
    }
    points.sort_by_key(|p| p.step);
    Ok(points)
}

/// Hub revisions of an adapter repository as drift points: the step is `steps[i]` when given,
/// else the revision's trailing number (`step-500`, `checkpoint-500`) when every revision has a
/// distinct one, else the revision's position (1, 2, ...).
fn revision_points(
    hub: &str,
    revisions: &[String],
    steps: Option<&[usize]>,
) -> std::result::Result<Vec<DriftPoint>, String> {
    let trailing = |r: &str| -> Option<usize> {
        let digits: String = r
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits.parse().ok()
    };
    let steps: Vec<usize> = match steps {
        Some(s) if s.len() != revisions.len() => {
            return Err(format!(
                "{} steps for {} revisions",
                s.len(),
                revisions.len()
            ));
        }
        Some(s) => s.to_vec(),
        None => match revisions
            .iter()
            .map(|r| trailing(r))
            .collect::<Option<Vec<_>>>()
        {
            Some(v) if v.windows(2).all(|w| w[0] < w[1]) => v,
            _ => (1..=revisions.len()).collect(),
        },
    };
    check_steps(&steps)?;
    let mut points = Vec::new();
    for (r, step) in revisions.iter().zip(steps) {
        let repo = HubRepo::new(hub, RepoKind::Model)
            .map_err(|_| format!("hub id `{hub}` is not a valid repository id"))?
            .with_revision(r)
            .map_err(|e| format!("revision `{r}`: {e}"))?;
        points.push(DriftPoint {
            step,
            adapter: Some(Source::hub(repo)),
        });
    }
    Ok(points)
}

fn bad(file: &Path, msg: impl std::fmt::Display) -> Error {
    Error::BadInput(format!("{}: {msg}", file.display()))
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn valid_device(d: &str) -> bool {
    d == "cpu"
        || d == "cuda"
        || d.strip_prefix("cuda:")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn location(
    base: &Path,
    kind: RepoKind,
    path: Option<&PathBuf>,
    hub: Option<&String>,
    revision: Option<&String>,
) -> std::result::Result<Source, String> {
    match (path, hub) {
        (Some(p), None) => {
            if revision.is_some() {
                return Err("`revision` only applies to `hub`, not to a local `path`".into());
            }
            Ok(Source::Local(absolutize(p, base)))
        }
        (None, Some(h)) => {
            let repo = HubRepo::new(h, kind).map_err(|_| {
                format!(
                    "hub id `{h}` is not a valid repository id (`owner/name`, letters, digits, \
                     `-`, `_`, `.`; no spaces)"
                )
            })?;
            let repo = match revision {
                Some(r) if r.trim().is_empty() => return Err("`revision` is empty".into()),
                Some(r) => repo
                    .with_revision(r)
                    .map_err(|e| format!("`revision`: {e}"))?,
                None => repo,
            };
            Ok(Source::hub(repo))
        }
        (Some(_), Some(_)) => Err("give either `path` or `hub`, not both".into()),
        (None, None) => Err("needs a `path` (local) or a `hub` id".into()),
    }
}

fn resolve_source(
    loc: &Locator<'_>,
    base: &Path,
    kind: RepoKind,
    s: &Spanned<RawSource>,
    what: &str,
) -> Result<Source> {
    let src = s.get_ref();
    location(
        base,
        kind,
        src.path.as_ref(),
        src.hub.as_ref(),
        src.revision.as_ref(),
    )
    .map_err(|m| loc.err(s.span(), format!("{what}: {m}")))
}

/// The study's [finetune] table over the paper's recipe, checked by lora-train's own checks.
fn finetune_recipe(
    loc: &Locator<'_>,
    ft: &Spanned<RawFinetune>,
    data: Source,
) -> Result<FinetuneRecipe> {
    let span = ft.span();
    let f = ft.get_ref();
    let mut r = FinetuneRecipe::paper(data);
    if let Some(t) = &f.template {
        r.template = t
            .get_ref()
            .parse()
            .map_err(|e| loc.err(t.span(), format!("finetune.template: {e}")))?;
    }
    macro_rules! set {
        ($($key:ident => $($field:ident).+;)*) => {$(
            if let Some(v) = f.$key.clone() {
                r.$($field).+ = v;
            }
        )*};
    }
    set! {
        max_seq_len => max_seq_len;
        rank => lora.r;
        alpha => lora.alpha;
        dropout => lora.dropout;
        targets => lora.targets;
        epochs => train.epochs;
        batch_size => train.micro_batch;
        grad_accum => train.grad_accum;
        lr => train.adamw.lr;
        warmup_steps => train.warmup_steps;
        weight_decay => train.adamw.weight_decay;
        checkpoint_every => train.checkpoint_every;
    }
    r.max_records = f.max_records;
    r.train.max_steps = f.max_steps;
    r.base_4bit = f.base_4bit;
    if let Some(seed) = f.seed {
        r.train.seed = seed;
        r.lora.init_seed = seed;
    }
    let checked = r
        .lora
        .check()
        .and_then(|()| r.train.check())
        .map_err(|e| loc.err(span.clone(), format!("finetune: {e}")));
    checked?;
    // Study-only rules: a study's fine-tunes must be resumable and see at least one token.
    if r.max_seq_len == 0 || r.train.checkpoint_every == 0 {
        return Err(loc.err(
            span,
            "finetune.max_seq_len and finetune.checkpoint_every must be at least 1",
        ));
    }
    Ok(r)
}

fn endpoint_spec(e: &RawEndpoint) -> std::result::Result<EndpointSpec, String> {
    let urls = match &e.url {
        OneOrMany::One(u) => vec![u.clone()],
        OneOrMany::Many(us) => us.clone(),
    };
    EndpointSpec::new(
        urls,
        &e.served_model,
        e.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
        e.server_kind.as_deref().unwrap_or("auto"),
        e.api_key_env.clone(),
    )
}
