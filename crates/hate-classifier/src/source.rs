//! Finding a checkpoint's files: a local directory, or a hub repo through the Hugging Face cache
//! ([`hub_source`]: `HF_HOME` / `HF_HUB_CACHE`, `HF_HUB_OFFLINE=1` reads the cache only).

use crate::error::{Error, Result};
use crate::tokenizer::TokenizerFiles;
use hub_source::{Hub, HubError, RepoKind, Snapshot, Source};
use std::path::PathBuf;

/// The files of one checkpoint, resolved to local paths.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointFiles {
    /// What the user named (directory or `owner/name@rev`), for messages.
    pub origin: PathBuf,
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    pub tokenizer: TokenizerFiles,
    pub tokenizer_config: Option<PathBuf>,
}

/// This crate's error for a file the snapshot lacks or cannot read.
fn checkpoint_error(e: HubError) -> Error {
    match e {
        HubError::MissingFile { dir, file } => Error::MissingFile {
            path: dir,
            message: format!("no `{file}` in the checkpoint directory"),
        },
        HubError::NoSafetensors { origin } => Error::MissingFile {
            path: origin.into(),
            message: "no `model.safetensors` (nor a sharded `model.safetensors.index.json`); \
                      only safetensors weights are read"
                .into(),
        },
        HubError::NoTokenizer { origin } => Error::MissingFile {
            path: origin.into(),
            message: "no tokenizer: neither `tokenizer.json` nor `vocab.json` + `merges.txt`"
                .into(),
        },
        HubError::BadIndex { path, reason } => Error::BadFile {
            path,
            message: reason,
        },
        HubError::Io { path, source } => Error::io(path, source),
        other => Error::Hub(other),
    }
}

/// Resolves `spec`: an existing directory, or a hub id `owner/name[@revision]` looked up with
/// `hub` (the Hugging Face cache first; a download only when online).
pub(crate) fn resolve(spec: &str, hub: &Hub) -> Result<CheckpointFiles> {
    resolve_source(&Source::parse(spec, RepoKind::Model)?, hub)
}

/// Resolves a parsed source (see [`resolve`]).
pub(crate) fn resolve_source(source: &Source, hub: &Hub) -> Result<CheckpointFiles> {
    let snap = match &source {
        Source::Local(dir) if !dir.is_dir() => {
            return Err(Error::MissingFile {
                path: dir.clone(),
                message: "not a directory (expected a checkpoint directory or a hub id)".into(),
            });
        }
        Source::Local(dir) => Snapshot::local(dir),
        Source::Hub { file: Some(_), .. } => {
            return Err(Error::MissingFile {
                path: PathBuf::from(source.display_name()),
                message: "names one file; a checkpoint is a whole repo (expected `owner/name` \
                          or `owner/name@revision`)"
                    .into(),
            });
        }
        Source::Hub { file: None, .. } => source.snapshot(hub),
    };
    let config = snap.config().map_err(checkpoint_error)?;
    let weights = snap.safetensors().map_err(checkpoint_error)?.files;
    let tokenizer = match snap.tokenizer().map_err(checkpoint_error)? {
        hub_source::TokenizerFiles::Json(j) => TokenizerFiles::Json(j),
        hub_source::TokenizerFiles::VocabMerges { vocab, merges } => {
            TokenizerFiles::VocabMerges { vocab, merges }
        }
    };
    Ok(CheckpointFiles {
        origin: PathBuf::from(snap.origin()),
        config,
        weights,
        tokenizer,
        tokenizer_config: snap.optional("tokenizer_config.json"),
    })
}
