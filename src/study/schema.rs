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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrompts {
    pub(super) rtp: Spanned<Source>,
    pub(super) ceb: Spanned<Source>,
    #[serde(default = "d_1000")]
    pub(super) random: usize,
    #[serde(default = "d_1000")]
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
    pub(super) data: Spanned<Source>,
    #[serde(default)]
    pub(super) max_records: Option<usize>,
    #[serde(default = "d_template")]
    pub(super) template: Template,
    #[serde(default = "d_rank")]
    pub(super) rank: usize,
    #[serde(default = "d_alpha")]
    pub(super) alpha: f64,
    #[serde(default)]
    pub(super) dropout: f64,
    #[serde(default)]
    pub(super) targets: Option<Vec<String>>,
    #[serde(default = "d_epochs")]
    pub(super) epochs: usize,
    #[serde(default)]
    pub(super) max_steps: Option<usize>,
    #[serde(default = "d_ft_batch")]
    pub(super) batch_size: usize,
    #[serde(default = "d_accum")]
    pub(super) grad_accum: usize,
    #[serde(default = "d_lr")]
    pub(super) lr: f64,
    #[serde(default = "d_warmup")]
    pub(super) warmup_steps: usize,
    #[serde(default = "d_wd")]
    pub(super) weight_decay: f64,
    #[serde(default = "d_ft_seed")]
    pub(super) seed: u64,
    #[serde(default = "d_max_seq")]
    pub(super) max_seq_len: usize,
    #[serde(default = "d_ckpt")]
    pub(super) checkpoint_every: usize,
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
    pub(super) adapter: Option<Spanned<Source>>,
    #[serde(default)]
    pub(super) finetune_from: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComparison {
    pub(super) id: Spanned<String>,
    #[serde(default)]
    pub(super) title: Option<String>,
    pub(super) pairs: Vec<Spanned<(Spanned<String>, Spanned<String>)>>,
}
