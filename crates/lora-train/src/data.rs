//! Instruction datasets: Dolly-15k and generic instruction JSONL, from a file or the hub cache.

use crate::error::{Error, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The hub id of the dataset the authors fine-tuned on.
pub const DOLLY_REPO: &str = "databricks/databricks-dolly-15k";
/// The file of [`DOLLY_REPO`] that holds the records.
pub const DOLLY_FILE: &str = "databricks-dolly-15k.jsonl";

/// One instruction record: the instruction, its optional context and the reference response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The task the model is asked to do.
    pub instruction: String,
    /// Supporting text for the instruction; empty when there is none.
    pub context: String,
    /// The answer the model is trained to write.
    pub response: String,
}

/// Which JSON fields of a record hold the instruction, the context and the response.
///
/// [`Fields::dolly`] (`instruction`, `context`, `response`) and [`Fields::alpaca`]
/// (`instruction`, `input`, `output`) cover the common layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The instruction field (required, a string).
    pub instruction: String,
    /// The context field; `None` when the dataset has none. When set, a record without it is
    /// an error unless [`Fields::context_optional`] is true.
    pub context: Option<String>,
    /// Whether a record may omit the context field (treated as empty).
    pub context_optional: bool,
    /// The response field (required, a string).
    pub response: String,
}

impl Fields {
    /// Dolly-15k: `instruction`, `context` (always present, may be empty), `response`.
    pub fn dolly() -> Self {
        Fields {
            instruction: "instruction".into(),
            context: Some("context".into()),
            context_optional: false,
            response: "response".into(),
        }
    }

    /// Alpaca-style: `instruction`, `input` (may be absent), `output`.
    pub fn alpaca() -> Self {
        Fields {
            instruction: "instruction".into(),
            context: Some("input".into()),
            context_optional: true,
            response: "output".into(),
        }
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::dolly()
    }
}

/// Reads an instruction JSONL file: one JSON object per line, blank lines skipped.
///
/// Errors name the file and the 1-based line: invalid JSON, a line that is not an object, a
/// missing or non-string field. A file with no record is [`Error::EmptyDataset`].
pub fn read_jsonl(path: &Path, fields: &Fields) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = std::io::BufReader::new(file);
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let line = line.map_err(|e| Error::io(path, e))?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|e| Error::BadRecord {
                path: path.to_path_buf(),
                line: lineno,
                message: format!("invalid JSON: {e}"),
            })?;
        let obj = value.as_object().ok_or_else(|| Error::BadRecord {
            path: path.to_path_buf(),
            line: lineno,
            message: "not a JSON object".into(),
        })?;
        let get = |name: &str| -> Result<Option<String>> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::MissingField {
                    path: path.to_path_buf(),
                    line: lineno,
                    field: name.to_string(),
                }),
            }
        };
        let missing = |name: &str| Error::MissingField {
            path: path.to_path_buf(),
            line: lineno,
            field: name.to_string(),
        };
        let instruction = get(&fields.instruction)?.ok_or_else(|| missing(&fields.instruction))?;
        let response = get(&fields.response)?.ok_or_else(|| missing(&fields.response))?;
        let context = match &fields.context {
            None => String::new(),
            Some(name) => match get(name)? {
                Some(c) => c,
                None if fields.context_optional => String::new(),
                None => return Err(missing(name)),
            },
        };
        out.push(Record {
            instruction,
            context,
            response,
        });
    }
    if out.is_empty() {
        return Err(Error::EmptyDataset {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Resolves a dataset argument: an existing local file, or `owner/name[:file]` on the hub.
///
/// Hub datasets are read from the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`, the layout
/// Python shares); with `HF_HUB_OFFLINE=1` nothing is downloaded and a missing file is an error.
/// Without a `:file` suffix the Dolly file name [`DOLLY_FILE`] is used.
pub fn resolve_dataset(spec: &str) -> Result<PathBuf> {
    let local = Path::new(spec);
    if local.exists() {
        return Ok(local.to_path_buf());
    }
    let (repo, file) = match spec.split_once(':') {
        Some((r, f)) => (r, f),
        None => (spec, DOLLY_FILE),
    };
    if repo.split('/').count() != 2 || repo.starts_with('.') || repo.starts_with('/') {
        return Err(Error::io(
            spec,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    hub_dataset_file(repo, file)
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
        .unwrap_or(false)
}

fn hub_cache() -> hf_hub::Cache {
    if let Ok(dir) = std::env::var("HF_HUB_CACHE") {
        return hf_hub::Cache::new(PathBuf::from(dir));
    }
    hf_hub::Cache::from_env()
}

/// Fetches `file` of the hub dataset `repo` (revision `main`) through the HF cache of the
/// environment (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`);
/// `HF_HUB_OFFLINE=1` forbids downloads.
pub fn hub_dataset_file(repo: &str, file: &str) -> Result<PathBuf> {
    hub_dataset_file_in(hub_cache().path(), repo, file, offline())
}

/// [`hub_dataset_file`] with an explicit cache directory and offline flag.
pub fn hub_dataset_file_in(
    cache_dir: &Path,
    repo: &str,
    file: &str,
    offline: bool,
) -> Result<PathBuf> {
    let cache = hf_hub::Cache::new(cache_dir.to_path_buf());
    let cached = cache
        .repo(hf_hub::Repo::with_revision(
            repo.to_string(),
            hf_hub::RepoType::Dataset,
            "main".to_string(),
        ))
        .get(file);
    if let Some(p) = cached {
        return Ok(p);
    }
    if offline {
        return Err(Error::Hub(format!(
            "dataset {repo} file {file} is not in the HF cache at {} and HF_HUB_OFFLINE is set",
            cache_dir.display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .build()
        .map_err(|e| Error::Hub(format!("{repo}: {e}")))?;
    api.dataset(repo.to_string())
        .get(file)
        .map_err(|e| Error::Hub(format!("{repo} {file}: {e}")))
}
