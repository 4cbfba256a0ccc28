//! Llama (Llama-2; Llama-3/3.1 with `rope_scaling.rope_type = "llama3"`).
//!
//! Touvron et al. (2023), "Llama 2"; reference implementation: transformers'
//! `models/llama/modeling_llama.py`. Pre-norm decoder, RMSNorm, SiLU-gated MLP, grouped-query
//! attention, rotary embeddings.

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
fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    2048
}

/// A Llama `config.json` (4.x and transformers-5 layouts).
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
    /// Head dimension (defaults to hidden / heads).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// MLP activation.
    #[serde(default = "default_act")]
    pub hidden_act: String,
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
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Head tied to the embeddings.
    #[serde(default)]
    pub tie_word_embeddings: bool,
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
    /// Pretraining length (rarely set for Llama).
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

impl Config {
    pub(crate) fn spec(&self, path: &Path) -> Result<Spec> {
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1));
        let act = Activation::parse(&self.hidden_act, false).ok_or_else(|| {
            Error::config(
                path,
                "hidden_act",
                format!("`{}` is not supported", self.hidden_act),
            )
        })?;
        let rope = RopeSpec::parse(
            RopeKeys {
                rope_theta: self.rope_theta,
                rope_scaling: self.rope_scaling.as_ref(),
                rope_parameters: self.rope_parameters.as_ref(),
                partial_rotary_factor: None,
                original_max_position_embeddings: self.original_max_position_embeddings,
                max_position_embeddings: self.max_position_embeddings,
                default_theta: 10000.0,
            },
            path,
        )?;
        Ok(Spec {
            architecture: "LlamaForCausalLM",
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_position_embeddings,
            norm: NormKind::Plain,
            act,
            embed_scale: false,
            attn_scale: (head_dim as f64).powf(-0.5),
            attn_softcap: None,
            final_softcap: None,
            sliding: vec![None; self.num_hidden_layers],
            sandwich_norms: false,
            layout: Layout::Separate,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            tie_word_embeddings: self.tie_word_embeddings,
            rope,
        })
    }
}

/// A Llama causal LM.
#[derive(Debug, Clone)]
pub struct LlamaForCausalLM(Decoder);

impl LlamaForCausalLM {
    /// Builds the model from its config (read from `path`), weights and linear-layer factory.
    pub fn new(cfg: &Config, path: &Path, vb: &Weights, factory: &LinearFactory) -> Result<Self> {
        Ok(Self(Decoder::new(&cfg.spec(path)?, path, vb, factory)?))
    }
}

impl CausalLm for LlamaForCausalLM {
    fn forward(&self, ctx: ForwardCtx<'_>) -> Result<Tensor> {
        self.0.forward(ctx)
    }
    fn info(&self) -> &ModelInfo {
        self.0.info()
    }
}
