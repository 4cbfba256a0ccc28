//! Where RealToxicityPrompts and CEB-Continuation-T come from: a local path, or their Hugging
//! Face datasets through [`hub_source`] (the cache Python shares; `HF_HUB_OFFLINE=1` reads it
//! only).
//!
//! ```
//! use hub_source::{Hub, RepoKind, Source};
//! use toxprompts::sources::rtp_path;
//! let cache = tempfile::tempdir()?;
//! let repo = cache.path().join("datasets--allenai--real-toxicity-prompts");
//! std::fs::create_dir_all(repo.join("snapshots/abc123"))?;
//! std::fs::write(repo.join("snapshots/abc123/prompts.jsonl"), "")?;
//! std::fs::create_dir_all(repo.join("refs"))?;
//! std::fs::write(repo.join("refs/main"), "abc123")?;
//!
//! let hub = Hub::with_cache_dir(cache.path()).offline(true);
//! let rtp = Source::parse(toxprompts::sources::RTP_REPO, RepoKind::Dataset)?;
//! assert_eq!(rtp_path(&rtp, &hub)?, repo.join("snapshots/abc123/prompts.jsonl"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::ceb::{CebAxis, CebSet};
use crate::error::Result;
use crate::jsonl::OnBadRecord;
use hub_source::{Hub, HubRepo, Source};
use std::path::PathBuf;

/// The RealToxicityPrompts dataset repo.
pub const RTP_REPO: &str = "allenai/real-toxicity-prompts";
/// Its prompts file.
pub const RTP_FILE: &str = "prompts.jsonl";
/// The CEB dataset repo.
pub const CEB_REPO: &str = "Song-SW/CEB";
/// The CEB-Continuation-T directory inside it.
pub const CEB_DIR: &str = "data/CEB-Continuation-T";

/// The local path of RealToxicityPrompts' `prompts.jsonl` at `revision` (`None`: `main`), from the
/// hub cache or downloaded into it.
pub fn rtp_from_hub(hub: &Hub, revision: Option<&str>) -> Result<PathBuf> {
    let mut repo = HubRepo::dataset(RTP_REPO)?;
    if let Some(r) = revision {
        repo = repo.with_revision(r)?;
    }
    Ok(hub.get(&repo, RTP_FILE)?)
}

/// The local paths of the four CEB-Continuation-T files of `Song-SW/CEB` at `revision`
/// (`None`: `main`), from the hub cache or downloaded into it; feed them to [`CebSet::from_files`].
pub fn ceb_from_hub(hub: &Hub, revision: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut repo = HubRepo::dataset(CEB_REPO)?;
    if let Some(r) = revision {
        repo = repo.with_revision(r)?;
    }
    ceb_files(hub, &repo)
}

fn ceb_files(hub: &Hub, repo: &HubRepo) -> Result<Vec<PathBuf>> {
    CebAxis::ALL
        .iter()
        .map(|a| Ok(hub.get(repo, &format!("{CEB_DIR}/{}", a.file_name()))?))
        .collect()
}

/// The RealToxicityPrompts file of a source: a local path as given; for a hub dataset, the file
/// the source names, else [`RTP_FILE`].
pub fn rtp_path(source: &Source, hub: &Hub) -> Result<PathBuf> {
    Ok(source.fetch_file(hub, RTP_FILE)?)
}

/// The CEB-Continuation-T set of a source: a local directory holding the four files, or a hub
/// dataset laid out as `Song-SW/CEB` (the four files under [`CEB_DIR`]).
pub fn ceb_set(source: &Source, hub: &Hub, policy: OnBadRecord) -> Result<CebSet> {
    match source {
        Source::Local(dir) => CebSet::from_dir(dir, policy),
        Source::Hub { repo, .. } => CebSet::from_files(&ceb_files(hub, repo)?, policy),
    }
}
