//! Progress reporting for the long stages: a terminal bar with rate and ETA, what to tell the
//! user when a run is interrupted, and a testing aid that slows record streams down so a test
//! can kill a run in the middle of a stage.

use std::sync::Mutex;

static INTERRUPT_NOTE: Mutex<Option<String>> = Mutex::new(None);

/// Sets what an interrupted process (Ctrl-C) tells the user: what is kept, and how to resume.
/// The runner and the `generate` / `score` subcommands update it as they go.
pub fn set_interrupt_note(note: impl Into<String>) {
    if let Ok(mut n) = INTERRUPT_NOTE.lock() {
        *n = Some(note.into());
    }
}

/// The message for an interruption (see [`set_interrupt_note`]), with a generic default.
pub fn interrupt_note() -> String {
    INTERRUPT_NOTE
        .lock()
        .ok()
        .and_then(|n| n.clone())
        .unwrap_or_else(|| {
            "interrupted: every file written so far is complete and kept; run the same command \
             to resume"
                .to_string()
        })
}

/// A progress bar for a long stage: position, rate and ETA.
pub fn progress_bar(show: bool, len: u64, prefix: impl Into<String>) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>24} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta}) {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(prefix.into());
    pb
}

/// A testing aid: `TOXDRIFT_TEST_STALL_MS=N` makes every append (and every training step) pause
/// for N milliseconds afterwards, so a test can kill the process in the middle of a stage.
pub(crate) fn test_stall() {
    static STALL: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let stall = STALL.get_or_init(|| {
        std::env::var("TOXDRIFT_TEST_STALL_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(d) = stall {
        std::thread::sleep(*d);
    }
}
