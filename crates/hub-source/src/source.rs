//! [`Source`]: where a checkpoint or a data file comes from — a local path, or a hub repo at a
//! revision, optionally one file inside it.

use crate::error::HubError;
use crate::hub::{Hub, HubRepo, RepoKind, relative_file};
use crate::snapshot::Snapshot;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A local path, or a hub repo at a revision, optionally naming one file inside it.
///
/// Spec forms ([`Source::parse`]): an existing path; `owner/name`; `owner/name@revision`;
/// `owner/name:path/in/repo` and `owner/name@revision:path/in/repo` for one file (the first `:`
/// separates the file; repo ids and git revisions never contain one).
///
/// Serialised (the form run keys are hashed from) as `{"local": "/abs/path"}` or
/// `{"hub": {"repo": "owner/name", "revision": "main"}}`, with `"file"` inside `"hub"` only when
/// one is named; the repo kind is not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A file or directory on disk.
    Local(PathBuf),
    /// A hub repo at a revision.
    Hub {
        /// The repo and revision.
        repo: HubRepo,
        /// One file inside the repo, when the source names one.
        file: Option<String>,
    },
}

impl Source {
    /// A local file or directory.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Source::Local(path.into())
    }

    /// A whole hub repo.
    pub fn hub(repo: HubRepo) -> Self {
        Source::Hub { repo, file: None }
    }

    /// Parses a spec (see the type's docs): an existing path is local; otherwise `spec` must be
    /// a hub repo of `kind`, optionally at a revision and naming one file.
    pub fn parse(spec: &str, kind: RepoKind) -> Result<Self, HubError> {
        let path = Path::new(spec);
        if !spec.is_empty() && path.exists() {
            return Ok(Source::Local(path.to_path_buf()));
        }
        let refuse = || HubError::InvalidRepo {
            spec: spec.to_string(),
            reason: "no such file or directory, and not a hub repo id (`owner/name`, \
                     `owner/name@revision`, `owner/name@revision:file`)"
                .into(),
        };
        let (repo, file) = match spec.split_once(':') {
            Some((repo, file)) => {
                relative_file(file).map_err(|_| refuse())?;
                (repo, Some(file.to_string()))
            }
            None => (spec, None),
        };
        let repo = HubRepo::parse(repo, kind).map_err(|_| refuse())?;
        Ok(Source::Hub { repo, file })
    }

    /// The same source naming one file inside it: for a hub repo, `file` inside the repo; for a
    /// local directory, `file` inside the directory.
    pub fn with_file(self, file: &str) -> Result<Self, HubError> {
        let rel = relative_file(file)?;
        Ok(match self {
            Source::Local(p) => Source::Local(p.join(rel)),
            Source::Hub { repo, .. } => Source::Hub {
                repo,
                file: Some(file.to_string()),
            },
        })
    }

    /// The hub repo, for a hub source.
    pub fn repo(&self) -> Option<&HubRepo> {
        match self {
            Source::Hub { repo, .. } => Some(repo),
            Source::Local(_) => None,
        }
    }

    /// The file named inside a hub repo, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            Source::Hub { file, .. } => file.as_deref(),
            Source::Local(_) => None,
        }
    }

    /// The path, for a local source.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Source::Local(p) => Some(p),
            Source::Hub { .. } => None,
        }
    }

    /// A short name for records and labels: a local path as given; `owner/name` at `main`,
    /// else `owner/name@revision`; `:file` appended when one is named.
    pub fn display_name(&self) -> String {
        match self {
            Source::Local(p) => p.display().to_string(),
            Source::Hub { repo, file } => {
                let mut s = if repo.revision() == "main" {
                    repo.id().to_string()
                } else {
                    format!("{}@{}", repo.id(), repo.revision())
                };
                if let Some(f) = file {
                    s.push(':');
                    s.push_str(f);
                }
                s
            }
        }
    }

    /// The spec that [`Source::parse`] reads back: the path, or
    /// `owner/name@revision[:file]`.
    pub fn to_spec(&self) -> String {
        match self {
            Source::Local(p) => p.display().to_string(),
            Source::Hub { repo, file } => {
                let mut s = format!("{}@{}", repo.id(), repo.revision());
                if let Some(f) = file {
                    s.push(':');
                    s.push_str(f);
                }
                s
            }
        }
    }

    /// The files of this source: a local directory, or the hub repo at its revision through
    /// `hub` (no I/O until a file is asked for).
    pub fn snapshot(&self, hub: &Hub) -> Snapshot {
        match self {
            Source::Local(p) => Snapshot::local(p),
            Source::Hub { repo, .. } => Snapshot::hub(hub, repo.clone()),
        }
    }

    /// The one file this source stands for: a local path as given (not checked); for a hub
    /// repo, the file the source names, else `default`, from the cache or (online) downloaded.
    pub fn fetch_file(&self, hub: &Hub, default: &str) -> Result<PathBuf, HubError> {
        match self {
            Source::Local(p) => Ok(p.clone()),
            Source::Hub { repo, file } => hub.get(repo, file.as_deref().unwrap_or(default)),
        }
    }
}

impl std::fmt::Display for Source {
    /// `path`, or `hub:owner/name@revision[:file]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Local(p) => write!(f, "{}", p.display()),
            Source::Hub { .. } => write!(f, "hub:{}", self.to_spec()),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Form<'a> {
            Local(&'a Path),
            Hub {
                repo: &'a str,
                revision: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                file: Option<&'a str>,
            },
        }
        match self {
            Source::Local(p) => Form::Local(p),
            Source::Hub { repo, file } => Form::Hub {
                repo: repo.id(),
                revision: repo.revision(),
                file: file.as_deref(),
            },
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        let s = Source::parse("tiny/llama", RepoKind::Model).unwrap();
        assert_eq!(s.display_name(), "tiny/llama");
        assert_eq!(s.to_string(), "hub:tiny/llama@main");
        assert_eq!(s.file(), None);
        let s = Source::parse("tiny/llama@v2:model.gguf", RepoKind::Model).unwrap();
        assert_eq!(s.repo().map(HubRepo::revision), Some("v2"));
        assert_eq!(s.file(), Some("model.gguf"));
        assert_eq!(s.display_name(), "tiny/llama@v2:model.gguf");
        assert_eq!(s.to_string(), "hub:tiny/llama@v2:model.gguf");
        assert_eq!(Source::parse(&s.to_spec(), RepoKind::Model).unwrap(), s);
        let s = Source::parse("a/b:data/x.jsonl", RepoKind::Dataset).unwrap();
        assert_eq!(s.repo().map(HubRepo::revision), Some("main"));
        assert_eq!(s.file(), Some("data/x.jsonl"));
        for bad in ["a/b:../x", "a/b:", "a/b@:f", "a/b/c", "./no/such/dir", ""] {
            assert!(Source::parse(bad, RepoKind::Model).is_err(), "{bad}");
        }
    }

    #[test]
    fn serialised_form_is_stable() {
        let local = Source::local("/abs/path");
        assert_eq!(
            serde_json::to_string(&local).unwrap(),
            r#"{"local":"/abs/path"}"#
        );
        let hub = Source::hub(HubRepo::model("o/n").unwrap());
        assert_eq!(
            serde_json::to_string(&hub).unwrap(),
            r#"{"hub":{"repo":"o/n","revision":"main"}}"#
        );
        let one = hub.with_file("w.gguf").unwrap();
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"hub":{"repo":"o/n","revision":"main","file":"w.gguf"}}"#
        );
        assert_eq!(local.display_name(), "/abs/path");
        assert_eq!(local.to_string(), "/abs/path");
    }
}
