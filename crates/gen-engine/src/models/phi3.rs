//! Phi-3 (Phi-3-mini-4k, Phi-3.5-mini with `longrope`).
//!
//! Abdin et al. (2024), "Phi-3 Technical Report"; reference implementation: transformers'
//! `models/phi3/modeling_phi3.py`. Llama-like with fused `qkv_proj` and `gate_up_proj` (PEFT
//! targets the fused names), an optional sliding window on every layer, partial rotary
//! embeddings, and Phi-3.5's `longrope` (alias `su`): the short or long factor set is chosen per
//! forward call from the largest position in that call, divided into the inverse frequencies,
//! and cos/sin are multiplied by `√(1 + ln(factor) / ln(original_max_position_embeddings))`.
//! Keys already in a cache keep the rotation they were written with, as in transformers' forward;
//! greedy generation also reproduces transformers' `prepare_inputs_for_generation` for Phi-3,
//! which drops the cache and recomputes the whole sequence once, when the padded length first
//! exceeds `original_max_position_embeddings` ([`super::CausalLm::generation_cache_reset`]).

use super::common::{CommonConfig, Defaults};
use super::decoder::{Layout, Spec};
use super::decoder_family;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// Phi-3's defaults for the common keys (transformers' `Phi3Config`): Llama's, with fused
/// projections, eps 1e-5 and 4096 positions.
const DEFAULTS: Defaults = Defaults {
    layout: Layout::Fused,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 4096,
    ..Defaults::LLAMA
};

/// A Phi-3 `config.json` (4.x and transformers-5 layouts).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Sliding window of every layer.
    #[serde(default)]
    pub sliding_window: Option<usize>,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let mut spec = Spec::from_common(&self.common, FAMILY.architecture, &DEFAULTS, path)?;
        spec.sliding = vec![self.sliding_window; self.common.num_hidden_layers];
        // transformers' Phi-3 has no attention biases, whatever `attention_bias` says.
        spec.qkv_bias = false;
        spec.o_bias = false;
        spec.mlp_bias = false;
        spec.generation_cache_reset = self.common.original_max_position_embeddings.map(|o| o + 1);
        Ok(spec)
    }
}

decoder_family!(
    /// A Phi-3 causal LM.
    Phi3ForCausalLM,
    DEFAULTS
);
