//! Rotary position embeddings: the default form, linear scaling, Llama-3.1's `llama3` scaling and
//! Phi-3.5's `longrope` (also spelled `su`), parsed from either config layout (4.x `rope_theta` +
//! `rope_scaling`, or transformers-5 `rope_parameters`, flat or per layer type as
//! `{"full_attention": {...}, "sliding_attention": {...}}`).

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::path::Path;

/// How the inverse frequencies are scaled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RopeKind {
    Default,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: f64,
    },
    LongRope {
        short: Vec<f64>,
        long: Vec<f64>,
        original_max: usize,
        attention_factor: f64,
    },
}

/// The parsed rotary settings of a model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RopeSpec {
    pub theta: f64,
    pub partial_rotary_factor: f64,
    pub kind: RopeKind,
}

/// The raw rope-related keys of a `config.json`, in both layouts.
pub(crate) struct RopeKeys<'a> {
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<&'a Value>,
    pub rope_parameters: Option<&'a Value>,
    pub partial_rotary_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    pub max_position_embeddings: usize,
    pub default_theta: f64,
    /// The layer type (`full_attention`, `sliding_attention`) whose entry of a per-layer-type
    /// `rope_parameters` applies; `None`: every entry must agree.
    pub layer_type: Option<&'a str>,
}

fn num(v: &Value, key: &str, path: &Path) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::config(path, format!("rope_scaling.{key}"), "expected a number")),
    }
}

fn num_list(v: &Value, key: &str, path: &Path) -> Result<Vec<f64>> {
    let arr = v.get(key).and_then(|x| x.as_array()).ok_or_else(|| {
        Error::config(
            path,
            format!("rope_scaling.{key}"),
            "expected a list of numbers",
        )
    })?;
    arr.iter()
        .map(|x| {
            x.as_f64().ok_or_else(|| {
                Error::config(
                    path,
                    format!("rope_scaling.{key}"),
                    "expected a list of numbers",
                )
            })
        })
        .collect()
}

impl RopeSpec {
    /// Parses the rope settings; `path` names the config in errors.
    pub(crate) fn parse(keys: RopeKeys<'_>, path: &Path) -> Result<Self> {
        // transformers-5 `rope_parameters` may be nested per layer type; all entries must agree.
        let params = match keys.rope_parameters {
            Some(Value::Object(m))
                if m.values().all(|v| v.is_object())
                    && !m.is_empty()
                    && keys.layer_type.is_some() =>
            {
                // A layer type without an entry gets the defaults, as transformers fills it in.
                keys.layer_type.and_then(|t| m.get(t)).cloned()
            }
            Some(Value::Object(m)) if m.values().all(|v| v.is_object()) && !m.is_empty() => {
                let first = m.values().next().cloned().unwrap_or(Value::Null);
                if m.values().any(|v| *v != first) {
                    return Err(Error::config(
                        path,
                        "rope_parameters",
                        "different rope parameters per layer type are not supported",
                    ));
                }
                Some(first)
            }
            Some(Value::Null) | None => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err(Error::config(path, "rope_parameters", "expected an object")),
        };
        let scaling = match keys.rope_scaling {
            Some(Value::Null) | None => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => {
                return Err(Error::config(
                    path,
                    "rope_scaling",
                    "expected an object or null",
                ));
            }
        };
        let dict = scaling
            .or(params)
            .unwrap_or(Value::Object(Default::default()));
        let theta = num(&dict, "rope_theta", path)?
            .or(keys.rope_theta)
            .unwrap_or(keys.default_theta);
        let partial = num(&dict, "partial_rotary_factor", path)?
            .or(keys.partial_rotary_factor)
            .unwrap_or(1.0);
        let rope_type = dict
            .get("rope_type")
            .or_else(|| dict.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or("default")
            .to_string();
        let orig_in_dict = num(&dict, "original_max_position_embeddings", path)?;
        let kind = match rope_type.as_str() {
            "default" => RopeKind::Default,
            "linear" => RopeKind::Linear {
                factor: num(&dict, "factor", path)?
                    .ok_or_else(|| Error::config(path, "rope_scaling.factor", "missing"))?,
            },
            "llama3" => RopeKind::Llama3 {
                factor: num(&dict, "factor", path)?
                    .ok_or_else(|| Error::config(path, "rope_scaling.factor", "missing"))?,
                low_freq_factor: num(&dict, "low_freq_factor", path)?.ok_or_else(|| {
                    Error::config(path, "rope_scaling.low_freq_factor", "missing")
                })?,
                high_freq_factor: num(&dict, "high_freq_factor", path)?.ok_or_else(|| {
                    Error::config(path, "rope_scaling.high_freq_factor", "missing")
                })?,
                original_max: orig_in_dict
                    .or(keys.original_max_position_embeddings.map(|x| x as f64))
                    .unwrap_or(keys.max_position_embeddings as f64),
            },
            "longrope" | "su" => {
                // Phi-3 keeps the pretraining length outside the rope dict and transformers gives
                // that one priority.
                let original_max = keys
                    .original_max_position_embeddings
                    .or(orig_in_dict.map(|x| x as usize))
                    .unwrap_or(keys.max_position_embeddings);
                let factor = num(&dict, "factor", path)?
                    .unwrap_or(keys.max_position_embeddings as f64 / original_max as f64);
                let attention_factor = match num(&dict, "attention_factor", path)? {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original_max as f64).ln()).sqrt(),
                };
                RopeKind::LongRope {
                    short: num_list(&dict, "short_factor", path)?,
                    long: num_list(&dict, "long_factor", path)?,
                    original_max,
                    attention_factor,
                }
            }
            other => {
                return Err(Error::config(
                    path,
                    "rope_scaling.rope_type",
                    format!(
                        "`{other}` is not supported (default, linear, llama3, longrope/su are)"
                    ),
                ));
            }
        };
        Ok(Self {
            theta,
            partial_rotary_factor: partial,
            kind,
        })
    }
}

/// Precomputed inverse frequencies; produces `cos`/`sin` for given positions.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv_freq: Vec<f32>,
    long_inv_freq: Option<(Vec<f32>, usize)>,
    scaling: f32,
}

impl Rope {
    pub(crate) fn new(spec: &RopeSpec, head_dim: usize, path: &Path) -> Result<Self> {
        let dim = (head_dim as f64 * spec.partial_rotary_factor) as usize;
        if dim == 0 || !dim.is_multiple_of(2) || dim > head_dim {
            return Err(Error::config(
                path,
                "partial_rotary_factor",
                format!("gives a rotary dimension of {dim} for head_dim {head_dim}"),
            ));
        }
        let base: Vec<f64> = (0..dim)
            .step_by(2)
            .map(|i| {
                let e = (i as f32 / dim as f32) as f64;
                spec.theta.powf(e)
            })
            .collect();
        let plain: Vec<f64> = base.iter().map(|b| 1.0 / b).collect();
        let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        Ok(match &spec.kind {
            RopeKind::Default => Self {
                inv_freq: to32(plain),
                long_inv_freq: None,
                scaling: 1.0,
            },
            RopeKind::Linear { factor } => Self {
                inv_freq: to32(plain.iter().map(|f| f / factor).collect()),
                long_inv_freq: None,
                scaling: 1.0,
            },
            RopeKind::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max,
            } => {
                let low_wl = original_max / low_freq_factor;
                let high_wl = original_max / high_freq_factor;
                let inv = plain
                    .iter()
                    .map(|&f| {
                        let f = f as f32 as f64;
                        let wl = 2.0 * std::f64::consts::PI / f;
                        if wl < high_wl {
                            f
                        } else if wl > low_wl {
                            f / factor
                        } else {
                            let smooth = (original_max / wl - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                Self {
                    inv_freq: to32(inv),
                    long_inv_freq: None,
                    scaling: 1.0,
                }
            }
            RopeKind::LongRope {
                short,
                long,
                original_max,
                attention_factor,
            } => {
                for (key, f) in [("short_factor", short), ("long_factor", long)] {
                    if f.len() != dim / 2 {
                        return Err(Error::config(
                            path,
                            format!("rope_scaling.{key}"),
                            format!(
                                "has {} entries, the rotary dimension {dim} needs {}",
                                f.len(),
                                dim / 2
                            ),
                        ));
                    }
                }
                let mk = |ext: &[f64]| -> Vec<f32> {
                    ext.iter()
                        .zip(&base)
                        .map(|(e, b)| (1.0 / ((*e as f32 as f64) * (*b as f32 as f64))) as f32)
                        .collect()
                };
                Self {
                    inv_freq: mk(short),
                    long_inv_freq: Some((mk(long), *original_max)),
                    scaling: *attention_factor as f32,
                }
            }
        })
    }

    /// `cos`, `sin` `[b, t, rot/2]` (times the attention scaling) for positions `[b][t]`. With
    /// longrope the long factors are used when `seq_len` (by default the largest position of
    /// this call + 1) reaches past the pretraining window, as transformers decides it per forward
    /// call.
    pub(crate) fn cos_sin(
        &self,
        pos: &[u32],
        seq_len: Option<usize>,
        (b, t): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let seq_len = seq_len.unwrap_or(pos.iter().copied().max().unwrap_or(0) as usize + 1);
        let inv = match &self.long_inv_freq {
            Some((long, orig)) if seq_len > *orig => long,
            _ => &self.inv_freq,
        };
        let h = inv.len();
        let mut cos = Vec::with_capacity(b * t * h);
        let mut sin = Vec::with_capacity(b * t * h);
        for &p in pos {
            let p = p as f32;
            for &f in inv {
                let a = p * f;
                cos.push(a.cos() * self.scaling);
                sin.push(a.sin() * self.scaling);
            }
        }
        let cos = Tensor::from_vec(cos, (b, t, h), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (b, t, h), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// As [`Rope::cos_sin`], from positions `[b, t]` (any integer or float dtype) that stay on
    /// their device: the angles, `cos` and `sin` are computed there (the same f32 products, so
    /// on the CPU the values equal [`Rope::cos_sin`]'s). Only a longrope model without a
    /// `seq_len` reads the largest position back to the host.
    pub(crate) fn cos_sin_tensor(
        &self,
        pos: &Tensor,
        seq_len: Option<usize>,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = pos.dims2()?;
        let device = pos.device();
        let inv = match &self.long_inv_freq {
            Some((long, orig)) => {
                let seq_len = match seq_len {
                    Some(s) => s,
                    None => pos.to_dtype(DType::F32)?.max_all()?.to_scalar::<f32>()? as usize + 1,
                };
                if seq_len > *orig {
                    long
                } else {
                    &self.inv_freq
                }
            }
            None => &self.inv_freq,
        };
        let h = inv.len();
        let inv = Tensor::from_slice(inv, (1, 1, h), device)?;
        let angles = pos
            .to_dtype(DType::F32)?
            .reshape((b, t, 1))?
            .broadcast_mul(&inv)?;
        let (mut cos, mut sin) = (angles.cos()?, angles.sin()?);
        if self.scaling != 1.0 {
            let s = Tensor::new(&[[[self.scaling]]], device)?;
            cos = cos.broadcast_mul(&s)?;
            sin = sin.broadcast_mul(&s)?;
        }
        Ok((cos.to_dtype(dtype)?, sin.to_dtype(dtype)?))
    }
}
