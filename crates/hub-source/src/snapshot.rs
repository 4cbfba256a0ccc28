//! [`Snapshot`]: the files of a checkpoint — a local directory or a hub repo at a revision — and
//! the helpers every loader needs: `config.json`, the safetensors weights (single or sharded via
//! [`WeightIndex`], the one parser of `model.safetensors.index.json`) and the tokenizer files.

use crate::error::HubError;
use crate::hub::{Hub, HubRepo, relative_file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The single-file safetensors weights.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// The index of sharded safetensors weights.
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";

/// The files of one checkpoint: a local directory, or a hub repo at its revision.
///
/// For a hub repo each file comes from the cache first; on a miss it is downloaded only when the
/// [`Hub`] is online. [`Snapshot::optional`] treats a file the hub cannot serve (absent, or any
/// download failure) as absent, and offline a file missing from the cache is simply `None`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    place: Place,
}

#[derive(Debug, Clone)]
enum Place {
    Local(PathBuf),
    Hub { hub: Hub, repo: HubRepo },
}

/// Where a checkpoint's safetensors weights are.
#[derive(Debug, Clone)]
pub struct SafetensorsFiles {
    /// The files, as local paths (one, or the shards in file-name order).
    pub files: Vec<PathBuf>,
    /// The parsed index, when the weights are sharded.
    pub index: Option<WeightIndex>,
}

/// A checkpoint's tokenizer files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerFiles {
    /// A `tokenizer.json`.
    Json(PathBuf),
    /// A byte-level BPE as `vocab.json` + `merges.txt` (what RoBERTa checkpoints ship).
    VocabMerges {
        /// `vocab.json`.
        vocab: PathBuf,
        /// `merges.txt`.
        merges: PathBuf,
    },
}

impl Snapshot {
    /// The files of a local directory.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self {
            place: Place::Local(dir.into()),
        }
    }

    /// The files of a hub repo at its revision, through `hub`.
    pub fn hub(hub: &Hub, repo: HubRepo) -> Self {
        Self {
            place: Place::Hub {
                hub: hub.clone(),
                repo,
            },
        }
    }

    /// The directory, or `owner/name@revision`, for messages.
    pub fn origin(&self) -> String {
        match &self.place {
            Place::Local(dir) => dir.display().to_string(),
            Place::Hub { repo, .. } => format!("{}@{}", repo.id(), repo.revision()),
        }
    }

    /// A file that must exist, as a local path.
    pub fn file(&self, name: &str) -> Result<PathBuf, HubError> {
        match &self.place {
            Place::Local(dir) => {
                let p = dir.join(relative_file(name)?);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(HubError::MissingFile {
                        dir: dir.clone(),
                        file: name.to_string(),
                    })
                }
            }
            Place::Hub { hub, repo } => hub.get(repo, name),
        }
    }

    /// A file that may be absent, as a local path.
    pub fn optional(&self, name: &str) -> Option<PathBuf> {
        match &self.place {
            Place::Local(dir) => {
                let p = dir.join(relative_file(name).ok()?);
                p.is_file().then_some(p)
            }
            Place::Hub { hub, repo } => {
                if let Some(p) = hub.cached(repo, name) {
                    return Some(p);
                }
                if hub.is_offline() {
                    return None;
                }
                hub.get(repo, name).ok()
            }
        }
    }

    /// `config.json`.
    pub fn config(&self) -> Result<PathBuf, HubError> {
        self.file("config.json")
    }

    /// The safetensors weights: `model.safetensors`, else every shard named in
    /// `model.safetensors.index.json` (each must be present). Pickle weights are never listed.
    pub fn safetensors(&self) -> Result<SafetensorsFiles, HubError> {
        if let Some(single) = self.optional(SAFETENSORS_FILE) {
            return Ok(SafetensorsFiles {
                files: vec![single],
                index: None,
            });
        }
        if let Some(path) = self.optional(SAFETENSORS_INDEX_FILE) {
            let index = WeightIndex::read(&path)?;
            let files = index
                .files()
                .into_iter()
                .map(|f| self.file(f))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(SafetensorsFiles {
                files,
                index: Some(index),
            });
        }
        Err(HubError::NoSafetensors {
            origin: self.origin(),
        })
    }

    /// The tokenizer: `tokenizer.json`, else `vocab.json` + `merges.txt`.
    pub fn tokenizer(&self) -> Result<TokenizerFiles, HubError> {
        if let Some(j) = self.optional("tokenizer.json") {
            return Ok(TokenizerFiles::Json(j));
        }
        match (self.optional("vocab.json"), self.optional("merges.txt")) {
            (Some(vocab), Some(merges)) => Ok(TokenizerFiles::VocabMerges { vocab, merges }),
            _ => Err(HubError::NoTokenizer {
                origin: self.origin(),
            }),
        }
    }
}

/// A parsed `model.safetensors.index.json`: which shard holds each tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightIndex {
    path: PathBuf,
    weight_map: BTreeMap<String, String>,
}

impl WeightIndex {
    /// Reads and checks an index file: a JSON object whose `weight_map` maps tensor names to
    /// shard files, each a relative path inside the checkpoint directory.
    pub fn read(path: &Path) -> Result<Self, HubError> {
        let text = std::fs::read_to_string(path).map_err(|e| HubError::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Parses the text of an index file read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, HubError> {
        let bad = |reason: String| HubError::BadIndex {
            path: path.to_path_buf(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let mut weight_map = BTreeMap::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("`weight_map` entry `{name}` is not a file name")))?;
            if relative_file(file).is_err() {
                return Err(bad(format!(
                    "`weight_map`: shard `{file}` escapes the directory"
                )));
            }
            weight_map.insert(name.clone(), file.to_string());
        }
        Ok(Self {
            path: path.to_path_buf(),
            weight_map,
        })
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor name → shard file (relative to the checkpoint directory).
    pub fn weight_map(&self) -> &BTreeMap<String, String> {
        &self.weight_map
    }

    /// The shard holding a tensor.
    pub fn file_of(&self, tensor: &str) -> Option<&str> {
        self.weight_map.get(tensor).map(String::as_str)
    }

    /// The shard files, sorted, each once.
    pub fn files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        files.sort_unstable();
        files.dedup();
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_parsing_names_the_problem() {
        let p = Path::new("/x/model.safetensors.index.json");
        let ok = WeightIndex::parse(
            p,
            r#"{"metadata":{},"weight_map":{"b":"s2.safetensors","a":"s1.safetensors","c":"s1.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(ok.files(), ["s1.safetensors", "s2.safetensors"]);
        assert_eq!(ok.file_of("b"), Some("s2.safetensors"));
        for (text, needle) in [
            ("{", "not JSON"),
            ("{}", "weight_map"),
            (r#"{"weight_map":{"a":1}}"#, "`a`"),
            (r#"{"weight_map":{"a":"../s.safetensors"}}"#, "escapes"),
            (r#"{"weight_map":{"a":"/s.safetensors"}}"#, "escapes"),
        ] {
            let e = WeightIndex::parse(p, text).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(needle) && msg.contains("index.json"), "{msg}");
            assert!(e.is_bad_input());
        }
    }
}
