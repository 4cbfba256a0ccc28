//! Kill -9 the runner during generation and during training, run it again, and check that the
//! final outputs equal an uninterrupted run's byte for byte.

use crate::common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts the smoke study with every append / training step stalled, waits until `ready` holds,
/// kills the process with SIGKILL and returns.
fn run_and_kill(out: &Path, what: &str, ready: impl Fn() -> bool) {
    let mut child = toxdrift()
        .arg("run")
        .arg(smoke_study())
        .arg("--out")
        .arg(out)
        .arg("--no-progress")
        .env("TOXDRIFT_TEST_STALL_MS", "400")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if ready() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it reached {what}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "never reached {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn nonempty(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false)
}

#[test]
fn killed_runs_resume_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    run_study(&smoke_study(), &reference);
    let expected = tree(&reference);

    // Killed while the first fine-tune is training (after a checkpoint, before it finished),
    // then killed again in the middle of a model's generation, then run to the end.
    let out = tmp.path().join("killed");
    let ft = out.join("units/finetune");
    run_and_kill(&out, "training", || {
        unit_dir(&ft, "tiny-llama-instruct-dolly").is_some_and(|u| {
            std::fs::read_dir(u.join("adapter/checkpoints"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
                && !u.join("manifest.json").exists()
        })
    });
    let unit = unit_dir(&ft, "tiny-llama-instruct-dolly").unwrap();
    assert!(
        !unit.join("manifest.json").exists(),
        "killed before the unit finished"
    );

    let gen_dir = out.join("units/generate");
    run_and_kill(&out, "generation", || {
        unit_dir(&gen_dir, "tiny-gemma").is_some_and(|u| {
            nonempty(&u.join("generations.jsonl")) && !u.join("manifest.json").exists()
        })
    });
    let unit = unit_dir(&gen_dir, "tiny-gemma").unwrap();
    assert!(
        !unit.join("manifest.json").exists(),
        "killed before the unit finished"
    );
    let partial = std::fs::read_to_string(unit.join("generations.jsonl")).unwrap();
    assert!(
        partial.lines().count() < 100,
        "part of the generations were written"
    );

    run_study(&smoke_study(), &out);
    let got = tree(&out);
    let names =
        |t: &std::collections::BTreeMap<String, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&expected), "the same files");
    for (name, bytes) in &expected {
        assert!(
            got[name] == *bytes,
            "{name} differs from the uninterrupted run"
        );
    }
}
