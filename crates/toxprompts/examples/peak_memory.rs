//! Peak memory of building the paper's prompt set from a synthetic 100,000-row RTP file.
//!
//! ```sh
//! cargo run --release -p toxprompts --example peak_memory            # plain JSONL
//! cargo run --release -p toxprompts --example peak_memory -- --gzip  # the same file gzipped
//! cargo run --release -p toxprompts --example peak_memory -- --write /tmp/rtp100k.jsonl  # only write it
//! cargo run --release -p toxprompts --example peak_memory -- --input /tmp/rtp100k.jsonl  # measure on it
//! ```
//!
//! Writes the file into a temporary directory, resets the kernel's peak-RSS counter
//! (`/proc/self/clear_refs`), builds the set, and prints the process's `VmHWM` next to the file size.

#[path = "../benches/synth/mod.rs"]
mod synth;

use std::path::Path;
use std::time::Instant;
use toxprompts::{CebSet, OnBadRecord, PromptSetParams};

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(std::path::PathBuf::from)
    };
    let gzip = args.iter().any(|a| a == "--gzip");
    let rows = 100_000;
    if let Some(out) = value("--write") {
        let size = synth::write_rtp(&out, rows, 2024)?;
        println!("wrote {rows} rows, {size} bytes to {}", out.display());
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (plain, size) = match value("--input") {
        Some(p) => {
            let size = std::fs::metadata(&p)?.len();
            (p, size)
        }
        None => {
            let p = dir.path().join("prompts.jsonl");
            let size = synth::write_rtp(&p, rows, 2024)?;
            (p, size)
        }
    };
    let path = if gzip {
        let gz = dir.path().join("prompts.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz)?,
            flate2::Compression::default(),
        );
        std::io::copy(&mut std::fs::File::open(&plain)?, &mut enc)?;
        enc.finish()?;
        gz
    } else {
        plain
    };
    let on_disk = std::fs::metadata(&path)?.len();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/samples");
    let ceb = CebSet::from_dir(samples.join("CEB-Continuation-T"), OnBadRecord::Fail)?;
    let params = PromptSetParams::default().per_axis(20).check()?;

    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib("VmHWM:").unwrap_or(0);
    let t = Instant::now();
    let set = params.build(Some(&path), Some(&ceb))?;
    let secs = t.elapsed().as_secs_f64();
    let hwm = status_kib("VmHWM:").unwrap_or(0);
    println!(
        "{{\"rows\": {rows}, \"jsonl_bytes\": {size}, \"input_bytes\": {on_disk}, \"gzip\": {gzip}, \
         \"prompts\": {}, \"build_s\": {secs:.3}, \"vmhwm_before_kib\": {before}, \
         \"vmhwm_kib\": {hwm}, \"peak_reset\": {reset}, \"vmhwm_over_jsonl\": {:.3}}}",
        set.prompts.len(),
        (hwm * 1024) as f64 / size as f64
    );
    Ok(())
}
