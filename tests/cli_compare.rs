//! `toxdrift compare` from the command line: the summary line on stdout (toxic rate baseline →
//! candidate, the difference in pp with its HDI, the verdict, BEST's convergence), at most one
//! line on stderr for the sampler, the JSON with differences candidate − baseline; an empty
//! scores file is bad input (exit 2).

use crate::common::toxdrift;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A scores file of `n` records per subset; every `toxic_every`-th record is toxic.
fn scores(dir: &Path, name: &str, n: usize, toxic_every: usize, shift: f64) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for subset in ["random", "severe"] {
        for i in 0..n {
            let score = if i % toxic_every == 0 {
                0.9
            } else {
                shift + 0.002 * ((i * 37 % 101) as f64) / 101.0
            };
            let rec = serde_json::json!({
                "id": format!("{subset}-{i}"), "subset": subset, "model": name.trim_end_matches(".jsonl"),
                "score": score, "toxic": score >= 0.5,
            });
            writeln!(f, "{rec}").unwrap();
        }
    }
    path
}

fn compare(baseline: &Path, candidate: &Path, out: &Path, draws: &str) -> Output {
    toxdrift()
        .arg("compare")
        .arg("--baseline")
        .arg(baseline)
        .arg("--candidate")
        .arg(candidate)
        .arg("--out")
        .arg(out)
        .args([
            "--chains", "2", "--tune", draws, "--draws", draws, "--seed", "3",
        ])
        .output()
        .unwrap()
}

#[test]
fn compare_prints_the_summary_line() {
    let dir = tempfile::tempdir().unwrap();
    // 5% toxic for the baseline, 20% for the candidate, on 2 x 200 records.
    let a = scores(dir.path(), "base.jsonl", 200, 20, 0.01);
    let b = scores(dir.path(), "tuned.jsonl", 200, 5, 0.012);
    let out = dir.path().join("cmp.json");
    let o = compare(&a, &b, &out, "300");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("base → tuned: toxic rate 5.0% → 20.0%, +15.0 pp (95% HDI +"),
        "{stdout}"
    );
    assert!(
        lines[0].contains(
            "P(candidate more toxic) = 1.000: credibly more often toxic; BEST on all prompts: "
        ),
        "{stdout}"
    );
    assert!(lines[0].contains("of 3 fitted subsets"), "{stdout}");
    assert!(
        lines[1].starts_with("Differences are candidate − baseline"),
        "{stdout}"
    );
    // At most one line on stderr, for the sampler.
    assert!(stderr.lines().count() <= 1, "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["settings"]["difference"], "candidate - baseline");
    let all = &doc["comparisons"]["all"];
    assert!(all["rate"]["rate_diff"]["hdi_low"].as_f64().unwrap() > 0.0);
    assert!(all["best"]["converged"].is_boolean());
}

#[test]
fn a_short_fit_gives_no_verdict_and_says_why_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = scores(dir.path(), "base.jsonl", 100, 20, 0.01);
    let b = scores(dir.path(), "tuned.jsonl", 100, 5, 0.012);
    let out = dir.path().join("cmp.json");
    // 2 chains x 30 draws cannot reach an ESS of 400.
    let o = compare(&a, &b, &out, "30");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("BEST on all prompts: unreliable (the sampler did not converge); sampler converged on 0 of 3 fitted subsets"),
        "{stdout}"
    );
    let err: Vec<&str> = stderr.lines().collect();
    assert_eq!(err.len(), 1, "{stderr}");
    assert!(
        err[0].contains(
            "base vs tuned: 3 of 3 fitted subsets did not converge, no verdict from them (worst: "
        ),
        "{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    for (sub, c) in doc["comparisons"].as_object().unwrap() {
        assert_eq!(c["best"]["converged"], false, "{sub}");
        assert!(c["best"]["credible"].is_null(), "{sub}");
    }
    // Every sampler warning is kept in the file.
    assert!(doc["warnings"].as_array().unwrap().len() > 3);
}

#[test]
fn an_empty_scores_file_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let a = scores(dir.path(), "base.jsonl", 50, 20, 0.01);
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = dir.path().join("cmp.json");
    for (b, c) in [(&a, &empty), (&empty, &a)] {
        let o = compare(b, c, &out, "30");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("empty.jsonl: no scored records"),
            "{stderr}"
        );
        assert!(o.stdout.is_empty());
        assert!(!out.exists());
    }
}
