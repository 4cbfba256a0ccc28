//! toxdrift: did this fine-tune make the model more toxic, and is the difference real?
//!
//! The facade re-exports the workspace crates:
//! - [`toxprompts`]: the 2,400-prompt set of Hawkins et al. (2024);
//! - [`gen_engine`]: batched greedy generation for Llama, Gemma, Gemma-2 and Phi-3;
//! - [`lora_train`]: LoRA fine-tuning with the authors' recipe;
//! - [`hate_classifier`]: the RoBERTa hate-speech scorer;
//! - [`best_mcmc`]: BEST by MCMC and the toxic-rate comparison.
#![deny(missing_docs)]

pub mod engines;
pub mod error;
pub mod figures;
pub mod io;
pub mod model_stages;
pub mod plan;
pub mod progress;
pub mod records;
pub mod report;
pub mod runner;
pub mod stages;
pub mod study;

pub use best_mcmc;
pub use gen_engine;
pub use hate_classifier;
pub use lora_train;
pub use toxprompts;
