//! Helpers shared by the study integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The smoke study file.
pub fn smoke_study() -> PathBuf {
    root().join("studies/smoke.toml")
}

/// A `toxdrift` command with logs quiet and no progress bars.
pub fn toxdrift() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_toxdrift"));
    c.env_remove("RUST_LOG").env("HF_HUB_OFFLINE", "1");
    c
}

/// Runs `toxdrift run STUDY --out OUT --no-progress` to completion.
pub fn run_study(study: &Path, out: &Path) -> Output {
    let o = toxdrift()
        .arg("run")
        .arg(study)
        .arg("--out")
        .arg(out)
        .arg("--no-progress")
        .output()
        .expect("runs the binary");
    assert!(
        o.status.success(),
        "toxdrift run failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Every file under `dir`, by path relative to it, with its bytes.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The one directory under `dir` whose name starts with `prefix-` followed by a 12-digit key.
pub fn unit_dir(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.find_map(|e| {
        let p = e.ok()?.path();
        let name = p.file_name()?.to_str()?.to_string();
        let key = name.strip_prefix(prefix)?.strip_prefix('-')?;
        (key.len() == 12 && key.chars().all(|c| c.is_ascii_hexdigit())).then_some(p)
    })
}
