//! [`HubError`]: the one error type of hub and cache access.

use std::path::PathBuf;

/// Errors of resolving a [`crate::Source`] or reading a snapshot's files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A repo id, `owner/name@revision` spec or source spec that is not valid.
    #[error("invalid hub repo `{spec}`: {reason}")]
    InvalidRepo {
        /// What was given.
        spec: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file name that is not a plain relative path inside a repo.
    #[error("invalid file name `{0}` (must be a relative path inside the repo, without `..`)")]
    InvalidFile(String),
    /// Offline (`HF_HUB_OFFLINE`) and the file is not in the cache.
    #[error(
        "{file} of {kind} repo {repo} at revision `{revision}` is not in the Hugging Face cache {} \
         and HF_HUB_OFFLINE is set: download it once online (or unset HF_HUB_OFFLINE), or pass a \
         local path",
        cache_dir.display()
    )]
    NotCached {
        /// Repo id.
        repo: String,
        /// `model`, `dataset` or `space`.
        kind: &'static str,
        /// Revision asked for.
        revision: String,
        /// File inside the repo.
        file: String,
        /// The cache directory searched (boxed: keeps every error that wraps this one small).
        cache_dir: Box<std::path::Path>,
    },
    /// The download failed (network, authentication, missing file on the hub).
    #[error("downloading {file} of {repo} at revision `{revision}` failed: {message}")]
    Download {
        /// Repo id.
        repo: String,
        /// Revision asked for.
        revision: String,
        /// File inside the repo.
        file: String,
        /// The client's error (never includes the token).
        message: String,
    },
    /// A local source lacks a required file.
    #[error("{}: no `{file}` in the directory", dir.display())]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// The file asked for.
        file: String,
    },
    /// Neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error(
        "{origin}: no `model.safetensors` (nor a sharded `model.safetensors.index.json`); only \
         safetensors weights are read"
    )]
    NoSafetensors {
        /// The directory or `owner/name@revision`.
        origin: String,
    },
    /// Neither `tokenizer.json` nor `vocab.json` + `merges.txt`.
    #[error("{origin}: no tokenizer: neither `tokenizer.json` nor `vocab.json` + `merges.txt`")]
    NoTokenizer {
        /// The directory or `owner/name@revision`.
        origin: String,
    },
    /// A `model.safetensors.index.json` that cannot be used.
    #[error("{}: {reason}", path.display())]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong (not JSON, no `weight_map`, a shard outside the directory).
        reason: String,
    },
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl HubError {
    /// True when the user's input is at fault (a bad repo spec, a file missing from the offline
    /// cache or from a local directory, a malformed index); false for download failures and I/O
    /// errors other than a missing file.
    pub fn is_bad_input(&self) -> bool {
        match self {
            HubError::Download { .. } => false,
            HubError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => true,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}
