//! GGUF checkpoints (llama.cpp's single-file format): the file read through candle's
//! [`gguf_file`](candle_core::quantized::gguf_file), its metadata turned into the family's
//! `config.json` ([`hf_config`]), its tensors renamed to the Hugging Face names and dequantized to
//! f32 at load with llama.cpp's converter conventions undone ([`GgufTensors`]) — or, for the
//! quantized linear weights of f32 CPU inference, decoded into int8 codes with per-group scales
//! and mins (`blocks`) whose `q · scale − min` is bitwise that f32 weight — and its vocabulary
//! rebuilt into a tokenizer ([`tokenizer_from_gguf`]) — all as transformers' GGUF loader
//! (`modeling_gguf_pytorch_utils.py`, `integrations/ggml.py`, `integrations/gguf/`) does it, which
//! is the reference the parity tests hold this module to.
//!
//! Supported `general.architecture`s: see [`SUPPORTED_GGUF_ARCHITECTURES`]; tensor types:
//! [`SUPPORTED_GGML_TYPES`]. Anything else is a typed error naming the file, the tensor and the
//! type.

pub(crate) mod blocks;
mod config;
mod tensors;
mod vocab;

pub use config::{SUPPORTED_GGUF_ARCHITECTURES, hf_config};
pub use tensors::GgufTensors;
pub use vocab::tokenizer_from_gguf;

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, ggml_file};
use candle_core::{Device, Tensor};
use memmap2::Mmap;
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The ggml tensor types this crate dequantizes (their ggml names).
pub const SUPPORTED_GGML_TYPES: &[&str] = &[
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K",
];

/// ggml's name for a type number (`ggml.h`'s `ggml_type`), `None` for a number ggml has not
/// assigned.
fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// The ggml name of one of candle's types.
fn dtype_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// An open GGUF file: memory-mapped, its header (metadata and tensor table) parsed by candle, every
/// tensor's type checked and its bytes checked to lie inside the file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    content: Content,
    architecture: String,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("architecture", &self.architecture)
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and checks a GGUF file.
    ///
    /// # Errors
    /// [`Error::MissingFile`] when it does not exist; [`Error::Gguf`] when it is not a GGUF file,
    /// its header is truncated or corrupt, a tensor's data runs past the end of the file, or
    /// `general.architecture` is missing; [`Error::GgufTensorType`] naming the first tensor stored
    /// in a type outside [`SUPPORTED_GGML_TYPES`].
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_path_buf(),
                what: "GGUF checkpoint".into(),
            },
            _ => Error::io(path, e),
        })?;
        // SAFETY: read-only mapping of a file this process never writes; a concurrent writer
        // truncating it is outside what any mmap-based loader can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::Gguf {
            path: path.to_path_buf(),
            msg,
        };
        if mmap.len() < 4 || &mmap[..4] != b"GGUF" {
            return Err(bad(
                "the file does not start with the GGUF magic bytes".into()
            ));
        }
        let content = match Content::read(&mut Cursor::new(&mmap[..])) {
            Ok(c) => c,
            Err(e) => return Err(diagnose(path, &mmap, e.to_string())),
        };
        let file_len = mmap.len() as u64;
        let mut names: Vec<&String> = content.tensor_infos.keys().collect();
        names.sort();
        for name in names {
            let info = &content.tensor_infos[name];
            if !SUPPORTED_GGML_TYPES.contains(&dtype_name(info.ggml_dtype)) {
                return Err(unsupported_type(path, name, dtype_name(info.ggml_dtype)));
            }
            let (start, end) = byte_range(&content, info).ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` of shape {:?} does not fill whole {} blocks",
                    info.shape.dims(),
                    dtype_name(info.ggml_dtype)
                ))
            })?;
            if end > file_len {
                return Err(bad(format!(
                    "truncated: tensor `{name}` needs bytes {start}..{end}, the file ends at \
                     {file_len}"
                )));
            }
        }
        let architecture = match content.metadata.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("`general.architecture` is not a string".into())),
            None => return Err(bad("no `general.architecture` in the metadata".into())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            content,
            architecture,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `general.architecture` (llama.cpp's name: `llama`, `qwen2`, `gemma3`, …).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// The GGUF names of the tensors.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    /// Whether a tensor is present (by its GGUF name).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor's shape (torch order: rows first), by its GGUF name.
    pub fn tensor_shape(&self, name: &str) -> Option<&[usize]> {
        self.content.tensor_infos.get(name).map(|i| i.shape.dims())
    }

    /// A tensor's ggml type name, by its GGUF name.
    pub fn tensor_type(&self, name: &str) -> Option<&'static str> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| dtype_name(i.ggml_dtype))
    }

    /// Reads a tensor by its GGUF name and dequantizes it to an f32 tensor on the CPU (candle's
    /// `QTensor::dequantize`).
    pub fn dequantize(&self, name: &str) -> Result<Tensor> {
        let (info, start, end) = self.tensor_data(name)?;
        let bytes = &self.mmap[start..end];
        // candle reinterprets the bytes as blocks (alignment 2) or floats (alignment 4); GGUF
        // aligns tensor data to `general.alignment` (32 unless a file says otherwise), so only an
        // odd alignment needs the copy.
        let aligned: Vec<u32>;
        let bytes = if (bytes.as_ptr() as usize).is_multiple_of(4) {
            bytes
        } else {
            let mut words = vec![0u32; bytes.len().div_ceil(4)];
            for (w, c) in words.iter_mut().zip(bytes.chunks(4)) {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                *w = u32::from_ne_bytes(b);
            }
            aligned = words;
            // SAFETY: a u32 buffer viewed as its bytes, at least `bytes.len()` of them.
            unsafe { std::slice::from_raw_parts(aligned.as_ptr() as *const u8, bytes.len()) }
        };
        let q = ggml_file::qtensor_from_ggml(
            info.ggml_dtype,
            bytes,
            info.shape.dims().to_vec(),
            &Device::Cpu,
        )?;
        // The blocks are copied: give the mapped pages back so that a loaded model does not hold
        // the file in memory twice.
        self.release(start, end);
        Ok(q.dequantize(&Device::Cpu)?)
    }

    /// Reads a quantized tensor by its GGUF name as integer codes with per-group scales and
    /// mins ([`blocks::Groups`]), whose `q · scale − min` is bitwise the f32 weight
    /// [`GgufFile::dequantize`] gives; `None` for types without that form (f32, f16, …).
    pub(crate) fn quantized(&self, name: &str) -> Result<Option<blocks::Groups>> {
        let (info, start, end) = self.tensor_data(name)?;
        let (n, k) = match info.shape.dims() {
            [n, k] => (*n, *k),
            _ => return Ok(None),
        };
        let bytes = &self.mmap[start..end];
        let Some(groups) = blocks::decode(info.ggml_dtype, bytes, n, k) else {
            return Ok(None);
        };
        let groups = groups.map_err(|e| Error::Gguf {
            path: self.path.clone(),
            msg: format!("tensor `{name}`: {e}"),
        })?;
        self.release(start, end);
        Ok(Some(groups))
    }

    /// A tensor's info and the byte range of its data in the file, by its GGUF name.
    fn tensor_data(&self, name: &str) -> Result<(&TensorInfo, usize, usize)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        // `open` checked the range.
        let (start, end) = byte_range(&self.content, info).ok_or_else(|| Error::Gguf {
            path: self.path.clone(),
            msg: format!("tensor `{name}` does not fill whole blocks"),
        })?;
        Ok((info, start as usize, end as usize))
    }

    fn release(&self, start: usize, end: usize) {
        let page = 4096;
        let lo = start.div_ceil(page) * page;
        let hi = end / page * page;
        if hi > lo {
            // SAFETY: read-only private file mapping; dropped pages are re-read from the file if
            // touched again, and no reference into this range is alive past this point.
            let _ = unsafe {
                self.mmap
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo)
            };
        }
    }

    fn key_error(&self, key: &str, msg: impl Into<String>) -> Error {
        Error::config(&self.path, key, msg)
    }

    /// An unsigned integer metadata value (any integer width), `None` when absent.
    pub(crate) fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => Some(*x as u64),
            Value::U16(x) => Some(*x as u64),
            Value::U32(x) => Some(*x as u64),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.map(Some)
            .ok_or_else(|| self.key_error(key, "expected a non-negative integer"))
    }

    /// A float metadata value (integers accepted), `None` when absent.
    pub(crate) fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        match v {
            Value::F32(x) => Ok(Some(*x as f64)),
            Value::F64(x) => Ok(Some(*x)),
            _ => self
                .get_u64(key)
                .map(|n| n.map(|n| n as f64))
                .map_err(|_| self.key_error(key, "expected a number")),
        }
    }

    /// A string metadata value, `None` when absent.
    pub(crate) fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.key_error(key, "expected a string")),
        }
    }

    /// A boolean metadata value, `None` when absent.
    pub(crate) fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.key_error(key, "expected a boolean")),
        }
    }

    /// An array metadata value, `None` when absent.
    pub(crate) fn get_array(&self, key: &str) -> Result<Option<&[Value]>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.key_error(key, "expected an array")),
        }
    }
}

/// A tensor's byte range in the file, `None` when its element count is not a whole number of
/// blocks.
fn byte_range(content: &Content, info: &TensorInfo) -> Option<(u64, u64)> {
    let elems = info.shape.elem_count();
    let block = info.ggml_dtype.block_size();
    if !elems.is_multiple_of(block) {
        return None;
    }
    let size = (elems / block) as u64 * info.ggml_dtype.type_size() as u64;
    let start = content.tensor_data_offset.checked_add(info.offset)?;
    Some((start, start.checked_add(size)?))
}

fn unsupported_type(path: &Path, name: &str, ggml_type: &str) -> Error {
    Error::GgufTensorType {
        path: path.to_path_buf(),
        name: name.to_string(),
        ggml_type: ggml_type.to_string(),
        supported: SUPPORTED_GGML_TYPES.to_vec(),
    }
}

/// Turns candle's header error into a typed one: walks the header again with a minimal reader to
/// name the tensor whose type candle does not know, or to say where the file ends too early.
fn diagnose(path: &Path, bytes: &[u8], candle_msg: String) -> Error {
    match walk_header(bytes) {
        Walk::UnknownType { tensor, id } => {
            let name = ggml_type_name(id)
                .map(String::from)
                .unwrap_or_else(|| format!("#{id}"));
            unsupported_type(path, &tensor, &name)
        }
        Walk::Truncated { at } => Error::Gguf {
            path: path.to_path_buf(),
            msg: format!(
                "truncated: the header runs past the end of the file ({} bytes) at byte {at} \
                 ({candle_msg})",
                bytes.len()
            ),
        },
        Walk::Fine => Error::Gguf {
            path: path.to_path_buf(),
            msg: candle_msg,
        },
    }
}

enum Walk {
    /// A tensor of a type candle cannot hold.
    UnknownType { tensor: String, id: u32 },
    /// The header ends past the end of the file.
    Truncated { at: usize },
    /// Nothing found by this walk (candle's own message stands).
    Fine,
}

/// A bounds-checked cursor over the header bytes.
struct Bytes<'a> {
    b: &'a [u8],
    pos: usize,
    /// Set when a read ran past the end of the bytes.
    short: bool,
}

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            self.short = true;
            return None;
        };
        let s = &self.b[self.pos..end];
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_le_bytes(a))
    }
    fn len(&mut self, v1: bool) -> Option<usize> {
        if v1 {
            self.u32().map(|x| x as usize)
        } else {
            self.u64().and_then(|x| usize::try_from(x).ok())
        }
    }
    fn skip_value(&mut self, ty: u32, v1: bool, depth: usize) -> Option<()> {
        let width = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                let n = self.len(v1)?;
                return self.take(n).map(|_| ());
            }
            9 if depth < 64 => {
                let inner = self.u32()?;
                let n = self.len(v1)?;
                for _ in 0..n {
                    self.skip_value(inner, v1, depth + 1)?;
                }
                return Some(());
            }
            _ => return None,
        };
        self.take(width).map(|_| ())
    }
}

fn walk_header(bytes: &[u8]) -> Walk {
    let mut r = Bytes {
        b: bytes,
        pos: 4,
        short: false,
    };
    let step = |r: &mut Bytes<'_>| -> Option<Option<Walk>> {
        let version = r.u32()?;
        let v1 = version == 1;
        let tensors = r.len(v1)?;
        let kvs = r.len(v1)?;
        for _ in 0..kvs {
            let n = r.len(v1)?;
            r.take(n)?;
            let ty = r.u32()?;
            r.skip_value(ty, v1, 0)?;
        }
        for _ in 0..tensors {
            let n = r.len(v1)?;
            let name = String::from_utf8_lossy(r.take(n)?).into_owned();
            let dims = r.u32()? as usize;
            for _ in 0..dims {
                r.len(v1)?;
            }
            let id = r.u32()?;
            r.u64()?;
            let known = ggml_type_name(id)
                .is_some_and(|n| SUPPORTED_GGML_TYPES.contains(&n) || matches!(n, "Q8_1" | "Q8_K"));
            if !known {
                return Some(Some(Walk::UnknownType { tensor: name, id }));
            }
        }
        Some(None)
    };
    match step(&mut r) {
        Some(Some(w)) => w,
        Some(None) => Walk::Fine,
        None if r.short => Walk::Truncated { at: r.pos },
        None => Walk::Fine,
    }
}
