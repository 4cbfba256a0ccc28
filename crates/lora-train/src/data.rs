//! Instruction datasets: Dolly-15k and generic instruction JSONL, from a file or the hub cache.

use crate::error::{Error, Result};
use hub_source::{Hub, HubRepo, RepoKind, Source};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The hub id of the dataset the authors fine-tuned on.
pub const DOLLY_REPO: &str = "databricks/databricks-dolly-15k";
/// The file of [`DOLLY_REPO`] that holds the records.
pub const DOLLY_FILE: &str = "databricks-dolly-15k.jsonl";

/// The authors' dataset: [`DOLLY_FILE`] of the hub dataset [`DOLLY_REPO`] at `main`.
pub fn dolly() -> Source {
    let repo = HubRepo::dataset(DOLLY_REPO).expect("DOLLY_REPO is a valid repo id");
    Source::Hub {
        repo,
        file: Some(DOLLY_FILE.to_string()),
    }
}

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

/// The JSONL file of a dataset source: a local file as given, or the file a hub dataset repo
/// names ([`DOLLY_FILE`] when it names none), from the cache of `hub` or (online) downloaded.
///
/// With [`Hub::from_env`] that is `HF_HUB_CACHE`, else `HF_HOME/hub` (the layout Python
/// shares) and `HF_TOKEN`; with `HF_HUB_OFFLINE=1` nothing is downloaded and a file missing
/// from the cache is an error.
pub fn dataset_file(source: &Source, hub: &Hub) -> Result<PathBuf> {
    Ok(source.fetch_file(hub, DOLLY_FILE)?)
}

/// Resolves a dataset argument: an existing local file, or a hub dataset
/// `owner/name[@revision][:file]` ([`DOLLY_FILE`] when no file is named), through
/// [`Hub::from_env`] (see [`dataset_file`]).
pub fn resolve_dataset(spec: &str) -> Result<PathBuf> {
    resolve_dataset_with(spec, &Hub::from_env())
}

/// [`resolve_dataset`] through an explicit [`Hub`] (cache directory, offline mode).
pub fn resolve_dataset_with(spec: &str, hub: &Hub) -> Result<PathBuf> {
    dataset_file(&Source::parse(spec, RepoKind::Dataset)?, hub)
}
