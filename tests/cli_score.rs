//! `toxdrift score` end to end on the tiny classifier fixture: output records, resume after a
//! kill, and bad input (exit code 2, file and line named).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn classifier() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/classifier/vocab-merges"
    )
    .to_string()
}

fn toxdrift(args: &[&str]) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_toxdrift"))
        .args(args)
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", scratch.path())
        .output()
        .unwrap()
}

fn generation(i: usize, completion: &str) -> String {
    serde_json::json!({
        "id": format!("g{i:03}"), "subset": if i.is_multiple_of(2) { "random" } else { "severe" },
        "model": "tiny", "prompt": format!("prompt {i}"), "completion": completion,
        "completion_token_ids": [1, 2, 3], "finish_reason": "eos",
    })
    .to_string()
}

const TEXTS: [&str; 6] = [
    "You are a stupid idiot and nobody likes you.",
    "",
    "The tiny robot walked to the market before sunrise.",
    "emoji 🙂🙃🔥",
    "café naïve Zürich",
    "word word word word word word word word word word word word word word word word word",
];

fn write_gens(dir: &Path) -> PathBuf {
    let p = dir.join("gens.jsonl");
    let body: String = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| generation(i, t) + "\n")
        .collect();
    std::fs::write(&p, body).unwrap();
    p
}

fn read(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn scores_every_generation_and_keeps_its_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let gens = write_gens(tmp.path());
    let out = tmp.path().join("scores.jsonl");
    let clf = classifier();
    let o = toxdrift(&[
        "score",
        "--classifier",
        &clf,
        "--input",
        gens.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = read(&out);
    assert_eq!(recs.len(), TEXTS.len());
    let lib = hate_classifier::HateClassifier::from_pretrained(&clf).unwrap();
    let want = lib.score(&TEXTS).unwrap();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["id"], format!("g{i:03}"));
        assert_eq!(r["completion"], TEXTS[i]);
        assert_eq!(r["finish_reason"], "eos");
        assert_eq!(r["completion_token_ids"], serde_json::json!([1, 2, 3]));
        let s = r["score"].as_f64().unwrap();
        assert!((s - want[i] as f64).abs() < 1e-6);
        assert_eq!(r["toxic"].as_bool().unwrap(), s >= 0.5);
    }
    // Both sides of the threshold occur, so `toxic` is really computed.
    assert!(recs.iter().any(|r| r["toxic"] == true) && recs.iter().any(|r| r["toxic"] == false));
}

#[test]
fn resumes_after_a_kill_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let gens = write_gens(tmp.path());
    let out = tmp.path().join("scores.jsonl");
    let clf = classifier();
    let args = [
        "score",
        "--classifier",
        &clf,
        "--input",
        gens.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    assert!(toxdrift(&args).status.success());
    let full = read(&out);
    // Keep two records and a torn third line, as a kill mid-write leaves the file.
    let text = std::fs::read_to_string(&out).unwrap();
    let kept: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(
        &out,
        format!(
            "{}\n{}",
            kept.join("\n"),
            &text.lines().nth(2).unwrap()[..20]
        ),
    )
    .unwrap();
    let o = toxdrift(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed = read(&out);
    assert_eq!(resumed.len(), TEXTS.len());
    let mut ids: Vec<&str> = resumed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), TEXTS.len());
    for r in &resumed {
        let f = full.iter().find(|f| f["id"] == r["id"]).unwrap();
        assert!((f["score"].as_f64().unwrap() - r["score"].as_f64().unwrap()).abs() < 1e-6);
    }
    // A finished file is left alone.
    assert!(toxdrift(&args).status.success());
    assert_eq!(read(&out).len(), TEXTS.len());
}

#[test]
fn bad_input_names_file_and_line_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let clf = classifier();
    let out = tmp.path().join("scores.jsonl");
    let run = |name: &str, body: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        let o = toxdrift(&[
            "score",
            "--classifier",
            &clf,
            "--input",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };

    let mut body = (generation(0, "fine") + "\n").into_bytes();
    body.extend_from_slice(b"{\"id\": \"g1\", \"completion\": \"bad \xff\xfe bytes\"}\n");
    let (code, err) = run("utf8.jsonl", &body);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("utf8.jsonl:2") && err.contains("UTF-8"),
        "{err}"
    );

    let body = format!(
        "{}\n{}\n",
        generation(0, "a"),
        r#"{"id": "g1", "subset": "random"}"#
    );
    let (code, err) = run("missing.jsonl", body.as_bytes());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("missing.jsonl:2") && err.contains("`completion`"),
        "{err}"
    );

    let (code, err) = run(
        "dup.jsonl",
        format!("{}\n{}\n", generation(0, "a"), generation(0, "b")).as_bytes(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("dup.jsonl:2") && err.contains("duplicate"),
        "{err}"
    );

    // A classifier without id2label.
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    for e in std::fs::read_dir(&clf).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), ckpt.join(e.file_name())).unwrap();
    }
    let cfg = std::fs::read_to_string(ckpt.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v.as_object_mut().unwrap().remove("id2label");
    std::fs::write(ckpt.join("config.json"), v.to_string()).unwrap();
    let gens = write_gens(tmp.path());
    let o = toxdrift(&[
        "score",
        "--classifier",
        ckpt.to_str().unwrap(),
        "--input",
        gens.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("config.json") && err.contains("id2label"),
        "{err}"
    );
    assert!(
        !out.exists() || read(&out).is_empty(),
        "no half-written output"
    );
}
