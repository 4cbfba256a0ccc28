//! Opt-in, process-wide allocator tuning for training.

/// Asks glibc's malloc to keep freed memory for reuse instead of handing large blocks back to the
/// kernel: the mmap threshold goes to its maximum (32 MiB), the trim threshold to 2 GiB, and
/// blocks above 32 MiB (a 512 × 32,000 logits buffer and its gradient) come from the heap too
/// (`M_MMAP_MAX` 0; glibc still falls back to `mmap` when the heap cannot grow).
///
/// A training step frees and reallocates activation-sized buffers at every op. With glibc's
/// defaults each large one is a fresh `mmap` and its release a `munmap`, so the step pays page
/// faults, zeroing and TLB shootdowns across cores — about 15% of a step on peer-bench's 124.7M
/// Llama (docs/performance.md). It changes the whole process, so a binary calls it once, early
/// (`toxdrift` does); returns whether the settings took effect (always `false` off glibc).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn applies_on_glibc() {
        let applied = super::keep_freed_memory();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
        // The allocator still works afterwards, for large and small blocks.
        let big = vec![1u8; 64 << 20];
        let mut small = Vec::with_capacity(100);
        small.resize(100, 2u8);
        assert_eq!(big[big.len() - 1] + small[99], 3);
    }
}
