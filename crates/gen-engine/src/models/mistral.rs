//! Mistral (Mistral-7B v0.1–v0.3, and the Mistral-architecture fine-tunes).
//!
//! Jiang et al. (2023), "Mistral 7B"; reference implementation: transformers'
//! `models/mistral/modeling_mistral.py`. Llama's decoder without any biases, with sliding-window
//! attention on every layer when `sliding_window` is set (default 4096 when the key is absent;
//! `null`, as v0.2+ configs have it, means none).

use super::common::{CommonConfig, Defaults};
use super::decoder::Spec;
use super::decoder_family;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// Mistral's defaults for the common keys (transformers' `MistralConfig`): Llama's, with 131072
/// positions.
const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 4096 * 32,
    ..Defaults::LLAMA
};

fn default_window() -> Option<usize> {
    Some(4096)
}

/// A Mistral `config.json` (4.x and transformers-5 layouts).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Sliding window of every layer (`null`: none).
    #[serde(default = "default_window")]
    pub sliding_window: Option<usize>,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let mut spec = Spec::from_common(&self.common, FAMILY.architecture, &DEFAULTS, path)?;
        spec.sliding = vec![self.sliding_window; self.common.num_hidden_layers];
        // transformers' Mistral has no biases, whatever `attention_bias` / `mlp_bias` say.
        spec.qkv_bias = false;
        spec.o_bias = false;
        spec.mlp_bias = false;
        Ok(spec)
    }
}

decoder_family!(
    /// A Mistral causal LM.
    MistralForCausalLM,
    DEFAULTS
);
