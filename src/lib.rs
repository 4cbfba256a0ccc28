//! toxdrift: did this fine-tune make the model more toxic, and is the difference real?
//!
//! The facade reads top-down: a [`study`] file (schema, validation, defaults) becomes a
//! [`plan`] of resumable units; the [`runner`] runs them — prompts, fine-tune, generate, score,
//! compare — and writes the [`report`]. Generation and scoring go through the two seams of
//! [`engine_api`] ([`engine_api::TextGenerator`], [`engine_api::TextScorer`]); [`engines`] is the
//! one module that turns settings into concrete engines. [`generate_into`] / [`score_into`] are
//! the record-stream drivers the runner and the CLI share; [`build_comparison`] is the
//! comparison both run.
//!
//! It re-exports the workspace crates:
//! - [`toxprompts`]: the 2,400-prompt set of Hawkins et al. (2024);
//! - [`hub_source`]: Hugging Face hub and cache access (the only hub client);
//! - [`engine_api`]: the generator and scorer traits;
//! - [`gen_engine`]: batched greedy generation for Llama, Gemma, Gemma-2 and Phi-3;
//! - [`lora_train`]: LoRA fine-tuning with the authors' recipe;
//! - [`hate_classifier`]: the RoBERTa hate-speech scorer;
//! - [`best_mcmc`]: BEST by MCMC and the toxic-rate comparison.
#![deny(missing_docs)]

pub mod drift;
pub mod engines;
pub mod error;
pub mod gate;
pub mod io;
pub mod lock;
pub mod plan;
pub mod progress;
pub mod records;
pub mod report;
pub mod runner;
pub mod study;
pub mod threads;

mod figures;
mod model_stages;
mod stages;

pub use model_stages::{generate_into, score_into};
pub use stages::{
    CompareSettings, CompareSide, Compared, ComparisonDoc, SubsetComparison, best_params,
    build_comparison,
};

pub use best_mcmc;
pub use engine_api;
pub use gen_engine;
pub use hate_classifier;
pub use hub_source;
pub use lora_train;
pub use toxprompts;
