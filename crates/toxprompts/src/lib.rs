//! `toxprompts`: Prompt sets for toxicity studies: RealToxicityPrompts, CEB-Continuation-T and custom JSONL, seeded sampling.
//!
//! This crate is part of [toxdrift](https://github.com/toxdrift/toxdrift); its API lands with its own issue.
#![deny(missing_docs)]
