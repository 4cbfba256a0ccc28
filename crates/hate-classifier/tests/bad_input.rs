//! Bad checkpoints and options: typed errors that name the file, key or tensor.

use hate_classifier::{Error, HateClassifier};
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/classifier"
);

/// A copy of a fixture checkpoint in a temp dir, to damage.
fn copy_checkpoint(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(Path::new(FIXTURES).join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    (tmp, dir)
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn config_without_id2label_is_an_error_naming_the_file() {
    let (_tmp, dir) = copy_checkpoint("vocab-merges");
    edit_config(&dir, |v| {
        v.as_object_mut().unwrap().remove("id2label");
    });
    let err = HateClassifier::params().load_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::MissingId2Label { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("id2label"),
        "{msg}"
    );
    assert!(err.is_bad_input());
}

#[test]
fn a_label_the_checkpoint_lacks_is_an_error() {
    let dir = format!("{FIXTURES}/tok-json");
    let err = HateClassifier::params()
        .label("toxic")
        .load(&dir)
        .unwrap_err();
    match &err {
        Error::UnknownLabel { label, available } => {
            assert_eq!(label, "toxic");
            assert_eq!(available, &["nothate", "hate"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_bad_input());
}

#[test]
fn weights_that_disagree_with_the_config_name_the_tensor() {
    let (_tmp, dir) = copy_checkpoint("tok-json");
    edit_config(&dir, |v| v["intermediate_size"] = 48.into());
    let err = HateClassifier::params().load_dir(&dir).unwrap_err();
    match &err {
        Error::TensorShape {
            path,
            tensor,
            expected,
            found,
        } => {
            assert!(path.ends_with("model.safetensors"), "{path:?}");
            assert_eq!(tensor, "roberta.encoder.layer.0.intermediate.dense.weight");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                (&[48, 32][..], &[64, 32][..])
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("intermediate.dense.weight"));
    assert!(err.is_bad_input());

    // A config with more layers than the file holds: the missing tensor is named.
    let (_tmp2, dir2) = copy_checkpoint("tok-json");
    edit_config(&dir2, |v| v["num_hidden_layers"] = 3.into());
    let err = HateClassifier::params().load_dir(&dir2).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { tensor, .. } if tensor.starts_with("roberta.encoder.layer.2.")),
        "{err:?}"
    );
    // The candle path checks the same way.
    let err = HateClassifier::params()
        .backend(hate_classifier::Backend::Candle)
        .load_dir(&dir2)
        .unwrap_err();
    assert!(matches!(&err, Error::MissingTensor { .. }), "{err:?}");
}

#[test]
fn broken_files_are_named() {
    let (_tmp, dir) = copy_checkpoint("vocab-merges");
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = HateClassifier::params().load_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    assert!(err.is_bad_input());

    let (_tmp, dir) = copy_checkpoint("vocab-merges");
    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    let err = HateClassifier::params().load_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    let (_tmp, dir) = copy_checkpoint("vocab-merges");
    std::fs::remove_file(dir.join("merges.txt")).unwrap();
    let err = HateClassifier::params().load_dir(&dir).unwrap_err();
    assert!(
        matches!(err, Error::MissingFile { .. }) && err.to_string().contains("merges.txt"),
        "{err}"
    );

    let (_tmp, dir) = copy_checkpoint("vocab-merges");
    edit_config(&dir, |v| v["hidden_act"] = "relu".into());
    let err = HateClassifier::params().load_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::UnsupportedConfig { .. }), "{err}");
}

#[test]
fn out_of_range_options_are_refused() {
    let dir = format!("{FIXTURES}/tok-json");
    for p in [
        HateClassifier::params().threshold(1.5),
        HateClassifier::params().batch_size(0),
        HateClassifier::params().label(""),
    ] {
        let err = p.load(&dir).unwrap_err();
        assert!(matches!(err, Error::InvalidParam { .. }), "{err:?}");
    }
    let err = HateClassifier::params().load("/no/such/dir").unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
}
