//! Qwen2 (Qwen2, Qwen2.5).
//!
//! Yang et al. (2024), "Qwen2 Technical Report"; reference implementation: transformers'
//! `models/qwen2/modeling_qwen2.py`. Llama's decoder with biases on the q/k/v projections only
//! (whatever `attention_bias` says), a tied or untied head (`tie_word_embeddings`, default
//! untied), and sliding-window attention on the layers from `max_window_layers` on when
//! `use_sliding_window` is set (or on the `sliding_attention` entries of `layer_types`).

use super::common::{CommonConfig, Defaults, windows_from_layer_types};
use super::decoder::Spec;
use super::decoder_family;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// Qwen2's defaults for the common keys (transformers' `Qwen2Config`): Llama's, with 32768
/// positions.
const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 32768,
    ..Defaults::LLAMA
};

fn default_window() -> Option<usize> {
    Some(4096)
}
fn default_max_window_layers() -> usize {
    28
}

/// The sliding-window keys Qwen2 and Qwen3 share.
#[derive(Debug, Clone, Deserialize)]
pub struct SlidingKeys {
    /// Whether `sliding_window` is used at all.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// The window of the sliding layers.
    #[serde(default = "default_window")]
    pub sliding_window: Option<usize>,
    /// Layers from this index on slide (when `layer_types` is absent).
    #[serde(default = "default_max_window_layers")]
    pub max_window_layers: usize,
    /// Per-layer attention kind (`sliding_attention` / `full_attention`; transformers-5 layout).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

impl SlidingKeys {
    /// Per layer, the sliding window, as transformers' `Qwen2Config` derives it.
    pub(crate) fn windows(&self, layers: usize, path: &Path) -> Result<Vec<Option<usize>>> {
        let window = if self.use_sliding_window {
            self.sliding_window
        } else {
            None
        };
        match &self.layer_types {
            Some(types) => windows_from_layer_types(types, layers, window, path),
            None => Ok((0..layers)
                .map(|i| window.filter(|_| i >= self.max_window_layers))
                .collect()),
        }
    }
}

/// A Qwen2 `config.json` (4.x and transformers-5 layouts).
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
        spec.qkv_bias = true;
        spec.o_bias = false;
        spec.mlp_bias = false;
        Ok(spec)
    }
}

decoder_family!(
    /// A Qwen2 causal LM.
    Qwen2ForCausalLM,
    DEFAULTS
);

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(extra: serde_json::Value) -> Vec<Option<usize>> {
        let k: SlidingKeys = serde_json::from_value(extra).expect("keys");
        k.windows(4, Path::new("config.json")).expect("windows")
    }

    #[test]
    fn sliding_layers_as_transformers_derives_them() {
        // Off unless `use_sliding_window`, whatever `sliding_window` says (Qwen2.5's configs).
        let off = windows(serde_json::json!({"sliding_window": 32768, "max_window_layers": 2}));
        assert_eq!(off, [None; 4]);
        let on = windows(serde_json::json!({
            "use_sliding_window": true, "sliding_window": 8, "max_window_layers": 2
        }));
        assert_eq!(on, [None, None, Some(8), Some(8)]);
        let typed = windows(serde_json::json!({
            "use_sliding_window": true, "sliding_window": 8, "max_window_layers": 2,
            "layer_types": ["sliding_attention", "full_attention", "full_attention", "full_attention"]
        }));
        assert_eq!(typed, [Some(8), None, None, None]);
        let null = windows(
            serde_json::json!({"use_sliding_window": true, "sliding_window": null,
                                              "max_window_layers": 0}),
        );
        assert_eq!(null, [None; 4]);
    }
}
