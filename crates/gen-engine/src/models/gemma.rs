//! Gemma (1).
//!
//! Gemma Team (2024), "Gemma: Open Models Based on Gemini Research and Technology"; reference
//! implementation: transformers' `models/gemma/modeling_gemma.py`. Like Llama, but with
//! tanh-GELU (the legacy `hidden_act: "gelu"` means the tanh form, as transformers maps it),
//! embeddings scaled by √hidden (computed in the model dtype), `(1 + w)` RMSNorm and a head tied
//! to the embeddings.

use super::decoder::{Decoder, Layout, NormKind, Spec};
use super::{CausalLm, ForwardCtx, ModelInfo};
use crate::error::{Error, Result};
use crate::lora::LinearFactory;
use crate::ops::Activation;
use crate::rope::{RopeKeys, RopeSpec};
use crate::weights::Weights;
use candle_core::Tensor;
use serde::Deserialize;
use std::path::Path;

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    8192
}
fn default_head_dim() -> usize {
    256
}
fn default_true() -> bool {
    true
}

/// A Gemma `config.json` (4.x and transformers-5 layouts).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
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
    /// Head dimension.
    #[serde(default = "default_head_dim")]
    pub head_dim: usize,
    /// MLP activation (legacy `gelu` means tanh-GELU).
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// MLP activation (newer key, preferred when present).
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Context window.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Rotary base (4.x layout).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Rotary scaling (4.x layout).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Rotary parameters (transformers-5 layout).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Biases on the attention projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Head tied to the embeddings.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Pretraining dtype (4.x layout).
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Pretraining dtype (transformers-5 layout).
    #[serde(default)]
    pub dtype: Option<String>,
}

/// Resolves Gemma's activation keys: `hidden_activation` first, then `hidden_act`; `gelu` is
/// the tanh approximation.
pub(crate) fn gemma_activation(
    hidden_activation: &Option<String>,
    hidden_act: &Option<String>,
    path: &Path,
) -> Result<Activation> {
    let (key, name) = match (hidden_activation, hidden_act) {
        (Some(a), _) => ("hidden_activation", a.as_str()),
        (None, Some(a)) => ("hidden_act", a.as_str()),
        (None, None) => ("hidden_act", "gelu_pytorch_tanh"),
    };
    Activation::parse(name, true)
        .ok_or_else(|| Error::config(path, key, format!("`{name}` is not supported")))
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let rope = RopeSpec::parse(
            RopeKeys {
                rope_theta: self.rope_theta,
                rope_scaling: self.rope_scaling.as_ref(),
                rope_parameters: self.rope_parameters.as_ref(),
                partial_rotary_factor: None,
                original_max_position_embeddings: None,
                max_position_embeddings: self.max_position_embeddings,
                default_theta: 10000.0,
            },
            path,
        )?;
        Ok(Spec {
            architecture: "GemmaForCausalLM",
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_position_embeddings,
            norm: NormKind::OnePlus,
            act: gemma_activation(&self.hidden_activation, &self.hidden_act, path)?,
            embed_scale: true,
            attn_scale: (self.head_dim as f64).powf(-0.5),
            attn_softcap: None,
            final_softcap: None,
            sliding: vec![None; self.num_hidden_layers],
            sandwich_norms: false,
            layout: Layout::Separate,
            attention_bias: self.attention_bias,
            mlp_bias: false,
            tie_word_embeddings: self.tie_word_embeddings,
            rope,
        })
    }
}

/// A Gemma causal LM.
#[derive(Debug, Clone)]
pub struct GemmaForCausalLM(Decoder);

impl GemmaForCausalLM {
    /// Builds the model from its config (read from `path`), weights and linear-layer factory.
    pub fn new(cfg: &Config, path: &Path, vb: &Weights, factory: &LinearFactory) -> Result<Self> {
        Ok(Self(Decoder::new(&cfg.spec(path)?, path, vb, factory)?))
    }
}

impl CausalLm for GemmaForCausalLM {
    fn forward(&self, ctx: ForwardCtx<'_>) -> Result<Tensor> {
        self.0.forward(ctx)
    }
    fn info(&self) -> &ModelInfo {
        self.0.info()
    }
}
