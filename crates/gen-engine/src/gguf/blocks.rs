//! ggml's quantized blocks turned into what [`packed_matmul::QuantRows`] holds: one `i8` code per
//! weight, and per group of 16 or 32 weights along a row a scale and, for the formats that have
//! one, a min, such that
//!
//! ```text
//! weight = (code as f32) * scale - min        (min absent: weight = (code as f32) * scale)
//! ```
//!
//! is bitwise the value candle-core 0.11.1's `QTensor::dequantize` gives (its `to_float` of each
//! block type in `quantized/k_quants.rs`): every scale and min is computed with the operations of
//! `to_float`, in its order, so only the last multiply (commutative) and the last add or subtract
//! (`x + m` is `x - (-m)` exactly, which is how Q4_1 and Q5_1's added min is written as a min)
//! remain, and those the kernels do as written.
//!
//! | type | block | group | code | scale | min |
//! |---|---|---|---|---|---|
//! | Q4_0 | 32 | 32 | q − 8 | d | — |
//! | Q4_1 | 32 | 32 | q | d | −m |
//! | Q5_0 | 32 | 32 | q − 16 | d | — |
//! | Q5_1 | 32 | 32 | q | d | −m |
//! | Q8_0 | 32 | 32 | q | d | — |
//! | Q2_K | 256 | 16 | q (0..3) | d · (sc & 15) | dmin · (sc >> 4) |
//! | Q3_K | 256 | 16 | q − 4·!h (−4..3) | d · (sc − 32) | — |
//! | Q4_K | 256 | 32 | q (0..15) | d · sc | dmin · m |
//! | Q5_K | 256 | 32 | q (0..31) | d · sc | dmin · m |
//! | Q6_K | 256 | 16 | q − 32 | d · sc | — |
//!
//! The loader builds the quantized panels of f32 CPU inference from these
//! ([`crate::lora::LinearFactory`]'s `gguf_quantized`, through `GgufTensors::quantized`).

use super::dtype_name;
use crate::error::{Error, Result};
use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

/// A quantized tensor (`n` rows × `k`) as codes and per-group scales (and mins), row-major:
/// `q` has `n × k` values, `scales` (and `mins`) `n × k / group`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Groups {
    /// One code per weight.
    pub q: Vec<i8>,
    /// One scale per group.
    pub scales: Vec<f32>,
    /// One min per group, for the formats that subtract (or add) one.
    pub mins: Option<Vec<f32>>,
    /// Weights per group along a row: 16 or 32.
    pub group: usize,
}

/// Decodes one block into its codes (`block` values), scales and mins (`block / group` values
/// each; mins empty for a type without them).
type DecodeBlock = fn(&[u8], &mut [i8], &mut [f32], &mut [f32]);

/// One block type: its sizes and its decoder.
struct Kind {
    /// Weights per block.
    block: usize,
    /// Bytes per block.
    bytes: usize,
    /// Weights per scale.
    group: usize,
    mins: bool,
    decode: DecodeBlock,
}

fn kind(dtype: GgmlDType) -> Option<Kind> {
    let k = |block, bytes, group, mins, decode| Kind {
        block,
        bytes,
        group,
        mins,
        decode,
    };
    Some(match dtype {
        GgmlDType::Q4_0 => k(32, 18, 32, false, q4_0),
        GgmlDType::Q4_1 => k(32, 20, 32, true, q4_1),
        GgmlDType::Q5_0 => k(32, 22, 32, false, q5_0),
        GgmlDType::Q5_1 => k(32, 24, 32, true, q5_1),
        GgmlDType::Q8_0 => k(32, 34, 32, false, q8_0),
        GgmlDType::Q2K => k(256, 84, 16, true, q2_k),
        GgmlDType::Q3K => k(256, 110, 16, false, q3_k),
        GgmlDType::Q4K => k(256, 144, 32, true, q4_k),
        GgmlDType::Q5K => k(256, 176, 32, true, q5_k),
        GgmlDType::Q6K => k(256, 210, 16, false, q6_k),
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_1 | GgmlDType::Q8K => {
            return None;
        }
    })
}

/// Decodes the raw blocks of an `n × k` tensor (ggml blocks along `k`, rows one after another)
/// into codes, scales and mins; `None` when the type has no such form here (F32, F16, BF16, and
/// Q8_1 and Q8_K, which never hold weights in a GGUF file).
///
/// # Errors
/// [`Error::GgmlBlocks`] when `k` is not a whole number of blocks, or `data` is not exactly the
/// blocks of `n × k` weights.
pub(crate) fn decode(dtype: GgmlDType, data: &[u8], n: usize, k: usize) -> Option<Result<Groups>> {
    let kind = kind(dtype)?;
    Some(decode_kind(&kind, dtype, data, n, k))
}

/// Blocks per parallel task (a few KiB of input each).
const CHUNK: usize = 64;

fn decode_kind(kind: &Kind, dtype: GgmlDType, data: &[u8], n: usize, k: usize) -> Result<Groups> {
    let bad = |msg: String| Error::GgmlBlocks {
        ggml_type: dtype_name(dtype),
        rows: n,
        cols: k,
        msg,
    };
    if !k.is_multiple_of(kind.block) {
        return Err(bad(format!(
            "a row of {k} weights is not a whole number of {}-weight blocks",
            kind.block
        )));
    }
    let blocks = n
        .checked_mul(k / kind.block)
        .ok_or_else(|| bad("the shape overflows".into()))?;
    let expected = blocks
        .checked_mul(kind.bytes)
        .ok_or_else(|| bad("the shape overflows".into()))?;
    if data.len() != expected {
        return Err(bad(format!(
            "{} bytes of data, expected {expected} ({blocks} blocks of {} bytes)",
            data.len(),
            kind.bytes
        )));
    }
    let per = kind.block / kind.group;
    let mut q = vec![0i8; blocks * kind.block];
    let mut scales = vec![0f32; blocks * per];
    let mut mins = vec![0f32; if kind.mins { blocks * per } else { 0 }];
    let mut min_chunks: Vec<&mut [f32]> = if kind.mins {
        mins.chunks_mut(CHUNK * per).collect()
    } else {
        (0..blocks.div_ceil(CHUNK)).map(|_| &mut [][..]).collect()
    };
    // The rows' blocks follow each other, and each block's codes and groups are in row order, so
    // the outputs are the blocks' outputs concatenated.
    data.par_chunks(CHUNK * kind.bytes)
        .zip(q.par_chunks_mut(CHUNK * kind.block))
        .zip(scales.par_chunks_mut(CHUNK * per))
        .zip(min_chunks.par_iter_mut())
        .for_each(|(((data, q), s), m)| {
            for (b, (data, (q, s))) in data
                .chunks_exact(kind.bytes)
                .zip(q.chunks_exact_mut(kind.block).zip(s.chunks_exact_mut(per)))
                .enumerate()
            {
                let m = if kind.mins {
                    &mut m[b * per..(b + 1) * per]
                } else {
                    &mut [][..]
                };
                (kind.decode)(data, q, s, m);
            }
        });
    Ok(Groups {
        q,
        scales,
        mins: kind.mins.then_some(mins),
        group: kind.group,
    })
}

/// An IEEE half (its bits) as f32: exact, as `half::f16::to_f32` (NaNs quieted, as there).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    match (exp, man) {
        (0, 0) => f32::from_bits(sign),
        // Subnormal: man × 2⁻²⁴, exact in f32.
        (0, _) => {
            let v = man as f32 * (1.0 / 16_777_216.0);
            if sign != 0 { -v } else { v }
        }
        (0x1f, 0) => f32::from_bits(sign | 0x7f80_0000),
        (0x1f, _) => f32::from_bits(sign | 0x7fc0_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

/// The f16 at byte `at` (little-endian, as ggml stores it) as f32.
fn half(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min `j` of a Q4_K / Q5_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

// The decoders. Layouts (byte offsets) are candle's `#[repr(C)]` block structs, which are
// ggml's; each comment names the value candle's `to_float` computes.

/// `d: f16, qs: [u8; 16]`; y = (q − 8) · d.
fn q4_0(b: &[u8], q: &mut [i8], s: &mut [f32], _: &mut [f32]) {
    s[0] = half(b, 0);
    for (j, &x) in b[2..18].iter().enumerate() {
        q[j] = (x & 0xF) as i8 - 8;
        q[j + 16] = (x >> 4) as i8 - 8;
    }
}

/// `d: f16, m: f16, qs: [u8; 16]`; y = q · d + m.
fn q4_1(b: &[u8], q: &mut [i8], s: &mut [f32], m: &mut [f32]) {
    s[0] = half(b, 0);
    m[0] = -half(b, 2);
    for (j, &x) in b[4..20].iter().enumerate() {
        q[j] = (x & 0xF) as i8;
        q[j + 16] = (x >> 4) as i8;
    }
}

/// The 5-bit codes of Q5_0 / Q5_1: low nibbles from `qs`, fifth bits from the u32 `qh`.
fn five_bits(qh: &[u8], qs: &[u8], offset: i8, q: &mut [i8]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, &x) in qs[..16].iter().enumerate() {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        q[j] = ((x & 0xF) | h0) as i8 - offset;
        q[j + 16] = ((x >> 4) | h1) as i8 - offset;
    }
}

/// `d: f16, qh: [u8; 4], qs: [u8; 16]`; y = (q − 16) · d.
fn q5_0(b: &[u8], q: &mut [i8], s: &mut [f32], _: &mut [f32]) {
    s[0] = half(b, 0);
    five_bits(&b[2..6], &b[6..22], 16, q);
}

/// `d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]`; y = q · d + m.
fn q5_1(b: &[u8], q: &mut [i8], s: &mut [f32], m: &mut [f32]) {
    s[0] = half(b, 0);
    m[0] = -half(b, 2);
    five_bits(&b[4..8], &b[8..24], 0, q);
}

/// `d: f16, qs: [i8; 32]`; y = q · d.
fn q8_0(b: &[u8], q: &mut [i8], s: &mut [f32], _: &mut [f32]) {
    s[0] = half(b, 0);
    for (q, &x) in q.iter_mut().zip(&b[2..34]) {
        *q = x as i8;
    }
}

/// `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16`; per 16 weights
/// y = (d · (sc & 15)) · q − dmin · (sc >> 4).
fn q2_k(b: &[u8], q: &mut [i8], s: &mut [f32], m: &mut [f32]) {
    let (d, min) = (half(b, 80), half(b, 82));
    for ((s, m), &sc) in s.iter_mut().zip(m.iter_mut()).zip(&b[..16]) {
        *s = d * (sc & 0xF) as f32;
        *m = min * (sc >> 4) as f32;
    }
    for (qs, q) in b[16..80].chunks_exact(32).zip(q.chunks_exact_mut(128)) {
        for (shift, q) in q.chunks_exact_mut(32).enumerate() {
            for (q, &x) in q.iter_mut().zip(qs) {
                *q = ((x >> (2 * shift)) & 3) as i8;
            }
        }
    }
}

/// `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16`; per 16 weights
/// y = (d · (sc − 32)) · (q − 4 when the high bit is clear).
fn q3_k(b: &[u8], q: &mut [i8], s: &mut [f32], _: &mut [f32]) {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let (hmask, sc) = (&b[..32], &b[96..108]);
    let word =
        |i: usize| u32::from_le_bytes([sc[4 * i], sc[4 * i + 1], sc[4 * i + 2], sc[4 * i + 3]]);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let d = half(b, 108);
    for (i, s) in s.iter_mut().enumerate() {
        let scale = aux[i / 4].to_le_bytes()[i % 4] as i8;
        *s = d * (scale as f32 - 32.0);
    }
    for (chunk, (qs, q)) in b[32..96]
        .chunks_exact(32)
        .zip(q.chunks_exact_mut(128))
        .enumerate()
    {
        for (shift, q) in q.chunks_exact_mut(32).enumerate() {
            let bit = 1u8 << (4 * chunk + shift);
            for ((q, &x), &h) in q.iter_mut().zip(qs).zip(hmask) {
                let low = ((x >> (2 * shift)) & 3) as i8;
                *q = low - if h & bit == 0 { 4 } else { 0 };
            }
        }
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; per 32 weights
/// y = (d · sc) · q − dmin · m.
fn q4_k(b: &[u8], q: &mut [i8], s: &mut [f32], m: &mut [f32]) {
    let (d, min, sc) = (half(b, 0), half(b, 2), &b[4..16]);
    for (i, (s, m)) in s.iter_mut().zip(m.iter_mut()).enumerate() {
        let (scale, mn) = scale_min_k4(i, sc);
        *s = d * scale as f32;
        *m = min * mn as f32;
    }
    for (qs, q) in b[16..144].chunks_exact(32).zip(q.chunks_exact_mut(64)) {
        let (lo, hi) = q.split_at_mut(32);
        for ((lo, hi), &x) in lo.iter_mut().zip(hi).zip(qs) {
            *lo = (x & 0xF) as i8;
            *hi = (x >> 4) as i8;
        }
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; per 32 weights
/// y = (d · sc) · (q + 16·h) − dmin · m.
fn q5_k(b: &[u8], q: &mut [i8], s: &mut [f32], m: &mut [f32]) {
    let (d, min, sc, qh) = (half(b, 0), half(b, 2), &b[4..16], &b[16..48]);
    for (i, (s, m)) in s.iter_mut().zip(m.iter_mut()).enumerate() {
        let (scale, mn) = scale_min_k4(i, sc);
        *s = d * scale as f32;
        *m = min * mn as f32;
    }
    for (j, (qs, q)) in b[48..176]
        .chunks_exact(32)
        .zip(q.chunks_exact_mut(64))
        .enumerate()
    {
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let (lo, hi) = q.split_at_mut(32);
        for (((lo, hi), &x), &h) in lo.iter_mut().zip(hi).zip(qs).zip(qh) {
            *lo = ((x & 0xF) + if h & u1 != 0 { 16 } else { 0 }) as i8;
            *hi = ((x >> 4) + if h & u2 != 0 { 16 } else { 0 }) as i8;
        }
    }
}

/// `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`; per 16 weights
/// y = (d · sc) · (q − 32).
fn q6_k(b: &[u8], q: &mut [i8], s: &mut [f32], _: &mut [f32]) {
    let d = half(b, 208);
    for (s, &sc) in s.iter_mut().zip(&b[192..208]) {
        *s = d * (sc as i8) as f32;
    }
    for (idx, q) in q.chunks_exact_mut(128).enumerate() {
        let ql = &b[64 * idx..64 * idx + 64];
        let qh = &b[128 + 32 * idx..128 + 32 * idx + 32];
        for l in 0..32 {
            q[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            q[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};
    use packed_matmul::{PackedLinear, QuantRows};

    const TYPES: [GgmlDType; 10] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];

    /// xorshift values in [-0.5, 0.5).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) - 0.5
            })
            .collect()
    }

    /// An `n × k` tensor whose rows range over magnitudes from 1e-6 (f16 scales go subnormal)
    /// to 3e3, some rows all positive or all negative (mins of both signs), one all zero.
    fn weights(n: usize, k: usize, seed: u32) -> Vec<f32> {
        let v = values(n * k, seed);
        let mags = [1e-6, 3e-5, 1e-3, 0.02, 0.5, 1.0, 7.0, 3e3];
        let mut w = vec![0f32; n * k];
        for r in 0..n {
            let mag = mags[(r + seed as usize) % mags.len()];
            let shift = [0.0, 0.0, 0.5, -0.5][r % 4];
            for i in 0..k {
                w[r * k + i] = if r == 5 {
                    0.0
                } else {
                    (v[r * k + i] + shift) * mag
                };
            }
        }
        w
    }

    fn quantized(dtype: GgmlDType, w: &[f32], n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
        let t = Tensor::from_vec(w.to_vec(), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let data = q.data().unwrap().into_owned();
        let deq = q.dequantize(&Device::Cpu).unwrap();
        (data, deq.flatten_all().unwrap().to_vec1::<f32>().unwrap())
    }

    /// The weights by `QuantRows`' formula.
    fn rebuild(g: &Groups, k: usize) -> Vec<f32> {
        g.q.iter()
            .enumerate()
            .map(|(i, &q)| {
                let gi = (i / k) * (k / g.group) + (i % k) / g.group;
                let v = q as f32 * g.scales[gi];
                match &g.mins {
                    Some(m) => v - m[gi],
                    None => v,
                }
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn decoded_blocks_rebuild_candles_dequantization_bitwise() {
        let (n, k) = (48, 512);
        for dtype in TYPES {
            for seed in 1..=3 {
                let (data, want) = quantized(dtype, &weights(n, k, seed), n, k);
                let g = decode(dtype, &data, n, k).unwrap().unwrap();
                assert_eq!(g.q.len(), n * k);
                assert_eq!(g.scales.len(), n * k / g.group);
                let got = rebuild(&g, k);
                let first = bits(&got)
                    .iter()
                    .zip(bits(&want))
                    .position(|(a, b)| *a != b);
                assert!(
                    first.is_none(),
                    "{dtype:?} seed {seed}: first difference at {first:?}: {} vs {}",
                    got[first.unwrap_or(0)],
                    want[first.unwrap_or(0)]
                );
            }
        }
    }

    #[test]
    fn codes_fit_their_documented_ranges() {
        let (n, k) = (16, 256);
        let ranges = [
            (GgmlDType::Q4_0, -8, 7),
            (GgmlDType::Q4_1, 0, 15),
            (GgmlDType::Q5_0, -16, 15),
            (GgmlDType::Q5_1, 0, 31),
            (GgmlDType::Q8_0, -128, 127),
            (GgmlDType::Q2K, 0, 3),
            (GgmlDType::Q3K, -4, 3),
            (GgmlDType::Q4K, 0, 15),
            (GgmlDType::Q5K, 0, 31),
            (GgmlDType::Q6K, -32, 31),
        ];
        for (dtype, lo, hi) in ranges {
            let (data, _) = quantized(dtype, &weights(n, k, 4), n, k);
            let g = decode(dtype, &data, n, k).unwrap().unwrap();
            assert!(g.q.iter().all(|&q| (lo..=hi).contains(&q)), "{dtype:?}");
        }
    }

    #[test]
    fn packed_quantized_products_equal_those_of_candles_dequantized_weight() {
        let (n, k) = (48, 512);
        for dtype in [
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let (data, deq) = quantized(dtype, &weights(n, k, 5), n, k);
            let g = decode(dtype, &data, n, k).unwrap().unwrap();
            let rows = QuantRows {
                q: &g.q,
                scales: &g.scales,
                mins: g.mins.as_deref(),
                group: g.group,
            };
            let bias = Some(values(n, 6));
            let quant = PackedLinear::from_quantized(rows, n, k, bias.clone()).unwrap();
            let f32_layer = PackedLinear::from_rows(&deq, n, k, bias).unwrap();
            for m in [1, 16] {
                let x = values(m * k, 7 + m as u32);
                let (mut yq, mut yf) = (vec![0f32; m * n], vec![0f32; m * n]);
                quant.matmul(&x, m, &mut yq).unwrap();
                f32_layer.matmul(&x, m, &mut yf).unwrap();
                assert!(bits(&yq) == bits(&yf), "{dtype:?} m{m}");
            }
        }
    }

    #[test]
    fn types_without_codes_are_none() {
        for dtype in [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::BF16,
            GgmlDType::Q8_1,
            GgmlDType::Q8K,
        ] {
            assert!(decode(dtype, &[], 0, 0).is_none(), "{dtype:?}");
        }
    }

    #[test]
    fn malformed_blocks_are_typed_errors() {
        let (n, k) = (4, 256);
        let (data, _) = quantized(GgmlDType::Q4K, &weights(n, k, 8), n, k);
        let err = |dtype, data: &[u8], n, k| match decode(dtype, data, n, k) {
            Some(Err(e @ Error::GgmlBlocks { .. })) => e.to_string(),
            other => panic!("expected a GgmlBlocks error, got {other:?}"),
        };
        assert_eq!(
            err(GgmlDType::Q4K, &data[1..], n, k),
            "ggml Q4_K tensor of 4 × 256: 575 bytes of data, expected 576 (4 blocks of 144 bytes)"
        );
        assert!(err(GgmlDType::Q4K, &data, n + 1, k).contains("expected 720"));
        assert!(
            err(GgmlDType::Q4K, &data, n * 2, k / 2)
                .contains("a row of 128 weights is not a whole number of 256-weight blocks")
        );
        assert!(err(GgmlDType::Q8_0, &data, 1, 48).contains("32-weight blocks"));
        assert!(err(GgmlDType::Q8_0, &[0; 3], 1, 32).contains("3 bytes of data, expected 34"));
        // An empty tensor is fine.
        let g = decode(GgmlDType::Q6K, &[], 0, 512).unwrap().unwrap();
        assert!(g.q.is_empty() && g.scales.is_empty() && g.mins.is_none() && g.group == 16);
    }

    #[test]
    fn halves_convert_exactly() {
        // Every finite half: a round trip through f64 checks the conversion.
        for h in 0..=u16::MAX {
            let v = f16_to_f32(h);
            let exp = (h >> 10) & 0x1f;
            if exp == 0x1f {
                assert!(if h & 0x3ff == 0 {
                    v.is_infinite()
                } else {
                    v.is_nan()
                });
                continue;
            }
            let man = (h & 0x3ff) as f64;
            let mag = if exp == 0 {
                man * 2f64.powi(-24)
            } else {
                (1.0 + man / 1024.0) * 2f64.powi(exp as i32 - 15)
            };
            let want = if h & 0x8000 != 0 { -mag } else { mag };
            assert_eq!(v as f64, want, "{h:#06x}");
            assert_eq!(v.is_sign_negative(), h & 0x8000 != 0, "{h:#06x}");
        }
    }
}
