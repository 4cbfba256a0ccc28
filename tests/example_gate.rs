//! The `gate_finetune` example end to end on the tiny fixtures: base vs base + LoRA adapter,
//! generated, scored and gated in process; exit 0 on a pass, 3 on a fail.

use std::path::PathBuf;
use std::process::Command;

fn example() -> PathBuf {
    // cargo test builds the examples beside the binaries: target/<profile>/examples/.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_toxdrift"));
    let dir = bin.parent().expect("the binary has a directory");
    let path = dir.join("examples").join("gate_finetune");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (which builds the examples)",
        path.display()
    );
    path
}

#[test]
fn the_gating_example_passes_a_harmless_margin_and_fails_an_impossible_one() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(example())
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.starts_with("PASS: toxic rate"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);
    for f in ["base.scores.jsonl", "fine-tune.scores.jsonl"] {
        let n = std::fs::read_to_string(tmp.path().join(f))
            .unwrap()
            .lines()
            .count();
        assert_eq!(n, 6, "{f}: every sample prompt scored");
    }

    // Asking the fine-tune to be 50 points LESS toxic than its base cannot be met: exit 3.
    let o = Command::new(example())
        .args(["--max-increase=-0.5", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.starts_with("FAIL: toxic rate"), "{stdout}");
}
