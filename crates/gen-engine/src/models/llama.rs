//! Llama (Llama-2; Llama-3/3.1 with `rope_scaling.rope_type = "llama3"`).
//!
//! Touvron et al. (2023), "Llama 2"; reference implementation: transformers'
//! `models/llama/modeling_llama.py`. Pre-norm decoder, RMSNorm, SiLU-gated MLP, grouped-query
//! attention, rotary embeddings.

use super::common::{CommonConfig, Defaults};
use super::decoder::Spec;
use super::decoder_family;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// Llama's defaults for the common keys: [`Defaults::LLAMA`].
const DEFAULTS: Defaults = Defaults::LLAMA;

/// A Llama `config.json` (4.x and transformers-5 layouts): the common keys only.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        Spec::from_common(&self.common, FAMILY.architecture, &DEFAULTS, path)
    }
}

decoder_family!(
    /// A Llama causal LM.
    LlamaForCausalLM,
    DEFAULTS
);
