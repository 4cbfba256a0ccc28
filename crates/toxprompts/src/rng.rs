//! A small, fully specified pseudo-random generator, so a seed gives the same prompt set on every
//! platform and with every version of every dependency.
//!
//! [`SplitMix64`] is Steele, Lea and Flood's generator (OOPSLA 2014; the reference constants of
//! `java.util.SplittableRandom` and of Vigna's `splitmix64.c`): a 64-bit counter advanced by the golden
//! gamma `0x9E3779B97F4A7C15`, then mixed. Bounded integers use Lemire's multiply-and-reject method
//! (ACM TOMACS 2019), which is exact (no modulo bias). Only `u64`/`u128` integer arithmetic is used, so
//! results never depend on the platform. This is the contract behind the prompt-set ids: changing any
//! of it changes which prompts a seed selects, and is a breaking change.

/// SplitMix64: a 64-bit generator with a 2^64 period, good statistical quality and a trivial state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for the named stream of `seed`: `seed` XOR the 64-bit FNV-1a hash of `stream`.
    /// Each subset of a prompt set draws from its own stream, so one subset's size never moves
    /// another subset's draws.
    pub fn for_stream(seed: u64, stream: &str) -> Self {
        Self::new(seed ^ fnv1a64(stream.as_bytes()))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..bound` (Lemire's method; `bound` must be at least 1).
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0, "below(0)");
        let bound = bound.max(1);
        let mut m = u128::from(self.next_u64()) * u128::from(bound);
        if (m as u64) < bound {
            let threshold = bound.wrapping_neg() % bound;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(bound);
            }
        }
        (m >> 64) as u64
    }
}

/// The 64-bit FNV-1a hash (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Draws `k` distinct positions of `0..n` uniformly without replacement, in draw order.
///
/// A partial Fisher–Yates shuffle: for `i` in `0..k`, swap position `i` with `i + below(n - i)`.
/// The first `k` draws do not depend on `k`, so with the same generator a smaller sample is always a
/// prefix (hence a subset) of a larger one. Returns `None` when `k > n`.
pub fn sample_without_replacement(rng: &mut SplitMix64, n: usize, k: usize) -> Option<Vec<usize>> {
    if k > n {
        return None;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    Some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_outputs() {
        // Vigna's splitmix64.c seeded with 1234567: the first five outputs.
        let mut r = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn fnv1a_matches_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(7);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            let x = r.below(7) as usize;
            seen[x] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
        assert_eq!(r.below(1), 0);
        // A bound near 2^64 exercises the rejection branch.
        for _ in 0..100 {
            assert!(r.below(u64::MAX - 3) < u64::MAX - 3);
        }
    }

    #[test]
    fn samples_are_distinct_and_prefix_stable() {
        let a = sample_without_replacement(&mut SplitMix64::new(42), 1000, 100).unwrap();
        let b = sample_without_replacement(&mut SplitMix64::new(42), 1000, 10).unwrap();
        assert_eq!(&a[..10], &b[..]);
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 100);
        assert!(a.iter().all(|&i| i < 1000));
        assert!(sample_without_replacement(&mut SplitMix64::new(1), 3, 4).is_none());
        assert_eq!(
            sample_without_replacement(&mut SplitMix64::new(1), 3, 3)
                .unwrap()
                .len(),
            3
        );
    }
}
