//! Loading by hub id from a directory laid out like the Hugging Face cache, offline.

use hate_classifier::{Error, HateClassifier, Hub};
use hub_source::{HubRepo, layout};
use std::path::Path;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/classifier"
);

/// `models--owner--name/snapshots/<rev>/…` + `refs/main`, as huggingface_hub writes it.
fn fake_cache(cache: &Path, repo: &str, fixture: &str, rev: &str) {
    let repo = HubRepo::model(repo).unwrap();
    let files = Path::new(FIXTURES).join(fixture);
    layout::put_dir(cache, &repo, rev, "", &files).unwrap();
    layout::set_ref(cache, &repo, "main", rev).unwrap();
}

#[test]
fn loads_the_default_model_id_from_the_offline_cache() {
    let cache = tempfile::tempdir().unwrap();
    let rev = "0123456789abcdef0123456789abcdef01234567";
    fake_cache(
        cache.path(),
        hate_classifier::DEFAULT_MODEL,
        "vocab-merges",
        rev,
    );
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let clf = HateClassifier::params()
        .hub(hub.clone())
        .load(hate_classifier::DEFAULT_MODEL)
        .unwrap();
    let local = HateClassifier::from_pretrained(format!("{FIXTURES}/vocab-merges")).unwrap();
    let t = ["Hello world", "emoji 🙂"];
    assert_eq!(clf.score(&t).unwrap(), local.score(&t).unwrap());
    assert!(
        clf.origin()
            .to_string_lossy()
            .contains("roberta-hate-speech")
    );

    // A pinned revision resolves through snapshots/ directly.
    let pinned = format!("{}@{rev}", hate_classifier::DEFAULT_MODEL);
    assert!(HateClassifier::params().hub(hub).load(&pinned).is_ok());
}

#[test]
fn a_model_missing_from_the_offline_cache_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let err = HateClassifier::params()
        .hub(hub)
        .load("someone/not-cached")
        .unwrap_err();
    assert!(matches!(err, Error::Hub(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("someone/not-cached") && msg.contains("config.json"),
        "{msg}"
    );
    assert!(err.is_bad_input());
}
