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
    if g.batch_size == 0 || g.max_new_tokens == 0 {
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
            models.push(Model {
                name,
                family: fam.name.get_ref().clone(),
                role: m.role,
                source,
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
    })
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
