//! Phi-3 (Phi-3-mini-4k, Phi-3.5-mini with `longrope`).
//!
//! Abdin et al. (2024), "Phi-3 Technical Report"; reference implementation: transformers'
//! `models/phi3/modeling_phi3.py`. Llama-like with fused `qkv_proj` and `gate_up_proj` (PEFT
//! targets the fused names), an optional sliding window on every layer, partial rotary
//! embeddings, and Phi-3.5's `longrope` (alias `su`): the short or long factor set is chosen per
//! forward call from the largest position in that call, divided into the inverse frequencies,
//! and cos/sin are multiplied by `√(1 + ln(factor) / ln(original_max_position_embeddings))`.
//! Keys already in a cache keep the rotation they were written with, as in transformers' forward;
//! greedy generation also reproduces transformers' `prepare_inputs_for_generation` for Phi-3,
//! which drops the cache and recomputes the whole sequence once, when the padded length first
//! exceeds `original_max_position_embeddings` ([`CausalLm::generation_cache_reset`]).

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
    1e-5
}
fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    4096
}

/// A Phi-3 `config.json` (4.x and transformers-5 layouts).
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
    /// Pretraining window (longrope switches to the long factors past it).
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
    /// Sliding window of every layer.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Head tied to the embeddings.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Pretraining dtype (4.x layout).
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Pretraining dtype (transformers-5 layout).
    #[serde(default)]
    pub dtype: Option<String>,
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
                partial_rotary_factor: self.partial_rotary_factor,
                original_max_position_embeddings: self.original_max_position_embeddings,
                max_position_embeddings: self.max_position_embeddings,
                default_theta: 10000.0,
            },
            path,
        )?;
        Ok(Spec {
            architecture: "Phi3ForCausalLM",
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
            sliding: vec![self.sliding_window; self.num_hidden_layers],
            sandwich_norms: false,
            layout: Layout::Fused,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: self.tie_word_embeddings,
            rope,
        })
    }
}

/// A Phi-3 causal LM.
#[derive(Debug, Clone)]
pub struct Phi3ForCausalLM(Decoder, Option<usize>);

impl Phi3ForCausalLM {
    /// Builds the model from its config (read from `path`), weights and linear-layer factory.
    pub fn new(cfg: &Config, path: &Path, vb: &Weights, factory: &LinearFactory) -> Result<Self> {
        Ok(Self(
            Decoder::new(&cfg.spec(path)?, path, vb, factory)?,
            cfg.original_max_position_embeddings,
        ))
    }
}

impl CausalLm for Phi3ForCausalLM {
    fn forward(&self, ctx: ForwardCtx<'_>) -> Result<Tensor> {
        self.0.forward(ctx)
    }
    fn info(&self) -> &ModelInfo {
        self.0.info()
    }
    fn generation_cache_reset(&self) -> Option<usize> {
        self.1.map(|o| o + 1)
    }
}
