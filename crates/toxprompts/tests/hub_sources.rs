#![cfg(unix)]
//! RTP and CEB from a temporary directory laid out like the Hugging Face cache
//! (`datasets--owner--name/{blobs,snapshots/<commit>,refs/<rev>}`), with no network: offline
//! lookups, revisions, clear errors, and a prompt set built from the cached RTP and CEB files.
//! (The cache mechanics themselves are tested in the `hub-source` crate.)

use hub_source::{Hub, HubRepo, RepoKind, Source, layout};
use std::path::{Path, PathBuf};
use toxprompts::sources::{CEB_DIR, CEB_REPO, RTP_FILE, RTP_REPO, ceb_set, rtp_path};
use toxprompts::{CebSet, OnBadRecord, PromptSetParams, ceb_from_hub, rtp_from_hub};

const MAIN: &str = "1111111111111111111111111111111111111111";
const V1: &str = "2222222222222222222222222222222222222222";

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/samples")
}

/// The cache `rtp_from_hub` and `ceb_from_hub` read, laid out by `hub_source::layout`: RTP and
/// the four CEB files at `main`, and a tag `v1` of CEB holding only race.json.
fn fake_cache() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path();
    let rtp = HubRepo::dataset(RTP_REPO).unwrap();
    let ceb = HubRepo::dataset(CEB_REPO).unwrap();
    let ceb_dir = samples().join("CEB-Continuation-T");
    let rtp_file = samples().join("rtp/prompts.jsonl");
    layout::put_file(c, &rtp, MAIN, RTP_FILE, &rtp_file).unwrap();
    layout::put_dir(c, &ceb, MAIN, CEB_DIR, &ceb_dir).unwrap();
    let race = format!("{CEB_DIR}/race.json");
    layout::put_file(c, &ceb, V1, &race, &ceb_dir.join("race.json")).unwrap();
    for (repo, rev, commit) in [(&rtp, "main", MAIN), (&ceb, "main", MAIN), (&ceb, "v1", V1)] {
        layout::set_ref(c, repo, rev, commit).unwrap();
    }
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
