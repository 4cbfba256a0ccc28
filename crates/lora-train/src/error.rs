//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while preparing data, training or saving an adapter.
///
/// [`Error::is_bad_input`] tells a fault in the user's files or settings (CLI exit code 2)
/// from an internal failure (exit code 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O failure on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of a JSONL dataset is not valid JSON or not an object.
    #[error("{path}:{line}: {message}")]
    BadRecord {
        /// The dataset file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A record lacks a required string field.
    #[error("{path}:{line}: missing or non-string field `{field}`")]
    MissingField {
        /// The dataset file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The field name.
        field: String,
    },
    /// The dataset has no usable record.
    #[error("{path}: the dataset is empty")]
    EmptyDataset {
        /// The dataset file.
        path: PathBuf,
    },
    /// A JSON file (config, adapter config, trainer state) could not be parsed.
    #[error("{path}: {message}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A training or LoRA parameter is out of range (rank 0, lr < 0, ...).
    #[error("invalid parameter `{name}`: {message}")]
    InvalidParam {
        /// The parameter name as the builder and the CLI call it.
        name: &'static str,
        /// Why it is rejected.
        message: String,
    },
    /// A chat template is missing or failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// The tokenizer could not be loaded or failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An adapter or checkpoint file lacks a tensor or has one of the wrong shape.
    #[error("{path}: tensor `{tensor}`: {message}")]
    BadTensor {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong with it.
        message: String,
    },
    /// The loss became NaN or infinite; the last good checkpoint (if any) is kept.
    #[error(
        "loss is not finite ({loss}) at optimizer step {step}; last good checkpoint: {}",
        last_checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
    )]
    NonFiniteLoss {
        /// The optimizer step (1-based) whose loss was not finite.
        step: usize,
        /// The offending value.
        loss: f64,
        /// The last checkpoint written before it, if any.
        last_checkpoint: Option<PathBuf>,
    },
    /// An explicit LoRA setting disagrees with the initial adapter's `adapter_config.json`.
    #[error(
        "{path}: the initial adapter has {key} = {adapter}, but {key} = {asked} was asked for \
         (leave the setting out to take the adapter's)"
    )]
    InitAdapterConflict {
        /// The adapter's `adapter_config.json`.
        path: PathBuf,
        /// The setting (`r`, `lora_alpha`, `lora_dropout`, `target_modules`, `use_rslora`).
        key: &'static str,
        /// The adapter's value.
        adapter: String,
        /// The value asked for.
        asked: String,
    },
    /// A checkpoint does not match the run it should resume (other data or settings).
    #[error("{path}: cannot resume: {message}")]
    ResumeMismatch {
        /// The checkpoint directory.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// A dataset or model spec that is not valid, or a file that could not be fetched from the
    /// hub (cache miss offline, failed download).
    #[error(transparent)]
    Hub(#[from] hub_source::HubError),
    /// An error from the model engine (loading, LoRA layers, forward pass).
    #[error(transparent)]
    Engine(#[from] gen_engine::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// True when the user's input (files, flags) is at fault rather than the program.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::BadRecord { .. }
            | Error::MissingField { .. }
            | Error::EmptyDataset { .. }
            | Error::BadJson { .. }
            | Error::InvalidParam { .. }
            | Error::Template(_)
            | Error::BadTensor { .. }
            | Error::ResumeMismatch { .. }
            | Error::InitAdapterConflict { .. } => true,
            Error::Engine(e) => e.is_bad_input(),
            Error::Hub(e) => e.is_bad_input(),
            Error::Io { .. }
            | Error::NonFiniteLoss { .. }
            | Error::Tokenizer(_)
            | Error::Candle(_) => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn param(name: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParam {
            name,
            message: message.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
