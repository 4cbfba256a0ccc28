//! Quantized panels: a weight kept as `i8` codes with per-group f32 scales (and optionally mins),
//! packed panel by panel so that a panel is one contiguous stream, dequantized in registers by the
//! kernels.
//!
//! Layout of one panel (16 output columns, `k` inputs, groups of `group` inputs), 64-byte blocks:
//!
//! ```text
//! group 0: [scale line: 16 f32] [min line: 16 f32, when the layer has mins] [group × 16 i8 codes]
//! group 1: …
//! ```
//!
//! A code line (the 16 columns' codes of one input) is 16 bytes, so a 64-byte block holds four
//! consecutive inputs. Columns past `n` have scale 0, min 0 and code 0.

use crate::{Error, NR, Result, check};
use rayon::prelude::*;

/// A weight given as integer codes with per-group scales and, optionally, mins.
///
/// For output `j` and input `i` (`n` outputs × `k` inputs, groups of `group` inputs along `k`):
///
/// ```text
/// w[j][i] = (q[j*k + i] as f32) * scales[j*(k/group) + i/group] - mins[j*(k/group) + i/group]
/// ```
///
/// computed in exactly that order in f32: a multiply, then a subtract (no fused multiply-add);
/// without mins there is no subtraction. [`PackedLinear::from_quantized`] keeps the codes and
/// scales as they are and its products are bitwise equal to those of
/// [`PackedLinear::from_rows`] on the weight this formula gives.
///
/// [`PackedLinear::from_quantized`]: crate::PackedLinear::from_quantized
/// [`PackedLinear::from_rows`]: crate::PackedLinear::from_rows
#[derive(Debug, Clone, Copy)]
pub struct QuantRows<'a> {
    /// `n × k` codes, row-major (output-major, as a checkpoint stores `W`).
    pub q: &'a [i8],
    /// `n × (k / group)` scales, row-major.
    pub scales: &'a [f32],
    /// `n × (k / group)` values subtracted after scaling, when the format has them.
    pub mins: Option<&'a [f32]>,
    /// Inputs per scale: 16 or 32.
    pub group: usize,
}

/// A 64-byte, 64-aligned unit of quantized panel storage: one line of 16 f32 (scales or mins) or
/// four lines of 16 `i8` codes.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Block(pub(crate) [u8; 64]);

impl Default for Block {
    fn default() -> Self {
        Self([0; 64])
    }
}

impl Block {
    /// The block read as a line of 16 f32 (a scale or min line).
    pub(crate) fn floats(&self) -> [f32; NR] {
        let mut v = [0f32; NR];
        for (v, b) in v.iter_mut().zip(self.0.chunks_exact(4)) {
            *v = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        v
    }

    fn set_float(&mut self, c: usize, v: f32) {
        self.0[4 * c..4 * c + 4].copy_from_slice(&v.to_ne_bytes());
    }
}

/// How a quantized layer's panels are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Format {
    /// Inputs per scale (16 or 32).
    pub(crate) group: usize,
    /// Whether each group has a min line.
    pub(crate) mins: bool,
}

impl Format {
    /// Blocks before a group's codes: its scale line, and its min line.
    pub(crate) fn header(self) -> usize {
        1 + usize::from(self.mins)
    }

    /// Blocks per group: the header, then `group` code lines of 16 bytes.
    pub(crate) fn blocks_per_group(self) -> usize {
        self.header() + self.group / 4
    }

    /// Blocks per panel of a layer with `k` inputs.
    pub(crate) fn panel_blocks(self, k: usize) -> usize {
        k / self.group * self.blocks_per_group()
    }

    /// Dequantizes column `c` of one panel (its blocks, all `k` inputs) into `out` (`k` values).
    pub(crate) fn column(self, panel: &[Block], c: usize, out: &mut [f32]) {
        let (group, header) = (self.group, self.header());
        for (blocks, out) in panel
            .chunks_exact(self.blocks_per_group())
            .zip(out.chunks_exact_mut(group))
        {
            let s = blocks[0].floats()[c];
            let m = self.mins.then(|| blocks[1].floats()[c]);
            for (i, o) in out.iter_mut().enumerate() {
                let q = blocks[header + i / 4].0[(i % 4) * NR + c] as i8;
                let v = q as f32 * s;
                *o = match m {
                    Some(m) => v - m,
                    None => v,
                };
            }
        }
    }
}

/// Checks a quantized weight against its shapes and returns its format.
pub(crate) fn validate(w: &QuantRows<'_>, n: usize, k: usize) -> Result<Format> {
    let group = w.group;
    if !matches!(group, 16 | 32) || !k.is_multiple_of(group) {
        return Err(Error::Group { group, k });
    }
    check("codes", w.q.len(), n * k)?;
    check("scales", w.scales.len(), n * (k / group))?;
    if let Some(m) = w.mins {
        check("mins", m.len(), n * (k / group))?;
    }
    Ok(Format {
        group,
        mins: w.mins.is_some(),
    })
}

/// Packs a validated quantized weight into panels (in parallel).
pub(crate) fn pack(w: &QuantRows<'_>, f: Format, n: usize, k: usize) -> Vec<Block> {
    let (group, header) = (f.group, f.header());
    let groups = k / group;
    let per_panel = f.panel_blocks(k);
    let mut blocks = vec![Block::default(); n.div_ceil(NR) * per_panel];
    blocks
        .par_chunks_mut(per_panel.max(1))
        .enumerate()
        .for_each(|(p, panel)| {
            for c in 0..NR.min(n - p * NR) {
                let j = p * NR + c;
                let codes = &w.q[j * k..(j + 1) * k];
                for (g, gb) in panel.chunks_exact_mut(f.blocks_per_group()).enumerate() {
                    gb[0].set_float(c, w.scales[j * groups + g]);
                    if let Some(m) = w.mins {
                        gb[1].set_float(c, m[j * groups + g]);
                    }
                    for (i, &q) in codes[g * group..(g + 1) * group].iter().enumerate() {
                        gb[header + i / 4].0[(i % 4) * NR + c] = q as u8;
                    }
                }
            }
        });
    blocks
}

#[cfg(test)]
mod tests {
    use crate::tests::values;
    use crate::{Error, PackedLinear, QuantRows};

    /// A quantized weight: codes over the whole i8 range, scales and mins of varied magnitude
    /// and sign (so that rounding differs between the multiply and the subtract).
    struct Quant {
        q: Vec<i8>,
        scales: Vec<f32>,
        mins: Option<Vec<f32>>,
        group: usize,
    }

    impl Quant {
        fn new(n: usize, k: usize, group: usize, mins: bool, seed: u32) -> Self {
            let q = values(n * k, seed)
                .iter()
                .map(|v| (v * 255.0).round().clamp(-128.0, 127.0) as i8)
                .collect();
            let g = n * (k / group);
            let scales = values(g, seed + 1)
                .iter()
                .enumerate()
                .map(|(i, v)| v * [1e-3, 0.1, 3.0][i % 3])
                .collect();
            let mins = mins.then(|| values(g, seed + 2).iter().map(|v| v * 0.37).collect());
            Self {
                q,
                scales,
                mins,
                group,
            }
        }

        fn rows(&self) -> QuantRows<'_> {
            QuantRows {
                q: &self.q,
                scales: &self.scales,
                mins: self.mins.as_deref(),
                group: self.group,
            }
        }

        /// The weight by the documented formula, `n × k` row-major.
        fn dequantized(&self, n: usize, k: usize) -> Vec<f32> {
            let groups = k / self.group;
            let mut w = vec![0f32; n * k];
            for j in 0..n {
                for i in 0..k {
                    let g = j * groups + i / self.group;
                    let v = self.q[j * k + i] as f32 * self.scales[g];
                    w[j * k + i] = match &self.mins {
                        Some(m) => v - m[g],
                        None => v,
                    };
                }
            }
            w
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn quantized_products_are_bitwise_those_of_the_dequantized_weight() {
        for &n in &[16, 40, 1000] {
            for &k in &[64, 640] {
                for &group in &[16, 32] {
                    for mins in [false, true] {
                        for bias in [false, true] {
                            let w = Quant::new(n, k, group, mins, (n + k + group) as u32);
                            let b = bias.then(|| values(n, 99));
                            let deq = w.dequantized(n, k);
                            let qp =
                                PackedLinear::from_quantized(w.rows(), n, k, b.clone()).unwrap();
                            let fp = PackedLinear::from_rows(&deq, n, k, b).unwrap();
                            assert!(qp.is_quantized() && !fp.is_quantized());
                            for &m in &[1, 2, 7, 16, 17, 63, 64, 100, 300] {
                                let x = values(m * k, m as u32);
                                let (mut yq, mut yf) = (vec![0f32; m * n], vec![0f32; m * n]);
                                qp.matmul(&x, m, &mut yq).unwrap();
                                fp.matmul(&x, m, &mut yf).unwrap();
                                assert!(
                                    bits(&yq) == bits(&yf),
                                    "n{n} k{k} group{group} mins {mins} bias {bias} m{m}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn cache_blocked_quantized_products_match_too() {
        // 500 × 640 inputs (1.25 MiB) run in blocks of 256 inputs (256, 256, 128) and of rows.
        let (m, n, k) = (500, 72, 640);
        for (group, mins) in [(16, false), (32, true)] {
            let w = Quant::new(n, k, group, mins, 7);
            let b = Some(values(n, 8));
            let qp = PackedLinear::from_quantized(w.rows(), n, k, b.clone()).unwrap();
            let fp = PackedLinear::from_rows(&w.dequantized(n, k), n, k, b).unwrap();
            let x = values(m * k, 9);
            let (mut yq, mut yf) = (vec![0f32; m * n], vec![1f32; m * n]);
            qp.matmul(&x, m, &mut yq).unwrap();
            fp.matmul(&x, m, &mut yf).unwrap();
            assert!(bits(&yq) == bits(&yf), "group {group}");
        }
    }

    #[test]
    fn every_kernel_agrees_bitwise_on_quantized_panels() {
        use crate::{OutPtr, pack_rows};
        let (n, k) = (40, 96);
        for (group, mins) in [(16, false), (16, true), (32, false), (32, true)] {
            let w = Quant::new(n, k, group, mins, 3);
            let b = Some(values(n, 4));
            let qp = PackedLinear::from_quantized(w.rows(), n, k, b.clone()).unwrap();
            let fp = PackedLinear::from_rows(&w.dequantized(n, k), n, k, b).unwrap();
            for isa in crate::tests::isas() {
                for m in [1, 5, 13, 16, 29] {
                    let x = values(m * k, 5);
                    let a = pack_rows(&x, m, k, isa.mr());
                    let mut outs = [vec![f32::NAN; m * n], vec![f32::NAN; m * n]];
                    for (layer, out) in [&qp, &fp].into_iter().zip(outs.iter_mut()) {
                        let ptr = OutPtr(out.as_mut_ptr());
                        let panels = n.div_ceil(crate::NR);
                        let mut p = 0;
                        while p < panels {
                            let width = if isa.pairs() && p + 1 < panels { 2 } else { 1 };
                            layer.panels(isa, &a, 0..m, 0..k, p..p + width, ptr);
                            p += width;
                        }
                    }
                    assert!(
                        bits(&outs[0]) == bits(&outs[1]),
                        "{isa:?} group {group} mins {mins} m{m}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_transposes_and_sizes_of_quantized_layers() {
        let (n, k) = (40, 64);
        for (group, mins) in [(16, true), (32, false)] {
            let w = Quant::new(n, k, group, mins, 11);
            let deq = w.dequantized(n, k);
            let qp = PackedLinear::from_quantized(w.rows(), n, k, None).unwrap();
            let fp = PackedLinear::from_rows(&deq, n, k, None).unwrap();
            assert_eq!((qp.in_dim(), qp.out_dim(), qp.bias()), (k, n, None));
            let mut row = vec![0f32; k];
            for j in 0..n {
                qp.row(j, &mut row).unwrap();
                assert!(bits(&row) == bits(&deq[j * k..(j + 1) * k]), "row {j}");
            }
            assert_eq!(
                qp.row(n, &mut row).unwrap_err(),
                Error::Row { index: n, rows: n }
            );
            assert!(bits(&qp.to_transposed()) == bits(&fp.to_transposed()));
            // 3 panels × k/group groups × (header + group/4 blocks of 64 bytes).
            let per_group = 64 * (1 + usize::from(mins)) + group * 16;
            assert_eq!(qp.resident_bytes(), 3 * (k / group) * per_group);
            assert_eq!(fp.resident_bytes(), 3 * k * 64);
            let with_bias = PackedLinear::from_quantized(w.rows(), n, k, Some(vec![0.0; n]));
            assert_eq!(
                with_bias.unwrap().resident_bytes(),
                qp.resident_bytes() + 4 * n
            );
        }
    }

    #[test]
    fn quantized_layers_concatenate_with_their_like_only() {
        let k = 64;
        let (wa, wb, wc) = (
            Quant::new(32, k, 32, true, 21),
            Quant::new(20, k, 32, true, 22),
            Quant::new(16, k, 16, true, 23),
        );
        let a = PackedLinear::from_quantized(wa.rows(), 32, k, Some(values(32, 1))).unwrap();
        let b = PackedLinear::from_quantized(wb.rows(), 20, k, None).unwrap();
        let c = PackedLinear::from_quantized(wc.rows(), 16, k, None).unwrap();
        let nomin = Quant::new(16, k, 32, false, 24);
        let d = PackedLinear::from_quantized(nomin.rows(), 16, k, None).unwrap();
        let f = PackedLinear::from_rows(&wa.dequantized(32, k), 32, k, None).unwrap();
        assert!(
            PackedLinear::concat(&[&b, &a]).is_none(),
            "20 outputs first"
        );
        assert!(PackedLinear::concat(&[&a, &c]).is_none(), "groups differ");
        assert!(PackedLinear::concat(&[&a, &d]).is_none(), "mins differ");
        assert!(
            PackedLinear::concat(&[&a, &f]).is_none(),
            "quantized with f32"
        );
        assert!(
            PackedLinear::concat(&[&f, &a]).is_none(),
            "f32 with quantized"
        );
        let ab = PackedLinear::concat(&[&a, &b]).unwrap();
        assert!(ab.is_quantized());
        // The same stack of dequantized f32 layers gives the same bits.
        let fa = PackedLinear::from_rows(&wa.dequantized(32, k), 32, k, a.bias().map(Vec::from));
        let fb = PackedLinear::from_rows(&wb.dequantized(20, k), 20, k, None).unwrap();
        let fab = PackedLinear::concat(&[&fa.unwrap(), &fb]).unwrap();
        for m in [1, 3, 16] {
            let x = values(m * k, 9);
            let (mut y, mut yf) = (vec![0f32; m * 52], vec![0f32; m * 52]);
            ab.matmul(&x, m, &mut y).unwrap();
            fab.matmul(&x, m, &mut yf).unwrap();
            assert!(bits(&y) == bits(&yf), "m{m}");
        }
        let mut row = vec![0f32; k];
        ab.row(40, &mut row).unwrap();
        assert!(bits(&row) == bits(&wb.dequantized(20, k)[8 * k..9 * k]));
        assert!(bits(&ab.to_transposed()) == bits(&fab.to_transposed()));
    }

    #[test]
    fn malformed_quantized_weights_are_errors() {
        let size = |what, found, expected| Error::Size {
            what,
            found,
            expected,
        };
        let (n, k) = (3, 64);
        let w = Quant::new(n, k, 32, true, 31);
        let mut r = w.rows();
        let build = |r: QuantRows<'_>, k, bias| PackedLinear::from_quantized(r, n, k, bias);
        for group in [0, 8, 24, 64] {
            r.group = group;
            assert_eq!(build(r, k, None).unwrap_err(), Error::Group { group, k });
        }
        r.group = 32;
        assert_eq!(
            build(r, 48, None).unwrap_err(),
            Error::Group { group: 32, k: 48 }
        );
        assert_eq!(
            build(r, k, Some(vec![0.0; 2])).unwrap_err(),
            size("bias", 2, 3)
        );
        assert_eq!(
            build(QuantRows { q: &w.q[1..], ..r }, k, None).unwrap_err(),
            size("codes", n * k - 1, n * k)
        );
        assert_eq!(
            build(
                QuantRows {
                    scales: &w.scales[1..],
                    ..r
                },
                k,
                None
            )
            .unwrap_err(),
            size("scales", 5, 6)
        );
        let short = &w.mins.as_deref().unwrap()[..4];
        assert_eq!(
            build(
                QuantRows {
                    mins: Some(short),
                    ..r
                },
                k,
                None
            )
            .unwrap_err(),
            size("mins", 4, 6)
        );
        // Group 16 needs twice the scales.
        assert_eq!(
            build(QuantRows { group: 16, ..r }, k, None).unwrap_err(),
            size("scales", 6, 12)
        );
        let empty = PackedLinear::from_quantized(
            QuantRows {
                q: &[],
                scales: &[],
                mins: None,
                group: 16,
            },
            0,
            k,
            None,
        )
        .unwrap();
        assert_eq!((empty.out_dim(), empty.resident_bytes()), (0, 0));
        assert!(empty.matmul(&values(k, 1), 1, &mut []).is_ok());
    }
}
