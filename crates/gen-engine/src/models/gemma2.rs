//! Gemma-2.
//!
//! Gemma Team (2024), "Gemma 2: Improving Open Language Models at a Practical Size"; reference
//! implementation: transformers' `models/gemma2/modeling_gemma2.py`. Gemma plus attention-logit
//! and final-logit soft-capping, alternating sliding-window and global layers (`layer_types`, or
//! by default sliding on even layers), queries scaled by `query_pre_attn_scalar^-½`, and
//! post-attention / pre- and post-feed-forward norms.

use super::common::{CommonConfig, Defaults, windows_from_layer_types};
use super::decoder::{NormPlacement, Spec};
use super::decoder_family;
use super::gemma::gemma_spec;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// Gemma-2's defaults for the common keys: Gemma's.
const DEFAULTS: Defaults = super::gemma::DEFAULTS;

fn default_qpas() -> f64 {
    256.0
}
fn default_window() -> Option<usize> {
    Some(4096)
}
fn default_final_cap() -> Option<f64> {
    Some(30.0)
}
fn default_attn_cap() -> Option<f64> {
    Some(50.0)
}

/// A Gemma-2 `config.json` (4.x and transformers-5 layouts).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Queries are scaled by this to the power −½.
    #[serde(default = "default_qpas")]
    pub query_pre_attn_scalar: f64,
    /// Window of the sliding-window layers.
    #[serde(default = "default_window")]
    pub sliding_window: Option<usize>,
    /// Per-layer attention kind (`sliding_attention` / `full_attention`; transformers-5 layout).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Final logits soft cap.
    #[serde(default = "default_final_cap")]
    pub final_logit_softcapping: Option<f64>,
    /// Attention logits soft cap.
    #[serde(default = "default_attn_cap")]
    pub attn_logit_softcapping: Option<f64>,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let mut spec = gemma_spec(Spec::from_common(
            &self.common,
            FAMILY.architecture,
            &DEFAULTS,
            path,
        )?);
        let layers = self.common.num_hidden_layers;
        spec.sliding = match &self.layer_types {
            Some(types) => windows_from_layer_types(types, layers, self.sliding_window, path)?,
            None => (0..layers)
                .map(|i| {
                    if i % 2 == 0 {
                        self.sliding_window
                    } else {
                        None
                    }
                })
                .collect(),
        };
        spec.attn_scale = self.query_pre_attn_scalar.powf(-0.5);
        spec.attn_softcap = self.attn_logit_softcapping;
        spec.final_softcap = self.final_logit_softcapping;
        spec.norms = NormPlacement::Sandwich;
        Ok(spec)
    }
}

decoder_family!(
    /// A Gemma-2 causal LM.
    Gemma2ForCausalLM,
    DEFAULTS
);
