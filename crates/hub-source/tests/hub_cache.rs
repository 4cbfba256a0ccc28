#![cfg(unix)]
//! Hub resolution against a temporary directory laid out like the Hugging Face cache
//! (`datasets--owner--name/{blobs,snapshots/<commit>,refs/<rev>}`), with no network: offline
//! lookups, revisions, commit hashes, dangling links, clear errors, sources and snapshots.

use hub_source::{Hub, HubError, HubRepo, RepoKind, Snapshot, Source, TokenizerFiles, layout};
use std::path::PathBuf;

const MAIN: &str = "1111111111111111111111111111111111111111";
const V1: &str = "2222222222222222222222222222222222222222";

fn samples() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples"
    ))
}

/// RTP at `main`; CEB at `main` (four files) and at tag `v1` (race.json only), as
/// `huggingface_hub` lays them out (blobs, snapshot links, refs).
fn fake_cache() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path();
    let rtp = HubRepo::dataset(RTP).unwrap();
    let rtp_src = samples().join("rtp/prompts.jsonl");
    layout::put_file(c, &rtp, MAIN, "prompts.jsonl", &rtp_src).unwrap();
    layout::set_ref(c, &rtp, "main", MAIN).unwrap();
    let ceb = HubRepo::dataset(CEB).unwrap();
    let ceb_src = samples().join("CEB-Continuation-T");
    layout::put_dir(c, &ceb, MAIN, "data/CEB-Continuation-T", &ceb_src).unwrap();
    layout::put_file(c, &ceb, V1, RACE, &ceb_src.join("race.json")).unwrap();
    layout::set_ref(c, &ceb, "main", MAIN).unwrap();
    // Python writes refs without a newline; tolerate one anyway.
    let v1 = layout::set_ref(c, &ceb, "v1", V1).unwrap();
    std::fs::write(v1, format!("{V1}\n")).unwrap();
    dir
}

const RTP: &str = "allenai/real-toxicity-prompts";
const CEB: &str = "Song-SW/CEB";
const RACE: &str = "data/CEB-Continuation-T/race.json";

fn rtp_file(hub: &Hub, revision: Option<&str>) -> Result<PathBuf, HubError> {
    let mut repo = HubRepo::dataset(RTP)?;
    if let Some(r) = revision {
        repo = repo.with_revision(r)?;
    }
    hub.get(&repo, "prompts.jsonl")
}

#[test]
fn offline_lookup_through_refs_and_snapshots() {
    let cache = fake_cache();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let p = rtp_file(&hub, None).unwrap();
    assert!(
        p.ends_with(format!("snapshots/{MAIN}/prompts.jsonl")),
        "{}",
        p.display()
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        std::fs::read(samples().join("rtp/prompts.jsonl")).unwrap()
    );

    // A tag resolves through refs/v1; a commit hash without a ref resolves directly.
    let repo = HubRepo::dataset(CEB).unwrap();
    assert!(hub.get(&repo, RACE).unwrap().ends_with(RACE));
    let v1 = hub
        .get(&repo.clone().with_revision("v1").unwrap(), RACE)
        .unwrap();
    assert!(v1.to_string_lossy().contains(V1));
    let by_hash = hub
        .get(&repo.clone().with_revision(V1).unwrap(), RACE)
        .unwrap();
    assert_eq!(by_hash, v1);
}

#[test]
fn offline_misses_are_clear_bad_input_errors() {
    let cache = fake_cache();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    // File absent at this revision.
    let v1 = HubRepo::dataset(CEB).unwrap().with_revision("v1").unwrap();
    let err = hub
        .get(&v1, "data/CEB-Continuation-T/gender.json")
        .unwrap_err();
    let msg = err.to_string();
    assert!(err.is_bad_input());
    assert!(msg.contains("data/CEB-Continuation-T/gender.json"), "{msg}");
    assert!(
        msg.contains("Song-SW/CEB") && msg.contains("`v1`") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
    assert!(msg.contains(&cache.path().display().to_string()), "{msg}");
    // Unknown revision, unknown repo.
    assert!(rtp_file(&hub, Some("no-such-branch")).is_err());
    let other = HubRepo::model("nobody/nothing").unwrap();
    let err = hub.get(&other, "config.json").unwrap_err();
    assert!(
        matches!(err, HubError::NotCached { kind: "model", .. }),
        "{err}"
    );
    // Path tricks are refused before touching the disk.
    let rtp = HubRepo::dataset(RTP).unwrap();
    assert!(matches!(
        hub.get(&rtp, "../x"),
        Err(HubError::InvalidFile(_))
    ));
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
    match rtp_file(&hub, None) {
        Err(e) => assert!(matches!(e, HubError::NotCached { .. }), "{e}"),
        other => panic!("expected a cache miss, got {other:?}"),
    }
}

#[test]
fn online_mode_serves_cached_files_without_the_network() {
    let cache = fake_cache();
    // Online, but the file is cached: no request is made (the endpoint is unroutable anyway).
    let hub = Hub::with_cache_dir(cache.path())
        .offline(false)
        .endpoint(Some("http://127.0.0.1:9".into()));
    assert!(!hub.is_offline());
    let p = rtp_file(&hub, None).unwrap();
    assert!(p.is_file());
}

#[test]
fn sources_are_paths_or_repo_specs() {
    let here = samples().join("rtp/prompts.jsonl");
    assert_eq!(
        Source::parse(here.to_str().unwrap(), RepoKind::Dataset).unwrap(),
        Source::Local(here.clone())
    );
    match Source::parse("allenai/real-toxicity-prompts@abc", RepoKind::Dataset).unwrap() {
        Source::Hub { repo, file: None } => assert_eq!(
            (repo.id(), repo.revision()),
            ("allenai/real-toxicity-prompts", "abc")
        ),
        other => panic!("{other:?}"),
    }
    let err = Source::parse("./no/such/file.jsonl", RepoKind::Dataset).unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
    assert!(err.is_bad_input());

    // One file of a repo, fetched through the cache; a local path is itself.
    let cache = fake_cache();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let one = Source::parse(&format!("{CEB}@v1:{RACE}"), RepoKind::Dataset).unwrap();
    let p = one.fetch_file(&hub, "unused.json").unwrap();
    assert!(p.to_string_lossy().contains(V1) && p.ends_with(RACE));
    let whole = Source::parse(RTP, RepoKind::Dataset).unwrap();
    assert!(whole.fetch_file(&hub, "prompts.jsonl").unwrap().is_file());
    assert_eq!(Source::local(&here).fetch_file(&hub, "x").unwrap(), here);
}

/// A model repo in the cache with the given files (contents are irrelevant here).
fn model_cache(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = HubRepo::model("tiny/model").unwrap();
    for (name, text) in files {
        layout::put_bytes(dir.path(), &repo, MAIN, name, text.as_bytes()).unwrap();
    }
    layout::set_ref(dir.path(), &repo, "main", MAIN).unwrap();
    dir
}

#[test]
fn snapshots_find_config_weights_and_tokenizer_in_the_cache_and_on_disk() {
    let index = r#"{"metadata":{},"weight_map":{"a":"m-2.safetensors","b":"m-1.safetensors","c":"m-2.safetensors"}}"#;
    let cache = model_cache(&[
        ("config.json", "{}"),
        ("model.safetensors.index.json", index),
        ("m-1.safetensors", ""),
        ("m-2.safetensors", ""),
        ("vocab.json", "{}"),
        ("merges.txt", ""),
    ]);
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let snap_dir = cache
        .path()
        .join("models--tiny--model/snapshots")
        .join(MAIN);
    let repo = HubRepo::model("tiny/model").unwrap();
    for snap in [
        Source::hub(repo.clone()).snapshot(&hub),
        Snapshot::local(&snap_dir),
    ] {
        assert_eq!(snap.config().unwrap(), snap_dir.join("config.json"));
        let w = snap.safetensors().unwrap();
        assert_eq!(
            w.files,
            [
                snap_dir.join("m-1.safetensors"),
                snap_dir.join("m-2.safetensors")
            ]
        );
        let index = w.index.unwrap();
        assert_eq!(index.file_of("c"), Some("m-2.safetensors"));
        assert_eq!(index.weight_map().len(), 3);
        assert_eq!(
            snap.tokenizer().unwrap(),
            TokenizerFiles::VocabMerges {
                vocab: snap_dir.join("vocab.json"),
                merges: snap_dir.join("merges.txt"),
            }
        );
        assert_eq!(snap.optional("tokenizer_config.json"), None);
        assert_eq!(snap.optional("../config.json"), None);
        assert!(
            snap.file("tokenizer_config.json")
                .unwrap_err()
                .is_bad_input()
        );
    }
    assert_eq!(
        Snapshot::local(&snap_dir).origin(),
        snap_dir.display().to_string()
    );
    assert_eq!(Source::hub(repo).snapshot(&hub).origin(), "tiny/model@main");

    // A shard named by the index but absent: the error names it.
    std::fs::remove_file(snap_dir.join("m-2.safetensors")).unwrap();
    let e = Snapshot::local(&snap_dir).safetensors().unwrap_err();
    assert!(e.to_string().contains("m-2.safetensors"), "{e}");
    let e = Source::parse("tiny/model", RepoKind::Model)
        .unwrap()
        .snapshot(&hub)
        .safetensors()
        .unwrap_err();
    assert!(
        e.to_string().contains("m-2.safetensors") && e.is_bad_input(),
        "{e}"
    );
}

#[test]
fn snapshots_without_weights_or_tokenizer_say_so() {
    let cache = model_cache(&[
        ("config.json", "{}"),
        ("pytorch_model.bin", ""),
        ("vocab.json", "{}"),
    ]);
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let snap = Source::parse("tiny/model", RepoKind::Model)
        .unwrap()
        .snapshot(&hub);
    let e = snap.safetensors().unwrap_err();
    assert!(matches!(e, HubError::NoSafetensors { .. }), "{e}");
    assert!(e.to_string().contains("tiny/model@main"), "{e}");
    let e = snap.tokenizer().unwrap_err();
    assert!(matches!(e, HubError::NoTokenizer { .. }), "{e}");
    assert!(e.is_bad_input());
    // A single model.safetensors wins over an index, as in transformers.
    let cache = model_cache(&[
        ("model.safetensors", ""),
        ("model.safetensors.index.json", "not json"),
        ("tokenizer.json", "{}"),
    ]);
    let dir = cache
        .path()
        .join("models--tiny--model/snapshots")
        .join(MAIN);
    let w = Snapshot::local(&dir).safetensors().unwrap();
    assert_eq!(w.files, [dir.join("model.safetensors")]);
    assert!(w.index.is_none());
    assert_eq!(
        Snapshot::local(&dir).tokenizer().unwrap(),
        TokenizerFiles::Json(dir.join("tokenizer.json"))
    );
}
