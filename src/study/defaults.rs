//! The study file's defaults: the paper's settings (design.md §1) where the file is silent.

use super::model::*;

pub(super) fn d_gen_batch() -> usize {
    16
}
pub(super) fn d_max_new() -> usize {
    50
}
pub(super) fn d_dtype() -> Dtype {
    Dtype::Auto
}
pub(super) fn d_chains() -> usize {
    4
}
pub(super) fn d_1000() -> usize {
    1000
}
pub(super) fn d_sampler_seed() -> u64 {
    42
}
pub(super) fn d_priors() -> Priors {
    Priors::Paper
}
pub(super) fn d_hdi() -> f64 {
    0.95
}
pub(super) fn d_device() -> String {
    "cpu".into()
}
pub(super) fn d_severe_threshold() -> f64 {
    0.75
}
pub(super) fn d_per_axis() -> usize {
    100
}
pub(super) fn d_prompt_seed() -> u64 {
    42
}
pub(super) fn d_cls_batch() -> usize {
    32
}
pub(super) fn d_threshold() -> f64 {
    0.5
}
pub(super) fn d_label() -> String {
    "hate".into()
}
pub(super) fn d_template() -> Template {
    Template::Inst
}
pub(super) fn d_rank() -> usize {
    16
}
pub(super) fn d_alpha() -> f64 {
    16.0
}
pub(super) fn d_epochs() -> usize {
    1
}
pub(super) fn d_ft_batch() -> usize {
    2
}
pub(super) fn d_accum() -> usize {
    8
}
pub(super) fn d_lr() -> f64 {
    2e-4
}
pub(super) fn d_warmup() -> usize {
    5
}
pub(super) fn d_wd() -> f64 {
    0.01
}
pub(super) fn d_ft_seed() -> u64 {
    3407
}
pub(super) fn d_max_seq() -> usize {
    2048
}
pub(super) fn d_ckpt() -> usize {
    50
}

impl Default for GenerationSpec {
    fn default() -> Self {
        Self {
            batch_size: d_gen_batch(),
            max_new_tokens: d_max_new(),
            dtype: d_dtype(),
            chat_template: false,
            prompt_too_long: TooLong::Error,
        }
    }
}

impl Default for SamplerSpec {
    fn default() -> Self {
        Self {
            chains: d_chains(),
            tune: d_1000(),
            draws: d_1000(),
            seed: d_sampler_seed(),
            priors: d_priors(),
            hdi_mass: d_hdi(),
            rope: None,
        }
    }
}

impl FinetuneRecipe {
    /// The paper's recipe (design.md §1) on `data`.
    pub fn paper(data: Location) -> Self {
        Self {
            data,
            max_records: None,
            template: d_template(),
            rank: d_rank(),
            alpha: d_alpha(),
            dropout: 0.0,
            targets: None,
            epochs: d_epochs(),
            max_steps: None,
            batch_size: d_ft_batch(),
            grad_accum: d_accum(),
            lr: d_lr(),
            warmup_steps: d_warmup(),
            weight_decay: d_wd(),
            seed: d_ft_seed(),
            max_seq_len: d_max_seq(),
            checkpoint_every: d_ckpt(),
        }
    }
}
