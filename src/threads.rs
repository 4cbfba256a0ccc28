//! The CPU thread pool of a program that runs studies.
//!
//! Generation, scoring and training split their large products over rayon's global pool and run
//! the steps between them (norms, attention, sampling, the optimizer) on the calling thread. If
//! that thread is not one of the pool's, it runs those steps beside the pool's workers, which
//! spin for a while after each product: one thread more than there are cores. On the 2-core
//! development machine that cost 8% at batch-1 generation and 13–15% per LoRA training step.
//! [`join_pool`] makes the program's main thread worker 0 of the pool instead, so it does its
//! share of every product and the pool has exactly `RAYON_NUM_THREADS` (default: one per core)
//! threads. The `toxdrift` binary and the study examples call it first thing.
//!
//! (`gen_engine::Generator::generate_batch` also moves a CPU batch onto a pool worker by itself
//! when it is called from outside the pool, so a library user who never calls this still gets
//! the fast path for generation.)

/// Makes the calling thread worker 0 of rayon's global pool (`RAYON_NUM_THREADS` threads in
/// all, or one per core). Call it at the start of `main`, before anything uses the pool.
/// Returns `false`, changing nothing, when the global pool was already built.
pub fn join_pool() -> bool {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_calling_thread_becomes_worker_zero_once() {
        // The test harness runs each test on its own thread: build the pool from a fresh one.
        std::thread::spawn(|| {
            assert!(super::join_pool());
            assert_eq!(rayon::current_thread_index(), Some(0));
            let sum: u64 = rayon::iter::ParallelIterator::sum(
                rayon::iter::IntoParallelIterator::into_par_iter(0..1000u64),
            );
            assert_eq!(sum, 499_500);
            assert!(!super::join_pool(), "the global pool is built once");
        })
        .join()
        .unwrap();
    }
}
