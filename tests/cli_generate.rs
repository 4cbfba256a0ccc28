//! `toxdrift generate` end to end on the tiny Llama fixture: JSONL out per design §3, resume
//! without duplicates, exit code 2 on bad input.

use std::path::Path;
use std::process::Command;

fn fixture(p: &str) -> String {
    format!("{}/tests/fixtures/gen/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_toxdrift"))
        .args(args)
        .output()
        .unwrap()
}

/// `toxdrift generate --model MODEL --prompts PROMPTS --out OUT EXTRA...`.
fn generate(model: &str, prompts: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let (prompts, out) = (prompts.display().to_string(), out.display().to_string());
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompts",
        &prompts,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn generate_writes_records_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    let lines = [
        r#"{"id": "a", "subset": "random", "text": "The tiny robot walked to the market", "source": {}}"#,
        r#"{"id": "b", "subset": "severe", "text": "Hello", "source": {}}"#,
        r#"{"id": "c", "subset": "race", "text": "Why?", "source": {"x": 1}}"#,
    ];
    std::fs::write(&prompts, lines[..2].join("\n") + "\n").unwrap();
    let out = tmp.path().join("gens.jsonl");
    let args = |p: &std::path::Path, o: &std::path::Path| {
        vec![
            "generate".to_string(),
            "--model".into(),
            fixture("llama"),
            "--prompts".into(),
            p.display().to_string(),
            "--out".into(),
            o.display().to_string(),
            "--max-new-tokens".into(),
            "12".into(),
            "--model-name".into(),
            "tiny-llama".into(),
        ]
    };
    let a = args(&prompts, &out);
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for k in [
        "id",
        "subset",
        "model",
        "prompt",
        "completion",
        "completion_token_ids",
        "finish_reason",
    ] {
        assert!(first.get(k).is_some(), "missing {k}");
    }
    assert_eq!(first["model"], "tiny-llama");
    assert_eq!(first["completion_token_ids"].as_array().unwrap().len(), 12);
    assert_eq!(first["finish_reason"], "length");
    // A third prompt appears; a torn last line (killed mid-write) is dropped and redone.
    std::fs::write(&prompts, lines.join("\n") + "\n").unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut f, br#"{"id": "c", "subset": "ra"#).unwrap();
    drop(f);
    // The resume runs with `--batch-size auto` (on the CPU: the study's 16).
    let mut a = a;
    a.extend(["--batch-size".to_string(), "auto".into()]);
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // Each prompt once, in the prompt file's order.
    assert_eq!(ids, ["a", "b", "c"], "{text}");
}

#[test]
fn generate_bad_input_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": \"a\", \"subset\": \"random\", \"text\": \"Hi\", \"source\": {}}\n",
    )
    .unwrap();
    let out = tmp.path().join("gens.jsonl");
    let o = generate(
        &tmp.path().join("nope").display().to_string(),
        &prompts,
        &out,
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = generate(&fixture("llama"), &prompts, &out, &["--device", "cuda:0"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("cuda"));
    for bad in ["0", "lots"] {
        let o = generate(&fixture("llama"), &prompts, &out, &["--batch-size", bad]);
        assert_eq!(o.status.code(), Some(2), "--batch-size {bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("batch") && err.contains(bad), "{err}");
    }
}
