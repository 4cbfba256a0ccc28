//! Finding a checkpoint's files: a local directory, or a hub repo through the Hugging Face cache
//! (`toxprompts::hub`: `HF_HOME` / `HF_HUB_CACHE`, `HF_HUB_OFFLINE=1` reads the cache only).

use crate::error::{Error, Result};
use crate::tokenizer::TokenizerFiles;
use std::path::{Path, PathBuf};
use toxprompts::hub::{Hub, HubRepo, Location, RepoKind};

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

trait Fetch {
    fn origin(&self) -> PathBuf;
    /// A file that must exist.
    fn required(&self, file: &str) -> Result<PathBuf>;
    /// A file that may be absent.
    fn optional(&self, file: &str) -> Option<PathBuf>;
}

struct LocalDir(PathBuf);

impl Fetch for LocalDir {
    fn origin(&self) -> PathBuf {
        self.0.clone()
    }
    fn required(&self, file: &str) -> Result<PathBuf> {
        self.optional(file).ok_or_else(|| Error::MissingFile {
            path: self.0.clone(),
            message: format!("no `{file}` in the checkpoint directory"),
        })
    }
    fn optional(&self, file: &str) -> Option<PathBuf> {
        let p = self.0.join(file);
        p.is_file().then_some(p)
    }
}

struct HubSource {
    hub: Hub,
    repo: HubRepo,
}

impl Fetch for HubSource {
    fn origin(&self) -> PathBuf {
        PathBuf::from(format!("{}@{}", self.repo.id(), self.repo.revision()))
    }
    fn required(&self, file: &str) -> Result<PathBuf> {
        Ok(self.hub.get(&self.repo, file)?)
    }
    fn optional(&self, file: &str) -> Option<PathBuf> {
        if let Some(p) = self.hub.cached(&self.repo, file) {
            return Some(p);
        }
        if self.hub.is_offline() {
            return None;
        }
        self.hub.get(&self.repo, file).ok()
    }
}

fn resolve_with(src: &dyn Fetch) -> Result<CheckpointFiles> {
    let config = src.required("config.json")?;
    let weights = if let Some(w) = src.optional("model.safetensors") {
        vec![w]
    } else if let Some(index) = src.optional("model.safetensors.index.json") {
        shards(&index, src)?
    } else {
        return Err(Error::MissingFile {
            path: src.origin(),
            message: "no `model.safetensors` (nor a sharded `model.safetensors.index.json`); \
                      only safetensors weights are read"
                .into(),
        });
    };
    let tokenizer = if let Some(j) = src.optional("tokenizer.json") {
        TokenizerFiles::Json(j)
    } else {
        match (src.optional("vocab.json"), src.optional("merges.txt")) {
            (Some(vocab), Some(merges)) => TokenizerFiles::VocabMerges { vocab, merges },
            _ => {
                return Err(Error::MissingFile {
                    path: src.origin(),
                    message: "no tokenizer: neither `tokenizer.json` nor `vocab.json` + \
                              `merges.txt`"
                        .into(),
                });
            }
        }
    };
    Ok(CheckpointFiles {
        origin: src.origin(),
        config,
        weights,
        tokenizer,
        tokenizer_config: src.optional("tokenizer_config.json"),
    })
}

fn shards(index: &Path, src: &dyn Fetch) -> Result<Vec<PathBuf>> {
    let bytes = std::fs::read(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::BadFile {
        path: index.to_path_buf(),
        message: format!("not JSON: {e}"),
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::BadFile {
            path: index.to_path_buf(),
            message: "no `weight_map` object".into(),
        })?;
    let mut files: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    files.into_iter().map(|f| src.required(f)).collect()
}

/// Resolves `spec`: an existing directory, or a hub id `owner/name[@revision]` looked up with
/// `hub` (the Hugging Face cache first; a download only when online).
pub(crate) fn resolve(spec: &str, hub: &Hub) -> Result<CheckpointFiles> {
    match Location::parse(spec, RepoKind::Model)? {
        Location::Local(dir) => {
            if !dir.is_dir() {
                return Err(Error::MissingFile {
                    path: dir,
                    message: "not a directory (expected a checkpoint directory or a hub id)".into(),
                });
            }
            resolve_with(&LocalDir(dir))
        }
        Location::Hub(repo) => resolve_with(&HubSource {
            hub: hub.clone(),
            repo,
        }),
    }
}
