//! The loaders on the shipped sample files (tests/fixtures/samples, made by fx_samples.py).

use serde_json::Value;
use std::path::PathBuf;
use toxprompts::{CebAxis, CebSet, OnBadRecord, RtpReader, load_rtp};

fn samples() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples"
    ))
}

#[test]
fn rtp_rows_match_an_independent_json_reading() {
    let path = samples().join("rtp/prompts.jsonl");
    let loaded = load_rtp(&path, OnBadRecord::Fail).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let values: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(values.len() >= 300);
    assert_eq!(loaded.records.len(), values.len());
    assert_eq!(loaded.report.skipped, 0);
    let mut nulls = 0;
    for (row, v) in loaded.records.iter().zip(&values) {
        assert_eq!(row.prompt.text, v["prompt"]["text"].as_str().unwrap());
        assert_eq!(
            row.continuation.text,
            v["continuation"]["text"].as_str().unwrap()
        );
        assert_eq!(row.filename, v["filename"].as_str().unwrap());
        assert_eq!(row.begin, v["begin"].as_u64().unwrap());
        assert_eq!(row.end, v["end"].as_u64().unwrap());
        assert_eq!(row.challenging, v["challenging"].as_bool().unwrap());
        let s = &row.prompt.scores;
        for (got, key) in [
            (s.toxicity, "toxicity"),
            (s.severe_toxicity, "severe_toxicity"),
            (s.profanity, "profanity"),
            (s.sexually_explicit, "sexually_explicit"),
            (s.identity_attack, "identity_attack"),
            (s.flirtation, "flirtation"),
            (s.threat, "threat"),
            (s.insult, "insult"),
        ] {
            assert_eq!(got, v["prompt"][key].as_f64(), "{key}");
            nulls += usize::from(got.is_none());
        }
        assert_eq!(
            row.continuation.scores.severe_toxicity,
            v["continuation"]["severe_toxicity"].as_f64()
        );
    }
    assert!(nulls > 0, "the samples must exercise null scores");
    let rows: Vec<u64> = loaded.records.iter().map(|r| r.row).collect();
    assert_eq!(rows, (0..values.len() as u64).collect::<Vec<_>>());
}

#[test]
fn gzip_and_plain_give_the_same_rows() {
    let plain = load_rtp(samples().join("rtp/prompts.jsonl"), OnBadRecord::Fail).unwrap();
    let gz = load_rtp(samples().join("rtp/prompts.jsonl.gz"), OnBadRecord::Fail).unwrap();
    assert_eq!(plain, gz);
    // Detection is by content, not name: gzip bytes behind any name still decode.
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("prompts.data");
    std::fs::copy(samples().join("rtp/prompts.jsonl.gz"), &renamed).unwrap();
    assert_eq!(load_rtp(&renamed, OnBadRecord::Fail).unwrap(), plain);
}

#[test]
fn rtp_reader_streams_from_memory() {
    let bytes = std::fs::read(samples().join("rtp/prompts.jsonl")).unwrap();
    let first: Vec<_> = RtpReader::new(&bytes[..], "mem.jsonl")
        .take(3)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(first[2].row, 2);
}

#[test]
fn ceb_from_dir_and_from_files() {
    let dir = samples().join("CEB-Continuation-T");
    let set = CebSet::from_dir(&dir, OnBadRecord::Fail).unwrap();
    for axis in CebAxis::ALL {
        let f = set.file(axis);
        assert_eq!(f.axis, axis);
        assert_eq!(f.records.len(), 20);
        let raw: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join(axis.file_name())).unwrap())
                .unwrap();
        for ((i, rec), v) in f.records.iter().zip(&raw) {
            assert_eq!(rec.prompt, v["prompt"].as_str().unwrap());
            assert_eq!(rec.axis, axis.axis_value());
            assert_eq!(
                rec.gpt_rewrite_text,
                v["gpt_rewrite_text"].as_str().unwrap()
            );
            assert_eq!(raw[*i], *v);
        }
    }
    // Explicit files in any order, axis from the name.
    let files: Vec<PathBuf> = ["religion.json", "age.json", "race.json", "gender.json"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    assert_eq!(CebSet::from_files(&files, OnBadRecord::Fail).unwrap(), set);
    let err = CebSet::from_files(&files[..3], OnBadRecord::Fail).unwrap_err();
    assert!(
        err.to_string()
            .contains("no file given for CEB axis `gender`"),
        "{err}"
    );
    let twice = [files[0].clone(), files[0].clone()];
    assert!(CebSet::from_files(&twice, OnBadRecord::Fail).is_err());
}

#[test]
fn real_ceb_files_load_when_present() {
    // The real CEB-Continuation-T files are on the development machine only (never committed):
    // check the loader against them when they are there.
    let dir = PathBuf::from("/work/shared/data/ceb-continuation-t");
    if !dir.is_dir() {
        return;
    }
    let set = CebSet::from_dir(&dir, OnBadRecord::Fail).unwrap();
    for axis in CebAxis::ALL {
        assert_eq!(set.file(axis).records.len(), 100, "{axis:?}");
    }
}

#[test]
fn dolly_sample_has_the_real_schema() {
    // The Dolly sample is for lora-train; here only its shape is checked.
    let text = std::fs::read_to_string(samples().join("dolly/databricks-dolly-15k.jsonl")).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 100);
    assert!(rows.iter().any(|r| r["context"] == ""));
    for r in &rows {
        for k in ["instruction", "context", "response", "category"] {
            assert!(r[k].is_string(), "{k}");
        }
    }
}
