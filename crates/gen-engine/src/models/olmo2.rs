//! OLMo-2.
//!
//! Team OLMo (2024), "2 OLMo 2 Furious"; reference implementation: transformers'
//! `models/olmo2/modeling_olmo2.py`. Llama's decoder with the norms moved after each sublayer
//! (`post_attention_layernorm` on the attention output and `post_feedforward_layernorm` on the
//! MLP output, each before its residual sum; no input norms), and an RMSNorm of the queries and
//! keys over all heads at once (`q_norm` `[heads · head_dim]`, `k_norm` `[kv_heads · head_dim]`)
//! before the reshape into heads and the rotary embedding.

use super::common::{CommonConfig, Defaults};
use super::decoder::{NormPlacement, QkNorm, Spec};
use super::decoder_family;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// OLMo-2's defaults for the common keys (transformers' `Olmo2Config`): Llama's, with eps 1e-5.
const DEFAULTS: Defaults = Defaults {
    rms_norm_eps: 1e-5,
    ..Defaults::LLAMA
};

/// An OLMo-2 `config.json` (4.x and transformers-5 layouts): the common keys only.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let mut spec = Spec::from_common(&self.common, FAMILY.architecture, &DEFAULTS, path)?;
        spec.norms = NormPlacement::Post;
        spec.qk_norm = QkNorm::AllHeads;
        // transformers' OLMo-2 MLP has no biases.
        spec.mlp_bias = false;
        Ok(spec)
    }
}

decoder_family!(
    /// An OLMo-2 causal LM.
    Olmo2ForCausalLM,
    DEFAULTS
);
