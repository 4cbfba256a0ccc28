//! Writing the Hugging Face cache layout: seed a cache from local files, so that [`Hub`] (and
//! Python's `huggingface_hub`, with `HF_HUB_OFFLINE=1`) finds them as if downloaded.
//!
//! The layout is the one `huggingface_hub` writes, under the cache directory:
//!
//! ```text
//! <cache>/<kind>s--<owner>--<name>/
//!     blobs/<sha256 of the contents>
//!     snapshots/<commit>/<path in repo>   -> relative symlink to ../../blobs/<sha256>
//!     refs/<revision>                     holds <commit>, without a newline
//! ```
//!
//! Blobs are named by the SHA-256 of their contents — the name `huggingface_hub` gives LFS
//! files such as safetensors weights — so one blob serves every commit that has the same file.
//! Where symbolic links are unavailable (not unix, or a file system that refuses them) the
//! snapshot holds a copy instead, as `huggingface_hub` does; readers see no difference.
//!
//! A commit is any single path segment; `huggingface_hub` uses 40-hex commit hashes, and a
//! revision that is such a hash is found in `snapshots/` without a ref. Anything else needs
//! [`set_ref`] to be reachable.
//!
//! ```
//! use hub_source::{Hub, HubRepo, layout};
//!
//! let cache = tempfile::tempdir()?;
//! let commit = "0123456789abcdef0123456789abcdef01234567";
//! let repo = HubRepo::dataset("owner/prompts")?;
//! let src = cache.path().join("local.jsonl");
//! std::fs::write(&src, "{\"text\": \"hi\"}\n")?;
//!
//! let put = layout::put_file(cache.path(), &repo, commit, "data/train.jsonl", &src)?;
//! layout::set_ref(cache.path(), &repo, "main", commit)?;
//!
//! let hub = Hub::with_cache_dir(cache.path()).offline(true);
//! let found = hub.get(&repo, "data/train.jsonl")?; // through refs/main
//! assert_eq!(found, put);
//! assert_eq!(std::fs::read(&found)?, std::fs::read(&src)?);
//! let pinned = repo.clone().with_revision(commit)?; // a hash needs no ref
//! assert_eq!(hub.get(&pinned, "data/train.jsonl")?, put);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Hub`]: crate::Hub

use crate::error::HubError;
use crate::hub::{HubRepo, relative_file};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Puts the file `src` into the cache as `path_in_repo` of `repo` at `commit`: its bytes in
/// `blobs/`, a relative symlink (or a copy) in `snapshots/<commit>/`. An existing snapshot
/// file there is replaced. Returns the snapshot path, the one [`crate::Hub::get`] returns.
///
/// The revision `repo` carries is not used: files belong to commits; [`set_ref`] points a
/// revision at one.
pub fn put_file(
    cache_dir: &Path,
    repo: &HubRepo,
    commit: &str,
    path_in_repo: &str,
    src: &Path,
) -> Result<PathBuf, HubError> {
    let file = std::fs::File::open(src).map_err(|e| HubError::io(src, e))?;
    put_reader(cache_dir, repo, commit, path_in_repo, file, src)
}

/// Like [`put_file`], with the file's contents given in memory.
pub fn put_bytes(
    cache_dir: &Path,
    repo: &HubRepo,
    commit: &str,
    path_in_repo: &str,
    contents: &[u8],
) -> Result<PathBuf, HubError> {
    // A read from a slice cannot fail; the path only names the source in an error.
    put_reader(
        cache_dir,
        repo,
        commit,
        path_in_repo,
        contents,
        Path::new(path_in_repo),
    )
}

/// Puts every file below the directory `src_dir` into the cache, under `dir_in_repo` (`""` for
/// the repo's root) at the same relative paths, with [`put_file`]. Directories named `.git`
/// or `.cache` (git's and `huggingface_hub`'s local metadata) are skipped; links are followed.
/// Returns the snapshot directory, `snapshots/<commit>`.
pub fn put_dir(
    cache_dir: &Path,
    repo: &HubRepo,
    commit: &str,
    dir_in_repo: &str,
    src_dir: &Path,
) -> Result<PathBuf, HubError> {
    if !dir_in_repo.is_empty() {
        relative_file(dir_in_repo)?;
    }
    let snapshot = snapshot_dir(cache_dir, repo, commit)?;
    put_tree(cache_dir, repo, commit, dir_in_repo, src_dir)?;
    std::fs::create_dir_all(&snapshot).map_err(|e| HubError::io(&snapshot, e))?;
    Ok(snapshot)
}

fn put_tree(
    cache_dir: &Path,
    repo: &HubRepo,
    commit: &str,
    prefix: &str,
    dir: &Path,
) -> Result<(), HubError> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| HubError::io(dir, e))?;
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(HubError::InvalidFile(path.display().to_string()));
        };
        let in_repo = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            if name != ".git" && name != ".cache" {
                put_tree(cache_dir, repo, commit, &in_repo, &path)?;
            }
        } else if path.is_file() {
            put_file(cache_dir, repo, commit, &in_repo, &path)?;
        }
    }
    Ok(())
}

/// Points the revision `rev` (a branch, a tag, `refs/pr/1`) of `repo` at `commit`: writes
/// `refs/<rev>`, replacing what was there. Returns the path of the ref file.
pub fn set_ref(
    cache_dir: &Path,
    repo: &HubRepo,
    rev: &str,
    commit: &str,
) -> Result<PathBuf, HubError> {
    check_commit(repo, commit)?;
    let rev_path = repo
        .clone()
        .with_revision(rev)
        .and_then(|_| relative_file(rev))?;
    let path = cache_dir
        .join(repo.folder_name())
        .join("refs")
        .join(rev_path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    std::fs::write(&path, commit).map_err(|e| HubError::io(&path, e))?;
    Ok(path)
}

fn check_commit(repo: &HubRepo, commit: &str) -> Result<(), HubError> {
    let ok = !commit.contains('/') && repo.clone().with_revision(commit).is_ok();
    if ok {
        Ok(())
    } else {
        Err(HubError::InvalidRepo {
            spec: format!("{}@{commit}", repo.id()),
            reason: "invalid commit: expected one path segment, such as a 40-hex commit hash"
                .into(),
        })
    }
}

fn snapshot_dir(cache_dir: &Path, repo: &HubRepo, commit: &str) -> Result<PathBuf, HubError> {
    check_commit(repo, commit)?;
    Ok(cache_dir
        .join(repo.folder_name())
        .join("snapshots")
        .join(commit))
}

/// Tells apart the temporary blobs of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn put_reader(
    cache_dir: &Path,
    repo: &HubRepo,
    commit: &str,
    path_in_repo: &str,
    mut reader: impl Read,
    src: &Path,
) -> Result<PathBuf, HubError> {
    let rel = relative_file(path_in_repo)?;
    let link = snapshot_dir(cache_dir, repo, commit)?.join(&rel);
    let blobs = cache_dir.join(repo.folder_name()).join("blobs");
    std::fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;

    // Copy into a temporary blob while hashing, then name it by its hash.
    let temp = blobs.join(format!(
        "{}-{}.incomplete",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let hash = match copy_hashing(&mut reader, src, &temp) {
        Ok(hash) => hash,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    let blob = blobs.join(&hash);
    if blob.is_file() {
        std::fs::remove_file(&temp).map_err(|e| HubError::io(&temp, e))?;
    } else if let Err(e) = std::fs::rename(&temp, &blob) {
        let _ = std::fs::remove_file(&temp);
        return Err(HubError::io(&blob, e));
    }

    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    if std::fs::symlink_metadata(&link).is_ok() {
        std::fs::remove_file(&link).map_err(|e| HubError::io(&link, e))?;
    }
    // From snapshots/<commit>/<a>/<b> up to the repo folder: one `..` per component, plus one.
    let target = Path::new(&"../".repeat(rel.components().count() + 1))
        .join("blobs")
        .join(&hash);
    if symlink(&target, &link).is_err() {
        std::fs::copy(&blob, &link).map_err(|e| HubError::io(&link, e))?;
    }
    Ok(link)
}

fn copy_hashing(reader: &mut impl Read, src: &Path, to: &Path) -> Result<String, HubError> {
    let mut out = std::fs::File::create(to).map_err(|e| HubError::io(to, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HubError::io(src, e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| HubError::io(to, e))?;
    }
    out.flush().map_err(|e| HubError::io(to, e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hub;

    const C1: &str = "1111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn puts_blobs_links_and_refs_that_the_hub_reads_offline() {
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        let repo = HubRepo::model("tiny/model").unwrap();
        let p1 = put_bytes(c, &repo, C1, "config.json", b"{}").unwrap();
        let p2 = put_bytes(c, &repo, C2, "sub/dir/config.json", b"{}").unwrap();
        set_ref(c, &repo, "main", C1).unwrap();
        let r = set_ref(c, &repo, "refs/pr/1", C2).unwrap();
        assert_eq!(std::fs::read_to_string(&r).unwrap(), C2);

        let hub = Hub::with_cache_dir(c).offline(true);
        assert_eq!(hub.get(&repo, "config.json").unwrap(), p1);
        let pr = repo.clone().with_revision("refs/pr/1").unwrap();
        assert_eq!(hub.get(&pr, "sub/dir/config.json").unwrap(), p2);
        assert!(hub.get(&pr, "config.json").is_err());

        // One blob for the same contents, reached through relative links.
        let blobs: Vec<_> = std::fs::read_dir(c.join("models--tiny--model/blobs"))
            .unwrap()
            .collect();
        assert_eq!(blobs.len(), 1);
        #[cfg(unix)]
        {
            let t = std::fs::read_link(&p2).unwrap();
            assert!(
                t.is_relative() && t.starts_with("../../../../blobs"),
                "{t:?}"
            );
        }

        // Putting again replaces the snapshot file.
        put_bytes(c, &repo, C1, "config.json", b"[]").unwrap();
        assert_eq!(std::fs::read(&p1).unwrap(), b"[]");
    }

    #[test]
    fn put_dir_mirrors_a_tree_and_bad_names_are_typed_errors() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/.git")).unwrap();
        std::fs::write(src.path().join("top.txt"), "t").unwrap();
        std::fs::write(src.path().join("a/in.txt"), "i").unwrap();
        std::fs::write(src.path().join("a/.git/HEAD"), "x").unwrap();
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        let repo = HubRepo::dataset("o/d").unwrap();
        let snap = put_dir(c, &repo, C1, "data", src.path()).unwrap();
        assert_eq!(snap, c.join("datasets--o--d/snapshots").join(C1));
        assert_eq!(std::fs::read(snap.join("data/top.txt")).unwrap(), b"t");
        assert_eq!(std::fs::read(snap.join("data/a/in.txt")).unwrap(), b"i");
        assert!(!snap.join("data/a/.git").exists());
        let root = put_dir(c, &repo, C2, "", src.path()).unwrap();
        assert!(root.join("a/in.txt").is_file());

        assert!(matches!(
            put_bytes(c, &repo, C1, "../x", b""),
            Err(HubError::InvalidFile(_))
        ));
        assert!(matches!(
            put_bytes(c, &repo, "a/b", "x", b""),
            Err(HubError::InvalidRepo { .. })
        ));
        assert!(matches!(
            set_ref(c, &repo, "../main", C1),
            Err(HubError::InvalidRepo { .. })
        ));
        let missing = c.join("no-such-file");
        match put_file(c, &repo, C1, "x", &missing) {
            Err(e @ HubError::Io { .. }) => {
                assert!(
                    e.to_string().contains("no-such-file") && e.is_bad_input(),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            put_dir(c, &repo, C1, "", &missing),
            Err(HubError::Io { .. })
        ));
    }
}
