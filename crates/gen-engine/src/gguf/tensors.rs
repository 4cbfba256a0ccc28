//! GGUF tensors seen under their Hugging Face names, dequantized to f32 at load with llama.cpp's
//! converter conventions undone, as transformers' `load_gguf_checkpoint` does: gguf-py's tensor
//! name map (`blk.N.attn_q.weight` → `model.layers.N.self_attn.q_proj.weight`, …), then its
//! per-architecture `TensorProcessor` — Llama's q/k row permutation reversed
//! (`LlamaTensorProcessor`, for every file of `general.architecture` `llama`), Gemma's norms
//! stored as `1 + w` brought back to `w` (`Gemma2TensorProcessor`, Gemma-2 and Gemma-3).
//! Tensors with no Hugging Face counterpart (`rope_freqs.weight`, …) are ignored, as there.

use super::GgufFile;
use super::config::family_of;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// What is undone on a tensor after dequantization.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Undo {
    None,
    /// llama.cpp's `permute(w, n_head, n_head_kv)` of q/k rows, reversed.
    LlamaPermute {
        heads: usize,
    },
    /// `w + 1` stored; `w` wanted.
    MinusOne,
}

/// The tensors of a GGUF file, by Hugging Face name.
#[derive(Debug)]
pub struct GgufTensors {
    file: GgufFile,
    /// HF name → (GGUF name, what to undo).
    map: HashMap<String, (String, Undo)>,
}

/// The Hugging Face name of a GGUF tensor of an architecture, `None` when transformers has no
/// parameter for it.
fn hf_name(arch: &str, gguf_name: &str) -> Option<String> {
    let (base, suffix) = gguf_name.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let gemma = matches!(arch, "gemma2" | "gemma3");
    let name = match base {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = base.strip_prefix("blk.")?;
            let (layer, leaf) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let leaf = match leaf {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                "ffn_norm" if gemma => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "post_attention_norm" => "post_attention_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                _ => return None,
            };
            format!("model.layers.{layer}.{leaf}")
        }
    };
    Some(format!("{name}.{suffix}"))
}

impl GgufTensors {
    /// Indexes the tensors of an open GGUF file under their Hugging Face names.
    pub fn new(file: GgufFile) -> Result<Self> {
        family_of(&file)?;
        let arch = file.architecture().to_string();
        let heads = |k: &str| -> Result<Option<usize>> {
            Ok(file.get_u64(&format!("{arch}.{k}"))?.map(|n| n as usize))
        };
        // transformers reads both from its config, which has the kv count only when the file
        // states it; without it neither q nor k is permuted back.
        let n_head = heads("attention.head_count")?;
        let n_kv = heads("attention.head_count_kv")?;
        let mut map = HashMap::new();
        for g in file.tensor_names() {
            let Some(hf) = hf_name(&arch, g) else {
                continue;
            };
            let undo = match arch.as_str() {
                // LlamaTensorProcessor: `.attn_q.` / `.attn_k.` (weights and biases), only when
                // both head counts are known.
                "llama" => match (n_head, n_kv) {
                    (Some(h), Some(_)) if g.contains(".attn_q.") => Undo::LlamaPermute { heads: h },
                    (Some(_), Some(kv)) if g.contains(".attn_k.") => {
                        Undo::LlamaPermute { heads: kv }
                    }
                    _ => Undo::None,
                },
                // Gemma2TensorProcessor: every `norm.weight`.
                "gemma2" | "gemma3" if g.contains("norm.weight") => Undo::MinusOne,
                _ => Undo::None,
            };
            map.insert(hf, (g.to_string(), undo));
        }
        Ok(Self { file, map })
    }

    /// The file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The GGUF file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether a tensor is present under this Hugging Face name.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The Hugging Face names of the tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// The shape of a tensor (torch order), by Hugging Face name.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        let (g, _) = self.map.get(name)?;
        self.file.tensor_shape(g)
    }

    /// The GGUF name behind a Hugging Face name.
    pub fn gguf_name(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(|(g, _)| g.as_str())
    }

    /// Reads a tensor by Hugging Face name: dequantized to f32, the converter's convention undone,
    /// its shape checked (when `shape` is given), converted to `dtype` on `device`.
    pub fn get(
        &self,
        name: &str,
        shape: Option<&[usize]>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (g, undo, found) = self.entry(name, shape)?;
        let t = self.file.dequantize(g)?;
        let t = match undo {
            Undo::None => t,
            Undo::MinusOne => (t - 1.0)?,
            Undo::LlamaPermute { heads } => {
                let rows = found.first().copied().unwrap_or(0);
                if heads == 0 || !rows.is_multiple_of(2 * heads) {
                    return Err(Error::TensorShape {
                        path: self.file.path().to_path_buf(),
                        name: format!(
                            "{name} (GGUF `{g}`): rows not divisible by 2 × {heads} heads"
                        ),
                        expected: vec![2 * heads * (rows / (2 * heads).max(1))],
                        found,
                    });
                }
                unpermute(&t, heads)?
            }
        };
        let t = if dtype == DType::F32 {
            t
        } else {
            t.to_dtype(dtype)?
        };
        Ok(t.to_device(device)?)
    }
}

impl GgufTensors {
    /// A tensor's GGUF name, what to undo on it and its shape, by Hugging Face name; the shape
    /// checked against `shape` when given.
    fn entry(&self, name: &str, shape: Option<&[usize]>) -> Result<(&str, Undo, Vec<usize>)> {
        let (g, undo) = self.map.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.file.path().to_path_buf(),
            name: name.to_string(),
        })?;
        let found = self.file.tensor_shape(g).unwrap_or_default().to_vec();
        if let Some(expected) = shape
            && expected != found.as_slice()
        {
            return Err(Error::TensorShape {
                path: self.file.path().to_path_buf(),
                name: format!("{name} (GGUF `{g}`)"),
                expected: expected.to_vec(),
                found,
            });
        }
        Ok((g, *undo, found))
    }

    /// Reads a 2-D quantized tensor by Hugging Face name as codes, scales and mins
    /// ([`super::blocks::Groups`]), the converter's row permutation undone, its shape checked:
    /// the same weight [`GgufTensors::get`] gives, bitwise, kept quantized. `None` for types
    /// without that form and for tensors whose convention is not a row permutation.
    pub(crate) fn quantized(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<super::blocks::Groups>> {
        let (g, undo, found) = self.entry(name, Some(shape))?;
        let heads = match undo {
            Undo::None => None,
            Undo::LlamaPermute { heads } => Some(heads),
            Undo::MinusOne => return Ok(None),
        };
        let Some(mut groups) = self.file.quantized(g)? else {
            return Ok(None);
        };
        if let Some(heads) = heads {
            let rows = found.first().copied().unwrap_or(0);
            if heads == 0 || !rows.is_multiple_of(2 * heads) {
                return Ok(None); // `get` names the problem
            }
            let k = found.get(1).copied().unwrap_or(0);
            groups.q = permute_rows(&groups.q, rows, heads);
            groups.scales = permute_rows(&groups.scales, rows, heads);
            if let Some(m) = &groups.mins {
                groups.mins = Some(permute_rows(m, rows, heads));
            }
            debug_assert_eq!(groups.q.len(), rows * k);
        }
        Ok(Some(groups))
    }
}

/// [`unpermute`] on the rows of a row-major buffer (`rows × len / rows`): row
/// `h · 2 · half + j · 2 + s` of the file goes to row `h · 2 · half + s · half + j`.
fn permute_rows<T: Copy>(v: &[T], rows: usize, heads: usize) -> Vec<T> {
    let width = v.len() / rows.max(1);
    let half = rows / heads / 2;
    let mut out = v.to_vec();
    for h in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let from = h * 2 * half + j * 2 + s;
                let to = h * 2 * half + s * half + j;
                out[to * width..(to + 1) * width]
                    .copy_from_slice(&v[from * width..(from + 1) * width]);
            }
        }
    }
    out
}

/// transformers' `_reverse_permute_weights`: rows `[heads, dim, 2, …]` → `[heads, 2, dim, …]`.
fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / heads / 2;
    let rest: usize = dims[1..].iter().product();
    let out = t
        .reshape((heads, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_gguf_py() {
        let n = |a, g| hf_name(a, g);
        assert_eq!(
            n("llama", "blk.3.attn_q.weight").as_deref(),
            Some("model.layers.3.self_attn.q_proj.weight")
        );
        assert_eq!(
            n("llama", "blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            n("gemma3", "blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.pre_feedforward_layernorm.weight")
        );
        assert_eq!(
            n("gemma3", "blk.1.post_ffw_norm.weight").as_deref(),
            Some("model.layers.1.post_feedforward_layernorm.weight")
        );
        assert_eq!(
            n("qwen2", "blk.2.attn_k.bias").as_deref(),
            Some("model.layers.2.self_attn.k_proj.bias")
        );
        assert_eq!(
            n("llama", "output.weight").as_deref(),
            Some("lm_head.weight")
        );
        assert_eq!(n("llama", "rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_reverses_the_converter() {
        // llama.cpp: w.reshape(h, 2, d, c).swapaxes(1, 2); rows 0..8, 2 heads, d = 2.
        let rows: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let w = Tensor::from_vec(rows, (8, 1), &Device::Cpu).unwrap();
        let converted = w
            .reshape((2, 2, 2, 1))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let back = unpermute(&converted, 2).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..8).map(|x| x as f32).collect::<Vec<_>>()
        );
    }
}
