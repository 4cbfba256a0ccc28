//! `lora-train`: LoRA fine-tuning with the recipe of Hawkins et al. (2024), in parity with PEFT.
//!
//! - [`data`]: Dolly-15k and generic instruction JSONL (a local file or the hub cache);
//! - [`template`]: the authors' `[INST]` template, Alpaca, the model's chat template; tokenisation,
//!   truncation and loss masks;
//! - [`optim`]: `torch.optim.AdamW`, HF's warm-up schedules, `clip_grad_norm_`;
//! - [`loss`]: the causal-LM cross-entropy (HF's `ForCausalLMLoss` arithmetic);
//! - [`trainer`]: the loop (accumulation, clipping, schedule, checkpoints, exact resume);
//! - [`adapter`]: PEFT adapter directories and merged HF models;
//! - [`finetune`]: the whole run through gen-engine's models, as `toxdrift finetune` does it;
//!   over a bitsandbytes 4-bit base it is QLoRA (the base stays packed and is dequantized in
//!   each product, only the LoRA weights train; checked against PEFT's QLoRA).
//!
//! Semantics, as PEFT + HF Trainer define them (checked by the parity fixtures):
//! - **Loss and accumulation**: each micro-batch's token cross-entropy is *summed* and divided
//!   by the number of label tokens of the whole accumulation window (HF Trainer's
//!   `num_items_in_batch`, counted over `labels[..., 1:]`), so the gradient is that of the
//!   window's token mean; the logged loss is that mean.
//! - **Clipping** (`clip_grad_norm_`, max 1.0), then **AdamW** (`torch.optim.AdamW`), with the
//!   learning rate of HF's schedules (the first step of a warm-up runs at lr 0).
//! - **Shuffling**: a Fisher–Yates permutation per epoch driven by SplitMix64 seeded from
//!   `(seed, epoch)` — not torch's generator, so shuffled orders differ from HF's; with
//!   `shuffle: false` the order is the dataset's. Micro-batches are right-padded with EOS
//!   (labels ignored there; causal attention never sees the padding).
//! - **Resume**: a checkpoint holds the adapter, the AdamW moments, the step and the step log;
//!   the data position is a function of seed, epoch and step, so a resumed run is bit-identical
//!   (with `lora_dropout` 0; candle's dropout RNG is not seedable, so with dropout only the
//!   data order and optimiser state resume exactly).
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
pub mod memory;
pub mod optim;
pub mod template;
pub mod trainer;

pub use error::{Error, Result};
