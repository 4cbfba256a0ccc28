//! Fused forward + backward ops for training on the CPU in f32 (added for lora-train's speed).
//!
//! candle's autograd turns every element-wise op of a composed graph into a separate,
//! single-threaded pass that allocates its output, and its backward into several more; its
//! matmul backward always computes both operands' gradients. Here the training hot spots are
//! one candle custom op each, with a hand-written backward, parallel over rows (rayon) and with
//! the products straight into `gemm` (the kernel candle's CPU matmul runs) at the strides they
//! need, so no transposed copy or gradient sum is ever materialised:
//! - [`rms_norm`]: `x̂ · w` with a frozen `w` (the base norms are frozen in LoRA training; the
//!   `(1 + w)` form is folded into `w` at load time); backward gives `dx` only.
//! - [`gated`]: `act(gate) · up` (SiLU, tanh-GELU); backward gives `d_gate` and `d_up` in one pass.
//! - [`attention`]: rotary embedding of q and k, `softmax(q kᵀ · scale + mask) v` over grouped
//!   query heads, parallel over (batch, head), reading q/k/v in the projections' `[b, t, heads,
//!   head_dim]` layout and writing `[b, t, heads · head_dim]` (no transposed copies). It keeps
//!   only each query row's log-sum-exp: the backward recomputes the probabilities (as flash
//!   attention does), un-rotates (rotation by −θ) and sums the grouped heads' key/value
//!   gradients. Softcapped scores (Gemma-2) and a KV cache stay on the composed graph.
//! - [`linear`]: the frozen base product `x Wᵀ + b` of a linear layer, with its LoRA path
//!   `scale · (x Aᵀ) Bᵀ` when it has one; backward gives `dx = g W + scale · (g B) A`, `dA` and
//!   `dB` (never the frozen weight's gradient).
//!
//! Every entry point returns `None` where it does not apply (another dtype or device; for
//! [`linear`] the caller also keeps 4-bit bases and LoRA dropout on the composed path), and
//! the caller then runs candle's composed graph, so numerics elsewhere are unchanged.
//! Inference never comes here. Each op is tested against candle's composed graph of the same
//! function (forward and every input's gradient), and the training parity tests against PEFT
//! run through them.

use crate::error::Result;
use crate::ops::Activation;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

type CResult<T> = candle_core::Result<T>;

/// Whether a tensor is f32 on the CPU (what the fused ops handle).
fn fits(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && t.device().is_cpu()
}

/// The contiguous f32 data of a CPU storage.
fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: expected f32, got {:?}", s.dtype())
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor")
    };
    Ok(&v[a..b])
}

/// Runs `f` on a tensor's contiguous f32 CPU data (copying it first if it is strided).
fn with_data<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> CResult<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        candle_core::Storage::Cpu(c) => Ok(f(cpu_slice(c, l, op)?)),
        _ => candle_core::bail!("{op}: CPU only"),
    }
}

/// A tensor's contiguous f32 CPU data, copied out.
fn to_vec(t: &Tensor, op: &str) -> CResult<Vec<f32>> {
    with_data(t, op, |d| d.to_vec())
}

/// The f32 data of a CPU storage (see `borrow_f32!`).
fn storage_f32<'a>(s: &'a candle_core::Storage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    match s {
        candle_core::Storage::Cpu(c) => cpu_slice(c, l, op),
        _ => candle_core::bail!("{op}: CPU only"),
    }
}

/// `borrow_f32!(t, op => held, guard, data)`: `data` is the contiguous f32 CPU data of tensor
/// `t` (copied only if strided), borrowed for the rest of the scope without copying.
macro_rules! borrow_f32 {
    ($t:expr, $op:expr => $held:ident, $guard:ident, $data:ident) => {
        let $held = $t.contiguous()?;
        let $guard = $held.storage_and_layout();
        let $data = storage_f32(&$guard.0, $guard.1, $op)?;
    };
}

/// A new f32 CPU tensor.
fn tensor(v: Vec<f32>, shape: &[usize]) -> CResult<Tensor> {
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

/// The rayon parallelism for one large product: candle's thread count.
fn par() -> Parallelism {
    let n = candle_core::utils::get_num_threads();
    if n > 1 {
        Parallelism::Rayon(n)
    } else {
        Parallelism::None
    }
}

/// A strided view of an f32 matrix: element `(i, j)` is `data[i · rs + j · cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with row stride `rs`.
    fn rows(data: &'a [f32], rs: usize) -> Self {
        Self { data, rs, cs: 1 }
    }
    /// The transpose of a row-major matrix with row stride `rs`.
    fn cols(data: &'a [f32], rs: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: rs,
        }
    }
    /// Whether an `m × n` view stays inside the data.
    fn holds(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

/// `dst = (acc ? dst : 0) + scale · lhs · rhs` for an `m × k` `lhs`, a `k × n` `rhs` and a
/// row-major `dst` with row stride `dst_rs`, by `gemm`. Panics (a bug, not an input error) if a
/// view reaches outside its slice.
#[allow(clippy::too_many_arguments)]
fn mm(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    scale: f32,
    parallelism: Parallelism,
) {
    // SAFETY: `dst` is borrowed mutably for the call, so it is valid and unaliased.
    unsafe {
        mm_raw(
            dims,
            (dst.as_mut_ptr(), dst.len()),
            dst_rs,
            acc,
            lhs,
            rhs,
            scale,
            parallelism,
        )
    }
}

/// [`mm`] into a raw destination `(pointer, elements available from it)`.
///
/// # Safety
/// The `len` elements from the pointer must be valid for writes, and no other thread may touch
/// the `m × n` elements of the destination view during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn mm_raw(
    (m, n, k): (usize, usize, usize),
    (dst, len): (*mut f32, usize),
    dst_rs: usize,
    acc: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    scale: f32,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        lhs.holds(m, k) && rhs.holds(k, n) && (m - 1) * dst_rs + n <= len,
        "fused: product views out of bounds"
    );
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in bounds (asserted above), exclusive per the contract.
                    unsafe { *dst.add(i * dst_rs + j) = 0.0 };
                }
            }
        }
        return;
    }
    // SAFETY: the assertion keeps every element gemm reads or writes inside the slices and the
    // destination (all strides non-negative); exclusivity is the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            acc,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0f32,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A raw pointer into an output buffer that parallel tasks write disjoint parts of.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32, usize);
// SAFETY: only used to write disjoint regions from parallel tasks (each use says why).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn new(v: &mut [f32]) -> Self {
        Self(v.as_mut_ptr(), v.len())
    }
    /// `(pointer to element off, elements from there)`, for a strided view whose elements
    /// the caller writes exclusively.
    fn at(&self, off: usize) -> (*mut f32, usize) {
        assert!(off <= self.1, "fused: output offset out of bounds");
        // SAFETY: `off` is within the buffer (checked).
        (unsafe { self.0.add(off) }, self.1 - off)
    }

    /// The `len` elements from `off`.
    ///
    /// # Safety
    /// No two live slices obtained from the same buffer may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        assert!(off + len <= self.1, "fused: output slice out of bounds");
        // SAFETY: in bounds (checked); disjointness is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), len) }
    }
}

/// Rows per parallel chunk so that every thread gets a few chunks.
fn rows_per_chunk(rows: usize) -> usize {
    let threads = candle_core::utils::get_num_threads().max(1);
    rows.div_ceil(4 * threads).max(1)
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

struct RmsNormOp {
    w: Arc<Vec<f32>>,
    eps: f64,
}

/// `1 / √(mean(x²) + eps)` of one row (sum in f64).
fn rstd(row: &[f32], eps: f64) -> f32 {
    let ss: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
    (1.0 / (ss / row.len().max(1) as f64 + eps).sqrt()) as f32
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        let d = self.w.len();
        let mut y = vec![0f32; x.len()];
        let per = rows_per_chunk(x.len() / d.max(1)) * d;
        y.par_chunks_mut(per.max(1))
            .zip(x.par_chunks(per.max(1)))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                    let r = rstd(xr, self.eps);
                    for ((o, &v), &w) in yr.iter_mut().zip(xr).zip(self.w.iter()) {
                        *o = v * r * w;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> CResult<Option<Tensor>> {
        let d = self.w.len();
        borrow_f32!(x, self.name() => xh, xg, xs);
        borrow_f32!(g, self.name() => gh, gg, gs);
        let mut dx = vec![0f32; xs.len()];
        {
            let per = rows_per_chunk(xs.len() / d.max(1)) * d;
            dx.par_chunks_mut(per.max(1))
                .zip(xs.par_chunks(per.max(1)).zip(gs.par_chunks(per.max(1))))
                .for_each(|(dc, (xc, gc))| {
                    for ((dr, xr), gr) in dc.chunks_mut(d).zip(xc.chunks(d)).zip(gc.chunks(d)) {
                        let r = rstd(xr, self.eps);
                        // dx = r · (g w − x · r² · Σ(g w x) / d)
                        let dot: f64 = gr
                            .iter()
                            .zip(xr)
                            .zip(self.w.iter())
                            .map(|((&g, &x), &w)| (g * w) as f64 * x as f64)
                            .sum();
                        let c = (dot / d as f64) as f32 * r * r;
                        for (((o, &g), &x), &w) in dr.iter_mut().zip(gr).zip(xr).zip(self.w.iter())
                        {
                            *o = r * (g * w - x * c);
                        }
                    }
                });
        }
        Ok(Some(tensor(dx, x.dims())?))
    }
}

/// RMSNorm `x / √(mean(x²) + eps) · w` over the last dimension with a frozen `w` (its gradient
/// is not computed), as one op. `None` unless `x` and `w` are f32 on the CPU.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !fits(x) || !fits(w) || w.rank() != 1 || x.dim(candle_core::D::Minus1)? != w.dim(0)? {
        return Ok(None);
    }
    let op = RmsNormOp {
        w: Arc::new(to_vec(w, "fused-rms-norm")?),
        eps,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

// ---------------------------------------------------------------------------------------------
// Gated activation

const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;

/// `eˣ` within 2 ulp for x in [−87.3, 88.7] (clamped there: about 1.2e-38 below, 3.3e38 above),
/// without calls, so that loops over it vectorise (libm's `expf` is a call per element):
/// `x = n·ln 2 + r` with |r| ≤ ln 2 / 2 (ln 2 split in two for the reduction), a degree-6
/// polynomial for `eʳ` and `2ⁿ` put into the exponent bits.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by adding and subtracting 1.5 · 2²³ (`round` is a libm call on the
    // baseline x86-64 target, which stops vectorisation).
    const SHIFT: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients 1/k! up to k = 6 (|r| ≤ 0.35: the next term is under 1e-8).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ for n in −126..=128 (the clamp keeps n there); 2¹²⁸ as 2¹²⁷ · 2.
    let n = n as i32;
    let two_n = f32::from_bits(((n + 127).min(254) as u32) << 23);
    p * two_n * if n > 127 { 2.0 } else { 1.0 }
}

/// `tanh(x)` from [`fast_exp`]: `sign(x) · (1 − 2 / (e^{2|x|} + 1))`, absolute error under
/// 2e-7 (relative error larger only where |x| < 1e-3, where the GELU and SiLU forms that use it
/// add it to 1).
#[inline(always)]
fn fast_tanh(x: f32) -> f32 {
    let e = fast_exp(2.0 * x.abs());
    (1.0 - 2.0 / (e + 1.0)).copysign(x)
}

/// `(act(g), act'(g))`.
#[inline(always)]
fn act_and_grad(act: Activation, g: f32) -> (f32, f32) {
    match act {
        Activation::Silu => {
            let s = 1.0 / (1.0 + fast_exp(-g));
            (g * s, s * (1.0 + g * (1.0 - s)))
        }
        // tanh-GELU, as candle's `gelu`.
        _ => {
            let inner = SQRT_TWO_OVER_PI * g * (1.0 + 0.044715 * g * g);
            let t = fast_tanh(inner);
            let d = 0.5 * (1.0 + t)
                + 0.5 * g * (1.0 - t * t) * SQRT_TWO_OVER_PI * (1.0 + 3.0 * 0.044715 * g * g);
            (0.5 * g * (1.0 + t), d)
        }
    }
}

struct GatedOp {
    act: Activation,
}

impl CustomOp2 for GatedOp {
    fn name(&self) -> &'static str {
        "fused-gated-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let g = cpu_slice(s1, l1, self.name())?;
        let u = cpu_slice(s2, l2, self.name())?;
        if g.len() != u.len() {
            candle_core::bail!("fused-gated-act: gate and up differ in size");
        }
        let mut h = vec![0f32; g.len()];
        let per = 16 * 1024;
        h.par_chunks_mut(per)
            .zip(g.par_chunks(per).zip(u.par_chunks(per)))
            .for_each(|(hc, (gc, uc))| {
                // One loop per activation, so that each vectorises.
                let mut run = |act: Activation| {
                    for ((o, &g), &u) in hc.iter_mut().zip(gc).zip(uc) {
                        *o = act_and_grad(act, g).0 * u;
                    }
                };
                match self.act {
                    Activation::Silu => run(Activation::Silu),
                    _ => run(Activation::GeluTanh),
                }
            });
        Ok((CpuStorage::F32(h), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _h: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        borrow_f32!(gate, self.name() => gh_, gg_, gs);
        borrow_f32!(up, self.name() => uh_, ug_, us);
        borrow_f32!(grad, self.name() => hh_, hg_, hs);
        let mut dg = vec![0f32; gs.len()];
        let mut du = vec![0f32; gs.len()];
        {
            let per = 16 * 1024;
            dg.par_chunks_mut(per)
                .zip(du.par_chunks_mut(per))
                .zip(
                    gs.par_chunks(per)
                        .zip(us.par_chunks(per))
                        .zip(hs.par_chunks(per)),
                )
                .for_each(|((dgc, duc), ((gc, uc), hc))| {
                    for ((((dg, du), &g), &u), &h) in
                        dgc.iter_mut().zip(duc.iter_mut()).zip(gc).zip(uc).zip(hc)
                    {
                        let (a, da) = act_and_grad(self.act, g);
                        *dg = h * u * da;
                        *du = h * a;
                    }
                });
        }
        Ok((Some(tensor(dg, gate.dims())?), Some(tensor(du, up.dims())?)))
    }
}

/// `act(gate) · up` as one op (SiLU and tanh-GELU); `None` for other activations, dtypes or
/// devices, or differing shapes.
pub(crate) fn gated(act: Activation, gate: &Tensor, up: &Tensor) -> Result<Option<Tensor>> {
    if act == Activation::GeluErf || !fits(gate) || !fits(up) || gate.dims() != up.dims() {
        return Ok(None);
    }
    Ok(Some(
        gate.contiguous()?
            .apply_op2(&up.contiguous()?, GatedOp { act })?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Inference attention over a KV cache

/// `a · b` with 16 partial sums (a strict left-to-right f32 sum does not vectorise).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Inference attention in f32 on the CPU, one pass per (row, query head): `q` `[b, nh, t, hd]`
/// (rotated; contiguous), the cached keys and values `k`, `v` `[b, nkv, T, hd]` (rotated keys;
/// each head's `T × hd` contiguous, as the cache's narrowed buffers are), the additive `mask`
/// `[b, 1, 1, t, T]` when given; softmax(q·kᵀ · scale (soft-capped when given) + mask) · v,
/// returned as `[b, t, nh · hd]`, the layout the output projection reads. Grouped-query heads
/// read their KV head in place. Replaces the composed graph's transposes, two matmuls, mask,
/// softmax and reshapes (a dozen small ops per layer and token when decoding). `None` for
/// other dtypes, devices or layouts.
pub(crate) fn cached_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    softcap: Option<f64>,
) -> Result<Option<Tensor>> {
    if !fits(q) || !fits(k) || !fits(v) || mask.is_some_and(|m| !fits(m)) {
        return Ok(None);
    }
    let (b, nh, t, hd) = q.dims4()?;
    let (kb, nkv, tk, khd) = k.dims4()?;
    if kb != b || khd != hd || v.dims() != k.dims() || nkv == 0 || nh % nkv != 0 {
        return Ok(None);
    }
    let mask = match mask {
        Some(m) if m.dims() == [b, 1, 1, t, tk] => Some(m.contiguous()?),
        Some(_) => return Ok(None),
        None => None,
    };
    let q = q.contiguous()?;
    let ((qs, ql), (ks, kl), (vs, vl)) = (
        q.storage_and_layout(),
        k.storage_and_layout(),
        v.storage_and_layout(),
    );
    // Keys and values: each (row, head) block `T × hd` with unit strides inside it.
    let head_strides = |l: &Layout| -> Option<(usize, usize, usize)> {
        let st = l.stride();
        (st[3] == 1 && st[2] == hd).then_some((l.start_offset(), st[0], st[1]))
    };
    let (Some(kst), Some(vst)) = (head_strides(kl), head_strides(vl)) else {
        return Ok(None);
    };
    let (Some((qa, _)), candle_core::Storage::Cpu(CpuStorage::F32(qd))) =
        (ql.contiguous_offsets(), &*qs)
    else {
        return Ok(None);
    };
    let (
        candle_core::Storage::Cpu(CpuStorage::F32(kd)),
        candle_core::Storage::Cpu(CpuStorage::F32(vd)),
    ) = (&*ks, &*vs)
    else {
        return Ok(None);
    };
    let mask_data = match &mask {
        Some(m) => Some(m.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let rep = nh / nkv;
    let scale = scale as f32;
    let softcap = softcap.map(|c| c as f32);
    // One task per (row, query head): its `t` output rows of `hd` values.
    let task = |bh: usize| -> Vec<f32> {
        let (bi, h) = (bh / nh, bh % nh);
        let kh = h / rep;
        let kbase = kst.0 + bi * kst.1 + kh * kst.2;
        let vbase = vst.0 + bi * vst.1 + kh * vst.2;
        let keys = &kd[kbase..kbase + tk * hd];
        let vals = &vd[vbase..vbase + tk * hd];
        let mut scores = vec![0f32; tk];
        let mut rows = vec![0f32; t * hd];
        for (qi, acc) in rows.chunks_mut(hd).enumerate() {
            let qrow = &qd[qa + ((bi * nh + h) * t + qi) * hd..][..hd];
            for (j, sc) in scores.iter_mut().enumerate() {
                let krow = &keys[j * hd..(j + 1) * hd];
                let dot = dot(qrow, krow);
                let mut x = dot * scale;
                if let Some(c) = softcap {
                    x = c * (x / c).tanh();
                }
                if let Some(m) = &mask_data {
                    x += m[(bi * t + qi) * tk + j];
                }
                *sc = x;
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for sc in scores.iter_mut() {
                *sc = if max == f32::NEG_INFINITY {
                    0.0
                } else {
                    (*sc - max).exp()
                };
                sum += *sc;
            }
            for (j, &p) in scores.iter().enumerate() {
                if p != 0.0 {
                    let p = p / sum;
                    for (a, &x) in acc.iter_mut().zip(&vals[j * hd..(j + 1) * hd]) {
                        *a += p * x;
                    }
                }
            }
        }
        rows
    };
    let work = b * nh * t * tk * hd;
    let parts: Vec<Vec<f32>> = if work < (1 << 20) {
        (0..b * nh).map(task).collect()
    } else {
        (0..b * nh).into_par_iter().map(task).collect()
    };
    // `[b, t, nh, hd]`: part (bi, h) row qi goes to cell (bi, qi, h).
    let mut out = vec![0f32; b * t * nh * hd];
    for (bh, part) in parts.iter().enumerate() {
        let (bi, h) = (bh / nh, bh % nh);
        for (qi, row) in part.chunks(hd).enumerate() {
            let at = ((bi * t + qi) * nh + h) * hd;
            out[at..at + hd].copy_from_slice(row);
        }
    }
    drop((qs, ks, vs));
    Ok(Some(Tensor::from_vec(out, (b, t, nh * hd), q.device())?))
}

// ---------------------------------------------------------------------------------------------
// Attention

/// The rotary tables `cos`, `sin` `[b, t, half]` (the first `2 · half` channels of a head
/// rotate), held as tensors (shared by every layer, never copied).
struct RopeTab {
    cos: Tensor,
    sin: Tensor,
    half: usize,
}

/// Rotates `x` (one head's channels at row `row = batch · t + position`) by the position's
/// angle (`inverse`: by its negative), times `scale`, into `out`. `cos`, `sin` are the tables'
/// data, `half` their last dimension.
#[allow(clippy::too_many_arguments)]
fn rotate(
    (cos, sin, half): (&[f32], &[f32], usize),
    row: usize,
    x: &[f32],
    out: &mut [f32],
    scale: f32,
    inverse: bool,
) {
    let h = half;
    let c = &cos[row * h..(row + 1) * h];
    let s = &sin[row * h..(row + 1) * h];
    for j in 0..h {
        let (x1, x2) = (x[j], x[j + h]);
        let (y1, y2) = if inverse {
            (x1 * c[j] + x2 * s[j], x2 * c[j] - x1 * s[j])
        } else {
            (x1 * c[j] - x2 * s[j], x2 * c[j] + x1 * s[j])
        };
        out[j] = y1 * scale;
        out[j + h] = y2 * scale;
    }
    for j in 2 * h..x.len() {
        out[j] = x[j] * scale;
    }
}

/// Dimensions of one attention call.
#[derive(Clone, Copy)]
struct AttnDims {
    b: usize,
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
}

/// The fused attention. The forward keeps only each query row's log-sum-exp `[b, nh, t]`; the
/// backward recomputes the rotations and the probabilities from the inputs (as flash attention
/// does), so the op holds no `t × t` buffer between forward and backward.
struct AttentionOp {
    dims: AttnDims,
    rope: Option<RopeTab>,
    /// The additive mask `[b, 1, 1, t, t]` (0 or −∞), shared with the caller.
    mask: Option<Tensor>,
    scale: f32,
    lse: Mutex<Option<Arc<Vec<f32>>>>,
}

/// The borrowed data of the rotary tables, when there are any.
type RopeData<'a> = Option<(&'a [f32], &'a [f32], usize)>;

impl AttentionOp {
    /// Rotated (and scaled) heads of `x` `[b, t, n, hd]` in head-major order `[b, n, t, hd]`.
    fn rotate_in(&self, rope: RopeData<'_>, x: &[f32], n: usize, scale: f32) -> Vec<f32> {
        let AttnDims { b, t, hd, .. } = self.dims;
        let mut out = vec![0f32; b * n * t * hd];
        out.par_chunks_mut(t * hd)
            .enumerate()
            .for_each(|(bh, dst)| {
                let (bi, h) = (bh / n, bh % n);
                for i in 0..t {
                    let src = &x[((bi * t + i) * n + h) * hd..][..hd];
                    let o = &mut dst[i * hd..(i + 1) * hd];
                    match rope {
                        Some(r) => rotate(r, bi * t + i, src, o, scale, false),
                        None => o.iter_mut().zip(src).for_each(|(o, &v)| *o = v * scale),
                    }
                }
            });
        out
    }

    /// The inverse of [`AttentionOp::rotate_in`] for gradients: head-major `[b, n, t, hd]` back
    /// to `[b, t, n, hd]`, rotated by −θ and times `scale`.
    fn rotate_out(&self, rope: RopeData<'_>, x: &[f32], n: usize, scale: f32) -> Vec<f32> {
        let AttnDims { b, t, hd, .. } = self.dims;
        let mut out = vec![0f32; b * t * n * hd];
        out.par_chunks_mut(n * hd)
            .enumerate()
            .for_each(|(row, dst)| {
                let (bi, i) = (row / t, row % t);
                for h in 0..n {
                    let src = &x[((bi * n + h) * t + i) * hd..][..hd];
                    let o = &mut dst[h * hd..(h + 1) * hd];
                    match rope {
                        Some(r) => rotate(r, row, src, o, scale, true),
                        None => o.iter_mut().zip(src).for_each(|(o, &v)| *o = v * scale),
                    }
                }
            });
        out
    }

    /// The masked scores `qr_h kr_gᵀ + mask` of batch `bi` into `s` `[t, t]`.
    fn scores(&self, mask: Option<&[f32]>, bi: usize, qh: &[f32], kg: &[f32], s: &mut [f32]) {
        let AttnDims { t, hd, .. } = self.dims;
        mm(
            (t, t, hd),
            s,
            t,
            false,
            Mat::rows(qh, hd),
            Mat::cols(kg, hd),
            1.0,
            Parallelism::None,
        );
        if let Some(m) = mask {
            let mb = &m[bi * t * t..(bi + 1) * t * t];
            s.iter_mut().zip(mb).for_each(|(s, &m)| *s += m);
        }
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let AttnDims { b, t, nh, nkv, hd } = self.dims;
        let q = cpu_slice(sq, lq, self.name())?;
        let k = cpu_slice(sk, lk, self.name())?;
        let v = cpu_slice(sv, lv, self.name())?;
        if q.len() != b * t * nh * hd || k.len() != b * t * nkv * hd || v.len() != k.len() {
            candle_core::bail!("fused-attention: q/k/v sizes do not match the dimensions");
        }
        let empty = Tensor::zeros(0, DType::F32, &candle_core::Device::Cpu)?;
        let rope_t = self.rope.as_ref();
        borrow_f32!(rope_t.map_or(&empty, |r| &r.cos), self.name() => ch_, cg_, cos);
        borrow_f32!(rope_t.map_or(&empty, |r| &r.sin), self.name() => sh_, sg_, sin);
        borrow_f32!(self.mask.as_ref().unwrap_or(&empty), self.name() => mh_, mg_, mask);
        let rope = rope_t.map(|r| (cos, sin, r.half));
        let mask = self.mask.as_ref().map(|_| mask);
        let rep = nh / nkv;
        let qr = self.rotate_in(rope, q, nh, self.scale);
        let kr = self.rotate_in(rope, k, nkv, 1.0);
        let mut lse = vec![0f32; b * nh * t];
        let mut out = vec![0f32; b * t * nh * hd];
        let dst = SharedOut::new(&mut out);
        lse.par_chunks_mut(t)
            .enumerate()
            .for_each_init(Vec::new, |p, (bh, lse_bh)| {
                let (bi, h) = (bh / nh, bh % nh);
                let g = h / rep;
                p.resize(t * t, 0f32);
                let qh = &qr[bh * t * hd..(bh + 1) * t * hd];
                let kg = &kr[(bi * nkv + g) * t * hd..(bi * nkv + g + 1) * t * hd];
                self.scores(mask, bi, qh, kg, p);
                for (row, l) in p.chunks_mut(t).zip(lse_bh.iter_mut()) {
                    *l = softmax_row(row);
                }
                let vg = &v[(bi * t * nkv + g) * hd..];
                // SAFETY: head h of batch bi writes only the t × hd view at columns h·hd.. of
                // its batch's rows, which no other task touches.
                unsafe {
                    mm_raw(
                        (t, hd, t),
                        dst.at(bi * t * nh * hd + h * hd),
                        nh * hd,
                        false,
                        Mat::rows(p, t),
                        Mat::rows(vg, nkv * hd),
                        1.0,
                        Parallelism::None,
                    )
                };
            });
        if let Ok(mut s) = self.lse.lock() {
            *s = Some(Arc::new(lse));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, t, nh * hd))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let AttnDims { b, t, nh, nkv, hd } = self.dims;
        let rep = nh / nkv;
        let lse = match self.lse.lock() {
            Ok(s) => s.clone(),
            Err(_) => None,
        };
        let Some(lse) = lse else {
            candle_core::bail!("fused-attention: backward before forward")
        };
        let empty = Tensor::zeros(0, DType::F32, &candle_core::Device::Cpu)?;
        let rope_t = self.rope.as_ref();
        borrow_f32!(rope_t.map_or(&empty, |r| &r.cos), self.name() => ch_, cg_, cos);
        borrow_f32!(rope_t.map_or(&empty, |r| &r.sin), self.name() => sh_, sg_, sin);
        borrow_f32!(self.mask.as_ref().unwrap_or(&empty), self.name() => mh_, mg_, mask);
        let rope = rope_t.map(|r| (cos, sin, r.half));
        let mask = self.mask.as_ref().map(|_| mask);
        borrow_f32!(q, self.name() => qh_, qg_, qs);
        borrow_f32!(k, self.name() => kh_, kg_, ks);
        borrow_f32!(v, self.name() => vh_, vg_, vs);
        borrow_f32!(grad, self.name() => gh_, gg_, go);
        let qr = self.rotate_in(rope, qs, nh, self.scale);
        let kr = self.rotate_in(rope, ks, nkv, 1.0);
        let mut dqr = vec![0f32; b * nh * t * hd];
        let mut dkr = vec![0f32; b * nkv * t * hd];
        let mut dv = vec![0f32; b * t * nkv * hd];
        let dq_out = SharedOut::new(&mut dqr);
        let dv_out = SharedOut::new(&mut dv);
        dkr.par_chunks_mut(t * hd).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(p, dp), (bg, dkg)| {
                let (bi, g) = (bg / nkv, bg % nkv);
                p.resize(t * t, 0f32);
                dp.resize(t * t, 0f32);
                let kg = &kr[bg * t * hd..(bg + 1) * t * hd];
                let vg = &vs[(bi * t * nkv + g) * hd..];
                let dvg = dv_out.at((bi * t * nkv + g) * hd);
                for r in 0..rep {
                    let h = g * rep + r;
                    let bh = bi * nh + h;
                    let qh = &qr[bh * t * hd..(bh + 1) * t * hd];
                    let goh = &go[bi * t * nh * hd + h * hd..];
                    // P = exp(qr kr + mask − lse), recomputed.
                    self.scores(mask, bi, qh, kg, p);
                    for (row, &l) in p.chunks_mut(t).zip(&lse[bh * t..(bh + 1) * t]) {
                        row.iter_mut().for_each(|s| *s = (*s - l).exp());
                    }
                    // dV_g += Pᵀ dO_h
                    // SAFETY: group g of batch bi alone writes the t × hd view of dv at
                    // columns g·hd.. of its rows.
                    unsafe {
                        mm_raw(
                            (t, hd, t),
                            dvg,
                            nkv * hd,
                            r > 0,
                            Mat::cols(p, t),
                            Mat::rows(goh, nh * hd),
                            1.0,
                            Parallelism::None,
                        )
                    };
                    // dP = dO_h V_gᵀ
                    mm(
                        (t, t, hd),
                        dp,
                        t,
                        false,
                        Mat::rows(goh, nh * hd),
                        Mat::cols(vg, nkv * hd),
                        1.0,
                        Parallelism::None,
                    );
                    // dS = P ⊙ (dP − Σ_j dP P)
                    for (dpr, pr) in dp.chunks_mut(t).zip(p.chunks(t)) {
                        let dot: f32 = dpr.iter().zip(pr).map(|(a, b)| a * b).sum();
                        dpr.iter_mut()
                            .zip(pr)
                            .for_each(|(d, &p)| *d = p * (*d - dot));
                    }
                    // dQr_h = dS Kr_g
                    // SAFETY: head h's block of dqr belongs to this task alone.
                    let dqh = unsafe { dq_out.slice(bh * t * hd, t * hd) };
                    mm(
                        (t, hd, t),
                        dqh,
                        hd,
                        false,
                        Mat::rows(dp, t),
                        Mat::rows(kg, hd),
                        1.0,
                        Parallelism::None,
                    );
                    // dKr_g += dSᵀ Qr_h
                    mm(
                        (t, hd, t),
                        dkg,
                        hd,
                        r > 0,
                        Mat::cols(dp, t),
                        Mat::rows(qh, hd),
                        1.0,
                        Parallelism::None,
                    );
                }
            },
        );
        let dq = self.rotate_out(rope, &dqr, nh, self.scale);
        let dk = self.rotate_out(rope, &dkr, nkv, 1.0);
        Ok((
            Some(tensor(dq, q.dims())?),
            Some(tensor(dk, k.dims())?),
            Some(tensor(dv, v.dims())?),
        ))
    }
}

/// Softmax of a row in place (max subtracted; a row that is all −∞ cannot occur: a query
/// always sees itself); returns the row's log-sum-exp.
fn softmax_row(row: &mut [f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
    max + sum.ln()
}

/// Causal self-attention with its rotary embedding, as one op: `q` `[b, t, nh, hd]`, `k`, `v`
/// `[b, t, nkv, hd]` (grouped query heads: head `h` reads key/value head `h / (nh / nkv)`),
/// `rope` the `cos`, `sin` tables `[b, t, half]` (the first `2 · half` channels rotate, in the
/// rotate-half layout), `mask` the additive mask `[b, 1, 1, t, t]` (causal, padding, window);
/// returns `[b, t, nh · hd]` = `softmax(rope(q) rope(k)ᵀ · scale + mask) v`. `None` unless
/// everything is f32 on the CPU with no past keys (`mask` covering exactly `t` keys).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rope: Option<(&Tensor, &Tensor)>,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Option<Tensor>> {
    if !fits(q) || !fits(k) || !fits(v) {
        return Ok(None);
    }
    let (b, t, nh, hd) = q.dims4()?;
    let (kb, kt, nkv, khd) = k.dims4()?;
    if (kb, kt, khd) != (b, t, hd) || v.dims() != k.dims() || nkv == 0 || nh % nkv != 0 {
        return Ok(None);
    }
    let rope = match rope {
        Some((c, s)) => {
            if !fits(c) || !fits(s) {
                return Ok(None);
            }
            let (cb, ct, half) = c.dims3()?;
            if (cb, ct) != (b, t) || s.dims() != c.dims() || 2 * half > hd {
                return Ok(None);
            }
            Some(RopeTab {
                cos: c.contiguous()?,
                sin: s.contiguous()?,
                half,
            })
        }
        None => None,
    };
    let mask = match mask {
        Some(m) => {
            if !fits(m) || m.elem_count() != b * t * t || m.dims().last() != Some(&t) {
                return Ok(None);
            }
            Some(m.contiguous()?)
        }
        None => None,
    };
    let op = AttentionOp {
        dims: AttnDims { b, t, nh, nkv, hd },
        rope,
        mask,
        scale: scale as f32,
        lse: Mutex::new(None),
    };
    Ok(Some(q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        op,
    )?))
}

// ---------------------------------------------------------------------------------------------
// Frozen linear layer with an optional LoRA path

/// How a frozen weight block is laid out.
#[derive(Clone)]
pub(crate) enum WeightBlock {
    /// `[out, in]` row-major, as in a checkpoint.
    Rows(Tensor),
    /// `[in, out_i]` row-major: a column block of the transposed weight.
    Cols(Tensor),
}

impl WeightBlock {
    fn tensor(&self) -> &Tensor {
        match self {
            Self::Rows(t) | Self::Cols(t) => t,
        }
    }
    /// `(out_i, in)`.
    fn dims(&self) -> CResult<(usize, usize)> {
        Ok(match self {
            Self::Rows(t) => t.dims2()?,
            Self::Cols(t) => {
                let (i, o) = t.dims2()?;
                (o, i)
            }
        })
    }
    /// The weight as the right operand of `x Wᵀ` (`in × out_i`).
    fn as_wt<'a>(&self, d: &'a [f32], in_dim: usize, out_i: usize) -> Mat<'a> {
        match self {
            Self::Rows(_) => Mat::cols(d, in_dim),
            Self::Cols(_) => Mat::rows(d, out_i),
        }
    }
    /// The weight as the right operand of `g W` (`out_i × in`).
    fn as_w<'a>(&self, d: &'a [f32], in_dim: usize, out_i: usize) -> Mat<'a> {
        match self {
            Self::Rows(_) => Mat::rows(d, in_dim),
            Self::Cols(_) => Mat::cols(d, out_i),
        }
    }
}

/// A frozen weight packed for [`packed_matmul`]: `W` for the forward product (`x Wᵀ`) and `Wᵀ`
/// for the input gradient (`g W`). Its kernels run these 512-row products faster than gemm
/// (which packs the weight again at every call), most of all those with 2,048 inputs.
#[derive(Debug)]
pub(crate) struct PackedPair {
    w: packed_matmul::PackedLinear,
    wt: packed_matmul::PackedLinear,
}

/// A layer's [`PackedPair`] for training, built on its first fused product and kept, keyed by
/// the weight tensors it was built from (a layer whose weight is replaced packs again).
#[derive(Debug, Default, Clone)]
pub(crate) struct PackedCache(Arc<Mutex<Option<PackedFor>>>);

/// A [`PackedPair`] and the ids of the weight tensors it was packed from.
type PackedFor = (Vec<candle_core::TensorId>, Arc<PackedPair>);

impl PackedCache {
    /// The pair for `blocks` (`out_dim × in_dim` in all), packed now if it is not yet.
    fn get(
        &self,
        blocks: &[WeightBlock],
        in_dim: usize,
        out_dim: usize,
    ) -> CResult<Arc<PackedPair>> {
        let ids: Vec<_> = blocks.iter().map(|b| b.tensor().id()).collect();
        let mut slot = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused-linear: packed cache poisoned".into()))?;
        if let Some((have, pair)) = &*slot
            && *have == ids
        {
            return Ok(Arc::clone(pair));
        }
        // `W` row-major (`out × in`), block by block.
        let mut w = vec![0f32; out_dim * in_dim];
        let mut off = 0;
        for blk in blocks {
            let (oi, _) = blk.dims()?;
            let rows = &mut w[off * in_dim..(off + oi) * in_dim];
            with_data(blk.tensor(), "fused-linear", |d| match blk {
                WeightBlock::Rows(_) => rows.copy_from_slice(d),
                WeightBlock::Cols(_) => {
                    rows.par_chunks_mut(in_dim)
                        .enumerate()
                        .for_each(|(o, row)| {
                            for (i, v) in row.iter_mut().enumerate() {
                                *v = d[i * oi + o];
                            }
                        })
                }
            })?;
            off += oi;
        }
        let pair = Arc::new(PackedPair {
            w: packed_matmul::PackedLinear::from_rows(&w, out_dim, in_dim, None)
                .map_err(packed_error)?,
            wt: packed_matmul::PackedLinear::from_transposed(&w, out_dim, in_dim, None)
                .map_err(packed_error)?,
        });
        *slot = Some((ids, Arc::clone(&pair)));
        Ok(pair)
    }
}

/// A packed product's error as a candle error of the fused linear op.
fn packed_error(e: packed_matmul::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("fused-linear: {e}"))
}

/// The frozen part of a linear layer.
struct Frozen {
    blocks: Vec<WeightBlock>,
    /// The same weight packed, when the layer keeps a [`PackedCache`].
    packed: Option<Arc<PackedPair>>,
    bias: Option<Vec<f32>>,
    in_dim: usize,
    out_dim: usize,
}

impl Frozen {
    /// The output shape for an input shape `[…, in]`: `[…, out]`.
    fn out_shape(&self, input: &Shape) -> Shape {
        let mut d = input.dims().to_vec();
        if let Some(last) = d.last_mut() {
            *last = self.out_dim;
        }
        Shape::from(d)
    }

    /// `y = x Wᵀ + b` for `x` `[n, in]` into `y` `[n, out]`.
    fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) -> CResult<()> {
        let (k, out) = (self.in_dim, self.out_dim);
        if let Some(p) = &self.packed {
            p.w.matmul(x, n, y).map_err(packed_error)?;
        } else {
            let mut off = 0;
            for blk in &self.blocks {
                let (oi, _) = blk.dims()?;
                with_data(blk.tensor(), "fused-linear", |w| {
                    mm(
                        (n, oi, k),
                        &mut y[off..],
                        out,
                        false,
                        Mat::rows(x, k),
                        blk.as_wt(w, k, oi),
                        1.0,
                        par(),
                    )
                })?;
                off += oi;
            }
        }
        if let Some(b) = &self.bias {
            y.par_chunks_mut(out).for_each(|row| {
                row.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
            });
        }
        Ok(())
    }

    /// `dx = g W` for `g` `[n, out]` into `dx` `[n, in]`.
    fn input_grad(&self, g: &[f32], n: usize, dx: &mut [f32]) -> CResult<()> {
        let (k, out) = (self.in_dim, self.out_dim);
        if let Some(p) = &self.packed {
            return p.wt.matmul(g, n, dx).map_err(packed_error);
        }
        let mut off = 0;
        for (i, blk) in self.blocks.iter().enumerate() {
            let (oi, _) = blk.dims()?;
            with_data(blk.tensor(), "fused-linear", |w| {
                mm(
                    (n, k, oi),
                    dx,
                    k,
                    i > 0,
                    Mat::rows(&g[off..], out),
                    blk.as_w(w, k, oi),
                    1.0,
                    par(),
                )
            })?;
            off += oi;
        }
        Ok(())
    }
}

/// `x Wᵀ + b` with a frozen `W`: backward gives `dx` only.
struct FrozenLinearOp(Frozen);

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "fused-frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        let n = x.len() / self.0.in_dim.max(1);
        let mut y = vec![0f32; n * self.0.out_dim];
        self.0.forward(x, n, &mut y)?;
        Ok((CpuStorage::F32(y), self.0.out_shape(l.shape())))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> CResult<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None);
        }
        let n = x.elem_count() / self.0.in_dim.max(1);
        let mut dx = vec![0f32; n * self.0.in_dim];
        with_data(g, self.name(), |gs| self.0.input_grad(gs, n, &mut dx))??;
        Ok(Some(tensor(dx, x.dims())?))
    }
}

/// `x Wᵀ + b + scale · (x Aᵀ) Bᵀ` with a frozen `W`: backward gives `dx`, `dA` and `dB`.
struct LoraLinearOp {
    frozen: Frozen,
    r: usize,
    scale: f32,
}

impl CustomOp3 for LoraLinearOp {
    fn name(&self) -> &'static str {
        "fused-lora-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = cpu_slice(sx, lx, self.name())?;
        let a = cpu_slice(sa, la, self.name())?;
        let bw = cpu_slice(sb, lb, self.name())?;
        let (k, out, r) = (self.frozen.in_dim, self.frozen.out_dim, self.r);
        let n = x.len() / k.max(1);
        let mut y = vec![0f32; n * out];
        self.frozen.forward(x, n, &mut y)?;
        // u = x Aᵀ, y += scale · u Bᵀ
        let mut u = vec![0f32; n * r];
        mm(
            (n, r, k),
            &mut u,
            r,
            false,
            Mat::rows(x, k),
            Mat::cols(a, k),
            1.0,
            par(),
        );
        mm(
            (n, out, r),
            &mut y,
            out,
            true,
            Mat::rows(&u, r),
            Mat::cols(bw, r),
            self.scale,
            par(),
        );
        Ok((CpuStorage::F32(y), self.frozen.out_shape(lx.shape())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        bw: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (k, out, r) = (self.frozen.in_dim, self.frozen.out_dim, self.r);
        let n = x.elem_count() / k.max(1);
        borrow_f32!(x, self.name() => xh_, xg_, xs);
        borrow_f32!(a, self.name() => ah_, ag_, av);
        borrow_f32!(bw, self.name() => bh_, bg_, bv);
        borrow_f32!(g, self.name() => gh_, gg_, gs);
        let want_dx = x.track_op();
        let (dx, da, db) = (|| -> CResult<_> {
            // gb = g B  [n, r]
            let mut gb = vec![0f32; n * r];
            mm(
                (n, r, out),
                &mut gb,
                r,
                false,
                Mat::rows(gs, out),
                Mat::rows(bv, r),
                1.0,
                par(),
            );
            // u = x Aᵀ  [n, r]
            let mut u = vec![0f32; n * r];
            mm(
                (n, r, k),
                &mut u,
                r,
                false,
                Mat::rows(xs, k),
                Mat::cols(av, k),
                1.0,
                par(),
            );
            // dB = scale · gᵀ u  [out, r]
            let mut db = vec![0f32; out * r];
            mm(
                (out, r, n),
                &mut db,
                r,
                false,
                Mat::cols(gs, out),
                Mat::rows(&u, r),
                self.scale,
                par(),
            );
            // dA = scale · gbᵀ x  [r, in]
            let mut da = vec![0f32; r * k];
            mm(
                (r, k, n),
                &mut da,
                k,
                false,
                Mat::cols(&gb, r),
                Mat::rows(xs, k),
                self.scale,
                par(),
            );
            // dx = g W + scale · gb A  [n, in]
            let dx = if want_dx {
                let mut dx = vec![0f32; n * k];
                self.frozen.input_grad(gs, n, &mut dx)?;
                mm(
                    (n, k, r),
                    &mut dx,
                    k,
                    true,
                    Mat::rows(&gb, r),
                    Mat::rows(av, k),
                    self.scale,
                    par(),
                );
                Some(dx)
            } else {
                None
            };
            Ok((dx, da, db))
        })()?;
        Ok((
            match dx {
                Some(dx) => Some(tensor(dx, x.dims())?),
                None => None,
            },
            Some(tensor(da, a.dims())?),
            Some(tensor(db, bw.dims())?),
        ))
    }
}

/// A linear layer's training product on `x` `[…, in]` (result `[…, out]`): `x Wᵀ + b` with the frozen weight
/// `blocks` (their outputs in order), plus `scale · (x Aᵀ) Bᵀ` when `lora` gives `(A, B,
/// scale)` (`A` `[r, in]`, `B` `[out, r]`, both trainable). `None` unless everything is f32 on
/// the CPU.
pub(crate) fn linear(
    x: &Tensor,
    blocks: &[WeightBlock],
    bias: Option<&Tensor>,
    lora: Option<(&Tensor, &Tensor, f64)>,
    cache: Option<&PackedCache>,
) -> Result<Option<Tensor>> {
    if !fits(x) || blocks.is_empty() || blocks.iter().any(|b| !fits(b.tensor())) {
        return Ok(None);
    }
    let Some(&in_dim) = x.dims().last() else {
        return Ok(None);
    };
    let mut out_dim = 0;
    for b in blocks {
        let (o, i) = b.dims()?;
        if i != in_dim {
            return Ok(None);
        }
        out_dim += o;
    }
    let bias = match bias {
        Some(b) if !fits(b) || b.dims() != [out_dim] => return Ok(None),
        Some(b) => Some(to_vec(b, "fused-linear")?),
        None => None,
    };
    let packed = match cache {
        Some(c) => Some(c.get(blocks, in_dim, out_dim)?),
        None => None,
    };
    let frozen = Frozen {
        blocks: blocks.to_vec(),
        packed,
        bias,
        in_dim,
        out_dim,
    };
    let x = x.contiguous()?;
    match lora {
        None => Ok(Some(x.apply_op1(FrozenLinearOp(frozen))?)),
        Some((a, b, scale)) => {
            if !fits(a) || !fits(b) {
                return Ok(None);
            }
            let (r, ai) = a.dims2()?;
            if ai != in_dim || b.dims2()? != (out_dim, r) {
                return Ok(None);
            }
            let op = LoraLinearOp {
                frozen,
                r,
                scale: scale as f32,
            };
            Ok(Some(x.apply_op3(&a.contiguous()?, &b.contiguous()?, op)?))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each fused op against candle's composed graph of the same function: forward values and
    //! the gradients of every input (through a random linear functional of the output).
    use super::*;
    use crate::ops;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        // Deterministic, roughly normal values (sum of uniforms), independent of candle's RNG.
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut u = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32
        };
        let v: Vec<f32> = (0..n)
            .map(|_| (u() + u() + u() + u() - 2.0) * 1.7)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The gradients of `Σ out · probe` with respect to `vars`.
    fn grads(out: &Tensor, probe: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
        let l = (out * probe).unwrap().sum_all().unwrap();
        let g = l.backward().unwrap();
        vars.iter()
            .map(|v| g.get(v.as_tensor()).expect("gradient").clone())
            .collect()
    }

    fn check(name: &str, fused: &[Tensor], graph: &[Tensor], tol: f32) {
        for (i, (a, b)) in fused.iter().zip(graph).enumerate() {
            let d = max_diff(a, b);
            assert!(d < tol, "{name}: tensor {i} differs by {d:e}");
        }
    }

    #[test]
    fn rms_norm_matches_the_graph() {
        let x = Var::from_tensor(&randn(&[3, 5, 48], 1)).unwrap();
        let w = randn(&[48], 2);
        let probe = randn(&[3, 5, 48], 3);
        let f = rms_norm(x.as_tensor(), &w, 1e-6).unwrap().unwrap();
        // The composed graph (ops::rms_norm itself now calls the fused op).
        let xt = x.as_tensor();
        let ms = xt
            .sqr()
            .unwrap()
            .mean_keepdim(candle_core::D::Minus1)
            .unwrap();
        let g = xt
            .broadcast_div(&(ms + 1e-6).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&w)
            .unwrap();
        check(
            "rms_norm forward",
            std::slice::from_ref(&f),
            std::slice::from_ref(&g),
            1e-5,
        );
        let gf = grads(&f, &probe, &[&x]);
        let gg = grads(&g, &probe, &[&x]);
        check("rms_norm backward", &gf, &gg, 1e-5);
        // Not applicable: another dtype.
        let xb = x.as_tensor().to_dtype(DType::BF16).unwrap();
        assert!(rms_norm(&xb, &w, 1e-6).unwrap().is_none());
    }

    #[test]
    fn cached_attention_matches_the_graph() {
        // 2 rows, 4 query heads over 2 KV heads, 3 queries over 5 cached positions held in a
        // buffer of 9 (as the KV cache narrows its buffers), head size 20 (not a multiple of
        // 16), a mask with padding and causal cuts, with and without soft-capping.
        let (b, nh, nkv, t, tk, hd) = (2, 4, 2, 3, 5, 20);
        let q = randn(&[b, nh, t, hd], 11);
        let kbuf = randn(&[b, nkv, 9, hd], 12);
        let vbuf = randn(&[b, nkv, 9, hd], 13);
        let (k, v) = (
            kbuf.narrow(2, 0, tk).unwrap(),
            vbuf.narrow(2, 0, tk).unwrap(),
        );
        let mut m = vec![0f32; b * t * tk];
        for (i, x) in m.iter_mut().enumerate() {
            let (row, qi, j) = (i / (t * tk), (i / tk) % t, i % tk);
            if j > 2 + qi || (row == 1 && j == 0) {
                *x = f32::NEG_INFINITY;
            }
        }
        let mask = Tensor::from_vec(m, (b, 1, 1, t, tk), &candle_core::Device::Cpu).unwrap();
        for softcap in [None, Some(5.0)] {
            let got = cached_attention(&q, &k, &v, Some(&mask), 0.3, softcap)
                .unwrap()
                .unwrap();
            // The decoder's composed graph.
            let rep = nh / nkv;
            let qs = (&q * 0.3).unwrap().reshape((b, nkv, rep * t, hd)).unwrap();
            let mut scores = qs.matmul(&k.t().unwrap()).unwrap();
            if let Some(c) = softcap {
                scores = crate::ops::soft_cap(&scores, c).unwrap();
            }
            let scores = scores
                .reshape((b, nkv, rep, t, tk))
                .unwrap()
                .broadcast_add(&mask)
                .unwrap()
                .reshape((b, nkv, rep * t, tk))
                .unwrap();
            let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
            let want = probs
                .matmul(&v.contiguous().unwrap())
                .unwrap()
                .reshape((b, nh, t, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((b, t, nh * hd))
                .unwrap();
            check("cached attention", &[got], &[want], 1e-5);
        }
        // Not f32: left to the graph.
        let q16 = q.to_dtype(DType::BF16).unwrap();
        assert!(
            cached_attention(&q16, &k, &v, None, 1.0, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn fast_exp_and_tanh_match_libm() {
        let mut worst_exp = 0f64;
        let mut worst_tanh = 0f64;
        let mut x = -90.0f32;
        while x < 90.0 {
            let (e, want) = (fast_exp(x) as f64, (x as f64).exp());
            if want > 1e-37 && want < 3e38 {
                worst_exp = worst_exp.max(((e - want) / want).abs());
            }
            let t = fast_tanh(x) as f64;
            worst_tanh = worst_tanh.max((t - (x as f64).tanh()).abs());
            x += 0.000_731;
        }
        assert!(worst_exp < 4e-7, "exp relative error {worst_exp:e}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh:e}");
        assert!(fast_exp(-200.0) < 1.3e-38);
        assert!(fast_exp(200.0) > 3e38);
        assert_eq!(fast_tanh(0.0), 0.0);
        assert_eq!(fast_tanh(30.0), 1.0);
        assert_eq!(fast_tanh(-30.0), -1.0);
    }

    #[test]
    fn gated_activations_match_the_graph() {
        for act in [Activation::Silu, Activation::GeluTanh] {
            let gate = Var::from_tensor(&randn(&[4, 7, 40], 4)).unwrap();
            let up = Var::from_tensor(&randn(&[4, 7, 40], 5)).unwrap();
            let probe = randn(&[4, 7, 40], 6);
            let f = gated(act, gate.as_tensor(), up.as_tensor())
                .unwrap()
                .unwrap();
            let g = (act.apply(gate.as_tensor()).unwrap() * up.as_tensor()).unwrap();
            check(
                "gated forward",
                std::slice::from_ref(&f),
                std::slice::from_ref(&g),
                1e-5,
            );
            let gf = grads(&f, &probe, &[&gate, &up]);
            let gg = grads(&g, &probe, &[&gate, &up]);
            check(&format!("{act:?} backward"), &gf, &gg, 1e-5);
        }
        let g = randn(&[2, 3], 1);
        assert!(gated(Activation::GeluErf, &g, &g).unwrap().is_none());
    }

    /// The decoder's composed attention, as in `models/decoder.rs` in training mode.
    fn graph_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        rope: Option<(&Tensor, &Tensor)>,
        mask: Option<&Tensor>,
        scale: f64,
    ) -> Tensor {
        let (b, t, nh, hd) = q.dims4().unwrap();
        let nkv = k.dim(2).unwrap();
        let rep = nh / nkv;
        let q = q.transpose(1, 2).unwrap().contiguous().unwrap();
        let k = k.transpose(1, 2).unwrap().contiguous().unwrap();
        let v = v.transpose(1, 2).unwrap().contiguous().unwrap();
        let (q, k) = match rope {
            Some((c, s)) => (
                ops::rope(&q, c, s, true).unwrap(),
                ops::rope(&k, c, s, true).unwrap(),
            ),
            None => (q, k),
        };
        let q = (q * scale).unwrap().reshape((b, nkv, rep * t, hd)).unwrap();
        let mut scores = q.matmul(&k.t().unwrap()).unwrap();
        if let Some(m) = mask {
            scores = scores
                .reshape((b, nkv, rep, t, t))
                .unwrap()
                .broadcast_add(m)
                .unwrap()
                .reshape((b, nkv, rep * t, t))
                .unwrap();
        }
        let p = ops::softmax_last_dim(&scores, true).unwrap();
        p.matmul(&v)
            .unwrap()
            .reshape((b, nh, t, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, nh * hd))
            .unwrap()
    }

    fn causal_mask(b: usize, t: usize, pad_first: &[usize]) -> Tensor {
        let mut m = vec![0f32; b * t * t];
        for bi in 0..b {
            for i in 0..t {
                for j in 0..t {
                    let padded = j < pad_first[bi] && j != i;
                    if j > i || padded {
                        m[(bi * t + i) * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Tensor::from_vec(m, (b, 1, 1, t, t), &Device::Cpu).unwrap()
    }

    #[test]
    fn attention_matches_the_graph() {
        let (b, t, hd) = (2, 9, 8);
        // (heads, kv heads, rotary half-width or none, masked)
        for (nh, nkv, half, masked) in [
            (4, 2, Some(4), true),
            (3, 3, Some(2), true),
            (2, 1, None, true),
            (4, 1, Some(4), false),
        ] {
            let q = Var::from_tensor(&randn(&[b, t, nh, hd], 7)).unwrap();
            let k = Var::from_tensor(&randn(&[b, t, nkv, hd], 8)).unwrap();
            let v = Var::from_tensor(&randn(&[b, t, nkv, hd], 9)).unwrap();
            let tabs = half.map(|h| {
                let ang = randn(&[b, t, h], 10);
                (ang.cos().unwrap(), ang.sin().unwrap())
            });
            let rope = tabs.as_ref().map(|(c, s)| (c, s));
            let mask = masked.then(|| causal_mask(b, t, &[0, 3]));
            let probe = randn(&[b, t, nh * hd], 11);
            let scale = 1.0 / (hd as f64).sqrt();
            let f = attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                rope,
                mask.as_ref(),
                scale,
            )
            .unwrap()
            .unwrap();
            let g = graph_attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                rope,
                mask.as_ref(),
                scale,
            );
            let name = format!("attention {nh}/{nkv} {half:?} {masked}");
            check(
                &name,
                std::slice::from_ref(&f),
                std::slice::from_ref(&g),
                1e-5,
            );
            let gf = grads(&f, &probe, &[&q, &k, &v]);
            let gg = grads(&g, &probe, &[&q, &k, &v]);
            check(&format!("{name} backward"), &gf, &gg, 1e-5);
        }
    }

    #[test]
    fn linear_with_and_without_lora_matches_the_graph() {
        let (n, k, out, r) = (13, 24, 40, 4);
        let x = Var::from_tensor(&randn(&[n, k], 12)).unwrap();
        let w = randn(&[out, k], 13);
        let bias = randn(&[out], 14);
        let a = Var::from_tensor(&(randn(&[r, k], 15) * 0.3).unwrap()).unwrap();
        let bm = Var::from_tensor(&(randn(&[out, r], 16) * 0.3).unwrap()).unwrap();
        let probe = randn(&[n, out], 17);
        let scale = 1.5;
        let wt = w.t().unwrap().contiguous().unwrap();
        let layouts = [
            vec![WeightBlock::Rows(w.clone())],
            vec![WeightBlock::Cols(wt.clone())],
            vec![
                WeightBlock::Cols(wt.narrow(1, 0, 16).unwrap().contiguous().unwrap()),
                WeightBlock::Cols(wt.narrow(1, 16, 24).unwrap().contiguous().unwrap()),
            ],
        ];
        // Through gemm, and through a packed pair (built on the first call, reused after).
        for (blocks, cache) in layouts
            .iter()
            .flat_map(|b| [(b, None), (b, Some(PackedCache::default()))])
        {
            let cache = cache.as_ref();
            // With LoRA.
            let f = linear(
                x.as_tensor(),
                blocks,
                Some(&bias),
                Some((a.as_tensor(), bm.as_tensor(), scale)),
                cache,
            )
            .unwrap()
            .unwrap();
            let base = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
            let base = base.broadcast_add(&bias).unwrap();
            let l = x
                .as_tensor()
                .matmul(&a.as_tensor().t().unwrap())
                .unwrap()
                .matmul(&bm.as_tensor().t().unwrap())
                .unwrap();
            let g = (base + (l * scale).unwrap()).unwrap();
            check(
                "lora linear forward",
                std::slice::from_ref(&f),
                std::slice::from_ref(&g),
                1e-4,
            );
            let gf = grads(&f, &probe, &[&x, &a, &bm]);
            let gg = grads(&g, &probe, &[&x, &a, &bm]);
            check("lora linear backward", &gf, &gg, 1e-4);
            // Frozen only.
            let f = linear(x.as_tensor(), blocks, None, None, cache)
                .unwrap()
                .unwrap();
            let g = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
            check(
                "frozen linear forward",
                std::slice::from_ref(&f),
                std::slice::from_ref(&g),
                1e-4,
            );
            let gf = grads(&f, &probe, &[&x]);
            let gg = grads(&g, &probe, &[&x]);
            check("frozen linear backward", &gf, &gg, 1e-4);
        }
    }

    #[test]
    fn linear_keeps_the_leading_dimensions() {
        let x = Var::from_tensor(&randn(&[2, 3, 8], 30)).unwrap();
        let w = randn(&[5, 8], 31);
        let a = Var::from_tensor(&randn(&[2, 8], 32)).unwrap();
        let bm = Var::from_tensor(&randn(&[5, 2], 33)).unwrap();
        let probe = randn(&[2, 3, 5], 34);
        let f = linear(
            x.as_tensor(),
            &[WeightBlock::Rows(w.clone())],
            None,
            Some((a.as_tensor(), bm.as_tensor(), 0.5)),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.dims(), &[2, 3, 5]);
        let x2 = x.as_tensor().reshape((6, 8)).unwrap();
        let l = x2
            .matmul(&a.as_tensor().t().unwrap())
            .unwrap()
            .matmul(&bm.as_tensor().t().unwrap())
            .unwrap();
        let g = (x2.matmul(&w.t().unwrap()).unwrap() + (l * 0.5).unwrap())
            .unwrap()
            .reshape((2, 3, 5))
            .unwrap();
        check(
            "3-d linear forward",
            std::slice::from_ref(&f),
            std::slice::from_ref(&g),
            1e-5,
        );
        let gf = grads(&f, &probe, &[&x, &a, &bm]);
        let gg = grads(&g, &probe, &[&x, &a, &bm]);
        check("3-d linear backward", &gf, &gg, 1e-5);
    }

    #[test]
    fn an_input_without_gradient_gets_none() {
        // The first layer's input (embeddings of a frozen table) needs no gradient.
        let x = randn(&[5, 8], 20);
        let a = Var::from_tensor(&randn(&[2, 8], 21)).unwrap();
        let bm = Var::from_tensor(&randn(&[6, 2], 22)).unwrap();
        let w = randn(&[6, 8], 23);
        let y = linear(
            &x,
            &[WeightBlock::Rows(w)],
            None,
            Some((a.as_tensor(), bm.as_tensor(), 2.0)),
            Some(&PackedCache::default()),
        )
        .unwrap()
        .unwrap();
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(a.as_tensor()).is_some() && g.get(bm.as_tensor()).is_some());
    }

    #[test]
    fn a_packed_cache_follows_its_layer_s_weight() {
        let x = randn(&[4, 32], 40);
        let (w1, w2) = (randn(&[24, 32], 41), randn(&[24, 32], 42));
        let cache = PackedCache::default();
        for w in [&w1, &w1, &w2] {
            let y = linear(
                &x,
                &[WeightBlock::Rows(w.clone())],
                None,
                None,
                Some(&cache),
            )
            .unwrap()
            .unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            check(
                "packed forward",
                std::slice::from_ref(&y),
                std::slice::from_ref(&want),
                1e-5,
            );
        }
        let first = cache.get(&[WeightBlock::Rows(w2.clone())], 32, 24).unwrap();
        let again = cache.get(&[WeightBlock::Rows(w2)], 32, 24).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "packed once per weight");
    }
}
