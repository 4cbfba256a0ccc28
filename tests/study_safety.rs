//! Runs that cannot corrupt themselves: the output directory's lock (a second run is refused
//! naming the first one's pid, or waits; a stale lock is taken over), units whose records do
//! not validate are rerun, Ctrl-C stops with a message saying what was kept, `--dry-run` refuses
//! a plan that cannot run, empty inputs are bad input, and errors about a model name it and its
//! line in the study file.

use crate::common::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// A small study on the tiny fixtures (two models, one comparison), with absolute paths.
fn mini_text() -> String {
    let f = root().join("tests/fixtures");
    let f = f.display();
    format!(
        r#"name = "mini"
out = "out"

[prompts]
rtp = {{ path = "{f}/samples/rtp/prompts.jsonl" }}
ceb = {{ path = "{f}/samples/CEB-Continuation-T" }}
random = 6
severe = 4
per_axis = 2

[classifier]
path = "{f}/classifier/vocab-merges"

[generation]
max_new_tokens = 8
dtype = "f32"

[sampler]
chains = 2
tune = 100
draws = 100

[[family]]
name = "tiny"
models = [
  {{ name = "base", role = "base", path = "{f}/gen/llama" }},
  {{ name = "chat", role = "instruct", path = "{f}/gen/llama31" }},
]

[[comparison]]
id = "c1"
title = "base vs chat"
pairs = [["base", "chat"]]
"#
    )
}

fn write_study(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("study.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn run(study: &Path, extra: &[&str]) -> Output {
    toxdrift()
        .arg("run")
        .arg(study)
        .arg("--no-progress")
        .args(extra)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Holds the output directory's lock from this process, as another run would.
fn hold_lock(out: &Path, pid: &str) -> File {
    std::fs::create_dir_all(out).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out.join(".toxdrift.lock"))
        .unwrap();
    f.lock().unwrap();
    std::fs::write(out.join(".toxdrift.lock"), pid).unwrap();
    f
}

#[test]
fn a_second_run_is_refused_or_waits_and_a_stale_lock_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let study = write_study(tmp.path(), &mini_text());
    let out = tmp.path().join("out");

    // Another run holds the directory: exit 2, naming its pid, nothing run.
    let lock = hold_lock(&out, "4242");
    let o = run(&study, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("pid 4242") && err.contains("--wait"), "{err}");
    assert!(!out.join("units").exists(), "nothing ran");

    // With --wait it queues behind the holder, then runs.
    let mut waiting = toxdrift()
        .arg("run")
        .arg(&study)
        .args(["--no-progress", "--wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "a --wait run must wait while the lock is held"
    );
    assert!(
        !out.join("units").exists(),
        "it waits before doing anything"
    );
    drop(lock);
    let o = waiting.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("waiting for the toxdrift run with pid 4242"));
    assert!(out.join("report.md").exists());

    // What a killed run leaves: its pid in a lock file nobody holds. Taken over silently.
    let report = std::fs::read(out.join("report.md")).unwrap();
    std::fs::write(out.join(".toxdrift.lock"), "999999").unwrap();
    let o = run(&study, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(out.join("report.md")).unwrap(), report);
    assert_eq!(
        std::fs::read_to_string(out.join(".toxdrift.lock")).unwrap(),
        "",
        "released cleanly"
    );

    // A unit marked done whose records do not validate (a duplicated record, as two runs
    // without a lock could leave) is moved aside and rerun, not left to fail forever.
    let gen_unit = unit_dir(&out.join("units/generate"), "base").unwrap();
    let gens = gen_unit.join("generations.jsonl");
    let mut bytes = std::fs::read(&gens).unwrap();
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap().to_vec();
    bytes.extend_from_slice(&first_line);
    bytes.push(b'\n');
    std::fs::write(&gens, &bytes).unwrap();
    let o = run(&study, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("do not validate") && err.contains(".invalid-1"),
        "{err}"
    );
    let mut invalid = gen_unit.as_os_str().to_os_string();
    invalid.push(".invalid-1");
    assert!(Path::new(&invalid).is_dir(), "kept for inspection");
    assert_eq!(
        std::fs::read(out.join("report.md")).unwrap(),
        report,
        "the rerun unit gives the same report"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_says_what_was_kept_and_the_same_command_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let study = write_study(tmp.path(), &mini_text());
    let out = tmp.path().join("out");
    let child = toxdrift()
        .arg("run")
        .arg(&study)
        .arg("--no-progress")
        .env("TOXDRIFT_TEST_STALL_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let gen_dir = out.join("units/generate");
    loop {
        let started = unit_dir(&gen_dir, "base").is_some_and(|u| {
            std::fs::metadata(u.join("generations.jsonl")).is_ok_and(|m| m.len() > 0)
        });
        if started {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "never generated");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("interrupted during generate base")
            && err.contains("units were finished and are kept")
            && err.contains("run the same command to resume"),
        "{err}"
    );
    let o = run(&study, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.join("report.md").exists());
}

#[cfg(not(feature = "cuda"))]
#[test]
fn dry_run_refuses_a_plan_that_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let text_ = mini_text().replace("name = \"mini\"", "name = \"mini\"\ndevice = \"cuda:0\"");
    let text_ = text_.replace(
        "{ name = \"chat\", role = \"instruct\", path = ",
        "{ name = \"chat\", role = \"instruct\", hub = \"someone/not-cached\" }, \
         { name = \"chat2\", role = \"community\", path = ",
    );
    let study = write_study(tmp.path(), &text_);
    let o = toxdrift()
        .arg("run")
        .arg(&study)
        .arg("--dry-run")
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    let line = text_
        .lines()
        .position(|l| l.contains("someone/not-cached"))
        .unwrap()
        + 1;
    assert!(err.contains("the plan cannot run"), "{err}");
    assert!(err.contains("device") && err.contains("cuda"), "{err}");
    assert!(
        err.contains(&format!("study.toml:{line}:"))
            && err.contains("model `chat`")
            && err.contains("someone/not-cached")
            && err.contains("not in the cache"),
        "{err}"
    );
    assert!(
        o.stdout.is_empty(),
        "no plan printed for a plan that cannot run"
    );
}

#[test]
fn an_error_about_a_model_names_it_and_its_study_line() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("not-a-model");
    std::fs::create_dir_all(&empty).unwrap();
    let text_ = mini_text().replace(
        &format!("\"{}/tests/fixtures/gen/llama31\"", root().display()),
        &format!("\"{}\"", empty.display()),
    );
    let study = write_study(tmp.path(), &text_);
    let o = run(&study, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    let line = text_
        .lines()
        .position(|l| l.contains("name = \"chat\""))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("model `chat` ({}:{line}:", study.display()))
            && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn empty_inputs_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let model = root().join("tests/fixtures/gen/llama");
    let o = toxdrift()
        .arg("generate")
        .arg("--prompts")
        .arg(&empty)
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(tmp.path().join("g.jsonl"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no prompts"),
        "{}",
        text(&o.stderr)
    );

    let o = toxdrift()
        .arg("score")
        .arg("--input")
        .arg(&empty)
        .arg("--classifier")
        .arg(root().join("tests/fixtures/classifier/vocab-merges"))
        .arg("--out")
        .arg(tmp.path().join("s.jsonl"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no generation records"),
        "{}",
        text(&o.stderr)
    );
}
