//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running the classifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file (config, tokenizer config, vocabulary) that does not parse or lacks a key.
    #[error("{path}: {message}")]
    BadFile {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `config.json` has no `id2label` map, so the score's label cannot be found.
    #[error("{path}: no `id2label` map: cannot tell which logit is the `{label}` label")]
    MissingId2Label {
        /// The config file.
        path: PathBuf,
        /// The label asked for.
        label: String,
    },
    /// The label asked for is not one of the checkpoint's labels.
    #[error("label `{label}` is not in the checkpoint's id2label (labels: {available:?})")]
    UnknownLabel {
        /// The label asked for.
        label: String,
        /// The labels the checkpoint has.
        available: Vec<String>,
    },
    /// The config describes a model this crate does not run.
    #[error("{path}: unsupported config: {message}")]
    UnsupportedConfig {
        /// The config file.
        path: PathBuf,
        /// What is unsupported.
        message: String,
    },
    /// A weight the model needs is missing from the checkpoint.
    #[error("{path}: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The weights file (or directory).
        path: PathBuf,
        /// The tensor's name as the checkpoint spells it.
        tensor: String,
    },
    /// A weight whose shape disagrees with `config.json`.
    #[error("{path}: tensor `{tensor}` has shape {found:?} but the config implies {expected:?}")]
    TensorShape {
        /// The weights file (or directory).
        path: PathBuf,
        /// The tensor's name as the checkpoint spells it.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A checkpoint directory without the files the classifier needs.
    #[error("{path}: {message}")]
    MissingFile {
        /// The directory or repo searched.
        path: PathBuf,
        /// Which file(s) are missing.
        message: String,
    },
    /// Building or running the tokenizer failed.
    #[error("tokenizer ({path}): {message}")]
    Tokenizer {
        /// The tokenizer file(s).
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
    /// Resolving a hub id (offline cache miss, download failure, bad repo id).
    #[error(transparent)]
    Hub(#[from] hub_source::HubError),
    /// A parameter of [`crate::ClassifierParams`] that is out of range.
    #[error("invalid parameter `{name}`: {message}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// Why it is refused.
        message: String,
    },
    /// A tensor operation failed (a bug or an unsupported device), not the user's input.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The CPU linear-layer kernel was handed buffers of the wrong size (a bug, not the user's
    /// input).
    #[error("CPU linear layer: {0}")]
    Kernel(#[from] packed_matmul::Error),
}

impl Error {
    /// True when the user's input (files, ids, parameters) is at fault; false for internal
    /// failures (tensor backend errors, downloads, I/O errors other than a missing file).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Error::Hub(e) => e.is_bad_input(),
            Error::Candle(_) | Error::Kernel(_) => false,
            _ => true,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
