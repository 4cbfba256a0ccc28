//! The classifier's tokenizer: `tokenizer.json` when the checkpoint has one, else RoBERTa's
//! byte-level BPE rebuilt from `vocab.json` + `merges.txt` the way transformers'
//! `RobertaTokenizer` builds it.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// Where the tokenizer comes from.
#[derive(Debug, Clone)]
pub(crate) enum TokenizerFiles {
    /// A `tokenizer.json`.
    Json(PathBuf),
    /// `vocab.json` + `merges.txt`.
    VocabMerges { vocab: PathBuf, merges: PathBuf },
}

/// The parts of `tokenizer_config.json` that matter here.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenizerConfig {
    pub add_prefix_space: bool,
    pub model_max_length: Option<usize>,
    pub trim_offsets: bool,
}

impl TokenizerConfig {
    pub(crate) fn from_file(path: Option<&Path>) -> Result<Self> {
        let mut cfg = TokenizerConfig {
            add_prefix_space: false,
            model_max_length: None,
            trim_offsets: true,
        };
        let Some(path) = path else {
            return Ok(cfg);
        };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::BadFile {
            path: path.to_path_buf(),
            message: format!("not JSON: {e}"),
        })?;
        if let Some(b) = v.get("add_prefix_space").and_then(|b| b.as_bool()) {
            cfg.add_prefix_space = b;
        }
        if let Some(b) = v.get("trim_offsets").and_then(|b| b.as_bool()) {
            cfg.trim_offsets = b;
        }
        // transformers writes a huge sentinel (1e30) when the length is unknown.
        cfg.model_max_length = v
            .get("model_max_length")
            .and_then(|m| m.as_f64())
            .filter(|m| *m >= 1.0 && *m < 1e12)
            .map(|m| m as usize);
        Ok(cfg)
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// RoBERTa's special tokens, as `RobertaTokenizer` registers them (`<mask>` strips spaces on
/// its left).
const SPECIALS: [&str; 5] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];

/// Loads the tokenizer and sets truncation at `max_len` tokens (special tokens included) and no
/// padding (batches are padded by the model code).
pub(crate) fn load(
    files: &TokenizerFiles,
    cfg: &TokenizerConfig,
    max_len: usize,
) -> Result<Tokenizer> {
    let (mut tok, path) = match files {
        TokenizerFiles::Json(path) => (
            Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?,
            path.clone(),
        ),
        TokenizerFiles::VocabMerges { vocab, merges } => {
            (from_vocab_merges(vocab, merges, cfg)?, vocab.clone())
        }
    };
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| tok_err(&path, e))?;
    Ok(tok)
}

fn from_vocab_merges(vocab: &Path, merges: &Path, cfg: &TokenizerConfig) -> Result<Tokenizer> {
    let (Some(v), Some(m)) = (vocab.to_str(), merges.to_str()) else {
        return Err(tok_err(vocab, "path is not valid UTF-8"));
    };
    let bpe = BPE::from_file(v, m).build().map_err(|e| {
        tok_err(
            vocab,
            format!("cannot build the BPE from vocab.json + merges.txt: {e}"),
        )
    })?;
    let id = |t: &str| {
        bpe_token_id(&bpe, t).ok_or_else(|| {
            tok_err(
                vocab,
                format!("special token `{t}` is not in the vocabulary"),
            )
        })
    };
    let (cls, sep) = (id("<s>")?, id("</s>")?);
    let specials: Vec<AddedToken> = SPECIALS
        .iter()
        .filter(|t| bpe_token_id(&bpe, t).is_some())
        .map(|t| AddedToken::from(*t, true).lstrip(*t == "<mask>"))
        .collect();
    let mut tok = Tokenizer::new(bpe);
    let byte_level = ByteLevel::default()
        .add_prefix_space(cfg.add_prefix_space)
        .trim_offsets(cfg.trim_offsets);
    tok.with_pre_tokenizer(Some(byte_level));
    tok.with_decoder(Some(byte_level));
    tok.with_post_processor(Some(
        RobertaProcessing::new(("</s>".to_string(), sep), ("<s>".to_string(), cls))
            .trim_offsets(cfg.trim_offsets)
            .add_prefix_space(cfg.add_prefix_space),
    ));
    tok.add_special_tokens(specials)
        .map_err(|e| tok_err(vocab, format!("cannot add the special tokens: {e}")))?;
    Ok(tok)
}

fn bpe_token_id(bpe: &BPE, token: &str) -> Option<u32> {
    use tokenizers::Model;
    bpe.token_to_id(token)
}
