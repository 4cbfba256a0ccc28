//! Qwen3 (dense).
//!
//! Qwen Team (2025), "Qwen3 Technical Report"; reference implementation: transformers'
//! `models/qwen3/modeling_qwen3.py`. Llama's decoder with a per-head q/k RMSNorm (plain `w`, over
//! `head_dim`) before the rotary embedding, an explicit `head_dim` (default 128, not necessarily
//! hidden / heads), `attention_bias` on q/k/v and o, and Qwen2's sliding-window keys.

use super::common::{CommonConfig, Defaults};
use super::decoder::{NormKind, QkNorm, Spec};
use super::decoder_family;
use super::qwen2::SlidingKeys;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// Qwen3's defaults for the common keys (transformers' `Qwen3Config`): Llama's, with 32768
/// positions and `head_dim` 128.
const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 32768,
    head_dim: Some(128),
    ..Defaults::LLAMA
};

/// A Qwen3 `config.json` (4.x and transformers-5 layouts).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Sliding-window attention.
    #[serde(flatten)]
    pub sliding: SlidingKeys,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let mut spec = Spec::from_common(&self.common, FAMILY.architecture, &DEFAULTS, path)?;
        spec.sliding = self.sliding.windows(self.common.num_hidden_layers, path)?;
        spec.qk_norm = QkNorm::PerHead(NormKind::Plain);
        spec.mlp_bias = false;
        Ok(spec)
    }
}

decoder_family!(
    /// A Qwen3 causal LM.
    Qwen3ForCausalLM,
    DEFAULTS
);
