//! The study file's defaults: the paper's settings (design.md §1) where the file is silent.

use super::model::*;

// Where a crate defines the paper's value, the default is read from it (one definition).

fn paper_prompts() -> toxprompts::PromptSetParams {
    toxprompts::PromptSetParams::paper()
}
fn paper_sampler() -> best_mcmc::BestParams {
    best_mcmc::BestParams::default()
}

pub(super) fn d_gen_batch() -> gen_engine::BatchSize {
    gen_engine::GenerateParams::default().get_batch_size()
}
pub(super) fn d_max_new() -> usize {
    gen_engine::GenerateParams::default().get_max_new_tokens()
}
pub(super) fn d_dtype() -> Dtype {
    Dtype::Auto
}
pub(super) fn d_chains() -> usize {
    paper_sampler().get_chains()
}
pub(super) fn d_tune() -> usize {
    paper_sampler().get_tune()
}
pub(super) fn d_draws() -> usize {
    paper_sampler().get_draws()
}
/// The study's sampler seed (best-mcmc's own default is 0).
pub(super) fn d_sampler_seed() -> u64 {
    42
}
pub(super) fn d_priors() -> Priors {
    Priors::Paper
}
pub(super) fn d_hdi() -> f64 {
    paper_sampler().get_hdi_prob()
}
/// Requests in flight per endpoint when a study or the CLI does not say (remote-gen's).
pub const DEFAULT_MAX_IN_FLIGHT: usize = remote_gen::DEFAULT_MAX_IN_FLIGHT;

pub(super) fn d_device() -> String {
    "cpu".into()
}
pub(super) fn d_random() -> usize {
    paper_prompts().get_random()
}
pub(super) fn d_severe() -> usize {
    paper_prompts().get_severe()
}
pub(super) fn d_severe_threshold() -> f64 {
    paper_prompts().get_severe_threshold()
}
pub(super) fn d_per_axis() -> usize {
    paper_prompts().get_per_axis()
}
pub(super) fn d_prompt_seed() -> u64 {
    paper_prompts().get_seed()
}
pub(super) fn d_cls_batch() -> usize {
    hate_classifier::DEFAULT_BATCH_SIZE
}
pub(super) fn d_threshold() -> f64 {
    f64::from(hate_classifier::DEFAULT_THRESHOLD)
}
pub(super) fn d_label() -> String {
    hate_classifier::DEFAULT_LABEL.into()
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
            tune: d_tune(),
            draws: d_draws(),
            seed: d_sampler_seed(),
            priors: d_priors(),
            hdi_mass: d_hdi(),
            rope: None,
            rhat_max: paper_sampler().get_rhat_max(),
            ess_min: paper_sampler().get_ess_min(),
            max_divergences: paper_sampler().get_max_divergences(),
            retry_scale: paper_sampler().get_retry_scale(),
        }
    }
}

impl FinetuneRecipe {
    /// The paper's recipe (design.md §1) on `data`: lora-train's
    /// [`FinetuneSpec::paper`](lora_train::finetune::FinetuneSpec::paper), the one place its
    /// numbers are written, less what each fine-tuned model fills in (its checkpoint, its output).
    pub fn paper(data: Source) -> Self {
        let spec = lora_train::finetune::FinetuneSpec::paper(
            data.clone(), // a placeholder model: only the recipe's fields are read
            data,
            std::path::PathBuf::new(),
        );
        Self {
            data: spec.data,
            max_records: spec.limit,
            template: spec.template,
            max_seq_len: spec.max_len,
            lora: spec.lora,
            train: spec.train,
            base_4bit: spec.base_4bit,
        }
    }
}
