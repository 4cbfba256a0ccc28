//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model, an adapter or a tokenizer, or while
/// generating.
///
/// [`Error::is_bad_input`] tells the caller's fault (a bad file, flag or prompt) from an internal
/// failure.
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
    /// A required file is missing from a checkpoint or adapter directory.
    #[error("{path}: missing {what}")]
    MissingFile {
        /// The path looked for.
        path: PathBuf,
        /// What the file should have held.
        what: String,
    },
    /// A JSON file (config, index, generation config, adapter config) does not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (it names line and column).
        source: serde_json::Error,
    },
    /// A configuration value is missing, out of range or inconsistent.
    #[error("{path}: key `{key}`: {msg}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The key at fault.
        key: String,
        /// What is wrong with it.
        msg: String,
    },
    /// `architectures[0]` names a family this crate does not implement.
    #[error("{path}: unsupported architecture `{found}`; supported: {}", supported.join(", "))]
    UnknownArchitecture {
        /// The configuration file.
        path: PathBuf,
        /// The architecture found.
        found: String,
        /// The architectures supported.
        supported: Vec<&'static str>,
    },
    /// A checkpoint holds only pickle files (`*.bin`, `*.pt`, `*.pth`), which are never loaded:
    /// unpickling runs arbitrary code.
    #[error(
        "{path}: only pickle checkpoints ({files}) found; they are refused because loading them can \
         execute code. Convert the checkpoint to safetensors (e.g. `model.save_pretrained(dir, \
         safe_serialization=True)`)"
    )]
    PickleOnly {
        /// The checkpoint directory.
        path: PathBuf,
        /// The pickle files seen.
        files: String,
    },
    /// A safetensors file is corrupt or truncated.
    #[error("{path}: invalid safetensors file: {msg}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        msg: String,
    },
    /// A tensor the model needs is absent.
    #[error("{path}: tensor `{name}` not found")]
    MissingTensor {
        /// The file (or index) searched.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("{path}: tensor `{name}` has shape {found:?}, the config implies {expected:?}")]
    TensorShape {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape implied by the configuration.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's dtype cannot hold model weights (an integer or boolean tensor, or an
    /// unsupported float format).
    #[error("{path}: tensor `{name}` has dtype {found}, expected a float tensor (f32, f16, bf16)")]
    TensorDtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The dtype found.
        found: String,
    },
    /// A GGUF file cannot be read: not a GGUF file, an unsupported version, or a truncated or
    /// corrupt header or tensor table, or tensor data running past the end of the file.
    #[error("{path}: not a readable GGUF file: {msg}")]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A GGUF tensor is stored in a ggml type this crate does not dequantize.
    #[error(
        "{path}: tensor `{name}` is stored as ggml type {ggml_type}, which is not supported; \
         supported: {}",
        supported.join(", ")
    )]
    GgufTensorType {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor (its GGUF name).
        name: String,
        /// The ggml type found (its name, or its number when ggml has no name for it).
        ggml_type: String,
        /// The ggml types this crate dequantizes.
        supported: Vec<&'static str>,
    },
    /// A quantized tensor's raw ggml blocks do not fit its shape: a row that is not a whole
    /// number of blocks, or data that is not exactly the tensor's blocks.
    #[error("ggml {ggml_type} tensor of {rows} × {cols}: {msg}")]
    GgmlBlocks {
        /// The ggml type (its name).
        ggml_type: &'static str,
        /// The tensor's rows.
        rows: usize,
        /// The tensor's columns (weights per row).
        cols: usize,
        /// What does not fit.
        msg: String,
    },
    /// The tokenizer is missing or cannot be loaded or run.
    #[error("{path}: tokenizer error: {msg}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A LoRA configuration uses an option this crate does not implement.
    #[error("{path}: LoRA option `{key}` is not supported: {msg}")]
    UnsupportedLora {
        /// The adapter configuration (or `<train config>` for a training setup).
        path: PathBuf,
        /// The option.
        key: String,
        /// Why it is rejected.
        msg: String,
    },
    /// An adapter does not fit the base model: a tensor for a module the base lacks, or of the
    /// wrong shape.
    #[error("{path}: adapter tensor `{tensor}` does not fit the base model: {msg}")]
    AdapterMismatch {
        /// The adapter weights file.
        path: PathBuf,
        /// The tensor at fault.
        tensor: String,
        /// What disagrees.
        msg: String,
    },
    /// A prompt is longer than the context window and the policy is to refuse it.
    #[error(
        "prompt {index} has {tokens} tokens; with {max_new_tokens} new tokens it exceeds the \
         context window of {window} (use TruncationPolicy::LeftTruncate to keep its end)"
    )]
    PromptTooLong {
        /// The prompt's index in the input list.
        index: usize,
        /// Its length in tokens.
        tokens: usize,
        /// The new tokens asked for.
        max_new_tokens: usize,
        /// The model's context window.
        window: usize,
    },
    /// Generation was asked for with no prompt at all.
    #[error("empty prompt list: nothing to generate")]
    EmptyPrompts,
    /// A prompt encodes to no token at all (and the tokenizer adds no BOS).
    #[error("prompt {index} encodes to zero tokens")]
    EmptyPrompt {
        /// The prompt's index in the input list.
        index: usize,
    },
    /// A chat template is missing or fails to render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// The device string is malformed or the device is not compiled in.
    #[error("device `{device}`: {msg}")]
    Device {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        msg: String,
    },
    /// A hub repository or a checkpoint file could not be resolved (a bad id, a file missing
    /// from the offline cache or the directory, a bad shard index, a failed download).
    #[error(transparent)]
    Hub(#[from] hub_source::HubError),
    /// A parameter (of a builder or a forward call) is out of range.
    #[error("invalid parameter `{name}`: {msg}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// Why it is invalid.
        msg: String,
    },
    /// A tensor operation failed (an internal error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Whether the user's input (files, flags, prompts) is at fault, rather than this crate or
    /// the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Hub(e) => e.is_bad_input(),
            Error::Io { .. } | Error::Candle(_) => false,
            _ => true,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(
        path: impl Into<PathBuf>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Config {
            path: path.into(),
            key: key.into(),
            msg: msg.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
