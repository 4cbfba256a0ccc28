//! Gemma (1).
//!
//! Gemma Team (2024), "Gemma: Open Models Based on Gemini Research and Technology"; reference
//! implementation: transformers' `models/gemma/modeling_gemma.py`. Like Llama, but with
//! tanh-GELU (the legacy `hidden_act: "gelu"` means the tanh form, as transformers maps it),
//! embeddings scaled by √hidden (computed in the model dtype), `(1 + w)` RMSNorm and a head tied
//! to the embeddings.

use super::common::{ActivationKeys, CommonConfig, Defaults};
use super::decoder::{NormKind, Spec};
use super::decoder_family;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// Gemma's defaults for the common keys (transformers' `GemmaConfig`): Llama's, with 8192
/// positions, `head_dim` 256, a tied head and Gemma's activation keys.
pub(crate) const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 8192,
    head_dim: Some(256),
    tie_word_embeddings: true,
    activation: ActivationKeys::Gemma,
    ..Defaults::LLAMA
};

/// A Gemma `config.json` (4.x and transformers-5 layouts): the common keys only.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
}

/// Gemma's changes to the base spec, shared with Gemma-2: `(1 + w)` RMSNorm, embeddings scaled
/// by √hidden, no MLP biases.
pub(crate) fn gemma_spec(mut spec: Spec) -> Spec {
    spec.norm = NormKind::OnePlus;
    spec.embed_scale = true;
    spec.mlp_bias = false;
    spec
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let base = Spec::from_common(&self.common, FAMILY.architecture, &DEFAULTS, path)?;
        Ok(gemma_spec(base))
    }
}

decoder_family!(
    /// A Gemma causal LM.
    GemmaForCausalLM,
    DEFAULTS
);
