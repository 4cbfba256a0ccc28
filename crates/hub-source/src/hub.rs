//! [`Hub`] and [`HubRepo`]: files of a hub repo at a revision, through the cache Python's
//! `huggingface_hub` shares.
//!
//! [`Hub::from_env`] follows Python's environment: the cache is `HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`;
//! `HF_HUB_OFFLINE=1` (or `true`/`yes`/`on`) means cache only; `HF_ENDPOINT` and `HF_TOKEN` are
//! honoured (the token is never logged, and `Debug` shows it redacted). hf-hub 0.5 ignores
//! `HF_HUB_OFFLINE` and `HF_HUB_CACHE`, so this module reads the cache layout itself —
//! `<cache>/<kind>s--<owner>--<name>/refs/<revision>` holds a commit hash and
//! `snapshots/<commit>/<file>` the file — and only asks hf-hub to download on a miss when online.
//! A revision that is a 40-hex commit hash is looked up in `snapshots/` directly.

use crate::error::HubError;
use std::path::{Path, PathBuf};

/// The kind of a hub repo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// A model repo (`models--owner--name` in the cache).
    Model,
    /// A dataset repo (`datasets--owner--name`).
    Dataset,
    /// A Space (`spaces--owner--name`).
    Space,
}

impl RepoKind {
    /// `model`, `dataset` or `space`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
            RepoKind::Space => "space",
        }
    }

    fn hf(self) -> hf_hub::RepoType {
        match self {
            RepoKind::Model => hf_hub::RepoType::Model,
            RepoKind::Dataset => hf_hub::RepoType::Dataset,
            RepoKind::Space => hf_hub::RepoType::Space,
        }
    }
}

/// A repo on the hub at a revision (branch, tag or commit hash; `main` by default).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubRepo {
    id: String,
    kind: RepoKind,
    revision: String,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl HubRepo {
    /// A repo `name` or `owner/name` of the given kind at `main`.
    pub fn new(id: &str, kind: RepoKind) -> Result<Self, HubError> {
        let parts: Vec<&str> = id.split('/').collect();
        if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| valid_segment(p)) {
            return Err(HubError::InvalidRepo {
                spec: id.to_string(),
                reason: "expected `name` or `owner/name` with letters, digits, `-`, `_`, `.`"
                    .into(),
            });
        }
        Ok(Self {
            id: id.to_string(),
            kind,
            revision: "main".into(),
        })
    }

    /// A model repo at `main`.
    pub fn model(id: &str) -> Result<Self, HubError> {
        Self::new(id, RepoKind::Model)
    }

    /// A dataset repo at `main`.
    pub fn dataset(id: &str) -> Result<Self, HubError> {
        Self::new(id, RepoKind::Dataset)
    }

    /// Parses `owner/name` or `owner/name@revision`.
    pub fn parse(spec: &str, kind: RepoKind) -> Result<Self, HubError> {
        let (id, rev) = match spec.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (spec, None),
        };
        let repo = Self::new(id, kind).map_err(|_| HubError::InvalidRepo {
            spec: spec.to_string(),
            reason: "expected `owner/name` or `owner/name@revision`".into(),
        })?;
        match rev {
            Some(r) => repo.with_revision(r).map_err(|_| HubError::InvalidRepo {
                spec: spec.to_string(),
                reason: "empty or invalid revision after `@`".into(),
            }),
            None => Ok(repo),
        }
    }

    /// The same repo at another revision.
    pub fn with_revision(mut self, revision: &str) -> Result<Self, HubError> {
        if revision.is_empty() || !revision.split('/').all(valid_segment) {
            return Err(HubError::InvalidRepo {
                spec: format!("{}@{revision}", self.id),
                reason: "invalid revision".into(),
            });
        }
        self.revision = revision.to_string();
        Ok(self)
    }

    /// `owner/name`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The kind.
    pub fn kind(&self) -> RepoKind {
        self.kind
    }

    /// The revision.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The repo's folder in the cache: `datasets--owner--name`.
    pub fn folder_name(&self) -> String {
        format!("{}s--{}", self.kind.as_str(), self.id.replace('/', "--"))
    }
}

/// Where to find hub files: a cache directory, online or offline.
///
/// Its `Debug` output shows whether a token is set, never the token.
#[derive(Clone)]
pub struct Hub {
    cache_dir: PathBuf,
    offline: bool,
    endpoint: Option<String>,
    token: Option<String>,
    progress: bool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("progress", &self.progress)
            .finish()
    }
}

fn env_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The hub cache directory Python's `huggingface_hub` would use in this environment.
pub fn cache_dir_from_env() -> PathBuf {
    if let Some(dir) = env_nonempty("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = env_nonempty("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    if let Some(xdg) = env_nonempty("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("huggingface").join("hub");
    }
    hf_hub::Cache::from_env().path().clone()
}

/// Whether `HF_HUB_OFFLINE` is set to a true value (`1`, `true`, `yes`, `on`).
pub fn offline_from_env() -> bool {
    env_true("HF_HUB_OFFLINE")
}

impl Hub {
    /// The hub as the environment configures it (see the module docs).
    pub fn from_env() -> Self {
        Self {
            cache_dir: cache_dir_from_env(),
            offline: offline_from_env(),
            endpoint: env_nonempty("HF_ENDPOINT"),
            token: env_nonempty("HF_TOKEN"),
            progress: true,
        }
    }

    /// An online hub with an explicit cache directory, ignoring the environment.
    pub fn with_cache_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: dir.into(),
            offline: false,
            endpoint: None,
            token: None,
            progress: false,
        }
    }

    /// Cache only (`true`) or download on a miss (`false`).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// The hub endpoint to download from (`HF_ENDPOINT`; `None`: huggingface.co).
    pub fn endpoint(mut self, endpoint: Option<String>) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// The access token sent with downloads (`HF_TOKEN`); it is never logged or shown by
    /// `Debug`.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Whether a token is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Show a download progress bar.
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Whether only the cache is used.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The cached path of `file` in `repo` at its revision, if present.
    pub fn cached(&self, repo: &HubRepo, file: &str) -> Option<PathBuf> {
        let rel = relative_file(file).ok()?;
        let root = self.cache_dir.join(repo.folder_name());
        let commit = match std::fs::read_to_string(root.join("refs").join(&repo.revision)) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ if is_commit_hash(&repo.revision) => repo.revision.clone(),
            _ => return None,
        };
        let path = root.join("snapshots").join(commit).join(rel);
        // `is_file` follows the snapshot symlink into `blobs/`: a dangling link is a miss.
        path.is_file().then_some(path)
    }

    /// The local path of `file` in `repo`: from the cache, or (online) downloaded into it.
    pub fn get(&self, repo: &HubRepo, file: &str) -> Result<PathBuf, HubError> {
        relative_file(file)?;
        if let Some(p) = self.cached(repo, file) {
            return Ok(p);
        }
        if self.offline {
            return Err(HubError::NotCached {
                repo: repo.id.clone(),
                kind: repo.kind.as_str(),
                revision: repo.revision.clone(),
                file: file.to_string(),
                cache_dir: self.cache_dir.clone().into_boxed_path(),
            });
        }
        let download = |message: String| HubError::Download {
            repo: repo.id.clone(),
            revision: repo.revision.clone(),
            file: file.to_string(),
            message,
        };
        let mut builder =
            hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(self.cache_dir.clone()))
                .with_progress(self.progress);
        if let Some(e) = &self.endpoint {
            builder = builder.with_endpoint(e.clone());
        }
        if self.token.is_some() {
            builder = builder.with_token(self.token.clone());
        }
        let api = builder.build().map_err(|e| download(e.to_string()))?;
        api.repo(hf_hub::Repo::with_revision(
            repo.id.clone(),
            repo.kind.hf(),
            repo.revision.clone(),
        ))
        .get(file)
        .map_err(|e| download(e.to_string()))
    }
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn relative_file(file: &str) -> Result<PathBuf, HubError> {
    if file.is_empty()
        || file.starts_with('/')
        || file.contains('\\')
        || file
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(HubError::InvalidFile(file.to_string()));
    }
    Ok(file.split('/').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_specs() {
        let r = HubRepo::parse("Song-SW/CEB@v1.0", RepoKind::Dataset).unwrap();
        assert_eq!((r.id(), r.revision()), ("Song-SW/CEB", "v1.0"));
        assert_eq!(r.folder_name(), "datasets--Song-SW--CEB");
        assert_eq!(
            HubRepo::model("gpt2").unwrap().folder_name(),
            "models--gpt2"
        );
        assert!(HubRepo::parse("a/b/c", RepoKind::Model).is_err());
        assert!(HubRepo::parse("a/b@", RepoKind::Model).is_err());
        assert!(HubRepo::parse("../x", RepoKind::Model).is_err());
        assert!(HubRepo::parse("a/b@refs/pr/1", RepoKind::Model).is_ok());
        assert!(relative_file("../x").is_err());
        assert!(relative_file("/x").is_err());
        assert!(relative_file("a//b").is_err());
        assert!(relative_file("data/x.json").is_ok());
    }
}
