//! `config.json` of a `RobertaForSequenceClassification` checkpoint.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

fn default_eps() -> f64 {
    1e-12
}
fn default_pad() -> u32 {
    1
}
fn default_type_vocab() -> usize {
    2
}
fn default_act() -> String {
    "gelu".to_string()
}
fn default_pos_type() -> String {
    "absolute".to_string()
}

/// The keys of a RoBERTa classifier's `config.json` this crate reads (both the hub's 4.x layout
/// and transformers 5's; the keys used here did not change between them).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward inner size.
    pub intermediate_size: usize,
    /// Position embedding rows; RoBERTa uses `pad_token_id + 1` of them as an offset, so texts
    /// hold at most `max_position_embeddings - pad_token_id - 1` tokens.
    pub max_position_embeddings: usize,
    /// Token-type embedding rows (1 for RoBERTa checkpoints; only row 0 is used).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id (also the position-id offset).
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    /// Activation of the feed-forward block; only the exact (erf) `gelu` is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Position embedding kind; only `absolute` is supported.
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    /// Class index to label name, e.g. `{"0": "nothate", "1": "hate"}`.
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    /// `architectures[0]` is expected to be `RobertaForSequenceClassification` (or absent).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let cfg: Config = serde_json::from_slice(&bytes).map_err(|e| Error::BadFile {
            path: path.to_path_buf(),
            message: format!("not a RoBERTa config: {e}"),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::UnsupportedConfig {
                path: path.to_path_buf(),
                message,
            })
        };
        if let Some(arch) = self.architectures.as_ref().and_then(|a| a.first())
            && arch != "RobertaForSequenceClassification"
            && arch != "XLMRobertaForSequenceClassification"
        {
            return bad(format!(
                "architectures[0] is `{arch}`, expected `RobertaForSequenceClassification`"
            ));
        }
        if self.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act `{}` (only the exact `gelu` is supported)",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return bad(format!(
                "position_embedding_type `{}` (only `absolute` is supported)",
                self.position_embedding_type
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.max_position_embeddings <= self.pad_token_id as usize + 2 {
            return bad(format!(
                "max_position_embeddings {} leaves no room after the padding offset {}",
                self.max_position_embeddings,
                self.pad_token_id + 1
            ));
        }
        if self.type_vocab_size == 0 || self.vocab_size == 0 {
            return bad("vocab_size and type_vocab_size must be positive".into());
        }
        if (self.pad_token_id as usize) >= self.vocab_size {
            return bad(format!(
                "pad_token_id {} is outside the vocabulary",
                self.pad_token_id
            ));
        }
        Ok(())
    }

    /// The longest input (special tokens included) the position embeddings allow:
    /// `max_position_embeddings - pad_token_id - 1` (512 for roberta-base checkpoints).
    pub fn max_input_len(&self) -> usize {
        self.max_position_embeddings - self.pad_token_id as usize - 1
    }

    /// The labels in class-index order, or `None` without `id2label`. Keys must be the indices
    /// `0..n` (as strings).
    pub fn labels(&self, path: &Path) -> Result<Option<Vec<String>>> {
        let Some(map) = &self.id2label else {
            return Ok(None);
        };
        let mut labels = vec![None; map.len()];
        for (k, v) in map {
            let i: usize = k.parse().map_err(|_| Error::BadFile {
                path: path.to_path_buf(),
                message: format!("id2label key `{k}` is not a class index"),
            })?;
            let slot = labels.get_mut(i).ok_or_else(|| Error::BadFile {
                path: path.to_path_buf(),
                message: format!("id2label key {i} is out of range 0..{}", map.len()),
            })?;
            *slot = Some(v.clone());
        }
        Ok(Some(labels.into_iter().flatten().collect()))
    }

    pub(crate) fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
