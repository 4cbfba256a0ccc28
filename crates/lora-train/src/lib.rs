//! `lora-train`: LoRA fine-tuning with the recipe of Hawkins et al. (2024), in parity with PEFT.
//!
//! - [`data`]: Dolly-15k and generic instruction JSONL (a local file or the hub cache);
//! - [`template`]: the authors' `[INST]` template, Alpaca, the model's chat template; tokenisation,
//!   truncation and loss masks;
//! - [`optim`]: `torch.optim.AdamW`, HF's warm-up schedules, `clip_grad_norm_`;
//! - [`loss`]: the causal-LM cross-entropy (HF's `ForCausalLMLoss` arithmetic);
//! - [`trainer`]: the loop (accumulation, clipping, schedule, checkpoints, exact resume);
//! - [`adapter`]: PEFT adapter directories and merged HF models;
//! - [`finetune`]: the whole run through gen-engine's models, as `toxdrift finetune` does it.
//!
//! ```
//! use lora_train::optim::Schedule;
//! // HF's get_linear_schedule_with_warmup: 5 warm-up steps, 100 in all.
//! assert_eq!(Schedule::Linear.factor(0, 5, 100), 0.0);
//! assert_eq!(Schedule::Linear.factor(5, 5, 100), 1.0);
//! assert!((Schedule::Linear.factor(52, 5, 100) - 0.5052631578947369).abs() < 1e-12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod adapter;
pub mod data;
pub mod error;
pub mod finetune;
pub mod loss;
pub mod optim;
pub mod template;
pub mod trainer;

pub use error::{Error, Result};
