#![cfg(unix)]
//! RTP and CEB from a temporary directory laid out like the Hugging Face cache
//! (`datasets--owner--name/{blobs,snapshots/<commit>,refs/<rev>}`), with no network: offline
//! lookups, revisions, clear errors, and a prompt set built from the cached RTP and CEB files.
//! (The cache mechanics themselves are tested in the `hub-source` crate.)

use hub_source::{Hub, HubError, RepoKind, Source};
use std::path::{Path, PathBuf};
use toxprompts::sources::{ceb_set, rtp_path};
use toxprompts::{CebSet, OnBadRecord, PromptSetParams, ceb_from_hub, rtp_from_hub};

const MAIN: &str = "1111111111111111111111111111111111111111";
const V1: &str = "2222222222222222222222222222222222222222";

fn samples() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples"
    ))
}

/// Puts `src` into the cache as Python does: the bytes in `blobs/<name>`, a relative symlink in
/// `snapshots/<commit>/<file>`.
fn put(cache: &Path, folder: &str, commit: &str, file: &str, src: &Path) {
    let root = cache.join(folder);
    let blob = root
        .join("blobs")
        .join(format!("{commit}-{}", file.replace('/', "_")));
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::copy(src, &blob).unwrap();
    let link = root.join("snapshots").join(commit).join(file);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let depth = file.split('/').count() + 1;
    let target = PathBuf::from("../".repeat(depth))
        .join("blobs")
        .join(blob.file_name().unwrap());
    std::os::unix::fs::symlink(target, &link).unwrap();
}

fn set_ref(cache: &Path, folder: &str, rev: &str, commit: &str) {
    let path = cache.join(folder).join("refs").join(rev);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, commit).unwrap();
}

fn fake_cache() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path();
    let rtp = "datasets--allenai--real-toxicity-prompts";
    put(
        c,
        rtp,
        MAIN,
        "prompts.jsonl",
        &samples().join("rtp/prompts.jsonl"),
    );
    set_ref(c, rtp, "main", MAIN);
    let ceb = "datasets--Song-SW--CEB";
    for f in ["race", "gender", "age", "religion"] {
        let src = samples().join(format!("CEB-Continuation-T/{f}.json"));
        put(
            c,
            ceb,
            MAIN,
            &format!("data/CEB-Continuation-T/{f}.json"),
            &src,
        );
    }
    // A tagged older revision holding only race.json.
    put(
        c,
        ceb,
        V1,
        "data/CEB-Continuation-T/race.json",
        &samples().join("CEB-Continuation-T/race.json"),
    );
    set_ref(c, ceb, "main", MAIN);
    // Python writes refs without a newline; tolerate one anyway.
    set_ref(c, ceb, "v1", &format!("{V1}\n"));
    dir
}

#[test]
fn offline_lookup_through_refs_and_snapshots() {
    let cache = fake_cache();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let p = rtp_from_hub(&hub, None).unwrap();
    assert!(
        p.ends_with(format!("snapshots/{MAIN}/prompts.jsonl")),
        "{}",
        p.display()
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        std::fs::read(samples().join("rtp/prompts.jsonl")).unwrap()
    );

    let files = ceb_from_hub(&hub, None).unwrap();
    assert_eq!(files.len(), 4);
    assert!(files[0].ends_with("data/CEB-Continuation-T/race.json"));
}

#[test]
fn offline_misses_are_clear_bad_input_errors() {
    let cache = fake_cache();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    // File absent at this revision.
    let err = ceb_from_hub(&hub, Some("v1")).unwrap_err();
    let msg = err.to_string();
    assert!(err.is_bad_input());
    assert!(msg.contains("data/CEB-Continuation-T/gender.json"), "{msg}");
    assert!(
        msg.contains("Song-SW/CEB") && msg.contains("`v1`") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
    assert!(msg.contains(&cache.path().display().to_string()), "{msg}");
    // Unknown revision.
    assert!(rtp_from_hub(&hub, Some("no-such-branch")).is_err());
}

#[test]
fn a_dangling_snapshot_link_is_a_miss() {
    let cache = fake_cache();
    let blobs = cache
        .path()
        .join("datasets--allenai--real-toxicity-prompts/blobs");
    for b in std::fs::read_dir(&blobs).unwrap() {
        std::fs::remove_file(b.unwrap().path()).unwrap();
    }
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    match rtp_from_hub(&hub, None) {
        Err(toxprompts::Error::Hub(e)) => assert!(matches!(*e, HubError::NotCached { .. }), "{e}"),
        other => panic!("expected a cache miss, got {other:?}"),
    }
}

#[test]
fn prompt_set_from_the_cache_equals_the_one_from_the_samples() {
    let cache = fake_cache();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let rtp = rtp_from_hub(&hub, None).unwrap();
    let ceb = CebSet::from_files(&ceb_from_hub(&hub, None).unwrap(), OnBadRecord::Fail).unwrap();
    let p = PromptSetParams::default().random(30).severe(10).per_axis(5);
    let from_hub = p.build(Some(&rtp), Some(&ceb)).unwrap();
    let local_ceb =
        CebSet::from_dir(samples().join("CEB-Continuation-T"), OnBadRecord::Fail).unwrap();
    let local = p
        .build(Some(&samples().join("rtp/prompts.jsonl")), Some(&local_ceb))
        .unwrap();
    assert_eq!(from_hub.prompts, local.prompts);
}

#[test]
fn sources_give_the_same_files_as_the_hub_functions() {
    let cache = fake_cache();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let rtp = Source::parse("allenai/real-toxicity-prompts", RepoKind::Dataset).unwrap();
    assert_eq!(
        rtp_path(&rtp, &hub).unwrap(),
        rtp_from_hub(&hub, None).unwrap()
    );
    let local = samples().join("rtp/prompts.jsonl");
    assert_eq!(rtp_path(&Source::local(&local), &hub).unwrap(), local);

    let policy = OnBadRecord::Fail;
    let ceb = Source::parse("Song-SW/CEB", RepoKind::Dataset).unwrap();
    let from_hub = ceb_set(&ceb, &hub, policy).unwrap();
    let dir = Source::local(samples().join("CEB-Continuation-T"));
    let from_dir = ceb_set(&dir, &hub, policy).unwrap();
    for (a, b) in from_hub.files().iter().zip(from_dir.files()) {
        assert_eq!((a.axis, &a.records), (b.axis, &b.records));
    }
    let v1 = Source::parse("Song-SW/CEB@v1", RepoKind::Dataset).unwrap();
    let err = ceb_set(&v1, &hub, policy).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("gender.json"),
        "{err}"
    );
}
