//! AdamW, learning-rate schedules and gradient clipping, as PyTorch and HF Transformers define them.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, Var};

/// AdamW hyper-parameters (`torch.optim.AdamW` names and defaults, HF Trainer's weight decay 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    /// The peak learning rate (the schedule multiplies it).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the bias-corrected `sqrt(v)`.
    pub eps: f64,
    /// Decoupled weight decay: `p -= lr · weight_decay · p` before the Adam update.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWParams {
    /// Checks the ranges torch checks.
    pub fn check(&self) -> Result<()> {
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            return Err(Error::param("lr", format!("{} is not >= 0", self.lr)));
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return Err(Error::param(
                "beta1",
                format!("{} is not in [0, 1)", self.beta1),
            ));
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return Err(Error::param(
                "beta2",
                format!("{} is not in [0, 1)", self.beta2),
            ));
        }
        if self.eps.is_nan() || self.eps < 0.0 {
            return Err(Error::param("eps", format!("{} is not >= 0", self.eps)));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return Err(Error::param(
                "weight_decay",
                format!("{} is not >= 0", self.weight_decay),
            ));
        }
        Ok(())
    }
}

/// AdamW over named variables, numerically the single-tensor path of `torch.optim.AdamW`:
///
/// ```text
/// p  ← p · (1 − lr·wd)
/// m  ← β1·m + (1−β1)·g ;  v ← β2·v + (1−β2)·g²
/// p  ← p − (lr / (1−β1^t)) · m / (sqrt(v) / sqrt(1−β2^t) + eps)
/// ```
/// State is kept in f32 next to each variable.
#[derive(Debug)]
pub struct AdamW {
    params: AdamWParams,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
}

impl AdamW {
    /// A fresh optimiser (zero moments, step 0) over `vars`.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        params.check()?;
        let mut m = Vec::with_capacity(vars.len());
        let mut v = Vec::with_capacity(vars.len());
        for (_, var) in &vars {
            m.push(var.as_tensor().zeros_like()?.to_dtype(DType::F32)?);
            v.push(var.as_tensor().zeros_like()?.to_dtype(DType::F32)?);
        }
        Ok(AdamW {
            params,
            vars,
            m,
            v,
            step: 0,
        })
    }

    /// The number of updates done so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &AdamWParams {
        &self.params
    }

    /// The variables, in the order given to [`AdamW::new`].
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update with learning rate `lr` and the gradients `grads[i]` of `vars()[i]`
    /// (`None`: no gradient, the variable is left alone as torch does).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        let p = self.params;
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - p.beta1.powi(t);
        let bc2_sqrt = (1.0 - p.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(i).and_then(|g| g.as_ref()) else {
                continue;
            };
            let g = g.to_dtype(DType::F32)?;
            let mut theta = var.as_tensor().to_dtype(DType::F32)?;
            if p.weight_decay != 0.0 {
                theta = theta.affine(1.0 - lr * p.weight_decay, 0.0)?;
            }
            let m = ((&self.m[i] * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + p.eps)?;
            let theta = (theta - ((&m / &denom)? * step_size)?)?;
            var.set(&theta.to_dtype(var.dtype())?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moment tensors keyed `<name>.exp_avg` / `<name>.exp_avg_sq`, for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.vars.len());
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.push((format!("{name}.exp_avg"), self.m[i].clone()));
            out.push((format!("{name}.exp_avg_sq"), self.v[i].clone()));
        }
        out
    }

    /// Restores the moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        path: &std::path::Path,
        tensors: &std::collections::HashMap<String, Tensor>,
        step: usize,
    ) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (suffix, slot) in [("exp_avg", &mut self.m[i]), ("exp_avg_sq", &mut self.v[i])] {
                let key = format!("{name}.{suffix}");
                let t = tensors.get(&key).ok_or_else(|| Error::BadTensor {
                    path: path.to_path_buf(),
                    tensor: key.clone(),
                    message: "missing".into(),
                })?;
                if t.dims() != var.dims() {
                    return Err(Error::BadTensor {
                        path: path.to_path_buf(),
                        tensor: key,
                        message: format!("shape {:?}, expected {:?}", t.dims(), var.dims()),
                    });
                }
                *slot = t.to_dtype(DType::F32)?.to_device(var.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// The learning-rate schedule, as HF Transformers' `get_*_schedule_with_warmup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Linear warm-up from 0, then linear decay to 0 at the last step (the authors' setting).
    #[default]
    Linear,
    /// Linear warm-up, then half a cosine period down to 0.
    Cosine,
    /// Linear warm-up, then constant.
    Constant,
}

impl std::str::FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            "constant" => Ok(Schedule::Constant),
            other => Err(Error::param(
                "schedule",
                format!("unknown schedule `{other}` (linear, cosine, constant)"),
            )),
        }
    }
}

impl Schedule {
    /// The multiplier of the peak learning rate for the optimizer step `step` (0-based: the
    /// first update uses `step = 0`, so with warm-up it runs at learning rate 0, as in HF).
    pub fn factor(&self, step: usize, warmup: usize, total: usize) -> f64 {
        let s = step as f64;
        if step < warmup {
            return s / (warmup.max(1) as f64);
        }
        match self {
            Schedule::Constant => 1.0,
            Schedule::Linear => {
                ((total as f64 - s) / (total.saturating_sub(warmup).max(1) as f64)).max(0.0)
            }
            Schedule::Cosine => {
                let progress = (s - warmup as f64) / (total.saturating_sub(warmup).max(1) as f64);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }
}

/// Scales the gradients in place so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`: `coef = min(1, max_norm / (norm + 1e-6))`. Returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter().flatten() {
        let n = g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
        sq += n;
    }
    // torch stacks per-tensor norms and takes their norm; same value up to rounding.
    let norm = sq.sqrt();
    if max_norm > 0.0 {
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        if coef < 1.0 {
            for g in grads.iter_mut().flatten() {
                *g = (&*g * coef)?;
            }
        }
    }
    Ok(norm)
}
