//! `hate-classifier`: the RoBERTa hate-speech scorer of the toxdrift study
//! (`facebook/roberta-hate-speech-dynabench-r4-target`), batched, on candle.
//!
//! [`HateClassifier`] loads a `RobertaForSequenceClassification` checkpoint from a local
//! directory or a hub id (through the Hugging Face cache; `HF_HUB_OFFLINE=1` reads the cache
//! only), with its tokenizer from `tokenizer.json` or, as the real checkpoint ships it, from
//! `vocab.json` + `merges.txt`. [`HateClassifier::score`] gives each text the softmax probability
//! of the label named `hate` in the config's `id2label` (the way the Evaluate library's toxicity
//! measurement reads transformers' `text-classification` pipeline), truncating at the model's
//! maximum length; [`HateClassifier::is_toxic`] applies the threshold (default 0.5, `>=`) and
//! [`HateClassifier::embed`] gives the pooled `<s>` sentence embedding. Options go through
//! [`ClassifierParams`]. The classifier is `Send + Sync`: a service can share one.
//!
//! It is also an [`engine_api::TextScorer`] (labels from `id2label`, probabilities from
//! [`HateClassifier::probabilities`], the rule from the configured label and threshold), the seam
//! through which the toxdrift facade drives any scorer; its own [`HateClassifier::score`] and
//! [`HateClassifier::is_toxic`] give the same numbers.
//!
//! On the CPU the forward pass packs a batch's texts into one padding-free matrix (see the
//! `cpu` module's docs); on other devices it runs candle ops on length-bucketed padded batches.
//!
//! ```
//! use hate_classifier::HateClassifier;
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/classifier/vocab-merges");
//! let clf = HateClassifier::params().batch_size(8).load(dir)?;
//! let scores = clf.score(&["You are a stupid idiot.", "The tiny robot walked to the market."])?;
//! assert_eq!(scores.len(), 2);
//! assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
//! let flags: Vec<bool> = scores.iter().map(|&s| clf.is_toxic(s)).collect();
//! assert_eq!(flags[0], scores[0] >= 0.5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod config;
mod cpu;
mod error;
mod model;
mod source;
mod tokenizer;

pub use candle_core::Device;
pub use config::Config;
pub use error::{Error, Result};
pub use hub_source::Hub;
pub use model::RobertaForSequenceClassification;

use candle_core::DType;
use candle_nn::VarBuilder;
use model::Weights;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// The classifier the study uses.
pub const DEFAULT_MODEL: &str = "facebook/roberta-hate-speech-dynabench-r4-target";
/// The label whose probability is the score.
pub const DEFAULT_LABEL: &str = "hate";
/// A text is toxic when its score is at least this (the Evaluate library's `ratio` uses `>=`).
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Texts per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Which implementation runs the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// The packed CPU kernels on the CPU, candle ops on any other device.
    #[default]
    Auto,
    /// candle ops on padded, length-bucketed batches, on any device.
    Candle,
}

/// Options of a [`HateClassifier`], validated when it loads.
#[derive(Debug, Clone)]
pub struct ClassifierParams {
    label: String,
    threshold: f32,
    batch_size: usize,
    device: Device,
    backend: Backend,
    hub: Option<Hub>,
}

impl Default for ClassifierParams {
    fn default() -> Self {
        Self {
            label: DEFAULT_LABEL.to_string(),
            threshold: DEFAULT_THRESHOLD,
            batch_size: DEFAULT_BATCH_SIZE,
            device: Device::Cpu,
            backend: Backend::Auto,
            hub: None,
        }
    }
}

impl ClassifierParams {
    /// The label (a value of the config's `id2label`) whose probability is the score.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The toxicity threshold in `[0, 1]` (a score `>=` it is toxic).
    pub fn threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }

    /// Texts per forward pass (at least 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// The device (CPU by default; `cuda` needs the crate's `cuda` feature).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The forward-pass implementation (see [`Backend`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The hub client used for hub ids (default: [`Hub::from_env`]).
    pub fn hub(mut self, hub: Hub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Validates the options.
    pub fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(Error::InvalidParam {
                name: "threshold",
                message: format!("{} is not in [0, 1]", self.threshold),
            });
        }
        if self.batch_size == 0 {
            return Err(Error::InvalidParam {
                name: "batch_size",
                message: "must be at least 1".into(),
            });
        }
        if self.label.is_empty() {
            return Err(Error::InvalidParam {
                name: "label",
                message: "must not be empty".into(),
            });
        }
        Ok(())
    }

    /// Loads the classifier from a checkpoint directory or a hub id `owner/name[@revision]`.
    pub fn load(&self, spec: impl AsRef<str>) -> Result<HateClassifier> {
        self.check()?;
        let hub = self.hub.clone().unwrap_or_else(Hub::from_env);
        let files = source::resolve(spec.as_ref(), &hub)?;
        HateClassifier::from_files(self, files)
    }

    /// Loads the classifier from a [`hub_source::Source`]: a checkpoint directory or a hub repo
    /// at a revision.
    pub fn load_source(&self, source: &hub_source::Source) -> Result<HateClassifier> {
        self.check()?;
        let hub = self.hub.clone().unwrap_or_else(Hub::from_env);
        let files = source::resolve_source(source, &hub)?;
        HateClassifier::from_files(self, files)
    }

    /// Loads the classifier from a checkpoint directory.
    pub fn load_dir(&self, dir: impl AsRef<Path>) -> Result<HateClassifier> {
        let dir = dir.as_ref();
        let spec = dir.to_str().ok_or_else(|| Error::MissingFile {
            path: dir.to_path_buf(),
            message: "path is not valid UTF-8".into(),
        })?;
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                message: "not a directory".into(),
            });
        }
        self.load(spec)
    }
}

/// One vector per text.
type Rows = Vec<Vec<f32>>;

enum Engine {
    Cpu(Box<cpu::CpuModel>),
    Candle(RobertaForSequenceClassification),
}

impl Engine {
    fn name(&self) -> &'static str {
        match self {
            Engine::Cpu(_) => "cpu-packed",
            Engine::Candle(_) => "candle",
        }
    }
}

/// A loaded RoBERTa hate-speech classifier with its tokenizer.
pub struct HateClassifier {
    engine: Engine,
    tokenizer: Tokenizer,
    config: Config,
    labels: Vec<String>,
    label_index: usize,
    threshold: f32,
    batch_size: usize,
    max_len: usize,
    origin: PathBuf,
}

impl std::fmt::Debug for HateClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HateClassifier")
            .field("origin", &self.origin)
            .field("labels", &self.labels)
            .field("label_index", &self.label_index)
            .field("threshold", &self.threshold)
            .field("batch_size", &self.batch_size)
            .field("max_len", &self.max_len)
            .field("engine", &self.engine.name())
            .finish()
    }
}

impl HateClassifier {
    /// Default options, to adjust before loading.
    pub fn params() -> ClassifierParams {
        ClassifierParams::default()
    }

    /// Loads a checkpoint directory or hub id with the default options.
    pub fn from_pretrained(spec: impl AsRef<str>) -> Result<Self> {
        Self::params().load(spec)
    }

    fn from_files(p: &ClassifierParams, files: source::CheckpointFiles) -> Result<Self> {
        let config = Config::from_file(&files.config)?;
        let labels = config
            .labels(&files.config)?
            .ok_or_else(|| Error::MissingId2Label {
                path: files.config.clone(),
                label: p.label.clone(),
            })?;
        let label_index =
            labels
                .iter()
                .position(|l| *l == p.label)
                .ok_or_else(|| Error::UnknownLabel {
                    label: p.label.clone(),
                    available: labels.clone(),
                })?;
        let tok_cfg = tokenizer::TokenizerConfig::from_file(files.tokenizer_config.as_deref())?;
        let max_len = tok_cfg
            .model_max_length
            .map_or(config.max_input_len(), |m| m.min(config.max_input_len()));
        let tokenizer = tokenizer::load(&files.tokenizer, &tok_cfg, max_len)?;

        let weights_path = if files.weights.len() == 1 {
            files.weights[0].clone()
        } else {
            files.origin.clone()
        };
        for w in &files.weights {
            if !w.is_file() {
                return Err(Error::MissingFile {
                    path: w.clone(),
                    message: "weights file not found".into(),
                });
            }
        }
        // SAFETY: the safetensors files are memory-mapped read-only; they must not be modified
        // while the classifier loads (the usual contract of candle's mmap loader).
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&files.weights, DType::F32, &p.device) }
                .map_err(|e| Error::BadFile {
                path: weights_path.clone(),
                message: format!("cannot read safetensors weights: {e}"),
            })?;
        let w = Weights {
            vb,
            path: weights_path,
        };
        let engine = match (p.backend, &p.device) {
            (Backend::Auto, Device::Cpu) => {
                Engine::Cpu(Box::new(cpu::CpuModel::new(&config, labels.len(), &w)?))
            }
            _ => Engine::Candle(RobertaForSequenceClassification::new(
                &config,
                labels.len(),
                &w,
            )?),
        };
        Ok(Self {
            engine,
            tokenizer,
            config,
            labels,
            label_index,
            threshold: p.threshold,
            batch_size: p.batch_size,
            max_len,
            origin: files.origin,
        })
    }

    /// The token ids of each text as the model sees them: `<s> … </s>`, truncated at
    /// [`HateClassifier::max_len`].
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Tokenizer {
                path: self.origin.clone(),
                message: e.to_string(),
            })?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Runs the model on token-id sequences in batches of similar length; returns the pooled
    /// embeddings and logits in input order.
    fn run(&self, ids: &[Vec<u32>]) -> Result<(Rows, Rows)> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        // Length bucketing: similar lengths share a batch (no padding waste on the candle path,
        // better-shaped matmuls on the packed path); the order is restored below.
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let (h, k) = (self.config.hidden_size, self.labels.len());
        let mut pooled = vec![Vec::new(); ids.len()];
        let mut logits = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(self.batch_size) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let (p, l) = match &self.engine {
                Engine::Cpu(m) => m.forward(&seqs)?,
                Engine::Candle(m) => m.forward(&seqs)?,
            };
            for (r, &i) in chunk.iter().enumerate() {
                pooled[i] = p[r * h..(r + 1) * h].to_vec();
                logits[i] = l[r * k..(r + 1) * k].to_vec();
            }
        }
        Ok((pooled, logits))
    }

    /// The softmax probabilities of every label, per text (in `id2label` order).
    pub fn probabilities(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.encode(texts)?;
        let (_, logits) = self.run(&ids)?;
        Ok(logits
            .iter()
            .map(|l| model::softmax_rows(l, self.labels.len()))
            .collect())
    }

    /// The score of each text: the softmax probability of the configured label (`hate`).
    pub fn score(&self, texts: &[&str]) -> Result<Vec<f32>> {
        Ok(self
            .probabilities(texts)?
            .into_iter()
            .map(|p| p[self.label_index])
            .collect())
    }

    /// Whether a score counts as toxic: `score >= threshold`.
    pub fn is_toxic(&self, score: f32) -> bool {
        score >= self.threshold
    }

    /// The pooled sentence embedding of each text: `tanh(dense(h<s>))`, the classification head's
    /// hidden layer on the `<s>` token (length `hidden_size`).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.encode(texts)?;
        Ok(self.run(&ids)?.0)
    }

    /// The labels in class-index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The label whose probability is the score.
    pub fn label(&self) -> &str {
        &self.labels[self.label_index]
    }

    /// The toxicity threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Texts per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The longest input in tokens (special tokens included); longer texts are truncated.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The model's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The directory or hub id the classifier was loaded from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        match &self.engine {
            Engine::Cpu(_) => Device::Cpu,
            Engine::Candle(m) => m.device().clone(),
        }
    }
}

// The classifier is `Send + Sync` (the crate docs promise it; a service shares one behind an
// `Arc`, see examples/scoring_service): checked at compile time, so a field that breaks it fails
// the build here rather than in a user's code.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<HateClassifier>();
    assert_send_sync::<ClassifierParams>();
};

impl engine_api::TextScorer for HateClassifier {
    fn describe(&self) -> engine_api::EngineInfo {
        let device = match self.device().location() {
            candle_core::DeviceLocation::Cpu => "cpu".to_string(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        };
        engine_api::EngineInfo {
            backend: env!("CARGO_PKG_NAME").to_string(),
            model: self.origin.display().to_string(),
            settings: serde_json::json!({
                "label": self.label(),
                "threshold": self.threshold,
                "batch_size": self.batch_size,
                "max_len": self.max_len,
                "device": device,
                "engine": self.engine.name(),
            }),
        }
    }

    fn preferred_batch_size(&self) -> usize {
        self.batch_size
    }

    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn toxicity_rule(&self) -> engine_api::ToxicityRule {
        engine_api::ToxicityRule::new(self.label(), self.threshold)
    }

    fn label_probabilities(&self, texts: &[&str]) -> engine_api::Result<Vec<Vec<f32>>> {
        Ok(self.probabilities(texts)?)
    }
}

/// The classifier's errors cross the seam with their bad-input verdict
/// ([`Error::is_bad_input`]).
impl From<Error> for engine_api::Error {
    fn from(e: Error) -> Self {
        engine_api::Error::backend(e.is_bad_input(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::TextScorer;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/classifier/vocab-merges"
    );

    #[test]
    fn the_scorer_seam_gives_the_classifier_s_own_numbers() -> Result<()> {
        let clf = HateClassifier::params()
            .batch_size(2)
            .threshold(0.25)
            .load(FIXTURE)?;
        let texts = [
            "You are a stupid idiot.",
            "The tiny robot walked to the market.",
            "",
        ];
        let scores = clf.score(&texts)?;
        let via_seam = TextScorer::toxicity(&clf, &texts).map_err(|e| Error::InvalidParam {
            name: "seam",
            message: e.to_string(),
        })?;
        let own: Vec<(f32, bool)> = scores.iter().map(|&s| (s, clf.is_toxic(s))).collect();
        assert_eq!(via_seam, own);
        let rule = clf.toxicity_rule();
        assert_eq!((rule.label.as_str(), rule.threshold), (DEFAULT_LABEL, 0.25));
        assert_eq!(TextScorer::labels(&clf), clf.labels());
        assert_eq!(clf.preferred_batch_size(), 2);
        let info = clf.describe();
        assert_eq!(info.backend, "hate-classifier");
        assert_eq!(info.settings["label"], DEFAULT_LABEL);
        // Boxed, as the facade holds a scorer.
        let boxed: Box<dyn TextScorer> = Box::new(clf);
        assert_eq!(boxed.toxicity(&texts).ok(), Some(own));
        Ok(())
    }

    #[test]
    fn errors_keep_their_verdict_across_the_seam() {
        let e: engine_api::Error = Error::InvalidParam {
            name: "batch_size",
            message: "must be at least 1".into(),
        }
        .into();
        assert!(e.is_bad_input());
        assert_eq!(
            e.to_string(),
            "invalid parameter `batch_size`: must be at least 1"
        );
        assert!(matches!(
            e.downcast_ref::<Error>(),
            Some(Error::InvalidParam { .. })
        ));
        let e: engine_api::Error = Error::Candle(candle_core::Error::Msg("x".into())).into();
        assert!(!e.is_bad_input());
    }
}
