//! The plan of a study: its units of work and the keys that say whether each is done.
//!
//! A unit is one stage for one model (or one model pair): the prompt set; per model, generate
//! and score; per fine-tuned model, train; per compared pair, compare; per checkpoint of a
//! `[[drift]]` section, generate and score (`drift_generate`, `drift_score`, named
//! `<drift>@step-<n>`, after every other unit). Each unit has a key, a
//! SHA-256 over its stage, its own settings and the keys of the units it reads, so changing a
//! setting changes the keys of exactly the units it affects (and of those downstream of them).
//! A unit's outputs live in `units/<stage>/<name>-<key>/` under the output directory, and the unit
//! is done when that directory holds a `manifest.json` with the same key (written atomically
//! last). Units are independent of each other apart from the files they read, so a study can be
//! sharded by unit.
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! # let root = dir.path();
//! # for p in ["rtp.jsonl", "ceb", "cls", "a", "b"] { std::fs::write(root.join(p), "")?; }
//! # std::fs::write(root.join("study.toml"), r#"
//! # [prompts]
//! # rtp = { path = "rtp.jsonl" }
//! # ceb = { path = "ceb" }
//! # [classifier]
//! # path = "cls"
//! # [[family]]
//! # name = "f"
//! # models = [{ name = "a", role = "base", path = "a" }, { name = "b", role = "instruct", path = "b" }]
//! # [[comparison]]
//! # id = "c1"
//! # pairs = [["a", "b"]]
//! # "#)?;
//! use toxdrift::plan::{Plan, Stage};
//! use toxdrift::study::Study;
//! let study = Study::load(&root.join("study.toml"), None)?;
//! let plan = Plan::new(&study);
//! // prompts, generate a, score a, generate b, score b, compare a-b
//! assert_eq!(plan.units.len(), 6);
//! assert_eq!(plan.units[5].stage, Stage::Compare);
//! assert!(plan.pending().count() == 6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::study::{Model, ModelSource, Pair, Study};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bumped when a stage's output format or algorithm changes, so old outputs are not reused.
const FORMAT_VERSION: u32 = 1;

/// The kind of work a unit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Build the prompt set.
    Prompts,
    /// Fine-tune one model with LoRA.
    Finetune,
    /// Generate continuations with one model.
    Generate,
    /// Score one model's continuations.
    Score,
    /// Compare one pair of models.
    Compare,
    /// Generate continuations with one checkpoint of a drift (`<drift>@step-<n>`).
    DriftGenerate,
    /// Score one drift checkpoint's continuations.
    DriftScore,
}

impl Stage {
    /// The stage's name in paths and the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prompts => "prompts",
            Stage::Finetune => "finetune",
            Stage::Generate => "generate",
            Stage::Score => "score",
            Stage::Compare => "compare",
            Stage::DriftGenerate => "drift_generate",
            Stage::DriftScore => "drift_score",
        }
    }
}

/// One unit of work.
#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    /// Its stage.
    pub stage: Stage,
    /// The model (or `baseline__vs__candidate` pair, or `prompts`) it is for.
    pub name: String,
    /// The hex SHA-256 of its inputs and settings.
    pub key: String,
    /// The settings it was keyed on (recorded in the manifest).
    pub inputs: Value,
    /// Indices (into [`Plan::units`]) of the units whose outputs it reads.
    pub deps: Vec<usize>,
    /// Its output directory.
    pub dir: PathBuf,
}

impl Unit {
    /// The manifest path.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// The unit's key, shortened for display.
    pub fn short_key(&self) -> &str {
        &self.key[..12]
    }

    /// Whether the unit's manifest exists with this unit's key.
    pub fn is_done(&self) -> bool {
        match std::fs::read(self.manifest_path()) {
            Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes)
                .map(|m| m.key == self.key)
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Writes the unit's manifest atomically: call this last, once every output is in place.
    pub fn complete(&self, outputs: Value) -> Result<()> {
        let m = Manifest {
            stage: self.stage,
            name: self.name.clone(),
            key: self.key.clone(),
            inputs: self.inputs.clone(),
            outputs,
        };
        let mut text = serde_json::to_string_pretty(&m)
            .map_err(|e| Error::Internal(format!("cannot serialise a manifest: {e}")))?;
        text.push('\n');
        write_atomic(self.manifest_path(), text.as_bytes())
    }

    /// Reads the unit's manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        let path = self.manifest_path();
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadInput(format!("{}: not a unit manifest: {e}", path.display())))
    }
}

/// What a finished unit records about itself (`manifest.json`). No timestamps: a resumed run
/// writes the same bytes as an uninterrupted one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The unit's stage.
    pub stage: Stage,
    /// Its name.
    pub name: String,
    /// Its key.
    pub key: String,
    /// The settings it was keyed on.
    pub inputs: Value,
    /// What it wrote (file names, record counts).
    pub outputs: Value,
}

/// All units of a study, in an order where every unit comes after the units it reads.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The output directory.
    pub out: PathBuf,
    /// The units.
    pub units: Vec<Unit>,
}

fn hash_key(stage: Stage, inputs: &Value, dep_keys: &[&str]) -> String {
    let doc = json!({
        "format": FORMAT_VERSION,
        "stage": stage.as_str(),
        "inputs": inputs,
        "deps": dep_keys,
    });
    // serde_json's map is ordered by key, so this text is canonical.
    let text = serde_json::to_string(&doc).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The file name of a pair's compare unit.
pub fn pair_name(p: &Pair) -> String {
    format!("{}__vs__{}", p.baseline, p.candidate)
}

impl Plan {
    /// Plans every unit of `study` (whether done or not).
    pub fn new(study: &Study) -> Plan {
        let out = study.out.clone();
        let mut units: Vec<Unit> = Vec::new();
        let push =
            |units: &mut Vec<Unit>, stage: Stage, name: String, inputs: Value, deps: Vec<usize>| {
                let dep_keys: Vec<&str> = deps.iter().map(|&i| units[i].key.as_str()).collect();
                let key = hash_key(stage, &inputs, &dep_keys);
                let dir = out
                    .join("units")
                    .join(stage.as_str())
                    .join(format!("{name}-{}", &key[..12]));
                units.push(Unit {
                    stage,
                    name,
                    key,
                    inputs,
                    deps,
                    dir,
                });
                units.len() - 1
            };
        let prompts = push(
            &mut units,
            Stage::Prompts,
            "prompts".into(),
            serde_json::to_value(&study.prompts).unwrap_or_default(),
            vec![],
        );
        let dtype = study.generation.dtype.resolve(&study.device);
        // Fine-tunes first: their adapters feed generation.
        let mut trained = std::collections::HashMap::new();
        for m in study.models() {
            if let ModelSource::FinetuneFrom(from) = &m.source {
                let base = study.model(from).map(|b| b.source.clone());
                let inputs = json!({
                    "base": base,
                    "recipe": study.finetune.key(),
                });
                let i = push(&mut units, Stage::Finetune, m.name.clone(), inputs, vec![]);
                trained.insert(m.name.clone(), i);
            }
        }
        let mut scored = std::collections::HashMap::new();
        for m in study.models() {
            let mut deps = vec![prompts];
            let weights = match &m.source {
                ModelSource::Checkpoint { .. } | ModelSource::Endpoint(_) => json!(m.source),
                ModelSource::FinetuneFrom(from) => {
                    deps.push(trained[&m.name]);
                    json!({ "base": study.model(from).map(|b| b.source.clone()), "adapter": "trained" })
                }
            };
            let inputs = json!({
                "weights": weights,
                "batch_size": study.generation.batch_size,
                "max_new_tokens": study.generation.max_new_tokens,
                "dtype": dtype.as_str(),
                "chat_template": study.generation.chat_template,
                "prompt_too_long": study.generation.prompt_too_long,
            });
            let g = push(&mut units, Stage::Generate, m.name.clone(), inputs, deps);
            let inputs = json!({
                "classifier": study.classifier,
            });
            let s = push(&mut units, Stage::Score, m.name.clone(), inputs, vec![g]);
            scored.insert(m.name.clone(), s);
        }
        let mut pairs_done: Vec<Pair> = Vec::new();
        for c in &study.comparisons {
            for p in &c.pairs {
                if pairs_done.contains(p) {
                    continue;
                }
                pairs_done.push(p.clone());
                // The result format is in the key: results written before a format change are
                // recomputed, not read in the wrong direction.
                let inputs = json!({
                    "sampler": study.sampler,
                    "result_format": crate::report::RESULT_FORMAT,
                });
                let deps = vec![scored[&p.baseline], scored[&p.candidate]];
                push(&mut units, Stage::Compare, pair_name(p), inputs, deps);
            }
        }
        // Drift: one generate + score unit per checkpoint, keyed like a model's (the base's
        // weights plus the checkpoint's adapter), after every other unit.
        for d in &study.drifts {
            let base = study.model(&d.base).map(|b| b.source.clone());
            for p in &d.points {
                let mut deps = vec![prompts];
                let adapter = match (&d.source, &p.adapter) {
                    (crate::study::DriftSource::Recipe(m), _) => {
                        deps.push(trained[m]);
                        json!({ "trained": m, "step": p.step })
                    }
                    (_, a) => json!(a),
                };
                let inputs = json!({
                    "weights": { "base": base, "adapter": adapter },
                    "batch_size": study.generation.batch_size,
                    "max_new_tokens": study.generation.max_new_tokens,
                    "dtype": dtype.as_str(),
                    "chat_template": study.generation.chat_template,
                    "prompt_too_long": study.generation.prompt_too_long,
                });
                let name = d.point_name(p.step);
                let g = push(&mut units, Stage::DriftGenerate, name.clone(), inputs, deps);
                let inputs = json!({ "classifier": study.classifier });
                push(&mut units, Stage::DriftScore, name, inputs, vec![g]);
            }
        }
        Plan { out, units }
    }

    /// The units not done yet.
    pub fn pending(&self) -> impl Iterator<Item = &Unit> {
        self.units.iter().filter(|u| !u.is_done())
    }

    /// The unit of `stage` for `name`.
    pub fn unit(&self, stage: Stage, name: &str) -> Option<&Unit> {
        self.units
            .iter()
            .find(|u| u.stage == stage && u.name == name)
    }

    /// A human-readable listing: one line per unit with its state, key and directory.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let pending = self.pending().count();
        let _ = writeln!(
            s,
            "plan: {} units, {} done, {} to run; output in {}",
            self.units.len(),
            self.units.len() - pending,
            pending,
            self.out.display()
        );
        for u in &self.units {
            let state = if u.is_done() { "done" } else { "run " };
            let rel = u.dir.strip_prefix(&self.out).unwrap_or(&u.dir);
            let _ = writeln!(
                s,
                "  [{state}] {:<9} {:<40} {}  {}",
                u.stage.as_str(),
                u.name,
                u.short_key(),
                rel.display()
            );
        }
        s
    }
}

/// Whether a model of the study is trained by it.
pub fn is_trained(m: &Model) -> bool {
    matches!(m.source, ModelSource::FinetuneFrom(_))
}

/// The path of `file` inside the output directory, relative, with `/` separators (for reports).
pub fn relative(out: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(out).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUDY: &str = r#"
out = "/o"
[prompts]
rtp = { hub = "allenai/real-toxicity-prompts" }
ceb = { hub = "Song-SW/CEB" }
[classifier]
hub = "facebook/roberta-hate-speech-dynabench-r4-target"
[finetune]
data = { hub = "databricks/databricks-dolly-15k" }
[[family]]
name = "f"
models = [
  { name = "base", role = "base", hub = "o/base" },
  { name = "chat", role = "instruct", hub = "o/chat" },
  { name = "dolly", role = "dolly-tuned", finetune_from = "chat" },
  { name = "comm", role = "community", hub = "o/comm" },
]
[[family]]
name = "g"
models = [{ name = "other", role = "base", hub = "o/other" }]
[[comparison]]
id = "c1"
pairs = [["base", "chat"]]
[[comparison]]
id = "c2"
pairs = [["chat", "dolly"], ["base", "chat"]]
[[comparison]]
id = "c3"
pairs = [["chat", "comm"]]
"#;

    fn plan(text: &str) -> Plan {
        Plan::new(&Study::from_str(text, Path::new("/s/x.toml")).unwrap())
    }

    fn key(p: &Plan, stage: Stage, name: &str) -> String {
        p.unit(stage, name).unwrap().key.clone()
    }

    #[test]
    fn units_in_dependency_order_with_shared_pairs_once() {
        let p = plan(STUDY);
        let stages: Vec<(Stage, &str)> =
            p.units.iter().map(|u| (u.stage, u.name.as_str())).collect();
        assert_eq!(stages[0], (Stage::Prompts, "prompts"));
        assert_eq!(stages[1], (Stage::Finetune, "dolly"));
        assert_eq!(p.units.len(), 1 + 1 + 2 * 5 + 3);
        for (i, u) in p.units.iter().enumerate() {
            assert!(
                u.deps.iter().all(|&d| d < i),
                "{} before its inputs",
                u.name
            );
        }
        let gen_dolly = p.unit(Stage::Generate, "dolly").unwrap();
        assert_eq!(gen_dolly.deps, vec![0, 1]);
        assert!(p.unit(Stage::Compare, "chat__vs__dolly").is_some());
        assert!(gen_dolly.dir.starts_with("/o/units/generate"));
    }

    #[test]
    fn a_setting_changes_only_the_keys_it_affects() {
        let a = plan(STUDY);
        // Sampler settings: only compare units change.
        let b = plan(&STUDY.replace(
            "[[family]]\nname = \"f\"",
            "[sampler]\ndraws = 500\n[[family]]\nname = \"f\"",
        ));
        for u in &a.units {
            let same = key(&b, u.stage, &u.name) == u.key;
            assert_eq!(same, u.stage != Stage::Compare, "{:?} {}", u.stage, u.name);
        }
        // The fine-tune recipe: the trained model's train, generate, score and its compares.
        let c = plan(&STUDY.replace(
            "data = { hub = \"databricks/databricks-dolly-15k\" }",
            "data = { hub = \"databricks/databricks-dolly-15k\" }\nlr = 1e-4",
        ));
        for u in &a.units {
            let same = key(&c, u.stage, &u.name) == u.key;
            let affected = u.name == "dolly" || u.name == "chat__vs__dolly";
            assert_eq!(same, !affected, "{:?} {}", u.stage, u.name);
        }
        // One model's revision: that model's units and its comparisons only.
        let d = plan(&STUDY.replace("hub = \"o/comm\"", "hub = \"o/comm\", revision = \"v2\""));
        for u in &a.units {
            let same = key(&d, u.stage, &u.name) == u.key;
            let affected = u.name == "comm" || u.name == "chat__vs__comm";
            assert_eq!(same, !affected, "{:?} {}", u.stage, u.name);
        }
        // The prompt seed: everything but the fine-tune.
        let e = plan(&STUDY.replace(
            "ceb = { hub = \"Song-SW/CEB\" }",
            "ceb = { hub = \"Song-SW/CEB\" }\nseed = 7",
        ));
        for u in &a.units {
            let same = key(&e, u.stage, &u.name) == u.key;
            assert_eq!(same, u.stage == Stage::Finetune, "{:?} {}", u.stage, u.name);
        }
    }

    #[test]
    fn manifest_marks_a_unit_done() {
        let dir = tempfile::tempdir().unwrap();
        let text = STUDY.replace("out = \"/o\"", &format!("out = {:?}", dir.path()));
        let p = plan(&text);
        let u = &p.units[0];
        assert!(!u.is_done());
        u.complete(json!({"records": 3})).unwrap();
        assert!(u.is_done());
        assert_eq!(u.manifest().unwrap().outputs["records"], 3);
        assert_eq!(p.pending().count(), p.units.len() - 1);
        let listing = p.describe();
        assert!(listing.contains("1 done"), "{listing}");
        assert!(listing.contains("[done] prompts"), "{listing}");
    }
}
