//! Path helpers of the study file (a leaf: no other study module is used here).

use std::path::{Path, PathBuf};

/// `p` against `base` when relative, with `.` and `..` resolved lexically (no symlinks read).
pub(super) fn absolutize(p: &Path, base: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}
