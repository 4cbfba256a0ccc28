//! Gemma-2.
//!
//! Gemma Team (2024), "Gemma 2: Improving Open Language Models at a Practical Size"; reference
//! implementation: transformers' `models/gemma2/modeling_gemma2.py`. Gemma plus attention-logit
//! and final-logit soft-capping, alternating sliding-window and global layers (`layer_types`, or
//! by default sliding on even layers), queries scaled by `query_pre_attn_scalar^-½`, and
//! post-attention / pre- and post-feed-forward norms.

use super::decoder::{Decoder, Layout, NormKind, Spec};
use super::gemma::gemma_activation;
use super::{CausalLm, ForwardCtx, ModelInfo};
use crate::error::{Error, Result};
use crate::lora::LinearFactory;
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
    /// MLP activation (older key).
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// MLP activation.
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
    /// Pretraining dtype (4.x layout).
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Pretraining dtype (transformers-5 layout).
    #[serde(default)]
    pub dtype: Option<String>,
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
        let sliding = match &self.layer_types {
            Some(types) => {
                if types.len() != self.num_hidden_layers {
                    return Err(Error::config(
                        path,
                        "layer_types",
                        format!(
                            "has {} entries for {} layers",
                            types.len(),
                            self.num_hidden_layers
                        ),
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(self.sliding_window),
                        "full_attention" => Ok(None),
                        other => Err(Error::config(
                            path,
                            "layer_types",
                            format!("unknown layer type `{other}`"),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None => (0..self.num_hidden_layers)
                .map(|i| {
                    if i % 2 == 0 {
                        self.sliding_window
                    } else {
                        None
                    }
                })
                .collect(),
        };
        Ok(Spec {
            architecture: "Gemma2ForCausalLM",
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
            attn_scale: self.query_pre_attn_scalar.powf(-0.5),
            attn_softcap: self.attn_logit_softcapping,
            final_softcap: self.final_logit_softcapping,
            sliding,
            sandwich_norms: true,
            layout: Layout::Separate,
            attention_bias: self.attention_bias,
            mlp_bias: false,
            tie_word_embeddings: self.tie_word_embeddings,
            rope,
        })
    }
}

/// A Gemma-2 causal LM.
#[derive(Debug, Clone)]
pub struct Gemma2ForCausalLM(Decoder);

impl Gemma2ForCausalLM {
    /// Builds the model from its config (read from `path`), weights and linear-layer factory.
    pub fn new(cfg: &Config, path: &Path, vb: &Weights, factory: &LinearFactory) -> Result<Self> {
        Ok(Self(Decoder::new(&cfg.spec(path)?, path, vb, factory)?))
    }
}

impl CausalLm for Gemma2ForCausalLM {
    fn forward(&self, ctx: ForwardCtx<'_>) -> Result<Tensor> {
        self.0.forward(ctx)
    }
    fn info(&self) -> &ModelInfo {
        self.0.info()
    }
}
