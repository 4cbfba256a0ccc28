//! bitsandbytes 4-bit weights (NF4 / FP4, with or without double quantization), read from a
//! checkpoint saved by transformers with `BitsAndBytesConfig(load_in_4bit=True, …)`
//! (`quantization_config.quant_method = "bitsandbytes"`).
//!
//! A quantized linear layer `<m>` is stored as (bitsandbytes' `QuantState.as_dict(packed=True)`):
//! - `<m>.weight`: uint8 `[(n + 1) / 2, 1]`, two 4-bit codes per byte, the first element in the
//!   high nibble, over the row-major `[out, in]` weight (`n = out · in`);
//! - `<m>.weight.absmax`: one scale per block of `blocksize` elements (f32), or with double
//!   quantization their 8-bit codes (uint8), decoded blockwise (blocks of `nested_blocksize`)
//!   by `nested_quant_map[code] · nested_absmax[block] + nested_offset`;
//! - `<m>.weight.quant_map`: the 16-value code table (informative: bitsandbytes' kernels use
//!   the table of `quant_type`, as this module does);
//! - `<m>.weight.nested_absmax`, `<m>.weight.nested_quant_map`: double quantization only;
//! - `<m>.weight.quant_state.bitsandbytes__nf4` (or `__fp4`): uint8 bytes of a JSON object
//!   with `quant_type`, `blocksize`, `dtype`, `shape` (and `nested_blocksize`, `nested_dtype`,
//!   `nested_offset`).
//!
//! The element `i` is `table[code_i] · absmax[i / blocksize]` in f32 (bitsandbytes'
//! `dequantize_4bit`), then rounded to the stored `dtype`. [`Bnb4Weight`] keeps the packed codes
//! and scales as tensors on the model's device and dequantizes on each use, so a 4-bit base
//! stays about 4.1 (double quantization) to 4.5 bits per weight resident.

use crate::error::{Error, Result};
use crate::weights::Weights;
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// bitsandbytes' NF4 code table (`get_4bit_type("nf4")`).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' FP4 code table (`get_4bit_type("fp4")`: 1 sign, 2 exponent, 1 mantissa bit, in
/// bit-pattern order, divided by its largest magnitude 12).
pub fn fp4_table() -> [f32; 16] {
    let raw: [f32; 16] = [
        0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0,
        -3.0,
    ];
    raw.map(|x| x / 12.0)
}

/// The two 4-bit data types of bitsandbytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant4Type {
    /// NormalFloat4 (QLoRA's; Unsloth's `*-bnb-4bit` checkpoints).
    Nf4,
    /// 4-bit float (e2m1).
    Fp4,
}

impl Quant4Type {
    /// `nf4` or `fp4`, as bitsandbytes names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nf4 => "nf4",
            Self::Fp4 => "fp4",
        }
    }

    /// The 16-value code table.
    pub fn table(self) -> [f32; 16] {
        match self {
            Self::Nf4 => NF4,
            Self::Fp4 => fp4_table(),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "nf4" => Some(Self::Nf4),
            "fp4" => Some(Self::Fp4),
            _ => None,
        }
    }
}

/// A 4-bit quantization setting (bitsandbytes' `BitsAndBytesConfig(load_in_4bit=True, …)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quant4 {
    /// `bnb_4bit_quant_type`.
    pub quant_type: Quant4Type,
    /// `bnb_4bit_use_double_quant`: the block scales quantized to 8 bits.
    pub double_quant: bool,
    /// Elements per block scale (bitsandbytes: 64).
    pub blocksize: usize,
}

impl Quant4 {
    /// QLoRA's setting, and that of Unsloth's `*-bnb-4bit` checkpoints the paper's authors
    /// fine-tuned: NF4, double quantization, blocks of 64.
    pub fn qlora() -> Self {
        Self {
            quant_type: Quant4Type::Nf4,
            double_quant: true,
            blocksize: 64,
        }
    }
}

/// The block scales of a 4-bit weight.
#[derive(Debug, Clone)]
enum Absmax {
    /// One f32 scale per block, `[blocks]`.
    F32(Tensor),
    /// Double quantization: 8-bit codes (zero-padded to whole nested blocks) decoded as
    /// `code[q] · scale[j / nested_blocksize] + offset`.
    Nested {
        q: Tensor,
        code: Tensor,
        scale: Tensor,
        offset: f64,
        blocksize: usize,
    },
}

/// One bitsandbytes 4-bit weight `[out, in]`, kept packed on the model's device and
/// dequantized on use.
#[derive(Debug, Clone)]
pub struct Bnb4Weight {
    /// The codes, two per byte, zero-padded to whole blocks: `[blocks · blocksize / 2]`.
    packed: Tensor,
    absmax: Absmax,
    /// `[256, 2]`: the values of a byte's high and low nibble.
    lut: Tensor,
    quant_type: Quant4Type,
    blocksize: usize,
    out_dim: usize,
    in_dim: usize,
    /// The dtype the weight was quantized from (the dequantized values are rounded to it).
    dtype: DType,
    double_quant: bool,
}

/// The JSON of `quant_state.bitsandbytes__<type>`.
#[derive(Debug, Deserialize)]
struct StateJson {
    quant_type: String,
    blocksize: usize,
    dtype: String,
    shape: Option<Vec<usize>>,
    nested_blocksize: Option<usize>,
    nested_dtype: Option<String>,
    nested_offset: Option<f64>,
}

const BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

fn state_dtype(s: &str) -> Option<DType> {
    match s {
        "float32" => Some(DType::F32),
        "float16" => Some(DType::F16),
        "bfloat16" => Some(DType::BF16),
        _ => None,
    }
}

/// Whether the checkpoint in `dir` is a bitsandbytes 4-bit one: its `config.json` has
/// `quantization_config.quant_method = "bitsandbytes"` and `load_in_4bit` (or, in older
/// configs, `_load_in_4bit`) true.
pub fn is_4bit_checkpoint(dir: &Path) -> Result<bool> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile {
            path: path.clone(),
            what: "model config".into(),
        },
        _ => Error::io(&path, e),
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| Error::Json { path, source })?;
    let q = &v["quantization_config"];
    let yes = |k: &str| q[k].as_bool() == Some(true);
    Ok(q["quant_method"].as_str() == Some("bitsandbytes")
        && (yes("load_in_4bit") || yes("_load_in_4bit")))
}

/// Whether the layer at `vb` holds a bitsandbytes 4-bit weight.
pub fn is_bnb4(vb: &Weights) -> bool {
    [
        "weight.quant_state.bitsandbytes__nf4",
        "weight.quant_state.bitsandbytes__fp4",
        "weight.absmax",
    ]
    .iter()
    .any(|n| vb.contains(n))
}

/// Whether the layer at `vb` holds a bitsandbytes 8-bit (LLM.int8) weight.
pub fn is_bnb8(vb: &Weights) -> bool {
    vb.contains("weight.SCB")
}

fn bad(vb: &Weights, name: &str, msg: impl Into<String>) -> Error {
    let full = vb.full_name(name);
    Error::Config {
        path: vb.source().file_of(&full).to_path_buf(),
        key: full,
        msg: msg.into(),
    }
}

impl Bnb4Weight {
    /// Reads the 4-bit weight of the layer at `vb` (`weight`, `weight.absmax`, …), checking its
    /// quant state against the layer's `[out_dim, in_dim]`. Every malformed part is an error
    /// naming the tensor (and its file).
    pub fn load(vb: &Weights, raw: &RawReader, out_dim: usize, in_dim: usize) -> Result<Self> {
        let keys: Vec<&str> = ["nf4", "fp4"]
            .into_iter()
            .filter(|t| vb.contains(&format!("weight.quant_state.bitsandbytes__{t}")))
            .collect();
        let key_type = match keys.as_slice() {
            [t] => *t,
            [] => {
                return Err(bad(
                    vb,
                    "weight.quant_state.bitsandbytes__nf4",
                    "missing: a bitsandbytes 4-bit layer needs its packed quant state \
                     (`weight.quant_state.bitsandbytes__nf4` or `__fp4`)",
                ));
            }
            _ => {
                return Err(bad(
                    vb,
                    "weight.quant_state.bitsandbytes__fp4",
                    "both an nf4 and an fp4 quant state are present",
                ));
            }
        };
        let state_name = format!("weight.quant_state.bitsandbytes__{key_type}");
        let (bytes, _) = raw.u8(vb, &state_name)?;
        let st: StateJson = serde_json::from_slice(&bytes)
            .map_err(|e| bad(vb, &state_name, format!("invalid quant state JSON: {e}")))?;
        let quant_type = Quant4Type::parse(&st.quant_type)
            .filter(|t| t.as_str() == key_type)
            .ok_or_else(|| {
                bad(
                    vb,
                    &state_name,
                    format!(
                        "quant_type `{}` (the tensor name says `{key_type}`)",
                        st.quant_type
                    ),
                )
            })?;
        if !BLOCKSIZES.contains(&st.blocksize) {
            return Err(bad(
                vb,
                &state_name,
                format!(
                    "blocksize {} (bitsandbytes allows {BLOCKSIZES:?})",
                    st.blocksize
                ),
            ));
        }
        let dtype = state_dtype(&st.dtype).ok_or_else(|| {
            bad(
                vb,
                &state_name,
                format!("dtype `{}` (expected float32, float16, bfloat16)", st.dtype),
            )
        })?;
        match st.shape.as_deref() {
            Some([o, i]) if *o == out_dim && *i == in_dim => {}
            other => {
                return Err(bad(
                    vb,
                    &state_name,
                    format!("shape {other:?}, the config implies [{out_dim}, {in_dim}]"),
                ));
            }
        }
        let n = out_dim * in_dim;
        let bs = st.blocksize;
        let blocks = n.div_ceil(bs);
        let (mut packed, pshape) = raw.u8(vb, "weight")?;
        if packed.len() != n.div_ceil(2) || pshape.iter().product::<usize>() != packed.len() {
            return Err(bad(
                vb,
                "weight",
                format!(
                    "{} packed bytes (shape {pshape:?}); a [{out_dim}, {in_dim}] weight needs {}",
                    packed.len(),
                    n.div_ceil(2)
                ),
            ));
        }
        packed.resize(blocks * bs / 2, 0);
        let dev = vb.device();
        let qmap = vb.get_with_dtype(&[16], "weight.quant_map", DType::F32);
        if let Err(e) = qmap {
            return Err(match e {
                Error::MissingTensor { .. } => bad(vb, "weight.quant_map", "missing"),
                other => other,
            });
        }
        let nested = vb.contains("weight.nested_absmax");
        let absmax = if nested {
            let bs2 = st.nested_blocksize.ok_or_else(|| {
                bad(
                    vb,
                    &state_name,
                    "double quantization without `nested_blocksize`",
                )
            })?;
            if bs2 == 0 {
                return Err(bad(vb, &state_name, "nested_blocksize 0"));
            }
            let offset = st.nested_offset.filter(|o| o.is_finite()).ok_or_else(|| {
                bad(
                    vb,
                    &state_name,
                    "double quantization without a finite `nested_offset`",
                )
            })?;
            if let Some(d) = &st.nested_dtype
                && d != "float32"
            {
                return Err(bad(
                    vb,
                    &state_name,
                    format!("nested_dtype `{d}` (expected float32)"),
                ));
            }
            let (mut q, qshape) = raw.u8(vb, "weight.absmax")?;
            if q.len() != blocks || qshape.len() != 1 {
                return Err(bad(
                    vb,
                    "weight.absmax",
                    format!("shape {qshape:?}, {blocks} blocks of {bs} need [{blocks}]"),
                ));
            }
            let blocks2 = blocks.div_ceil(bs2);
            q.resize(blocks2 * bs2, 0);
            let scale = vb.get_with_dtype(&[blocks2], "weight.nested_absmax", DType::F32)?;
            let code = vb.get_with_dtype(&[256], "weight.nested_quant_map", DType::F32)?;
            Absmax::Nested {
                q: Tensor::from_vec(q, blocks2 * bs2, dev)?,
                code,
                scale,
                offset,
                blocksize: bs2,
            }
        } else {
            if vb.contains("weight.nested_quant_map") {
                return Err(bad(
                    vb,
                    "weight.nested_absmax",
                    "missing (`weight.nested_quant_map` is present)",
                ));
            }
            Absmax::F32(vb.get_with_dtype(&[blocks], "weight.absmax", DType::F32)?)
        };
        Self::from_parts(
            packed,
            absmax,
            quant_type,
            bs,
            (out_dim, in_dim),
            dtype,
            dev,
        )
    }

    fn from_parts(
        packed: Vec<u8>,
        absmax: Absmax,
        quant_type: Quant4Type,
        blocksize: usize,
        (out_dim, in_dim): (usize, usize),
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let table = quant_type.table();
        let mut lut = Vec::with_capacity(512);
        for b in 0..256usize {
            lut.push(table[b >> 4]);
            lut.push(table[b & 15]);
        }
        let len = packed.len();
        Ok(Self {
            packed: Tensor::from_vec(packed, len, dev)?,
            double_quant: matches!(absmax, Absmax::Nested { .. }),
            absmax,
            lut: Tensor::from_vec(lut, (256, 2), dev)?,
            quant_type,
            blocksize,
            out_dim,
            in_dim,
            dtype,
        })
    }

    /// The device the packed codes live on.
    pub fn device(&self) -> &Device {
        self.packed.device()
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out_dim, self.in_dim)
    }

    /// NF4 or FP4.
    pub fn quant_type(&self) -> Quant4Type {
        self.quant_type
    }

    /// Elements per block scale.
    pub fn blocksize(&self) -> usize {
        self.blocksize
    }

    /// Whether the block scales are themselves quantized.
    pub fn double_quant(&self) -> bool {
        self.double_quant
    }

    /// The dtype the weight was quantized from.
    pub fn source_dtype(&self) -> DType {
        self.dtype
    }

    /// The bytes held: packed codes, scales and tables.
    pub fn resident_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let a = match &self.absmax {
            Absmax::F32(a) => t(a),
            Absmax::Nested { q, code, scale, .. } => t(q) + t(code) + t(scale),
        };
        t(&self.packed) + a + t(&self.lut)
    }

    /// The block scales in f32, `[blocks]` (bitsandbytes: with double quantization,
    /// `dequantize_blockwise(absmax, state2) + offset`).
    pub fn absmax(&self) -> Result<Tensor> {
        let blocks = (self.out_dim * self.in_dim).div_ceil(self.blocksize);
        Ok(match &self.absmax {
            Absmax::F32(a) => a.clone(),
            Absmax::Nested {
                q,
                code,
                scale,
                offset,
                blocksize,
            } => {
                let nb2 = q.elem_count() / blocksize;
                // u32 indices: candle's index_select reads an index of u8::MAX as padding (0).
                let v = code
                    .index_select(&q.to_dtype(DType::U32)?, 0)?
                    .reshape((nb2, *blocksize))?
                    .broadcast_mul(&scale.reshape((nb2, 1))?)?
                    .flatten_all()?
                    .narrow(0, 0, blocks)?;
                (v + *offset)?
            }
        })
    }

    /// The weight `[out, in]` in `dtype`: `table[code] · absmax[block]` in f32, rounded to the
    /// dtype the weight was quantized from, then converted.
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        let n = self.out_dim * self.in_dim;
        let blocks = self.packed.elem_count() * 2 / self.blocksize;
        let absmax = self.absmax()?;
        // u32 indices, transient: candle's index_select reads an index of u8::MAX (the byte
        // 0xff) as padding and gives 0.
        let w = self
            .lut
            .index_select(&self.packed.to_dtype(DType::U32)?, 0)?
            .reshape((blocks, self.blocksize))?
            .broadcast_mul(&absmax.reshape((blocks, 1))?)?
            .flatten_all()?
            .narrow(0, 0, n)?
            .reshape((self.out_dim, self.in_dim))?;
        let w = if self.dtype == DType::F32 {
            w
        } else {
            w.to_dtype(self.dtype)?
        };
        Ok(if w.dtype() == dtype {
            w
        } else {
            w.to_dtype(dtype)?
        })
    }
}

/// One safetensors file mapped for raw reads.
struct RawFile {
    mmap: Mmap,
    tensors: HashMap<String, (safetensors::Dtype, Vec<usize>, usize, usize)>,
}

/// Reads uint8 tensors (packed 4-bit codes, 8-bit scales, the quant state's JSON bytes) from the
/// safetensors files of a checkpoint, which [`crate::weights::Checkpoint::get`] refuses since
/// they are not model weights. Each file is mapped once, read-only.
#[derive(Default)]
pub struct RawReader {
    files: Mutex<HashMap<PathBuf, Arc<RawFile>>>,
}

impl std::fmt::Debug for RawReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.files.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("RawReader").field("files", &n).finish()
    }
}

impl RawReader {
    fn file(&self, path: &Path) -> Result<Arc<RawFile>> {
        if let Ok(m) = self.files.lock()
            && let Some(f) = m.get(path)
        {
            return Ok(Arc::clone(f));
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: opened read-only and never written by this process (as the checkpoint's own
        // mapping in `weights.rs`).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let base = mmap.as_ptr() as usize;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let start = data.as_ptr() as usize - base;
            tensors.insert(
                name,
                (
                    view.dtype(),
                    view.shape().to_vec(),
                    start,
                    start + data.len(),
                ),
            );
        }
        let f = Arc::new(RawFile { mmap, tensors });
        if let Ok(mut m) = self.files.lock() {
            m.insert(path.to_path_buf(), Arc::clone(&f));
        }
        Ok(f)
    }

    /// The bytes and shape of the uint8 tensor `name` below `vb`.
    pub fn u8(&self, vb: &Weights, name: &str) -> Result<(Vec<u8>, Vec<usize>)> {
        let full = vb.full_name(name);
        let path = vb.source().file_of(&full).to_path_buf();
        if !vb.contains(name) {
            return Err(Error::MissingTensor { path, name: full });
        }
        let f = self.file(&path)?;
        let Some((dtype, shape, start, end)) = f.tensors.get(&full) else {
            return Err(Error::MissingTensor { path, name: full });
        };
        if *dtype != safetensors::Dtype::U8 {
            return Err(Error::Config {
                path,
                key: full,
                msg: format!("dtype {dtype:?}, a bitsandbytes tensor of uint8 was expected"),
            });
        }
        Ok((f.mmap[*start..*end].to_vec(), shape.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_bitsandbytes() {
        let fp4 = fp4_table();
        assert_eq!(fp4[3], 1.0);
        assert_eq!(fp4[1], 0.005_208_333_5);
        assert_eq!(fp4[2], 0.666_666_7);
        assert_eq!(NF4[0], -1.0);
        assert_eq!(NF4[7], 0.0);
        assert!(NF4.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn dequantizes_blocks_with_padding() {
        let dev = Device::Cpu;
        // A [3, 5] weight (15 elements: odd, and not a whole number of 4-blocks).
        let mut codes: Vec<u8> = (0..15).map(|i| (i * 7 % 16) as u8).collect();
        codes[2] = 15;
        codes[3] = 15; // the byte 0xff
        let mut packed: Vec<u8> = codes
            .chunks(2)
            .map(|c| (c[0] << 4) | c.get(1).copied().unwrap_or(0))
            .collect();
        packed.resize(8, 0);
        let absmax = vec![1.0f32, 2.0, 0.5, 4.0];
        let w = Bnb4Weight::from_parts(
            packed,
            Absmax::F32(Tensor::from_vec(absmax.clone(), 4, &dev).unwrap()),
            Quant4Type::Nf4,
            4,
            (3, 5),
            DType::F32,
            &dev,
        )
        .unwrap();
        let got: Vec<f32> = w
            .dequantize(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| NF4[c as usize] * absmax[i / 4])
            .collect();
        assert_eq!(got, want);
    }
}
