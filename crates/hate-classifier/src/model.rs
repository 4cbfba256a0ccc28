//! RoBERTa sequence classifier (Liu et al. 2019, "RoBERTa: A Robustly Optimized BERT Pretraining
//! Approach"), following transformers' `modeling_roberta.py`: `RobertaForSequenceClassification`
//! = embeddings (word + padding-offset positions + token type, LayerNorm) → post-LN encoder →
//! head (dense → tanh → out_proj) on the `<s>` token.
//!
//! This is the device-generic implementation on candle ops (any device, padded batches with an
//! attention mask). On the CPU the crate runs [`crate::cpu`]'s packed kernels instead; both are
//! built from the same checkpoint tensors and tested against the same Python references.

use crate::config::Config;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use std::path::PathBuf;

/// Fetches a named tensor, checking its shape against the config: a missing tensor or a shape
/// mismatch is a typed error naming the tensor.
pub(crate) struct Weights<'a> {
    pub vb: VarBuilder<'a>,
    pub path: PathBuf,
}

impl Weights<'_> {
    pub(crate) fn pp(&self, s: impl ToString) -> Self {
        Weights {
            vb: self.vb.pp(s),
            path: self.path.clone(),
        }
    }

    pub(crate) fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        let full = {
            let p = self.vb.prefix();
            if p.is_empty() {
                name.to_string()
            } else {
                format!("{p}.{name}")
            }
        };
        if !self.vb.contains_tensor(name) {
            return Err(Error::MissingTensor {
                path: self.path.clone(),
                tensor: full,
            });
        }
        let t = self.vb.get_unchecked(name)?;
        if t.dims() != shape {
            return Err(Error::TensorShape {
                path: self.path.clone(),
                tensor: full,
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(t)
    }

    /// A linear layer's `(weight (out, in), bias (out))`.
    pub(crate) fn weight_bias(&self, out_dim: usize, in_dim: usize) -> Result<(Tensor, Tensor)> {
        Ok((
            self.get(&[out_dim, in_dim], "weight")?,
            self.get(&[out_dim], "bias")?,
        ))
    }

    fn linear(&self, out_dim: usize, in_dim: usize) -> Result<Linear> {
        let (w, b) = self.weight_bias(out_dim, in_dim)?;
        Ok(Linear::new(w, Some(b)))
    }

    fn layer_norm(&self, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.get(&[dim], "weight")?,
            self.get(&[dim], "bias")?,
            eps,
        ))
    }
}

/// RoBERTa position ids as transformers computes them: non-padding tokens count up from
/// `pad + 1`, padding tokens get `pad`.
pub(crate) fn position_ids(ids: &[u32], pad: u32) -> impl Iterator<Item = u32> + '_ {
    let mut n = 0u32;
    ids.iter().map(move |&t| {
        if t == pad {
            pad
        } else {
            n += 1;
            pad + n
        }
    })
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn new(cfg: &Config, w: &Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let word = Embedding::new(
            w.pp("word_embeddings")
                .get(&[cfg.vocab_size, h], "weight")?,
            h,
        );
        let position = Embedding::new(
            w.pp("position_embeddings")
                .get(&[cfg.max_position_embeddings, h], "weight")?,
            h,
        );
        let token_type = w
            .pp("token_type_embeddings")
            .get(&[cfg.type_vocab_size, h], "weight")?
            .narrow(0, 0, 1)?;
        let norm = w.pp("LayerNorm").layer_norm(h, cfg.layer_norm_eps)?;
        Ok(Self {
            word,
            position,
            token_type,
            norm,
        })
    }

    fn forward(&self, ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let x = self.word.forward(ids)?;
        let x = (x + self.position.forward(positions)?)?;
        let x = x.broadcast_add(&self.token_type)?;
        Ok(self.norm.forward(&x)?)
    }
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
}

impl Layer {
    fn new(cfg: &Config, w: &Weights) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let att = w.pp("attention");
        let sa = att.pp("self");
        let (qw, qb) = sa.pp("query").weight_bias(h, h)?;
        let (kw, kb) = sa.pp("key").weight_bias(h, h)?;
        let (vw, vb) = sa.pp("value").weight_bias(h, h)?;
        // One fused (3h, h) projection: one large matmul instead of three.
        let wqkv = Tensor::cat(&[&qw, &kw, &vw], 0)?;
        let bqkv = Tensor::cat(&[&qb, &kb, &vb], 0)?;
        Ok(Self {
            qkv: Linear::new(wqkv, Some(bqkv)),
            attn_out: att.pp("output").pp("dense").linear(h, h)?,
            attn_norm: att
                .pp("output")
                .pp("LayerNorm")
                .layer_norm(h, cfg.layer_norm_eps)?,
            up: w.pp("intermediate").pp("dense").linear(i, h)?,
            down: w.pp("output").pp("dense").linear(h, i)?,
            out_norm: w
                .pp("output")
                .pp("LayerNorm")
                .layer_norm(h, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// `x`: (b, s, h); `mask`: (b, 1, 1, s) additive.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, s, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?; // (3, b, heads, s, d)
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let ctx = att.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        let x = self
            .attn_norm
            .forward(&(self.attn_out.forward(&ctx)? + x)?)?;
        let y = self.down.forward(&self.up.forward(&x)?.gelu_erf()?)?;
        Ok(self.out_norm.forward(&(y + x)?)?)
    }
}

/// `RobertaForSequenceClassification` on candle tensors.
pub struct RobertaForSequenceClassification {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    dense: Linear,
    out_proj: Linear,
    pad: u32,
    device: Device,
}

impl RobertaForSequenceClassification {
    /// Builds the model from `vb` (tensor names as transformers saves them: `roberta.embeddings.*`,
    /// `roberta.encoder.layer.N.*`, `classifier.dense.*`, `classifier.out_proj.*`).
    pub(crate) fn new(cfg: &Config, num_labels: usize, w: &Weights) -> Result<Self> {
        let r = w.pp("roberta");
        let embeddings = Embeddings::new(cfg, &r.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, &r.pp("encoder").pp("layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let c = w.pp("classifier");
        Ok(Self {
            embeddings,
            layers,
            dense: c.pp("dense").linear(cfg.hidden_size, cfg.hidden_size)?,
            out_proj: c.pp("out_proj").linear(num_labels, cfg.hidden_size)?,
            pad: cfg.pad_token_id,
            device: w.vb.device().clone(),
        })
    }

    /// Runs a batch of token-id sequences (right-padded here to the longest); returns the pooled
    /// `<s>` embeddings (n, hidden) and the logits (n, labels), row-major.
    pub(crate) fn forward(&self, seqs: &[&[u32]]) -> Result<(Vec<f32>, Vec<f32>)> {
        let b = seqs.len();
        let s = seqs.iter().map(|q| q.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad; b * s];
        let mut pos = vec![self.pad; b * s];
        let mut mask = vec![f32::MIN; b * s];
        for (r, q) in seqs.iter().enumerate() {
            ids[r * s..r * s + q.len()].copy_from_slice(q);
            for (j, p) in position_ids(q, self.pad).enumerate() {
                pos[r * s + j] = p;
                mask[r * s + j] = 0.0;
            }
        }
        let dev = &self.device;
        let ids = Tensor::from_vec(ids, (b, s), dev)?;
        let pos = Tensor::from_vec(pos, (b, s), dev)?;
        let mask = Tensor::from_vec(mask, (b, 1, 1, s), dev)?;
        let mut x = self.embeddings.forward(&ids, &pos)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask)?;
        }
        // Contiguous: cuBLAS takes no row stride of s·h (the CPU matmul does, so only a GPU
        // run showed it).
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
        let pooled = self.dense.forward(&cls)?.tanh()?;
        let logits = self.out_proj.forward(&pooled)?;
        let flat = |t: Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        Ok((flat(pooled)?, flat(logits)?))
    }

    /// The device the weights live on.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }
}

/// Softmax over the last dimension of a row-major (n, k) array, in f64 for the final step.
pub(crate) fn softmax_rows(logits: &[f32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks(k) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&x| (x as f64 - m).exp()).collect();
        let z: f64 = e.iter().sum();
        out.extend(e.iter().map(|x| (x / z) as f32));
    }
    out
}
