//! The CPU path: the same RoBERTa classifier on packed sequences, with f32 kernels chosen for
//! throughput.
//!
//! - **Packing.** The texts of a batch are concatenated into one `(tokens, hidden)` matrix with no
//!   padding at all; every linear layer is one large matmul over the real tokens only, and
//!   attention runs block-diagonally, one (text, head) block at a time, reading the fused QKV
//!   matrix in place through strides (no transposes, no copies).
//! - **Linear layers** run [`packed_matmul`]'s kernel on weights packed once at load time (the
//!   three attention projections fused into one `hidden → 3 hidden` layer, the bias added as the
//!   results are stored): no per-call repacking of the weight, which a general GEMM does and
//!   which dominates short inputs. The attention products (activations × activations) go
//!   straight to the `gemm` crate (the one candle uses; the workspace enables its AVX-512 kernels).
//! - **Element-wise work** (bias + exact GELU, residual + LayerNorm, softmax) is fused and split
//!   over the rayon pool, with vectorisable `exp`/`erf` polynomials (Cephes `expf`, Abramowitz &
//!   Stegun 7.1.26 `erf`, |error| < 1.5e-7) compiled for AVX2/AVX-512 and picked at run time.
//!
//! Results match [`crate::model`] and transformers to float noise (tests/parity.rs).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Weights, position_ids};
use candle_core::{DType, Tensor};
use gemm::{Parallelism, gemm};
use packed_matmul::PackedLinear;
use rayon::prelude::*;

/// A linear layer `y = x · W^T + b`, its weight packed once for the f32 kernel of
/// [`packed_matmul`].
struct Dense(PackedLinear);

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl Dense {
    /// Layers sharing an input, fused: weights stacked along the outputs.
    fn from_parts(ws: &[Tensor], bs: &[Tensor]) -> Result<Self> {
        let w = Tensor::cat(ws, 0)?; // (out, in)
        let (n_out, n_in) = w.dims2()?;
        let bias = to_vec(&Tensor::cat(bs, 0)?)?;
        Ok(Dense(PackedLinear::from_rows(
            &to_vec(&w)?,
            n_out,
            n_in,
            Some(bias),
        )?))
    }

    fn load(w: &Weights, n_out: usize, n_in: usize) -> Result<Self> {
        let (wt, b) = w.weight_bias(n_out, n_in)?;
        Dense::from_parts(&[wt], &[b])
    }

    fn n_out(&self) -> usize {
        self.0.out_dim()
    }

    /// `out (rows, n_out) = x (rows, n_in) · W^T + b`.
    fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) -> Result<()> {
        Ok(self.0.matmul(x, rows, out)?)
    }
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(w: &Weights, dim: usize, eps: f64) -> Result<Self> {
        Ok(Norm {
            w: to_vec(&w.get(&[dim], "weight")?)?,
            b: to_vec(&w.get(&[dim], "bias")?)?,
            eps: eps as f32,
        })
    }

    /// In place: `row = LayerNorm(row)`.
    fn apply(&self, row: &mut [f32]) {
        layer_norm(row, &self.w, &self.b, self.eps)
    }

    /// `x = LayerNorm(x + y)`, row by row over the pool.
    fn add_apply(&self, x: &mut [f32], y: &[f32], dim: usize) {
        x.par_chunks_mut(dim)
            .zip(y.par_chunks(dim))
            .for_each(|(xr, yr)| {
                for (a, b) in xr.iter_mut().zip(yr) {
                    *a += b;
                }
                self.apply(xr);
            });
    }
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

/// The packed CPU model.
pub(crate) struct CpuModel {
    hidden: usize,
    heads: usize,
    head_dim: usize,
    inter: usize,
    pad: u32,
    vocab: usize,
    max_pos: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    dense: Dense,
    out_proj: Dense,
}

/// A raw pointer the attention tasks share; each task writes a disjoint block.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used for writes to disjoint (rows of one text) × (columns of one head) blocks.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

impl CpuModel {
    pub(crate) fn new(cfg: &Config, num_labels: usize, w: &Weights) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let e = w.pp("roberta").pp("embeddings");
        let word = to_vec(
            &e.pp("word_embeddings")
                .get(&[cfg.vocab_size, h], "weight")?,
        )?;
        let position = to_vec(
            &e.pp("position_embeddings")
                .get(&[cfg.max_position_embeddings, h], "weight")?,
        )?;
        let token_type = to_vec(
            &e.pp("token_type_embeddings")
                .get(&[cfg.type_vocab_size, h], "weight")?
                .narrow(0, 0, 1)?,
        )?;
        let emb_norm = Norm::load(&e.pp("LayerNorm"), h, eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let lw = w.pp("roberta").pp("encoder").pp("layer").pp(l);
            let att = lw.pp("attention");
            let sa = att.pp("self");
            let (qw, qb) = sa.pp("query").weight_bias(h, h)?;
            let (kw, kb) = sa.pp("key").weight_bias(h, h)?;
            let (vw, vb) = sa.pp("value").weight_bias(h, h)?;
            layers.push(Layer {
                qkv: Dense::from_parts(&[qw, kw, vw], &[qb, kb, vb])?,
                attn_out: Dense::load(&att.pp("output").pp("dense"), h, h)?,
                attn_norm: Norm::load(&att.pp("output").pp("LayerNorm"), h, eps)?,
                up: Dense::load(&lw.pp("intermediate").pp("dense"), i, h)?,
                down: Dense::load(&lw.pp("output").pp("dense"), h, i)?,
                out_norm: Norm::load(&lw.pp("output").pp("LayerNorm"), h, eps)?,
            });
        }
        let c = w.pp("classifier");
        Ok(CpuModel {
            hidden: h,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            inter: i,
            pad: cfg.pad_token_id,
            vocab: cfg.vocab_size,
            max_pos: cfg.max_position_embeddings,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            dense: Dense::load(&c.pp("dense"), h, h)?,
            out_proj: Dense::load(&c.pp("out_proj"), num_labels, h)?,
        })
    }

    /// Runs the texts packed into one matrix; returns the pooled `<s>` embeddings (n, hidden)
    /// and the logits (n, labels), row-major.
    pub(crate) fn forward(&self, seqs: &[&[u32]]) -> Result<(Vec<f32>, Vec<f32>)> {
        let h = self.hidden;
        let mut spans = Vec::with_capacity(seqs.len());
        let mut total = 0usize;
        for s in seqs {
            if s.is_empty() {
                return Err(Error::Candle(candle_core::Error::Msg(
                    "empty token sequence (the tokenizer adds <s> and </s>)".into(),
                )));
            }
            spans.push((total, s.len()));
            total += s.len();
        }
        // Embeddings: word + position (padding offset) + token type 0, then LayerNorm.
        let mut x = vec![0f32; total * h];
        for (s, &(off, _)) in seqs.iter().zip(&spans) {
            for (j, (&id, p)) in s.iter().zip(position_ids(s, self.pad)).enumerate() {
                let (id, p) = (id as usize, p as usize);
                if id >= self.vocab || p >= self.max_pos {
                    return Err(Error::Candle(candle_core::Error::Msg(format!(
                        "token id {id} or position {p} outside the embedding tables \
                         ({} tokens, {} positions)",
                        self.vocab, self.max_pos
                    ))));
                }
                let row = &mut x[(off + j) * h..(off + j + 1) * h];
                let (we, pe) = (
                    &self.word[id * h..(id + 1) * h],
                    &self.position[p * h..(p + 1) * h],
                );
                for (((r, a), b), c) in row.iter_mut().zip(we).zip(pe).zip(&self.token_type) {
                    *r = a + b + c;
                }
            }
        }
        x.par_chunks_mut(h).for_each(|r| self.emb_norm.apply(r));

        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut inter = vec![0f32; total * self.inter];
        for layer in &self.layers {
            layer.qkv.forward(&x, total, &mut qkv)?;
            self.attention(&qkv, &mut ctx, &spans);
            layer.attn_out.forward(&ctx, total, &mut tmp)?;
            layer.attn_norm.add_apply(&mut x, &tmp, h);
            layer.up.forward(&x, total, &mut inter)?;
            inter.par_chunks_mut(8192).for_each(gelu);
            layer.down.forward(&inter, total, &mut tmp)?;
            layer.out_norm.add_apply(&mut x, &tmp, h);
        }

        // Head on each text's first token (<s>): dense → tanh → out_proj.
        let n = seqs.len();
        let mut cls = vec![0f32; n * h];
        for (r, &(off, _)) in spans.iter().enumerate() {
            cls[r * h..(r + 1) * h].copy_from_slice(&x[off * h..(off + 1) * h]);
        }
        let mut pooled = vec![0f32; n * h];
        self.dense.forward(&cls, n, &mut pooled)?;
        pooled.iter_mut().for_each(|v| *v = v.tanh());
        let mut logits = vec![0f32; n * self.out_proj.n_out()];
        self.out_proj.forward(&pooled, n, &mut logits)?;
        Ok((pooled, logits))
    }

    /// Block-diagonal attention: for each (text, head), `softmax(q k^T / sqrt(d)) v`, read from
    /// the fused `(tokens, 3 hidden)` QKV matrix and written into `ctx (tokens, hidden)`.
    fn attention(&self, qkv: &[f32], ctx: &mut [f32], spans: &[(usize, usize)]) {
        let (h, d) = (self.hidden, self.head_dim);
        let ld = 3 * h;
        let scale = 1.0 / (d as f32).sqrt();
        let out = SharedMut(ctx.as_mut_ptr());
        let tasks: Vec<((usize, usize), usize)> = spans
            .iter()
            .flat_map(|&s| (0..self.heads).map(move |head| (s, head)))
            .collect();
        tasks
            .par_iter()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, &((off, len), head)| {
                scores.clear();
                scores.resize(len * len, 0.0);
                // SAFETY: q, k, v of this head are the (len, d) blocks at columns head·d, h + head·d
                // and 2h + head·d of rows off..off+len of the (tokens, 3h) qkv matrix; ctx's block
                // (rows off..off+len, columns head·d..head·d+d) belongs to this task alone.
                unsafe {
                    let q = qkv.as_ptr().add(off * ld + head * d);
                    let k = q.add(h);
                    let v = q.add(2 * h);
                    gemm(
                        len,
                        len,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q,
                        1,
                        ld as isize,
                        k,
                        ld as isize,
                        1,
                        0.0f32,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                    scores.chunks_mut(len).for_each(softmax);
                    gemm(
                        len,
                        d,
                        len,
                        out.ptr().add(off * h + head * d),
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        v,
                        1,
                        ld as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            });
    }
}

/// Cephes-style `expf` without branches (so loops over it vectorise); relative error ~1e-7.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let n_bits = t.to_bits().wrapping_sub(0x4B40_0000);
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * z + r + 1.0;
    y * f32::from_bits(n_bits.wrapping_add(127).wrapping_shl(23))
}

/// Exact-form GELU `x/2 · (1 + erf(x/√2))` with A&S 7.1.26 `erf` (|error| < 1.5e-7).
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    let u = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = u.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let erf_abs = 1.0 - poly * exp_f32(-a * a);
    let erf = erf_abs.copysign(u);
    0.5 * x * (1.0 + erf)
}

#[inline(always)]
fn gelu_body(xs: &mut [f32]) {
    for v in xs {
        *v = gelu_f32(*v);
    }
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0f32;
    for v in row.iter_mut() {
        *v = exp_f32(*v - m);
        s += *v;
    }
    let inv = 1.0 / s;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// A sum in 16 independent lanes, so that it vectorises.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|&v| f(v)).sum::<f32>()
}

/// LayerNorm of one row (two-pass mean and biased variance, as torch computes it).
#[inline(always)]
fn layer_norm_body(row: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row, |v| v) / n;
    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in row.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * inv * w + b;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn layer_norm_v4(row: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    layer_norm_body(row, w, b, eps)
}

fn layer_norm(row: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above), which implies AVX2/FMA.
        return unsafe { layer_norm_v4(row, w, b, eps) };
    }
    layer_norm_body(row, w, b, eps)
}

macro_rules! dispatch {
    ($name:ident, $body:ident, $v4:ident, $v3:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn $v4(xs: &mut [f32]) {
            $body(xs)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $v3(xs: &mut [f32]) {
            $body(xs)
        }
        fn $name(xs: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above), which implies AVX2/FMA.
                    return unsafe { $v4(xs) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { $v3(xs) };
                }
            }
            $body(xs)
        }
    };
}

dispatch!(gelu, gelu_body, gelu_v4, gelu_v3);
dispatch!(softmax, softmax_body, softmax_v4, softmax_v3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_gelu_match_libm() {
        let mut worst_exp = 0f64;
        let mut worst_gelu = 0f64;
        for i in -20000..=20000 {
            let x = i as f32 * 0.0005;
            let e = exp_f32(x * 8.0) as f64;
            let r = ((x * 8.0) as f64).exp();
            worst_exp = worst_exp.max(((e - r) / r).abs());
            let xg = x as f64 * 1.0;
            let g = gelu_f32(x) as f64;
            let erf = libm_erf(xg / std::f64::consts::SQRT_2);
            let rg = 0.5 * xg * (1.0 + erf);
            worst_gelu = worst_gelu.max((g - rg).abs() / xg.abs().max(1.0));
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        // A&S 7.1.26 bounds |erf error| by 1.5e-7, so GELU's by 0.75e-7·|x| (+ f32 rounding).
        assert!(
            worst_gelu < 2.5e-7,
            "gelu error / max(1, |x|): {worst_gelu}"
        );
        let mut xs: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let scalar: Vec<f32> = xs.iter().map(|&x| gelu_f32(x)).collect();
        gelu(&mut xs);
        assert_eq!(
            xs, scalar,
            "the dispatched kernel computes the same function"
        );
        let mut row = vec![1.0f32, 2.0, 3.0, -100.0];
        softmax(&mut row);
        let z: f64 = [1.0f64, 2.0, 3.0, -100.0]
            .iter()
            .map(|v| (v - 3.0).exp())
            .sum();
        assert!((row[2] as f64 - 1.0 / z).abs() < 1e-7 && row[3] < 1e-40 + 1e-30);
    }

    /// erf in f64 (W. J. Cody's rational approximations are overkill here: a long Taylor /
    /// continued-fraction pair is accurate to ~1e-15 over the range tested).
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            // Taylor series: erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
            let mut sum = 0.0;
            let mut term = a;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -a * a / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Continued fraction for erfc.
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        r.copysign(x)
    }
}
