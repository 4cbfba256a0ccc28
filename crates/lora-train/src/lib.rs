//! `lora-train`: LoRA fine-tuning on Dolly-15k with the recipe of Hawkins et al. (2024); PEFT-format adapters.
//!
//! This crate is part of [toxdrift](https://github.com/toxdrift/toxdrift); its API lands with its own issue.
#![deny(missing_docs)]
