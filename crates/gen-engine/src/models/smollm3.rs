//! SmolLM3.
//!
//! Hugging Face (2025), "SmolLM3: smol, multilingual, long-context reasoner"; reference
//! implementation: transformers' `models/smollm3/modeling_smollm3.py`. Llama's decoder (tied head
//! by default, rope base 2·10⁶) where the layers that `no_rope_layers` marks with 0 apply no
//! rotary embedding (1 = rope; by default every `no_rope_layer_interval`-th layer, 4, has none),
//! and sliding-window attention on the `sliding_attention` layers when `use_sliding_window` is
//! set (by default the no-rope layers).

use super::common::{CommonConfig, Defaults, windows_from_layer_types};
use super::decoder::Spec;
use super::decoder_family;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// SmolLM3's defaults for the common keys (transformers' `SmolLM3Config`): Llama's, with 32768
/// positions, a tied head and rope base 2·10⁶.
const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 32768,
    tie_word_embeddings: true,
    rope_theta: 2_000_000.0,
    ..Defaults::LLAMA
};

fn default_interval() -> usize {
    4
}

/// A SmolLM3 `config.json` (4.x and transformers-5 layouts).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The keys every decoder family shares.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Per layer: 1 = the layer applies the rotary embedding, 0 = it does not.
    #[serde(default)]
    pub no_rope_layers: Option<Vec<u8>>,
    /// Without `no_rope_layers`: every this-many-th layer has no rope.
    #[serde(default = "default_interval")]
    pub no_rope_layer_interval: usize,
    /// Whether the `sliding_attention` layers use `sliding_window`.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// The window of the sliding layers.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Per-layer attention kind (`sliding_attention` / `full_attention`).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let mut spec = Spec::from_common(&self.common, FAMILY.architecture, &DEFAULTS, path)?;
        let layers = self.common.num_hidden_layers;
        let use_rope: Vec<bool> = match &self.no_rope_layers {
            Some(l) => l.iter().map(|&x| x != 0).collect(),
            None => {
                if self.no_rope_layer_interval == 0 {
                    return Err(Error::config(
                        path,
                        "no_rope_layer_interval",
                        "must be positive",
                    ));
                }
                (0..layers)
                    .map(|i| (i + 1) % self.no_rope_layer_interval != 0)
                    .collect()
            }
        };
        if use_rope.len() != layers {
            return Err(Error::config(
                path,
                "no_rope_layers",
                format!("has {} entries for {layers} layers", use_rope.len()),
            ));
        }
        let window = self.sliding_window.filter(|_| self.use_sliding_window);
        spec.sliding = match &self.layer_types {
            Some(types) => windows_from_layer_types(types, layers, window, path)?,
            None => use_rope.iter().map(|&r| window.filter(|_| !r)).collect(),
        };
        spec.use_rope = use_rope;
        Ok(spec)
    }
}

decoder_family!(
    /// A SmolLM3 causal LM.
    SmolLM3ForCausalLM,
    DEFAULTS
);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> Result<Spec> {
        let mut v = serde_json::json!({
            "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 8, "num_attention_heads": 2,
        });
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        let c: Config = serde_json::from_value(v).expect("config");
        c.spec(Path::new("config.json"))
    }

    #[test]
    fn no_rope_layers_default_every_fourth_and_one_means_rope() {
        let s = spec(serde_json::json!({})).expect("spec");
        assert_eq!(
            s.use_rope,
            [true, true, true, false, true, true, true, false]
        );
        assert_eq!(s.rope.theta, 2e6);
        assert!(s.tie_word_embeddings);
        assert_eq!(s.sliding, [None; 8]);
        let s = spec(
            serde_json::json!({"no_rope_layers": [0, 1, 1, 1, 1, 1, 1, 0],
                                        "use_sliding_window": true, "sliding_window": 5}),
        )
        .expect("spec");
        assert_eq!(
            s.use_rope,
            [false, true, true, true, true, true, true, false]
        );
        // The no-rope layers slide.
        assert_eq!(s.sliding[0], Some(5));
        assert_eq!(s.sliding[1], None);
        let e = spec(serde_json::json!({"no_rope_layers": [1, 0]})).expect_err("length");
        assert!(e.to_string().contains("no_rope_layers"), "{e}");
    }
}
