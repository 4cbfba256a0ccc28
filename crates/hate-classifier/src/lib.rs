//! `hate-classifier`: The RoBERTa hate-speech scorer (facebook/roberta-hate-speech-dynabench-r4-target), batched, on candle.
//!
//! This crate is part of [toxdrift](https://github.com/toxdrift/toxdrift); its API lands with its own issue.
#![deny(missing_docs)]
