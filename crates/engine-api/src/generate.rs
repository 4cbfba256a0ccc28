//! The text-generation seam.

use crate::error::Result;
use serde::{Deserialize, Serialize};

/// Why a completion stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// The completion reached its token budget (`max_new_tokens`).
    Length,
}

impl FinishReason {
    /// `eos` or `length` (the generations JSONL spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::Length => "length",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One prompt's completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The continuation's text (without the prompt).
    pub text: String,
    /// The continuation's token ids, when the backend has them (with the EOS id when it stopped
    /// on one); `None` for a backend that returns text only.
    pub token_ids: Option<Vec<u32>>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

/// What an engine is, for manifests and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// The implementation (`gen-engine`, `hate-classifier`, a remote backend's name).
    pub backend: String,
    /// The model it runs (a directory, a hub id, a served model's name).
    pub model: String,
    /// The settings that shape its output (an object; the backend chooses the keys).
    pub settings: serde_json::Value,
}

/// Text generation: prompts in, one [`Completion`] per prompt out, in the prompts' order.
///
/// Object-safe and `Send`, so a caller can hold a `Box<dyn TextGenerator>` chosen at run time.
pub trait TextGenerator: Send {
    /// What this generator is: backend, model and the settings that shape its output.
    fn describe(&self) -> EngineInfo;

    /// How many prompts the backend handles well in one call (its batch size); callers that
    /// split their work into chunks size them by it.
    fn preferred_batch_size(&self) -> usize;

    /// Generates a completion for every prompt, in the prompts' order, calling `progress(n)`
    /// each time `n` more prompts are finished (the calls add up to `prompts.len()`).
    fn complete(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Completion>>;

    /// Generates every prompt and hands each completion to `sink` with the prompt's index
    /// as soon as the backend has it — in any order (a backend with requests in flight hands
    /// them over as they finish, so a caller can write records while the rest are still
    /// running); `progress(n)` as in [`TextGenerator::complete`]. An error from `sink` stops the
    /// work (no new prompt is started) and is returned.
    ///
    /// The default runs [`TextGenerator::complete`] on all the prompts, then hands them over in
    /// order.
    fn complete_each(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
        sink: &mut dyn FnMut(usize, Completion) -> Result<()>,
    ) -> Result<()> {
        let done = self.complete(prompts, progress)?;
        crate::Error::check_count("completions", prompts.len(), done.len())?;
        for (i, c) in done.into_iter().enumerate() {
            sink(i, c)?;
        }
        Ok(())
    }
}

impl<G: TextGenerator + ?Sized> TextGenerator for Box<G> {
    fn describe(&self) -> EngineInfo {
        (**self).describe()
    }
    fn preferred_batch_size(&self) -> usize {
        (**self).preferred_batch_size()
    }
    fn complete(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Completion>> {
        (**self).complete(prompts, progress)
    }
    fn complete_each(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
        sink: &mut dyn FnMut(usize, Completion) -> Result<()>,
    ) -> Result<()> {
        (**self).complete_each(prompts, progress, sink)
    }
}
