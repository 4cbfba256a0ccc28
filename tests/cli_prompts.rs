//! `toxdrift prompts` end to end on the shipped samples: the binary, its output file, its exit
//! codes, and the offline hub path through a cache laid out like Hugging Face's.

use hub_source::{HubRepo, layout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn samples() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/samples"
    ))
}

fn toxdrift(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toxdrift"));
    cmd.args(args).env_remove("HF_HUB_CACHE");
    // Never let a test reach the network or the user's cache.
    cmd.env("HF_HUB_OFFLINE", "1");
    let scratch = tempfile::tempdir().unwrap();
    cmd.env("HF_HOME", scratch.path());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn small_args<'a>(rtp: &'a str, ceb: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "prompts",
        "--rtp",
        rtp,
        "--ceb",
        ceb,
        "--random",
        "50",
        "--severe",
        "20",
        "--per-axis",
        "10",
        "--out",
        out,
    ]
}

#[test]
fn builds_the_sample_set_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let rtp = samples().join("rtp/prompts.jsonl");
    let ceb = samples().join("CEB-Continuation-T");
    let out = dir.path().join("sub/prompts.jsonl");
    let o = toxdrift(
        &small_args(
            rtp.to_str().unwrap(),
            ceb.to_str().unwrap(),
            out.to_str().unwrap(),
        ),
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "wrote 110 prompts (random 50, severe 20, race 10, gender 10, age 10, religion 10)"
        ),
        "{stderr}"
    );
    let recs = lines(&out);
    assert_eq!(recs.len(), 110);
    for r in &recs {
        for k in ["id", "subset", "text", "source"] {
            assert!(!r[k].is_null(), "{k} in {r}");
        }
    }
    // The same ids as the library's independent reference for seed 42.
    let reference: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(samples().join("prompt_set_reference.json")).unwrap(),
    )
    .unwrap();
    let case = reference.iter().find(|c| c["seed"] == 42).unwrap();
    let ids: Vec<&str> = recs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids, want);
    // No temporary file left beside the output.
    assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);

    // Rerunning (also from the gzip copy) overwrites atomically with the same content.
    let first = std::fs::read(&out).unwrap();
    let gz = samples().join("rtp/prompts.jsonl.gz");
    let o = toxdrift(
        &small_args(
            gz.to_str().unwrap(),
            ceb.to_str().unwrap(),
            out.to_str().unwrap(),
        ),
        &[],
    );
    assert!(o.status.success());
    let again = lines(&out);
    let ids_again: Vec<&str> = again.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids_again, ids);
    assert_ne!(
        std::fs::read(&out).unwrap(),
        first,
        "source.file names the gzip file"
    );
}

#[test]
fn bad_input_exits_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.jsonl");
    let bad = samples().join("bad/rtp-malformed.jsonl");
    let ceb = samples().join("CEB-Continuation-T");
    let mut args = vec![
        "prompts",
        "--rtp",
        bad.to_str().unwrap(),
        "--random",
        "2",
        "--severe",
        "0",
        "--per-axis",
        "0",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = toxdrift(&args, &[]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("rtp-malformed.jsonl:4: malformed JSON"),
        "{stderr}"
    );
    assert!(!out.exists(), "no output on failure");

    // With --skip-bad-records the bad line is skipped and reported.
    args.push("--skip-bad-records");
    let o = toxdrift(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("1 skipped") && stderr.contains("skipped line 4"),
        "{stderr}"
    );

    // The paper's recipe on the small samples: not enough severe rows, said with numbers.
    let rtp = samples().join("rtp/prompts.jsonl");
    let o = toxdrift(
        &[
            "prompts",
            "--rtp",
            rtp.to_str().unwrap(),
            "--ceb",
            ceb.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("subset `severe` needs 1000 rows"),
        "{stderr}"
    );

    // A bad threshold, a missing source.
    let o = toxdrift(
        &[
            "prompts",
            "--ceb",
            ceb.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--rtp is required"));
    let o = toxdrift(
        &[
            "prompts",
            "--rtp",
            rtp.to_str().unwrap(),
            "--per-axis",
            "0",
            "--severe-threshold",
            "1.5",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[cfg(unix)]
#[test]
fn hub_sources_resolve_from_the_offline_cache() {
    let home = tempfile::tempdir().unwrap();
    let hub = home.path().join("hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let put = |repo: &str, file: &str, src: &Path| {
        let repo = HubRepo::dataset(repo).unwrap();
        layout::put_file(&hub, &repo, commit, file, src).unwrap();
        layout::set_ref(&hub, &repo, "main", commit).unwrap();
    };
    put(
        "allenai/real-toxicity-prompts",
        "prompts.jsonl",
        &samples().join("rtp/prompts.jsonl"),
    );
    for f in ["race", "gender", "age", "religion"] {
        put(
            "Song-SW/CEB",
            &format!("data/CEB-Continuation-T/{f}.json"),
            &samples().join(format!("CEB-Continuation-T/{f}.json")),
        );
    }
    let out = home.path().join("p.jsonl");
    let o = toxdrift(
        &small_args(
            "allenai/real-toxicity-prompts",
            "Song-SW/CEB@main",
            out.to_str().unwrap(),
        ),
        &[("HF_HOME", home.path())],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(lines(&out).len(), 110);

    // A revision that is not cached: a clear offline error, exit code 2.
    let o = toxdrift(
        &small_args(
            "allenai/real-toxicity-prompts@v9",
            "Song-SW/CEB",
            out.to_str().unwrap(),
        ),
        &[("HF_HOME", home.path())],
    );
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("not in the Hugging Face cache") && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
}
