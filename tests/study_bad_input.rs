//! Bad study files: clear errors naming the file and line, exit code 2, and nothing written.

use crate::common::*;
use std::path::Path;

/// The smoke study with its fixture paths made absolute, so that a copy works anywhere.
fn smoke_text() -> String {
    std::fs::read_to_string(smoke_study())
        .unwrap()
        .replace(
            "\"../tests/fixtures",
            &format!("\"{}/tests/fixtures", root().display()),
        )
        .replace("out = \"../runs/smoke\"", "out = \"runs/smoke\"")
}

/// Writes `text` as a study in `dir` (output inside `dir/out`), runs `toxdrift run`, and returns
/// the exit code and stderr.
fn run_text(dir: &Path, text: &str) -> (i32, String) {
    let file = dir.join("study.toml");
    std::fs::write(&file, text).unwrap();
    let o = toxdrift()
        .arg("run")
        .arg(&file)
        .arg("--no-progress")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn unknown_key_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let text = smoke_text().replace(
        "max_new_tokens = 20",
        "max_new_tokens = 20\nmax_tokens = 20",
    );
    let (code, err) = run_text(tmp.path(), &text);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&text, "max_tokens = 20");
    assert!(err.contains(&format!("study.toml:{line}:1:")), "{err}");
    assert!(err.contains("max_tokens"), "{err}");
    assert!(!tmp.path().join("runs").exists(), "nothing written");
}

#[test]
fn wrong_type_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let text = smoke_text().replace("chains = 2", "chains = \"two\"");
    let (code, err) = run_text(tmp.path(), &text);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&text, "chains = \"two\"");
    assert!(err.contains(&format!("study.toml:{line}:")), "{err}");
}

#[test]
fn model_listed_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let text = smoke_text().replace(
        "{ name = \"tiny-gemma2-instruct\"",
        "{ name = \"tiny-gemma\"",
    );
    let (code, err) = run_text(tmp.path(), &text);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("model `tiny-gemma` is listed twice"), "{err}");
    // The same weights under another name count too.
    let text = smoke_text().replace("gen/gemma2\" }", "gen/gemma\" }");
    let (code, err) = run_text(tmp.path(), &text);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("same weights as `tiny-gemma`"), "{err}");
}

#[test]
fn comparison_naming_an_undefined_model() {
    let tmp = tempfile::tempdir().unwrap();
    let text = smoke_text().replace(
        "[\"tiny-gemma\", \"tiny-gemma2-instruct\"]",
        "[\"tiny-gemma\", \"tiny-gemma-9b\"]",
    );
    let (code, err) = run_text(tmp.path(), &text);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&text, "tiny-gemma-9b");
    assert!(err.contains(&format!("study.toml:{line}:")), "{err}");
    assert!(
        err.contains("`tiny-gemma-9b` is not a model of this study"),
        "{err}"
    );
}

#[test]
fn output_directory_that_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("taken"), b"a file").unwrap();
    let text = smoke_text().replace("out = \"runs/smoke\"", "out = \"taken/smoke\"");
    let (code, err) = run_text(tmp.path(), &text);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("taken/smoke cannot be written"), "{err}");
}

#[test]
fn missing_local_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let text = smoke_text().replace("gen/gemma2\"", "gen/gemma7\"");
    let (code, err) = run_text(tmp.path(), &text);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("model `tiny-gemma2-instruct`") && err.contains("gen/gemma7 does not exist"),
        "{err}"
    );
    assert!(!tmp.path().join("runs").exists(), "nothing written");
}

#[test]
fn help_explains_the_study_file() {
    let o = toxdrift().args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for needle in ["studies/smoke.toml", "--dry-run", "resumable", "Exit codes"] {
        assert!(text.contains(needle), "{needle} in:\n{text}");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_cuda_device_on_a_cpu_build_stops_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let text = smoke_text().replace("device = \"cpu\"", "device = \"cuda:0\"");
    let (code, err) = run_text(tmp.path(), &text);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cuda"), "{err}");
    let units = tmp.path().join("runs/smoke/units");
    assert!(!units.exists(), "no unit ran");
}
