//! `gen-engine`: Batched greedy generation for Llama, Gemma, Gemma-2 and Phi-3 checkpoints with PEFT LoRA adapters, on candle.
//!
//! This crate is part of [toxdrift](https://github.com/toxdrift/toxdrift); its API lands with its own issue.
#![deny(missing_docs)]
