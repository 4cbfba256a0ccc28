//! The kernels: one tile of packed input rows times one output panel (or two), for f32 panels
//! and for quantized ones.
//!
//! A quantized kernel turns each line of 16 codes into 16 f32 weights in registers — convert,
//! multiply by the group's scale line, subtract its min line (two rounded operations, as in
//! [`QuantRows`](crate::QuantRows)'s formula) — and then runs exactly the fused multiply-adds of
//! the f32 kernel over the rows, so every output is accumulated in the same order, with the same
//! weights, as from the dequantized f32 panel: the results are bitwise equal.

use crate::quant::Block;
use crate::{Line, NR, Tile};

/// Instantiates `$kernel::<R>` (or `$kernel::<R, M>`) for the row count (1..=`$max`).
macro_rules! by_rows {
    ($rows:expr, $kernel:ident<$m:literal>, $t:expr, [$($r:literal),*]) => {
        match $rows {
            $($r => $kernel::<$r, $m>($t),)*
            _ => unreachable!("row count above the kernel's block"),
        }
    };
    ($rows:expr, $kernel:ident, $t:expr, [$($r:literal),*]) => {
        match $rows {
            $($r => $kernel::<$r>($t),)*
            _ => unreachable!("row count above the kernel's block"),
        }
    };
}

/// The f32 panel's lines of a tile.
pub(crate) fn f32_lines<'a>(t: &Tile<'a>) -> &'a [Line] {
    match t.b {
        crate::PanelRef::F32(b) => b,
        crate::PanelRef::Quant(..) => &[],
    }
}

/// The quantized panel's blocks of a tile, and its group size.
pub(crate) fn quant_blocks<'a>(t: &Tile<'a>) -> (&'a [Block], usize) {
    match t.b {
        crate::PanelRef::Quant(b, f) => (b, f.group),
        crate::PanelRef::F32(_) => (&[], NR),
    }
}

/// The second panel's data, for the pair kernels.
fn second<'a>(t: &Tile<'a>) -> (&'a [Line], &'a [Block]) {
    match t.b2 {
        Some(crate::PanelRef::F32(b)) => (b, &[]),
        Some(crate::PanelRef::Quant(b, _)) => (&[], b),
        None => (&[], &[]),
    }
}

pub(crate) fn portable(rows: usize, t: &Tile<'_>) {
    fn kernel<const R: usize>(t: &Tile<'_>) {
        let mut acc = [[0f32; NR]; R];
        for (i, line) in f32_lines(t).iter().enumerate().take(t.k) {
            fma_line(&mut acc, &t.a[i * R..(i + 1) * R], &line.0);
        }
        for (r, vals) in acc.iter().enumerate() {
            // SAFETY: see `Isa::run`.
            unsafe { t.store_row(r, vals) };
        }
    }
    by_rows!(rows, kernel, t, [1, 2, 3, 4])
}

/// `acc[r] += a[r] * w`, one fused multiply-add per element.
#[inline(always)]
fn fma_line<const R: usize>(acc: &mut [[f32; NR]; R], a: &[f32], w: &[f32; NR]) {
    for (acc, &ar) in acc.iter_mut().zip(a) {
        for (c, &b) in acc.iter_mut().zip(w) {
            *c = ar.mul_add(b, *c);
        }
    }
}

pub(crate) fn portable_quant(rows: usize, t: &Tile<'_>, mins: bool) {
    fn kernel<const R: usize, const MINS: bool>(t: &Tile<'_>) {
        let (blocks, group) = quant_blocks(t);
        let header = 1 + usize::from(MINS);
        let mut acc = [[0f32; NR]; R];
        for (g, gb) in blocks
            .chunks_exact(header + group / 4)
            .enumerate()
            .take(t.k / group)
        {
            let s = gb[0].floats();
            let mn = if MINS { gb[1].floats() } else { [0.0; NR] };
            for (c, codes) in gb[header..].iter().enumerate() {
                for (u, q) in codes.0.chunks_exact(NR).enumerate() {
                    let mut w = [0f32; NR];
                    for (c, w) in w.iter_mut().enumerate() {
                        let v = q[c] as i8 as f32 * s[c];
                        *w = if MINS { v - mn[c] } else { v };
                    }
                    let i = g * group + c * 4 + u;
                    fma_line(&mut acc, &t.a[i * R..(i + 1) * R], &w);
                }
            }
        }
        for (r, vals) in acc.iter().enumerate() {
            // SAFETY: see `Isa::run`.
            unsafe { t.store_row(r, vals) };
        }
    }
    if mins {
        by_rows!(rows, kernel<true>, t, [1, 2, 3, 4])
    } else {
        by_rows!(rows, kernel<false>, t, [1, 2, 3, 4])
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{f32_lines, quant_blocks, second};
    use crate::{NR, Tile};
    use std::arch::x86_64::*;

    /// How many panel lines ahead the kernels prefetch.
    const PF: usize = 32;
    /// The same distance in bytes (2 KiB), for quantized panels.
    const PF_BYTES: usize = PF * 64;

    /// # Safety
    /// The CPU must have AVX-512F; the tile's pointers valid for `rows` (≤ 16) rows.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn avx512(rows: usize, t: &Tile<'_>) {
        #[target_feature(enable = "avx512f")]
        unsafe fn kernel<const R: usize>(t: &Tile<'_>) {
            let mut acc = [_mm512_setzero_ps(); R];
            let a = t.a.as_ptr();
            let b = f32_lines(t).as_ptr() as *const f32;
            for i in 0..t.k {
                // SAFETY: line `i` of the panel (aligned, 16 floats) and `R` packed inputs.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((i + PF) * NR) as *const i8);
                    let bv = _mm512_load_ps(b.add(i * NR));
                    let ai = a.add(i * R);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(*ai.add(r)), bv, *acc);
                    }
                }
            }
            // SAFETY: per the caller.
            unsafe { store512(t, acc) };
        }
        // SAFETY: per the caller.
        unsafe {
            by_rows!(
                rows,
                kernel,
                t,
                [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
            )
        }
    }

    /// Writes one accumulator per row.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the tile's rows writable.
    #[target_feature(enable = "avx512f")]
    unsafe fn store512<const R: usize>(t: &Tile<'_>, acc: [__m512; R]) {
        let mut vals = [0f32; NR];
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: `vals` holds 16 floats; the row is writable per the caller.
            unsafe {
                _mm512_storeu_ps(vals.as_mut_ptr(), *acc);
                t.store_row(r, &vals);
            }
        }
    }

    /// Writes two accumulators (two panels) per row.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the tile's rows writable.
    #[target_feature(enable = "avx512f")]
    unsafe fn store512_pair<const R: usize>(t: &Tile<'_>, lo: [__m512; R], hi: [__m512; R]) {
        let mut vals = [0f32; 2 * NR];
        for r in 0..R {
            // SAFETY: `vals` holds 32 floats; the row is writable per the caller.
            unsafe {
                _mm512_storeu_ps(vals.as_mut_ptr(), lo[r]);
                _mm512_storeu_ps(vals.as_mut_ptr().add(NR), hi[r]);
                t.store_row(r, &vals);
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F; the tile spans two panels (`b2` as long as `b`); its
    /// pointers valid for `rows` (≤ 12) rows.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn avx512_pair(rows: usize, t: &Tile<'_>) {
        #[target_feature(enable = "avx512f")]
        unsafe fn kernel<const R: usize>(t: &Tile<'_>) {
            let mut lo = [_mm512_setzero_ps(); R];
            let mut hi = [_mm512_setzero_ps(); R];
            let a = t.a.as_ptr();
            let b0 = f32_lines(t).as_ptr() as *const f32;
            let b1 = second(t).0.as_ptr() as *const f32;
            for i in 0..t.k {
                // SAFETY: line `i` of both panels (aligned, 16 floats each) and `R` inputs.
                unsafe {
                    let v0 = _mm512_load_ps(b0.add(i * NR));
                    let v1 = _mm512_load_ps(b1.add(i * NR));
                    let ai = a.add(i * R);
                    for r in 0..R {
                        let av = _mm512_set1_ps(*ai.add(r));
                        lo[r] = _mm512_fmadd_ps(av, v0, lo[r]);
                        hi[r] = _mm512_fmadd_ps(av, v1, hi[r]);
                    }
                }
            }
            // SAFETY: per the caller.
            unsafe { store512_pair(t, lo, hi) };
        }
        // SAFETY: per the caller.
        unsafe { by_rows!(rows, kernel, t, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) }
    }

    /// The 16 weights of one code line: codes to f32, times the scale line, minus the min line.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `codes` readable for 16 bytes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn weights512<const MINS: bool>(codes: *const u8, s: __m512, mn: __m512) -> __m512 {
        // SAFETY: per the caller.
        let q = unsafe { _mm_loadu_si128(codes as *const __m128i) };
        let w = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), s);
        if MINS { _mm512_sub_ps(w, mn) } else { w }
    }

    /// A group's scale and min lines (zero without mins), prefetching its header ahead.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `p` is a group's first block (64-byte aligned).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn header512<const MINS: bool>(p: *const u8) -> (__m512, __m512) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PF_BYTES) as *const i8);
        // SAFETY: per the caller: the scale line, then the min line when there are mins.
        unsafe {
            let s = _mm512_load_ps(p as *const f32);
            if MINS {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 + PF_BYTES) as *const i8);
                (s, _mm512_load_ps(p.add(64) as *const f32))
            } else {
                (s, _mm512_setzero_ps())
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F; the tile's panel is quantized with mins iff `mins`; its
    /// pointers valid for `rows` (≤ 16) rows.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn avx512_quant(rows: usize, t: &Tile<'_>, mins: bool) {
        #[target_feature(enable = "avx512f")]
        unsafe fn kernel<const R: usize, const MINS: bool>(t: &Tile<'_>) {
            let mut acc = [_mm512_setzero_ps(); R];
            let (blocks, group) = quant_blocks(t);
            let header = 64 * (1 + usize::from(MINS));
            // Bytes per group: its header, then `group` code lines of 16 bytes.
            let stride = header + NR * group;
            let base = blocks.as_ptr() as *const u8;
            let a = t.a.as_ptr();
            for g in 0..t.k / group {
                // SAFETY: group `g`'s header and `group` code lines lie inside the panel's
                // blocks; `R` packed inputs per code line follow `a`.
                unsafe {
                    let p = base.add(g * stride);
                    let (s, mn) = header512::<MINS>(p);
                    let codes = p.add(header);
                    let ag = a.add(g * group * R);
                    for i in 0..group {
                        let line = codes.add(NR * i);
                        if i % 4 == 0 {
                            _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(PF_BYTES) as *const i8);
                        }
                        let w = weights512::<MINS>(line, s, mn);
                        let ai = ag.add(i * R);
                        for (r, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm512_fmadd_ps(_mm512_set1_ps(*ai.add(r)), w, *acc);
                        }
                    }
                }
            }
            // SAFETY: per the caller. The accumulators go by value: taking their address
            // would keep them in memory through the loop.
            unsafe { store512(t, acc) };
        }
        // SAFETY: per the caller.
        unsafe {
            if mins {
                by_rows!(
                    rows,
                    kernel<true>,
                    t,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
                )
            } else {
                by_rows!(
                    rows,
                    kernel<false>,
                    t,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
                )
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F; the tile spans two quantized panels (with mins iff `mins`) of
    /// the same length; its pointers valid for `rows` (≤ 12) rows.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn avx512_quant_pair(rows: usize, t: &Tile<'_>, mins: bool) {
        #[target_feature(enable = "avx512f")]
        unsafe fn kernel<const R: usize, const MINS: bool>(t: &Tile<'_>) {
            let mut lo = [_mm512_setzero_ps(); R];
            let mut hi = [_mm512_setzero_ps(); R];
            let (blocks, group) = quant_blocks(t);
            let header = 64 * (1 + usize::from(MINS));
            let stride = header + NR * group;
            let base0 = blocks.as_ptr() as *const u8;
            let base1 = second(t).1.as_ptr() as *const u8;
            let a = t.a.as_ptr();
            // Addresses from the indices, not pointers moved along (which made the compiler
            // keep the accumulators in memory).
            for g in 0..t.k / group {
                // SAFETY: as in `avx512_quant`, for both panels.
                unsafe {
                    let (p0, p1) = (base0.add(g * stride), base1.add(g * stride));
                    let (s0, m0) = header512::<MINS>(p0);
                    let (s1, m1) = header512::<MINS>(p1);
                    let (c0, c1) = (p0.add(header), p1.add(header));
                    let ag = a.add(g * group * R);
                    for i in 0..group {
                        let v0 = weights512::<MINS>(c0.add(NR * i), s0, m0);
                        let v1 = weights512::<MINS>(c1.add(NR * i), s1, m1);
                        let ai = ag.add(i * R);
                        for r in 0..R {
                            let av = _mm512_set1_ps(*ai.add(r));
                            lo[r] = _mm512_fmadd_ps(av, v0, lo[r]);
                            hi[r] = _mm512_fmadd_ps(av, v1, hi[r]);
                        }
                    }
                }
            }
            // SAFETY: per the caller.
            unsafe { store512_pair(t, lo, hi) };
        }
        // SAFETY: per the caller.
        unsafe {
            if mins {
                by_rows!(
                    rows,
                    kernel<true>,
                    t,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
                )
            } else {
                by_rows!(
                    rows,
                    kernel<false>,
                    t,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
                )
            }
        }
    }

    /// Writes two ymm accumulators (one panel) per row.
    ///
    /// # Safety
    /// The CPU must have AVX; the tile's rows writable.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store256<const R: usize>(t: &Tile<'_>, lo: [__m256; R], hi: [__m256; R]) {
        let mut vals = [0f32; NR];
        for r in 0..R {
            // SAFETY: `vals` holds 16 floats; the row is writable per the caller.
            unsafe {
                _mm256_storeu_ps(vals.as_mut_ptr(), lo[r]);
                _mm256_storeu_ps(vals.as_mut_ptr().add(8), hi[r]);
                t.store_row(r, &vals);
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; the tile's pointers valid for `rows` (≤ 6) rows.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn avx2(rows: usize, t: &Tile<'_>) {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn kernel<const R: usize>(t: &Tile<'_>) {
            let mut lo = [_mm256_setzero_ps(); R];
            let mut hi = [_mm256_setzero_ps(); R];
            let a = t.a.as_ptr();
            let b = f32_lines(t).as_ptr() as *const f32;
            for i in 0..t.k {
                // SAFETY: line `i` of the panel (aligned, 16 floats) and `R` packed inputs.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((i + PF) * NR) as *const i8);
                    let b0 = _mm256_load_ps(b.add(i * NR));
                    let b1 = _mm256_load_ps(b.add(i * NR + 8));
                    let ai = a.add(i * R);
                    for r in 0..R {
                        let av = _mm256_broadcast_ss(&*ai.add(r));
                        lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                        hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
                    }
                }
            }
            // SAFETY: per the caller.
            unsafe { store256(t, lo, hi) };
        }
        // SAFETY: per the caller.
        unsafe { by_rows!(rows, kernel, t, [1, 2, 3, 4, 5, 6]) }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; the tile's panel is quantized with mins iff `mins`; its
    /// pointers valid for `rows` (≤ 6) rows.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn avx2_quant(rows: usize, t: &Tile<'_>, mins: bool) {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn kernel<const R: usize, const MINS: bool>(t: &Tile<'_>) {
            let mut lo = [_mm256_setzero_ps(); R];
            let mut hi = [_mm256_setzero_ps(); R];
            let (blocks, group) = quant_blocks(t);
            let header = 64 * (1 + usize::from(MINS));
            let stride = header + NR * group;
            let base = blocks.as_ptr() as *const u8;
            let a = t.a.as_ptr();
            for g in 0..t.k / group {
                // SAFETY: as in `avx512_quant`.
                unsafe {
                    let p = base.add(g * stride);
                    let ag = a.add(g * group * R);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PF_BYTES) as *const i8);
                    let s0 = _mm256_load_ps(p as *const f32);
                    let s1 = _mm256_load_ps(p.add(32) as *const f32);
                    let (m0, m1) = if MINS {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 + PF_BYTES) as *const i8);
                        (
                            _mm256_load_ps(p.add(64) as *const f32),
                            _mm256_load_ps(p.add(96) as *const f32),
                        )
                    } else {
                        (_mm256_setzero_ps(), _mm256_setzero_ps())
                    };
                    let codes = p.add(header);
                    for c in 0..group / 4 {
                        let block = codes.add(64 * c);
                        _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PF_BYTES) as *const i8);
                        for u in 0..4 {
                            // A line of 16 codes → two ymm of 8 weights.
                            let q = _mm_loadu_si128(block.add(NR * u) as *const __m128i);
                            let w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                            let w1 =
                                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(q, q)));
                            let (mut w0, mut w1) = (_mm256_mul_ps(w0, s0), _mm256_mul_ps(w1, s1));
                            if MINS {
                                w0 = _mm256_sub_ps(w0, m0);
                                w1 = _mm256_sub_ps(w1, m1);
                            }
                            let ai = ag.add((4 * c + u) * R);
                            for r in 0..R {
                                let av = _mm256_broadcast_ss(&*ai.add(r));
                                lo[r] = _mm256_fmadd_ps(av, w0, lo[r]);
                                hi[r] = _mm256_fmadd_ps(av, w1, hi[r]);
                            }
                        }
                    }
                }
            }
            // SAFETY: per the caller.
            unsafe { store256(t, lo, hi) };
        }
        // SAFETY: per the caller.
        unsafe {
            if mins {
                by_rows!(rows, kernel<true>, t, [1, 2, 3, 4, 5, 6])
            } else {
                by_rows!(rows, kernel<false>, t, [1, 2, 3, 4, 5, 6])
            }
        }
    }
}
