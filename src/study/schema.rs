//! The study file's raw TOML form: key names and types, as serde reads them; validation
//! ([`super::validate`]) turns it into a [`super::Study`].

use super::defaults::*;
use super::model::*;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStudy {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) out: Option<Spanned<PathBuf>>,
    #[serde(default = "d_device")]
    pub(super) device: String,
    pub(super) prompts: RawPrompts,
    pub(super) classifier: RawClassifier,
    #[serde(default)]
    pub(super) generation: GenerationSpec,
    #[serde(default)]
    pub(super) sampler: SamplerSpec,
    #[serde(default)]
    pub(super) finetune: Option<Spanned<RawFinetune>>,
    #[serde(default)]
    pub(super) family: Vec<RawFamily>,
    #[serde(default)]
    pub(super) comparison: Vec<RawComparison>,
    #[serde(default)]
    pub(super) drift: Vec<Spanned<RawDrift>>,
}

/// `[[drift]]`: a fine-tune's checkpoints, from the study's recipe (`model` + `steps`), a
/// directory in HF Trainer's layout (`checkpoints = { path }` + `base`) or hub revisions of an
/// adapter repository (`checkpoints = { hub, revisions }` + `base`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrift {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) model: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) steps: Option<Spanned<Vec<usize>>>,
    #[serde(default)]
    pub(super) base: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) checkpoints: Option<Spanned<RawDriftCheckpoints>>,
    #[serde(default)]
    pub(super) references: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDriftCheckpoints {
    #[serde(default)]
    pub(super) path: Option<PathBuf>,
    #[serde(default)]
    pub(super) hub: Option<String>,
    #[serde(default)]
    pub(super) revisions: Option<Vec<String>>,
    #[serde(default)]
    pub(super) steps: Option<Vec<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrompts {
    pub(super) rtp: Spanned<RawSource>,
    pub(super) ceb: Spanned<RawSource>,
    #[serde(default = "d_random")]
    pub(super) random: usize,
    #[serde(default = "d_severe")]
    pub(super) severe: usize,
    #[serde(default = "d_severe_threshold")]
    pub(super) severe_threshold: f64,
    #[serde(default = "d_per_axis")]
    pub(super) per_axis: usize,
    #[serde(default)]
    pub(super) allow_overlap: bool,
    #[serde(default = "d_prompt_seed")]
    pub(super) seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClassifier {
    #[serde(default)]
    pub(super) path: Option<PathBuf>,
    #[serde(default)]
    pub(super) hub: Option<String>,
    #[serde(default)]
    pub(super) revision: Option<String>,
    #[serde(default = "d_cls_batch")]
    pub(super) batch_size: usize,
    #[serde(default = "d_threshold")]
    pub(super) threshold: f64,
    #[serde(default = "d_label")]
    pub(super) label: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFinetune {
    pub(super) data: Spanned<RawSource>,
    pub(super) max_records: Option<usize>,
    pub(super) template: Option<Spanned<String>>,
    pub(super) rank: Option<usize>,
    pub(super) alpha: Option<f64>,
    pub(super) dropout: Option<f64>,
    pub(super) targets: Option<Vec<String>>,
    pub(super) epochs: Option<usize>,
    pub(super) max_steps: Option<usize>,
    pub(super) batch_size: Option<usize>,
    pub(super) grad_accum: Option<usize>,
    pub(super) lr: Option<f64>,
    pub(super) warmup_steps: Option<usize>,
    pub(super) weight_decay: Option<f64>,
    pub(super) seed: Option<u64>,
    pub(super) max_seq_len: Option<usize>,
    pub(super) checkpoint_every: Option<usize>,
    #[serde(default)]
    pub(super) base_4bit: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFamily {
    pub(super) name: Spanned<String>,
    pub(super) models: Vec<Spanned<RawModel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) name: Spanned<String>,
    pub(super) role: Role,
    #[serde(default)]
    pub(super) path: Option<PathBuf>,
    #[serde(default)]
    pub(super) hub: Option<String>,
    #[serde(default)]
    pub(super) revision: Option<String>,
    #[serde(default)]
    pub(super) adapter: Option<Spanned<RawSource>>,
    #[serde(default)]
    pub(super) finetune_from: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) endpoint: Option<Spanned<RawEndpoint>>,
}

/// `endpoint = { url = "http://host:8000/v1" (or a list), served_model = "...", ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) url: OneOrMany,
    pub(super) served_model: String,
    #[serde(default)]
    pub(super) max_in_flight: Option<usize>,
    #[serde(default)]
    pub(super) server_kind: Option<String>,
    #[serde(default)]
    pub(super) api_key_env: Option<String>,
}

/// One string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComparison {
    pub(super) id: Spanned<String>,
    #[serde(default)]
    pub(super) title: Option<String>,
    pub(super) pairs: Vec<Spanned<(Spanned<String>, Spanned<String>)>>,
}

/// A local directory (or file) or a Hugging Face hub repository at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    /// A local path (relative to the study file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) path: Option<PathBuf>,
    /// A hub repository id, `owner/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) hub: Option<String>,
    /// The hub revision (branch, tag or commit); `main` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) revision: Option<String>,
}
