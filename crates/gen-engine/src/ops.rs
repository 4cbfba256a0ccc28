//! Numerical building blocks shared by the model families. Each has a fast inference form
//! (candle's fused kernels, which have no backward pass) and a composed, differentiable form used
//! when `training` is set.

use crate::error::Result;
use candle_core::{D, DType, Tensor};

/// RMSNorm `x / √(mean(x²) + eps) · w`, computed in f32 and returned in `x`'s dtype. `w` must
/// already hold the effective scale (Gemma's `1 + w` is folded in at load time).
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, training: bool) -> Result<Tensor> {
    if !training {
        let x = x.contiguous()?;
        if x.dtype() == DType::F32 {
            return Ok(candle_nn::ops::rms_norm(&x, w, eps as f32)?);
        }
        let y = candle_nn::ops::rms_norm(
            &x.to_dtype(DType::F32)?,
            &w.to_dtype(DType::F32)?,
            eps as f32,
        )?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    if let Some(y) = crate::fused::rms_norm(x, w, eps)? {
        return Ok(y);
    }
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let ms = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x32.broadcast_div(&(ms + eps)?.sqrt()?)?;
    Ok(normed
        .broadcast_mul(&w.to_dtype(DType::F32)?)?
        .to_dtype(dtype)?)
}

/// Softmax over the last dimension.
pub(crate) fn softmax_last_dim(x: &Tensor, training: bool) -> Result<Tensor> {
    if !training {
        return Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?);
    }
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?)
}

/// Rotary embedding in the "rotate half" layout (transformers' `apply_rotary_pos_emb`) on
/// `x` `[b, h, t, d]` with `cos`, `sin` `[b, t, d/2]` (already multiplied by the attention
/// scaling factor). Only the first `2 · cos.dim(-1)` channels rotate (partial rotary).
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, training: bool) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let half = cos.dim(D::Minus1)?;
    let rot = 2 * half;
    let (xr, pass) = if rot < d {
        (
            x.narrow(D::Minus1, 0, rot)?,
            Some(x.narrow(D::Minus1, rot, d - rot)?),
        )
    } else {
        (x.clone(), None)
    };
    let y = if !training {
        candle_nn::rotary_emb::rope(&xr.contiguous()?, cos, sin)?
    } else {
        let c = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
        let s = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
        let x1 = xr.narrow(D::Minus1, 0, half)?;
        let x2 = xr.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        (xr.broadcast_mul(&c)? + rotated.broadcast_mul(&s)?)?
    };
    match pass {
        Some(p) => Ok(Tensor::cat(&[&y, &p], D::Minus1)?),
        None => Ok(y),
    }
}

/// The MLP activations used by the families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// SiLU (Llama, Phi-3).
    Silu,
    /// GELU, tanh approximation (`gelu_pytorch_tanh`, Gemma's legacy `gelu`).
    GeluTanh,
    /// GELU, exact (erf).
    GeluErf,
}

impl Activation {
    /// Parses a transformers activation name; `gemma_legacy` maps `gelu` to the tanh form as
    /// transformers does for Gemma.
    pub(crate) fn parse(name: &str, gemma_legacy: bool) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Self::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Self::GeluTanh),
            "gelu" if gemma_legacy => Some(Self::GeluTanh),
            "gelu" => Some(Self::GeluErf),
            _ => None,
        }
    }

    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Silu => x.silu()?,
            Self::GeluTanh => x.gelu()?,
            Self::GeluErf => x.gelu_erf()?,
        })
    }
}

/// `cap · tanh(x / cap)`.
pub(crate) fn soft_cap(x: &Tensor, cap: f64) -> Result<Tensor> {
    Ok(((x / cap)?.tanh()? * cap)?)
}
