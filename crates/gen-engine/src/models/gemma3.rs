//! Gemma-3 text (`Gemma3ForCausalLM`, `model_type` `gemma3_text`; Gemma-3-270M / 1B, and the
//! language model of the larger multimodal checkpoints).
//!
//! Gemma Team (2025), "Gemma 3 Technical Report"; reference implementation: transformers'
//! `models/gemma3/modeling_gemma3.py`. Gemma-2's decoder (embeddings × √hidden, `(1 + w)`
//! RMSNorm in f32, four norms per layer, tanh-GELU, queries scaled by
//! `query_pre_attn_scalar^-½`, a tied head) plus:
//! - per-head q/k RMSNorm (`(1 + w)`, f32) before the rotary embedding;
//! - local (sliding-window) and global layers from `layer_types`, or else every
//!   `sliding_window_pattern`-th layer global (default 6). As in transformers, the
//!   `_sliding_window_pattern` key that hub configs carry beside `layer_types` is not read
//!   (transformers ignores it too, and falls back to 6);
//! - two rotary embeddings: global layers on `rope_theta` (default 10⁶) with `rope_scaling`,
//!   local layers on `rope_local_base_freq` (default 10⁴) without scaling; in the
//!   transformers-5 layout, `rope_parameters.full_attention` / `.sliding_attention`;
//! - final-logit soft-capping only when `final_logit_softcapping` is set (null by default).
//!   `attn_logit_softcapping` is accepted and, as in transformers' Gemma-3 (whose attention
//!   never passes it on), not applied.

use super::common::{ActivationKeys, CommonConfig, Defaults};
use super::decoder::{NormKind, NormPlacement, QkNorm, Spec};
use super::decoder_family;
use super::gemma::gemma_spec;
use crate::error::{Error, Result};
use crate::rope::{RopeKeys, RopeSpec};
use serde::Deserialize;
use std::path::Path;

/// Gemma-3's defaults for the common keys (transformers' `Gemma3TextConfig`): Gemma's, with
/// 131072 positions, only `hidden_activation` read, and the global layers' rope (base 10⁶, the
/// `full_attention` entry of per-layer-type rope parameters) as the main one.
const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 131_072,
    activation: ActivationKeys::HiddenActivation,
    rope_theta: 1_000_000.0,
    rope_layer_type: Some("full_attention"),
    ..super::gemma::DEFAULTS
};

/// The local layers' rotary base when the config gives none.
const LOCAL_THETA: f64 = 10_000.0;

fn default_qpas() -> f64 {
    256.0
}
fn default_window() -> Option<usize> {
    Some(4096)
}

/// A Gemma-3 text `config.json` (4.x and transformers-5 layouts).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Queries are scaled by this to the power −½.
    #[serde(default = "default_qpas")]
    pub query_pre_attn_scalar: f64,
    /// Window of the local layers.
    #[serde(default = "default_window")]
    pub sliding_window: Option<usize>,
    /// Per-layer attention kind (`sliding_attention` / `full_attention`).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Every this-many-th layer is global (4.x layout; used when `layer_types` is absent).
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// Rotary base of the local layers (4.x layout).
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// Final logits soft cap.
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// Attention logits soft cap (not applied, as in transformers).
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    /// Bidirectional attention (EmbeddingGemma): not supported by a causal LM here.
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let c = &self.common;
        let mut spec = gemma_spec(Spec::from_common(c, FAMILY.architecture, &DEFAULTS, path)?);
        if self.use_bidirectional_attention == Some(true) {
            return Err(Error::config(
                path,
                "use_bidirectional_attention",
                "bidirectional attention is not supported",
            ));
        }
        let layers = c.num_hidden_layers;
        spec.sliding = match &self.layer_types {
            Some(types) => {
                super::common::windows_from_layer_types(types, layers, self.sliding_window, path)?
            }
            None => {
                let pattern = self.sliding_window_pattern.unwrap_or(6);
                if pattern == 0 {
                    return Err(Error::config(
                        path,
                        "sliding_window_pattern",
                        "must be positive",
                    ));
                }
                (0..layers)
                    .map(|i| {
                        if (i + 1) % pattern != 0 {
                            self.sliding_window
                        } else {
                            None
                        }
                    })
                    .collect()
            }
        };
        // The local rope: the `sliding_attention` entry of per-layer-type rope parameters, or
        // `rope_local_base_freq` with no scaling.
        let nested = c.rope_parameters.as_ref().filter(|v| {
            v.as_object()
                .is_some_and(|m| !m.is_empty() && m.values().all(|x| x.is_object()))
        });
        spec.local_rope = Some(RopeSpec::parse(
            RopeKeys {
                rope_theta: self.rope_local_base_freq,
                rope_scaling: None,
                rope_parameters: nested,
                partial_rotary_factor: c.partial_rotary_factor,
                original_max_position_embeddings: c.original_max_position_embeddings,
                max_position_embeddings: spec.max_position_embeddings,
                default_theta: LOCAL_THETA,
                layer_type: Some("sliding_attention"),
            },
            path,
        )?);
        spec.qk_norm = QkNorm::PerHead(NormKind::OnePlus);
        spec.norms = NormPlacement::Sandwich;
        spec.attn_scale = self.query_pre_attn_scalar.powf(-0.5);
        spec.attn_softcap = None;
        spec.final_softcap = self.final_logit_softcapping;
        Ok(spec)
    }
}

decoder_family!(
    /// A Gemma-3 text causal LM.
    Gemma3ForCausalLM,
    DEFAULTS
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rope::RopeKind;

    fn spec(extra: serde_json::Value) -> Result<Spec> {
        let mut v = serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"],
            "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 7, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 4,
        });
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        let c: Config = serde_json::from_value(v).expect("config");
        c.spec(Path::new("config.json"))
    }

    fn global_layers(s: &Spec) -> Vec<usize> {
        (0..s.num_layers)
            .filter(|&i| s.sliding[i].is_none())
            .collect()
    }

    #[test]
    fn defaults_match_transformers() {
        let s = spec(serde_json::json!({})).expect("spec");
        // Pattern 6: layer 5 is the one global layer of seven.
        assert_eq!(global_layers(&s), [5]);
        assert_eq!(s.sliding[0], Some(4096));
        assert_eq!(s.rope.theta, 1e6);
        assert_eq!(s.local_rope.as_ref().map(|r| r.theta), Some(1e4));
        assert_eq!(s.attn_scale, 256f64.powf(-0.5));
        assert_eq!(s.final_softcap, None);
        assert_eq!(s.attn_softcap, None);
        assert!(s.tie_word_embeddings);
    }

    #[test]
    fn pattern_keys_follow_transformers() {
        let s = spec(serde_json::json!({"sliding_window_pattern": 3})).expect("spec");
        assert_eq!(global_layers(&s), [2, 5]);
        // transformers reads `sliding_window_pattern` only: the serialised private
        // `_sliding_window_pattern` leaves the default of 6.
        let s = spec(serde_json::json!({"_sliding_window_pattern": 3})).expect("spec");
        assert_eq!(global_layers(&s), [5]);
        // `layer_types` wins over the pattern.
        let types = ["full_attention", "sliding_attention"];
        let lt: Vec<&str> = (0..7).map(|i| types[i % 2]).collect();
        let s = spec(serde_json::json!({"layer_types": lt, "sliding_window_pattern": 3}))
            .expect("spec");
        assert_eq!(global_layers(&s), [0, 2, 4, 6]);
        let e = spec(serde_json::json!({"sliding_window_pattern": 0})).expect_err("zero");
        assert!(
            matches!(&e, Error::Config { key, .. } if key == "sliding_window_pattern"),
            "{e}"
        );
    }

    #[test]
    fn rope_in_both_layouts() {
        let v4 = spec(serde_json::json!({
            "rope_theta": 5e5, "rope_local_base_freq": 2e3,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        }))
        .expect("4.x");
        let v5 = spec(serde_json::json!({
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 5e5},
                "sliding_attention": {"rope_type": "default", "rope_theta": 2e3},
            },
        }))
        .expect("5.x");
        for s in [&v4, &v5] {
            assert_eq!(s.rope.theta, 5e5);
            assert_eq!(s.rope.kind, RopeKind::Linear { factor: 8.0 });
            let local = s.local_rope.as_ref().expect("local rope");
            assert_eq!(local.theta, 2e3);
            assert_eq!(local.kind, RopeKind::Default);
        }
    }

    #[test]
    fn bidirectional_attention_is_refused() {
        let e = spec(serde_json::json!({"use_bidirectional_attention": true})).expect_err("bidi");
        assert!(e.to_string().contains("use_bidirectional_attention"), "{e}");
    }
}
