//! `packed-matmul`: pre-packed weights — f32, or `i8` codes with per-group scales — and the
//! matrix product of CPU inference, `y = x Wᵀ + b`, for the few-row products of batched decoding
//! and short classifier inputs.
//!
//! A general GEMM (candle's CPU matmul, through the `gemm` crate) repacks the whole weight into
//! its kernel layout on every call; at 16 rows that costs about as much memory traffic as the
//! product itself. A [`PackedLinear`] packs the weight once, at load time, into panels of
//! [`NR`] output columns — panel `p` holds `W[16p..16p+16, :]` transposed, `in × 16` contiguous
//! and 64-byte aligned — so each call streams every weight byte once and a panel row is one
//! cache line. Input rows are packed per call (they are small) into blocks laid out `k`-major,
//! so the kernel broadcasts them from consecutive addresses.
//!
//! Quantized storage ([`PackedLinear::from_quantized`], [`QuantRows`]): a weight that a
//! checkpoint stores quantized (GGUF's ggml blocks, decoded to codes, scales and mins) stays
//! quantized. Each panel is, per group of 16 or 32 inputs, one line of 16 f32 scales, one of 16
//! mins when the format has them, then one line of 16 `i8` codes per input — one contiguous,
//! 64-byte aligned stream of 1.1–1.5 bytes per weight instead of 4 (groups of 32 without mins:
//! 1.125; with mins, or groups of 16 without: 1.25; groups of 16 with mins: 1.5). The kernels
//! turn each code line into weights in registers (convert, multiply by the scales, subtract the
//! mins: the formula of [`QuantRows`], with no fused multiply-subtract) and then run the same
//! fused multiply-adds in the same order as on f32 panels, under the same blocking and threading,
//! so a quantized layer's products are bitwise those of the f32 layer holding the dequantized
//! weight — while decoding, which is bound by memory bandwidth, streams a quarter to a third of
//! the bytes.
//!
//! Kernels: AVX-512F (16 rows × 16 columns, 16 zmm accumulators; from 64 rows on, 12 rows × two
//! panels, 24 accumulators, which loads less per multiply-add once inputs come from cache),
//! AVX2+FMA (6 × 16, 12 ymm; a line of 16 codes becomes two ymm of weights), and a portable one
//! (4 × 16) that the compiler vectorises for the build target; each in an f32 and a quantized
//! form; the widest the CPU has is picked at run time. They prefetch the weight 2 KiB ahead
//! (decoding is bound by memory bandwidth: the weights stream from DRAM at every step).
//! Products whose packed inputs exceed 1 MiB are cache-blocked (256 inputs × as many rows as fit
//! 256 KiB of L2).
//! Output panels are split over the rayon pool. Sums are fused multiply-adds in `k` order, so
//! results differ from another GEMM's by rounding only (~1e-6 relative); every kernel and both
//! storages accumulate each output in the same order, so they agree with each other bitwise.
//!
//! Where it stands against the `gemm` crate (`cargo bench -p packed-matmul --bench matmul`):
//! ahead for decoding's few rows (no per-call repacking of the weight), 5–20% behind on
//! hundreds of rows, where gemm's own blocking is better tuned.
//!
//! ```
//! use packed_matmul::{PackedLinear, QuantRows};
//! // W is 3 outputs × 2 inputs, row-major as in a checkpoint; bias per output.
//! let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
//! let layer = PackedLinear::from_rows(&w, 3, 2, Some(vec![0.5, 0.0, -0.5]))?;
//! let x = [1.0, 1.0, 0.0, 2.0]; // 2 rows × 2 inputs
//! let mut y = [0.0; 6];
//! layer.matmul(&x, 2, &mut y)?;
//! assert_eq!(y, [3.5, 7.0, 10.5, 4.5, 8.0, 11.5]);
//!
//! // The same kind of layer kept quantized: 2 outputs × 16 inputs, one group of 16 per output,
//! // w[j][i] = q * scale - min.
//! let q: Vec<i8> = (0..32).map(|i| (i % 7) as i8 - 3).collect();
//! let (scales, mins) = ([0.5, 0.25], [1.0, -1.0]);
//! let rows = QuantRows { q: &q, scales: &scales, mins: Some(&mins), group: 16 };
//! let quantized = PackedLinear::from_quantized(rows, 2, 16, None)?;
//! let mut dequantized = vec![0.0; 32];
//! for (j, row) in dequantized.chunks_mut(16).enumerate() {
//!     quantized.row(j, row)?;
//!     assert_eq!(row[0], q[16 * j] as f32 * scales[j] - mins[j]);
//! }
//! let f32_layer = PackedLinear::from_rows(&dequantized, 2, 16, None)?;
//! let x = vec![0.1; 16];
//! let (mut yq, mut yf) = ([0.0; 2], [0.0; 2]);
//! quantized.matmul(&x, 1, &mut yq)?;
//! f32_layer.matmul(&x, 1, &mut yf)?;
//! assert_eq!(yq, yf);
//! assert!(quantized.resident_bytes() < f32_layer.resident_bytes());
//! # Ok::<(), packed_matmul::Error>(())
//! ```
#![deny(missing_docs)]

mod kernels;
mod quant;

#[cfg(target_arch = "x86_64")]
use kernels::x86;
pub use quant::QuantRows;
use quant::{Block, Format};
use rayon::prelude::*;

/// What can go wrong: buffers whose sizes disagree with the layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer's length is not what the shapes say.
    #[error("{what}: {found} values, expected {expected}")]
    Size {
        /// Which buffer (`weight`, `bias`, `input`, `output`).
        what: &'static str,
        /// Its length.
        found: usize,
        /// The length the shapes imply.
        expected: usize,
    },
    /// A quantized weight's group size is not one the kernels take (16 or 32), or does not
    /// divide the inputs.
    #[error(
        "quantization groups of {group} inputs for {k} inputs: the group must be 16 or 32 and divide the inputs"
    )]
    Group {
        /// The group size given.
        group: usize,
        /// The layer's inputs.
        k: usize,
    },
    /// An output (row of `W`) past the layer's outputs.
    #[error("row {index} of a layer with {rows} outputs")]
    Row {
        /// The row asked for.
        index: usize,
        /// The layer's outputs.
        rows: usize,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

fn check(what: &'static str, found: usize, expected: usize) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::Size {
            what,
            found,
            expected,
        })
    }
}

/// Output columns per panel.
pub const NR: usize = 16;

/// The block of packed inputs one pass over the panels reads (kept in L2).
const A_BLOCK_BYTES: usize = 256 * 1024;
/// From this many rows on, AVX-512 tiles span two panels.
const PAIR_MIN_ROWS: usize = 64;
/// Inputs per block when there are too many rows for all inputs to stay in L2: a panel's
/// block (512 lines, 32 KiB) stays in L1.
const KC: usize = 256;

/// One panel row: 16 floats, one cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Line([f32; NR]);

/// A layer's packed weight.
#[derive(Debug, Clone)]
enum Weights {
    /// `ceil(n / 16)` panels of `k` lines; columns past `n` are zero.
    F32(Vec<Line>),
    /// `ceil(n / 16)` panels of `format.panel_blocks(k)` blocks (see [`quant`]).
    Quant { blocks: Vec<Block>, format: Format },
}

/// One panel's data over a range of inputs, as a kernel reads it.
#[derive(Clone, Copy)]
enum PanelRef<'a> {
    F32(&'a [Line]),
    Quant(&'a [Block], Format),
}

/// A linear layer's weight `W` (`n` outputs × `k` inputs, `y = x Wᵀ + b`) packed into column
/// panels, with an optional bias: f32 ([`PackedLinear::from_rows`],
/// [`PackedLinear::from_transposed`]) or `i8` codes with per-group scales
/// ([`PackedLinear::from_quantized`]). Immutable and `Send + Sync`: share it between threads.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    k: usize,
    n: usize,
    w: Weights,
    /// `n` values, when the layer has a bias.
    bias: Option<Vec<f32>>,
}

impl PackedLinear {
    /// Packs a weight stored transposed: `wt` is `k × n` row-major (`wt[i * n + j] = W[j][i]`);
    /// `bias`, when given, has `n` values.
    pub fn from_transposed(wt: &[f32], k: usize, n: usize, bias: Option<Vec<f32>>) -> Result<Self> {
        check("weight", wt.len(), k * n)?;
        if let Some(b) = &bias {
            check("bias", b.len(), n)?;
        }
        let panels = n.div_ceil(NR);
        let mut lines = vec![Line::default(); panels * k];
        for (p, panel) in lines.chunks_mut(k.max(1)).enumerate().take(panels) {
            let j0 = p * NR;
            let w = NR.min(n - j0);
            for (i, line) in panel.iter_mut().enumerate() {
                line.0[..w].copy_from_slice(&wt[i * n + j0..i * n + j0 + w]);
            }
        }
        Ok(Self {
            k,
            n,
            w: Weights::F32(lines),
            bias,
        })
    }

    /// Packs a weight in the checkpoint layout: `w` is `n × k` row-major; `bias`, when given,
    /// has `n` values. Panels are packed in parallel.
    pub fn from_rows(w: &[f32], n: usize, k: usize, bias: Option<Vec<f32>>) -> Result<Self> {
        check("weight", w.len(), n * k)?;
        if let Some(b) = &bias {
            check("bias", b.len(), n)?;
        }
        let panels = n.div_ceil(NR);
        let mut lines = vec![Line::default(); panels * k];
        lines
            .par_chunks_mut(k.max(1))
            .enumerate()
            .for_each(|(p, panel)| {
                for c in 0..NR.min(n - p * NR) {
                    let row = &w[(p * NR + c) * k..(p * NR + c + 1) * k];
                    for (line, &v) in panel.iter_mut().zip(row) {
                        line.0[c] = v;
                    }
                }
            });
        Ok(Self {
            k,
            n,
            w: Weights::F32(lines),
            bias,
        })
    }

    /// Packs a quantized weight (`n` outputs × `k` inputs; see [`QuantRows`] for the formula
    /// that gives its values) as it is: codes, scales and mins, with the codes turned into
    /// weights inside the kernels. Products, [`row`](Self::row) and
    /// [`to_transposed`](Self::to_transposed) are bitwise those of [`from_rows`](Self::from_rows)
    /// on the dequantized weight, while a product streams about 1.1–1.5 bytes per weight
    /// instead of 4. Panels are packed in parallel.
    ///
    /// # Errors
    /// [`Error::Group`] when `w.group` is not 16 or 32 or does not divide `k`; [`Error::Size`]
    /// when the codes are not `n × k`, the scales or mins not `n × k / group`, or the bias not
    /// `n` values.
    pub fn from_quantized(
        w: QuantRows<'_>,
        n: usize,
        k: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        let format = quant::validate(&w, n, k)?;
        if let Some(b) = &bias {
            check("bias", b.len(), n)?;
        }
        let blocks = quant::pack(&w, format, n, k);
        Ok(Self {
            k,
            n,
            w: Weights::Quant { blocks, format },
            bias,
        })
    }

    /// Whether the weight is kept quantized ([`from_quantized`](Self::from_quantized)).
    pub fn is_quantized(&self) -> bool {
        matches!(self.w, Weights::Quant { .. })
    }

    /// Bytes the weight keeps resident: its panels (f32 lines, or codes with their scale and min
    /// lines, padding columns included) and its bias.
    pub fn resident_bytes(&self) -> usize {
        let panels = match &self.w {
            Weights::F32(lines) => std::mem::size_of_val(lines.as_slice()),
            Weights::Quant { blocks, .. } => std::mem::size_of_val(blocks.as_slice()),
        };
        panels
            + self
                .bias
                .as_ref()
                .map_or(0, |b| std::mem::size_of_val(b.as_slice()))
    }

    /// Inputs (`k`).
    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// Outputs (`n`).
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// The bias (`n` values), if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Copies row `j` of `W` (the `k` weights of output `j`) into `out`: what an embedding
    /// lookup needs when the embedding matrix is a tied output head stored packed.
    pub fn row(&self, j: usize, out: &mut [f32]) -> Result<()> {
        if j >= self.n {
            return Err(Error::Row {
                index: j,
                rows: self.n,
            });
        }
        check("output", out.len(), self.k)?;
        let (p, c) = (j / NR, j % NR);
        match &self.w {
            Weights::F32(lines) => {
                for (o, line) in out.iter_mut().zip(&lines[p * self.k..(p + 1) * self.k]) {
                    *o = line.0[c];
                }
            }
            Weights::Quant { blocks, format } => {
                let per = format.panel_blocks(self.k);
                format.column(&blocks[p * per..(p + 1) * per], c, out);
            }
        }
        Ok(())
    }

    /// The weight back in the transposed layout, `k × n` row-major (dequantized, for a
    /// quantized layer).
    pub fn to_transposed(&self) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut wt = vec![0f32; k * n];
        match &self.w {
            Weights::F32(lines) => {
                for (p, panel) in lines.chunks(k.max(1)).enumerate() {
                    let j0 = p * NR;
                    let w = NR.min(n - j0);
                    for (i, line) in panel.iter().enumerate() {
                        wt[i * n + j0..i * n + j0 + w].copy_from_slice(&line.0[..w]);
                    }
                }
            }
            Weights::Quant { blocks, format } => {
                let per = format.panel_blocks(k);
                let mut col = vec![0f32; k];
                for j in 0..n {
                    let (p, c) = (j / NR, j % NR);
                    format.column(&blocks[p * per..(p + 1) * per], c, &mut col);
                    for (i, &v) in col.iter().enumerate() {
                        wt[i * n + j] = v;
                    }
                }
            }
        }
        wt
    }

    /// Stacks layers sharing an input along the output dimension (outputs concatenated in
    /// order). Panels are concatenated as they are, so every part but the last needs a multiple
    /// of 16 outputs, and the parts must be stored alike: all f32, or all quantized with the
    /// same group and all with mins or all without. `None` otherwise, or if the inputs differ.
    pub fn concat(parts: &[&PackedLinear]) -> Option<Self> {
        let first = parts.first()?;
        let k = first.k;
        let last = parts.len() - 1;
        if parts
            .iter()
            .enumerate()
            .any(|(i, p)| p.k != k || (i < last && !p.n.is_multiple_of(NR)))
        {
            return None;
        }
        let n: usize = parts.iter().map(|p| p.n).sum();
        let w = match &first.w {
            Weights::F32(_) => {
                let mut lines = Vec::with_capacity(n.div_ceil(NR) * k);
                for p in parts {
                    let Weights::F32(l) = &p.w else { return None };
                    lines.extend_from_slice(l);
                }
                Weights::F32(lines)
            }
            Weights::Quant { format, .. } => {
                let format = *format;
                let mut all = Vec::with_capacity(n.div_ceil(NR) * format.panel_blocks(k));
                for p in parts {
                    match &p.w {
                        Weights::Quant { blocks, format: f } if *f == format => {
                            all.extend_from_slice(blocks)
                        }
                        _ => return None,
                    }
                }
                Weights::Quant {
                    blocks: all,
                    format,
                }
            }
        };
        let bias = if parts.iter().any(|p| p.bias.is_some()) {
            let mut b = Vec::with_capacity(n);
            for p in parts {
                match &p.bias {
                    Some(pb) => b.extend_from_slice(pb),
                    None => b.extend(std::iter::repeat_n(0.0, p.n)),
                }
            }
            Some(b)
        } else {
            None
        };
        Some(Self { k, n, w, bias })
    }

    /// `out = x Wᵀ + b` for `m` rows of `x` (`m × k` row-major); `out` is `m × n` row-major and
    /// is overwritten. Large products are split over the rayon pool.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        check("input", x.len(), m * self.k)?;
        check("output", out.len(), m * self.n)?;
        if m == 0 || self.n == 0 {
            return Ok(());
        }
        let isa = Isa::detect().for_rows(m);
        let mr = isa.mr();
        let a = pack_rows(x, m, self.k, mr);
        let panels = self.n.div_ceil(NR);
        let out_ptr = OutPtr(out.as_mut_ptr());
        // Cache blocking for many rows (Goto's): blocks of `kc` inputs × `mc` rows of the
        // packed inputs stay in L2 while the panels pass, and each panel's `kc` lines stay in L1
        // across the block's row tiles. Inputs up to 1 MiB (decoding's few rows, a prefill of a
        // few hundred) are one block: every panel streams from memory exactly once.
        let k = self.k.max(1);
        let (kc, mc) = if m * k * 4 <= 4 * A_BLOCK_BYTES {
            (k, m)
        } else {
            let kc = k.min(KC);
            (kc, (A_BLOCK_BYTES / (4 * kc) / mr * mr).max(mr))
        };
        let run = |range: std::ops::Range<usize>| {
            for k0 in (0..self.k).step_by(kc) {
                let ks = k0..(k0 + kc).min(self.k);
                for r0 in (0..m).step_by(mc) {
                    let rows = r0..(r0 + mc).min(m);
                    let mut p = range.start;
                    while p < range.end {
                        let width = if isa.pairs() && p + 1 < range.end {
                            2
                        } else {
                            1
                        };
                        self.panels(isa, &a, rows.clone(), ks.clone(), p..p + width, out_ptr);
                        p += width;
                    }
                }
            }
        };
        let threads = rayon::current_num_threads();
        // Below ~2 MFLOP a hand-off to another thread costs more than it saves.
        let flops = 2 * m * self.k * self.n;
        if threads <= 1 || panels < 2 || flops < (2 << 20) {
            run(0..panels);
        } else {
            // A few chunks per thread, so a busy core does not hold the others up.
            let chunks = (threads * 4).min(panels);
            let per = panels.div_ceil(chunks);
            let per = if isa.pairs() { per + per % 2 } else { per };
            (0..panels.div_ceil(per))
                .into_par_iter()
                .for_each(|c| run(c * per..((c + 1) * per).min(panels)));
        }
        Ok(())
    }

    /// The row tiles in `rows` (starting at a multiple of the kernel's rows) of one output
    /// panel, or of two adjacent ones for the pair kernel, over the inputs in `ks`: the first
    /// input block writes `acc + bias`, later ones add onto the output.
    fn panels(
        &self,
        isa: Isa,
        a: &[f32],
        rows: std::ops::Range<usize>,
        ks: std::ops::Range<usize>,
        ps: std::ops::Range<usize>,
        out: OutPtr,
    ) {
        let k = self.k;
        let line = |q: usize| match &self.w {
            Weights::F32(lines) => PanelRef::F32(&lines[q * k + ks.start..q * k + ks.end]),
            Weights::Quant { blocks, format } => {
                // Input blocks start and end on group boundaries (`KC` and `k` are multiples
                // of the group).
                debug_assert!(
                    ks.start.is_multiple_of(format.group) && ks.end.is_multiple_of(format.group)
                );
                let (per, g) = (format.blocks_per_group(), format.group);
                let p0 = q * format.panel_blocks(k);
                PanelRef::Quant(
                    &blocks[p0 + ks.start / g * per..p0 + ks.end / g * per],
                    *format,
                )
            }
        };
        let j0 = ps.start * NR;
        let cols = (ps.len() * NR).min(self.n - j0);
        let mr = isa.mr();
        let end = rows.end;
        for r0 in rows.step_by(mr) {
            let rows = mr.min(end - r0);
            let tile = Tile {
                k: ks.len(),
                // The tile's packed inputs are `k`-major: inputs `ks` are one contiguous run.
                a: &a[r0 * k + ks.start * rows..r0 * k + ks.end * rows],
                b: line(ps.start),
                b2: (ps.len() == 2).then(|| line(ps.start + 1)),
                bias: self.bias.as_deref().map(|b| &b[j0..j0 + cols]),
                accumulate: ks.start > 0,
                // SAFETY: rows r0..r0+rows, columns j0..j0+cols lie inside `out` (m × n), and
                // each panel (column range) is written by exactly one task.
                out: unsafe { out.0.add(r0 * self.n + j0) },
                ldo: self.n,
                cols,
            };
            isa.run(rows, &tile);
        }
    }
}

/// The output pointer shared by the tasks of one product; each writes its own column panels.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges of the buffer, which outlives the parallel loop.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Packs `x` (`m × k`) into blocks of `mr` rows, each `k × rows` (`k`-major); the last block
/// holds the remaining rows only.
fn pack_rows(x: &[f32], m: usize, k: usize, mr: usize) -> Vec<f32> {
    let mut a = vec![0f32; m * k];
    let pack = |(b, blk): (usize, &mut [f32])| {
        let r0 = b * mr;
        let rows = blk.len() / k;
        for r in 0..rows {
            let src = &x[(r0 + r) * k..(r0 + r + 1) * k];
            for (i, &v) in src.iter().enumerate() {
                blk[i * rows + r] = v;
            }
        }
    };
    let blocks = a.chunks_mut((mr * k).max(1));
    // Many rows (a long prefill, a classifier batch): the copy is worth splitting.
    if m * k >= 1 << 18 {
        blocks
            .collect::<Vec<_>>()
            .into_par_iter()
            .enumerate()
            .for_each(pack);
    } else {
        blocks.enumerate().for_each(pack);
    }
    a
}

/// One kernel call: `rows` (≤ MR) packed input rows times one panel (or two, for the pair
/// kernel), into `cols` (≤ 16, or 32) output columns at `out` (row stride `ldo`), plus the bias.
struct Tile<'a> {
    k: usize,
    /// `k × rows`, `k`-major.
    a: &'a [f32],
    /// The panel's lines (or blocks) for the tile's inputs.
    b: PanelRef<'a>,
    /// The next panel's, for the pair kernel.
    b2: Option<PanelRef<'a>>,
    /// The bias of the `cols` output columns, if the layer has one.
    bias: Option<&'a [f32]>,
    /// Add onto the output (a later block of inputs) instead of writing `acc + bias`.
    accumulate: bool,
    out: *mut f32,
    ldo: usize,
    cols: usize,
}

impl Tile<'_> {
    /// Writes one output row from the computed values (16, or 32 for the pair kernel).
    ///
    /// # Safety
    /// `out + r * ldo .. + cols` must be writable.
    #[inline(always)]
    unsafe fn store_row(&self, r: usize, vals: &[f32]) {
        // SAFETY: per the caller.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.out.add(r * self.ldo), self.cols) };
        match (self.accumulate, self.bias) {
            (true, _) => dst.iter_mut().zip(vals).for_each(|(d, v)| *d += v),
            (false, None) => dst.copy_from_slice(&vals[..self.cols]),
            (false, Some(b)) => dst
                .iter_mut()
                .zip(vals)
                .zip(b)
                .for_each(|((d, v), b)| *d = v + b),
        }
    }
}

/// The kernel family the CPU supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX-512F for many rows: 12 rows × two panels per tile (24 accumulators), which loads
    /// less per multiply-add than 16 × one panel once the inputs come from cache, not memory.
    #[cfg(target_arch = "x86_64")]
    Avx512Pair,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// The kernel for a product with `m` rows.
    fn for_rows(self, m: usize) -> Self {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 if m >= PAIR_MIN_ROWS => Self::Avx512Pair,
            other => other,
        }
    }

    /// Whether tiles span two panels.
    fn pairs(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self == Self::Avx512Pair
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Rows per kernel call.
    fn mr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Pair => 12,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => 6,
            Self::Portable => 4,
        }
    }

    fn run(self, rows: usize, t: &Tile<'_>) {
        // Whether the panels are quantized, and with mins (the pair's second panel belongs to the
        // same layer, so it is stored alike).
        let quant = match t.b {
            PanelRef::F32(_) => None,
            PanelRef::Quant(_, f) => Some(f.mins),
        };
        let pair = t.b2.is_some();
        match (self, quant) {
            // SAFETY: the CPU has the features (detected above); the tile's pointers are valid
            // for `rows` rows (see `PackedLinear::panels`), its panels of the kind the kernel
            // reads.
            #[cfg(target_arch = "x86_64")]
            (Self::Avx512Pair, None) if pair => unsafe { x86::avx512_pair(rows, t) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Self::Avx512Pair, Some(mins)) if pair => unsafe {
                x86::avx512_quant_pair(rows, t, mins)
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Self::Avx512 | Self::Avx512Pair, None) => unsafe { x86::avx512(rows, t) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Self::Avx512 | Self::Avx512Pair, Some(mins)) => unsafe {
                x86::avx512_quant(rows, t, mins)
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Self::Avx2, None) => unsafe { x86::avx2(rows, t) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Self::Avx2, Some(mins)) => unsafe { x86::avx2_quant(rows, t, mins) },
            (Self::Portable, None) => kernels::portable(rows, t),
            (Self::Portable, Some(mins)) => kernels::portable_quant(rows, t, mins),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        x: &[f32],
        m: usize,
        wt: &[f32],
        k: usize,
        n: usize,
        b: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                let mut s = b.map(|b| b[j] as f64).unwrap_or(0.0);
                for i in 0..k {
                    s += x[r * k + i] as f64 * wt[i * n + j] as f64;
                }
                y[r * n + j] = s;
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    /// xorshift values in [-0.5, 0.5) (the quantized storage's tests use them too).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
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

    fn check(isa: Isa, m: usize, k: usize, n: usize, bias: bool) {
        let wt = values(k * n, 1);
        let x = values(m * k, 2);
        let b = bias.then(|| values(n, 3));
        let p = PackedLinear::from_transposed(&wt, k, n, b.clone()).unwrap();
        let a = pack_rows(&x, m, k, isa.mr());
        let mut out = vec![f32::NAN; m * n];
        let ptr = OutPtr(out.as_mut_ptr());
        let panels = n.div_ceil(NR);
        let mut q = 0;
        while q < panels {
            let width = if isa.pairs() && q + 1 < panels { 2 } else { 1 };
            p.panels(isa, &a, 0..m, 0..k, q..q + width, ptr);
            q += width;
        }
        let want = reference(&x, m, &wt, k, n, b.as_deref());
        for (i, (g, w)) in out.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{isa:?} m{m} k{k} n{n} at {i}: {g} vs {w}"
            );
        }
    }

    pub(crate) fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
                v.push(Isa::Avx512Pair);
            }
        }
        v
    }

    #[test]
    fn every_kernel_matches_a_plain_product_for_ragged_shapes() {
        for isa in isas() {
            for &(m, k, n) in &[
                (1, 1, 1),
                (3, 5, 17),
                (7, 33, 40),
                (16, 24, 16),
                (17, 9, 31),
                (40, 64, 48),
            ] {
                check(isa, m, k, n, false);
                check(isa, m, k, n, true);
            }
        }
    }

    #[test]
    fn threaded_product_and_layout_round_trip() {
        let (m, k, n) = (20, 96, 4000);
        let wt = values(k * n, 4);
        let x = values(m * k, 5);
        let p = PackedLinear::from_transposed(&wt, k, n, None).unwrap();
        assert_eq!(p.to_transposed(), wt);
        let mut row = vec![0f32; k];
        for j in [0, 17, n - 1] {
            p.row(j, &mut row).unwrap();
            assert!(row.iter().enumerate().all(|(i, &v)| v == wt[i * n + j]));
        }
        let mut rows = vec![0f32; n * k];
        for i in 0..k {
            for j in 0..n {
                rows[j * k + i] = wt[i * n + j];
            }
        }
        assert_eq!(
            PackedLinear::from_rows(&rows, n, k, None)
                .unwrap()
                .to_transposed(),
            wt
        );
        let mut out = vec![0f32; m * n];
        p.matmul(&x, m, &mut out).unwrap();
        let want = reference(&x, m, &wt, k, n, None);
        for (g, w) in out.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()));
        }
    }

    #[test]
    fn many_rows_run_in_cache_sized_blocks() {
        // 300 × 1024 packed inputs (1.2 MiB) are blocked: inputs in blocks of 256, rows in
        // blocks of 256 (256, 44), later input blocks adding onto the first.
        let (m, k, n) = (300, 1024, 40);
        let (wt, x) = (values(k * n, 10), values(m * k, 11));
        let p = PackedLinear::from_transposed(&wt, k, n, Some(values(n, 12))).unwrap();
        let mut out = vec![f32::NAN; m * n];
        p.matmul(&x, m, &mut out).unwrap();
        let want = reference(&x, m, &wt, k, n, p.bias());
        for (g, w) in out.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    #[test]
    fn concatenated_layers_give_concatenated_outputs() {
        let k = 12;
        let (wa, wb) = (values(k * 32, 6), values(k * 20, 7));
        let a = PackedLinear::from_transposed(&wa, k, 32, Some(values(32, 8))).unwrap();
        let b = PackedLinear::from_transposed(&wb, k, 20, None).unwrap();
        assert!(
            PackedLinear::concat(&[&b, &a]).is_none(),
            "20 outputs are not whole panels"
        );
        let ab = PackedLinear::concat(&[&a, &b]).unwrap();
        let x = values(3 * k, 9);
        let (mut ya, mut yb, mut y) = (vec![0f32; 96], vec![0f32; 60], vec![0f32; 156]);
        a.matmul(&x, 3, &mut ya).unwrap();
        b.matmul(&x, 3, &mut yb).unwrap();
        ab.matmul(&x, 3, &mut y).unwrap();
        for r in 0..3 {
            assert_eq!(&y[r * 52..r * 52 + 32], &ya[r * 32..(r + 1) * 32]);
            assert_eq!(&y[r * 52 + 32..(r + 1) * 52], &yb[r * 20..(r + 1) * 20]);
        }
    }

    #[test]
    fn sizes_that_disagree_with_the_shapes_are_errors() {
        let size = |what, found, expected| Error::Size {
            what,
            found,
            expected,
        };
        assert_eq!(
            PackedLinear::from_rows(&[0.0; 5], 2, 3, None).unwrap_err(),
            size("weight", 5, 6)
        );
        assert_eq!(
            PackedLinear::from_rows(&[0.0; 6], 2, 3, Some(vec![0.0])).unwrap_err(),
            size("bias", 1, 2)
        );
        let p = PackedLinear::from_rows(&[1.0; 6], 2, 3, None).unwrap();
        let mut out = [0.0; 4];
        assert_eq!(
            p.matmul(&[0.0; 5], 2, &mut out).unwrap_err(),
            size("input", 5, 6)
        );
        assert_eq!(
            p.matmul(&[0.0; 6], 2, &mut out[..3]).unwrap_err(),
            size("output", 3, 4)
        );
        assert!(p.matmul(&[1.0; 6], 2, &mut out).is_ok());
        assert_eq!(out, [3.0; 4]);
        assert_eq!(
            p.row(2, &mut [0.0; 3]).unwrap_err(),
            Error::Row { index: 2, rows: 2 }
        );
        assert_eq!(p.row(1, &mut [0.0; 2]).unwrap_err(), size("output", 2, 3));
    }
}
