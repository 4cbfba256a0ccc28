//! The causal-LM cross-entropy with a fused forward and backward on the CPU.

use crate::error::Result;
use crate::template::IGNORE_INDEX;
use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Shape, Tensor};
use std::sync::Arc;

/// Cross-entropy per row of `(…, V)` logits against `targets` (one per row, or a negative
/// value to ignore the row). Forward: `logsumexp(x) − x[target]` (0 for ignored rows).
/// Backward: `grad · (softmax(x) − onehot(target))`, 0 for ignored rows — one pass over the
/// logits instead of the several a composed `log_softmax` + `gather` graph keeps alive.
struct FusedCrossEntropy {
    targets: Arc<Vec<i64>>,
}

/// Runs `f(first_row, rows_chunk)` over row chunks on candle's thread count (scoped threads).
fn par_rows<T: Send>(out: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let rows = out.len() / row_len.max(1);
    let threads = candle_core::utils::get_num_threads().clamp(1, rows.max(1));
    let per = rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (c, chunk) in out.chunks_mut(per * row_len.max(1)).enumerate() {
            let f = &f;
            s.spawn(move || f(c * per, chunk));
        }
    });
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(d) => d,
        _ => candle_core::bail!("fused-cross-entropy expects f32 logits"),
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused-cross-entropy expects contiguous logits")
    };
    Ok(&data[start..end])
}

/// `(max, sum exp(x − max))` of a row (f32 exponentials, f64 sum).
fn row_stats(row: &[f32]) -> (f32, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| (x - max).exp() as f64).sum();
    (max, sum)
}

impl CustomOp1 for FusedCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let v = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let n = layout.shape().elem_count() / v;
        let data = contiguous_f32(storage, layout)?;
        let mut out = vec![0f32; n];
        par_rows(&mut out, 1, |first, chunk| {
            for (j, o) in chunk.iter_mut().enumerate() {
                let i = first + j;
                let t = self.targets[i];
                if t < 0 {
                    continue;
                }
                let row = &data[i * v..(i + 1) * v];
                let (max, sum) = row_stats(row);
                *o = (max as f64 + sum.ln() - row[t as usize] as f64) as f32;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let v = arg.dims().last().copied().unwrap_or(1).max(1);
        let n = arg.elem_count() / v;
        let x = arg.detach().contiguous()?;
        let g = grad_res.detach().to_vec1::<f32>()?;
        let (st, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*st else {
            candle_core::bail!("fused-cross-entropy: CPU only")
        };
        let data = contiguous_f32(cpu, layout)?;
        let mut out = vec![0f32; n * v];
        par_rows(&mut out, v, |first, chunk| {
            for (j, o) in chunk.chunks_mut(v).enumerate() {
                let i = first + j;
                let t = self.targets[i];
                if t < 0 || g[i] == 0.0 {
                    continue;
                }
                let row = &data[i * v..(i + 1) * v];
                let (max, sum) = row_stats(row);
                let scale = (g[i] as f64 / sum) as f32;
                for (oj, &xj) in o.iter_mut().zip(row) {
                    *oj = (xj - max).exp() * scale;
                }
                o[t as usize] -= g[i];
            }
        });
        drop(st);
        Ok(Some(Tensor::from_vec(out, arg.dims(), arg.device())?))
    }
}

/// The summed token cross-entropy of a causal LM and the number of tokens it covers.
///
/// `logits` are `(B, T, V)`, `labels` `(B, T)` as `i64` with [`IGNORE_INDEX`] for positions
/// outside the loss. As HF's `ForCausalLMLoss`, position `t` predicts label `t + 1`; the sum is
/// returned (not the mean) so that the trainer divides by the token count of the whole
/// gradient-accumulation window, as HF Trainer's `num_items_in_batch` does.
pub fn causal_lm_loss_sum(logits: &Tensor, labels: &[Vec<i64>]) -> Result<(Tensor, usize)> {
    let (b, t, v) = logits.dims3()?;
    let mut targets = Vec::with_capacity(b * (t - 1));
    for row in labels {
        for j in 1..t {
            let l = row.get(j).copied().unwrap_or(IGNORE_INDEX);
            targets.push(if l < 0 || l as usize >= v { -1 } else { l });
        }
    }
    let count = targets.iter().filter(|&&x| x >= 0).count();
    if logits.device().is_cpu() && logits.dtype() == DType::F32 && logits.is_contiguous() {
        // The shift is in the targets (each row's last position ignored), so the op reads the
        // model's logits in place: no narrowed copy of them, and no chain of copy/reshape
        // nodes whose backward would each allocate and add a logits-sized gradient.
        let mut full = Vec::with_capacity(b * t);
        for bi in 0..b {
            full.extend_from_slice(targets.get(bi * (t - 1)..(bi + 1) * (t - 1)).unwrap_or(&[]));
            full.resize((bi + 1) * t, -1);
        }
        let loss = logits
            .apply_op1(FusedCrossEntropy {
                targets: Arc::new(full),
            })?
            .sum_all()?;
        return Ok((loss, count));
    }
    let shifted = logits
        .narrow(1, 0, t - 1)?
        .to_dtype(DType::F32)?
        .reshape((b * (t - 1), v))?;
    let loss = if shifted.device().is_cpu() {
        let shifted = shifted.contiguous()?;
        shifted
            .apply_op1(FusedCrossEntropy {
                targets: Arc::new(targets),
            })?
            .sum_all()?
    } else {
        // Composed differentiable path for accelerators.
        let mask: Vec<f32> = targets
            .iter()
            .map(|&x| f32::from(u8::from(x >= 0)))
            .collect();
        let idx: Vec<u32> = targets.iter().map(|&x| x.max(0) as u32).collect();
        let dev = shifted.device();
        let mask = Tensor::from_vec(mask, b * (t - 1), dev)?;
        let idx = Tensor::from_vec(idx, (b * (t - 1), 1), dev)?;
        let max = shifted.max_keepdim(D::Minus1)?.detach();
        let diff = shifted.broadcast_sub(&max)?;
        let lse = diff.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let picked = diff.gather(&idx, D::Minus1)?;
        ((lse - picked)?.squeeze(D::Minus1)? * mask)?.sum_all()?
    };
    Ok((loss, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The loss and logits gradient by candle's composed graph (`log_softmax` + `gather` on the
    /// shifted logits), the reference for the fused op.
    fn composed(logits: &Var, labels: &[Vec<i64>]) -> (f32, Tensor) {
        let (b, t, v) = logits.dims3().unwrap();
        let mut idx = Vec::new();
        let mut mask = Vec::new();
        for row in labels {
            for j in 1..t {
                let l = row.get(j).copied().unwrap_or(IGNORE_INDEX);
                let ok = l >= 0 && (l as usize) < v;
                idx.push(if ok { l as u32 } else { 0 });
                mask.push(if ok { 1f32 } else { 0.0 });
            }
        }
        let dev = Device::Cpu;
        let shifted = logits
            .as_tensor()
            .narrow(1, 0, t - 1)
            .unwrap()
            .reshape((b * (t - 1), v))
            .unwrap();
        let lsm = candle_nn::ops::log_softmax(&shifted, D::Minus1).unwrap();
        let idx = Tensor::from_vec(idx, (b * (t - 1), 1), &dev).unwrap();
        let picked = lsm.gather(&idx, D::Minus1).unwrap().squeeze(1).unwrap();
        let mask = Tensor::from_vec(mask, b * (t - 1), &dev).unwrap();
        let loss = (picked * mask).unwrap().sum_all().unwrap().neg().unwrap();
        let g = loss.backward().unwrap();
        (
            loss.to_scalar::<f32>().unwrap(),
            g.get(logits.as_tensor()).unwrap().clone(),
        )
    }

    #[test]
    fn fused_loss_on_the_full_logits_matches_the_composed_graph() {
        let dev = Device::Cpu;
        let (b, t, v) = (3, 6, 11);
        let logits =
            Var::from_tensor(&(Tensor::randn(0f32, 1.0, (b, t, v), &dev).unwrap() * 3.0).unwrap())
                .unwrap();
        // Ignored positions, an out-of-range label and a short row (padded by IGNORE_INDEX).
        let labels = vec![
            vec![1, 2, 3, 4, 5, 6],
            vec![IGNORE_INDEX, IGNORE_INDEX, 7, 8, 99, 10],
            vec![0, 1, 2],
        ];
        let (sum, count) = causal_lm_loss_sum(logits.as_tensor(), &labels).unwrap();
        assert_eq!(count, 5 + 3 + 2);
        let g = sum.backward().unwrap();
        let g = g.get(logits.as_tensor()).unwrap();
        let (want, want_g) = composed(&logits, &labels);
        let got = sum.to_scalar::<f32>().unwrap();
        assert!((got - want).abs() < 1e-4 * want.abs(), "{got} vs {want}");
        let d = (g - &want_g)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "gradient differs by {d:e}");
        // The last position of every row predicts nothing: its gradient is zero.
        let last = g
            .narrow(1, t - 1, 1)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(last.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn a_one_token_sequence_has_no_loss_terms() {
        let logits = Tensor::ones((2, 1, 5), DType::F32, &Device::Cpu).unwrap();
        let (sum, count) = causal_lm_loss_sum(&logits, &[vec![1], vec![2]]).unwrap();
        assert_eq!(count, 0);
        assert_eq!(sum.to_scalar::<f32>().unwrap(), 0.0);
    }
}
