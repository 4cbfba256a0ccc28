//! The `config.json` keys every decoder family shares, declared once, and the base [`Spec`] built
//! from them with the Llama-style defaults; a family flattens [`CommonConfig`] into its own
//! `Config` (its own keys only beside it) and adjusts the base `Spec` field by field.
//!
//! Hub configs carry many keys no family reads (`model_type`, `initializer_range`, …): they are
//! accepted and ignored. Keys with a per-family default (`rms_norm_eps`, `max_position_embeddings`,
//! `head_dim`, `tie_word_embeddings`, the activation) are `Option`s here, filled from the family's
//! [`Defaults`].

use super::decoder::{Layout, NormKind, NormPlacement, QkNorm, Spec};
use crate::error::{Error, Result};
use crate::ops::Activation;
use crate::rope::{RopeKeys, RopeSpec};
use serde::Deserialize;
use std::path::Path;

/// The decoder keys of a Hugging Face `config.json` that every family reads (4.x and
/// transformers-5 layouts). Flattened into each family's `Config`.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to the query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head dimension (family default: hidden / heads, or Gemma's 256).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// MLP activation (Gemma's legacy `gelu` means tanh-GELU).
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// MLP activation (Gemma's newer key, preferred there when present).
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// RMSNorm epsilon (family default).
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    /// Context window (family default).
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Pretraining window (Phi-3's longrope switches to the long factors past it).
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// Rotary base (4.x layout).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Rotary scaling (4.x layout).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Rotary parameters (transformers-5 layout).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Fraction of each head that rotates.
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// Biases on the attention projections (q/k/v and o alike, as Llama's config means it).
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Head tied to the embeddings (family default).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Pretraining dtype (4.x layout).
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Pretraining dtype (transformers-5 layout).
    #[serde(default)]
    pub dtype: Option<String>,
    /// EOS id(s).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// BOS id.
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
}

/// How a family reads its activation keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActivationKeys {
    /// `hidden_act` (default `silu`); `gelu` is the exact (erf) GELU.
    HiddenAct,
    /// `hidden_activation`, then `hidden_act` (default `gelu_pytorch_tanh`); the legacy `gelu`
    /// is the tanh approximation, as transformers maps it for Gemma.
    Gemma,
    /// `hidden_activation` only (default `gelu_pytorch_tanh`), names as transformers' activation
    /// table reads them (`gelu` is the exact GELU): Gemma-3's config has no `hidden_act`.
    HiddenActivation,
}

/// A family's defaults for the common keys a config may omit, and its projection layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    /// How the checkpoint stores the projections (also gives the family's LoRA targets).
    pub layout: Layout,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f64,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// `head_dim` (`None`: hidden / heads).
    pub head_dim: Option<usize>,
    /// `tie_word_embeddings`.
    pub tie_word_embeddings: bool,
    /// Which activation keys are read, and how.
    pub activation: ActivationKeys,
    /// The rotary base when the config gives none (the config class's `default_theta`).
    pub rope_theta: f64,
    /// Which entry of a per-layer-type `rope_parameters` is the model's main rope (`None`: the
    /// entries must agree).
    pub rope_layer_type: Option<&'static str>,
}

impl Defaults {
    /// Llama's (transformers' `LlamaConfig`): separate projections, eps 1e-6, 2048 positions,
    /// `head_dim` hidden / heads, an untied head, `hidden_act` (default `silu`).
    pub(crate) const LLAMA: Defaults = Defaults {
        layout: Layout::Separate,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 2048,
        head_dim: None,
        tie_word_embeddings: false,
        activation: ActivationKeys::HiddenAct,
        rope_theta: 10000.0,
        rope_layer_type: None,
    };
}

impl ActivationKeys {
    fn resolve(self, c: &CommonConfig, path: &Path) -> Result<Activation> {
        let (key, name, gemma) = match self {
            Self::HiddenAct => (
                "hidden_act",
                c.hidden_act.as_deref().unwrap_or("silu"),
                false,
            ),
            Self::Gemma => match (&c.hidden_activation, &c.hidden_act) {
                (Some(a), _) => ("hidden_activation", a.as_str(), true),
                (None, Some(a)) => ("hidden_act", a.as_str(), true),
                (None, None) => ("hidden_act", "gelu_pytorch_tanh", true),
            },
            Self::HiddenActivation => (
                "hidden_activation",
                c.hidden_activation
                    .as_deref()
                    .unwrap_or("gelu_pytorch_tanh"),
                false,
            ),
        };
        Activation::parse(name, gemma)
            .ok_or_else(|| Error::config(path, key, format!("`{name}` is not supported")))
    }
}

impl Spec {
    /// The base spec of a config: the common keys with the family's `defaults`, and the
    /// Llama-style decoder (plain RMSNorm, no embedding scale, `head_dim^-½` attention scale, no
    /// soft-capping or sliding window, `attention_bias` on q/k/v and o), in the family's layout.
    /// A family adjusts the fields where it differs.
    pub(crate) fn from_common(
        c: &CommonConfig,
        architecture: &'static str,
        defaults: &Defaults,
        path: &Path,
    ) -> Result<Spec> {
        let max_position_embeddings = c
            .max_position_embeddings
            .unwrap_or(defaults.max_position_embeddings);
        let head_dim = c
            .head_dim
            .or(defaults.head_dim)
            .unwrap_or(c.hidden_size / c.num_attention_heads.max(1));
        let rope = RopeSpec::parse(
            RopeKeys {
                rope_theta: c.rope_theta,
                rope_scaling: c.rope_scaling.as_ref(),
                rope_parameters: c.rope_parameters.as_ref(),
                partial_rotary_factor: c.partial_rotary_factor,
                original_max_position_embeddings: c.original_max_position_embeddings,
                max_position_embeddings,
                default_theta: defaults.rope_theta,
                layer_type: defaults.rope_layer_type,
            },
            path,
        )?;
        Ok(Spec {
            architecture,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim,
            rms_norm_eps: c.rms_norm_eps.unwrap_or(defaults.rms_norm_eps),
            max_position_embeddings,
            norm: NormKind::Plain,
            act: defaults.activation.resolve(c, path)?,
            embed_scale: false,
            attn_scale: (head_dim as f64).powf(-0.5),
            attn_softcap: None,
            final_softcap: None,
            sliding: vec![None; c.num_hidden_layers],
            norms: NormPlacement::Pre,
            qk_norm: QkNorm::None,
            local_rope: None,
            use_rope: vec![true; c.num_hidden_layers],
            layout: defaults.layout,
            qkv_bias: c.attention_bias,
            o_bias: c.attention_bias,
            mlp_bias: c.mlp_bias,
            tie_word_embeddings: c
                .tie_word_embeddings
                .unwrap_or(defaults.tie_word_embeddings),
            rope,
            generation_cache_reset: None,
        })
    }
}

/// The per-layer sliding windows of transformers' `layer_types` (`sliding_attention` layers get
/// `window`, `full_attention` layers none); errors name the key when the list has the wrong
/// length or an unknown type.
pub(crate) fn windows_from_layer_types(
    types: &[String],
    layers: usize,
    window: Option<usize>,
    path: &Path,
) -> Result<Vec<Option<usize>>> {
    if types.len() != layers {
        return Err(Error::config(
            path,
            "layer_types",
            format!("has {} entries for {layers} layers", types.len()),
        ));
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "sliding_attention" => Ok(window),
            "full_attention" => Ok(None),
            other => Err(Error::config(
                path,
                "layer_types",
                format!("unknown layer type `{other}`"),
            )),
        })
        .collect()
}
