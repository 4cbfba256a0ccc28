//! Where a model's tensors come from, behind one [`Weights`] path: memory-mapped safetensors
//! checkpoints (one file or sharded with an index, [`Checkpoint`]) or a GGUF file dequantized at
//! load ([`GgufTensors`]), both read tensor by tensor under Hugging Face names with typed errors
//! naming the file and the tensor.

use crate::error::{Error, Result};
use crate::gguf::GgufTensors;
use candle_core::{DType, Device, Tensor};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// name -> (dtype, shape, byte range in the file)
    tensors: HashMap<String, (safetensors::Dtype, Vec<usize>, usize, usize)>,
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_path_buf(),
                what: "safetensors weights".into(),
            },
            _ => Error::io(path, e),
        })?;
        // SAFETY: the file is opened read-only and never written by this process; a concurrent
        // writer truncating it is outside what any mmap-based loader can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Safetensors {
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
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            tensors,
        })
    }

    /// Gives the pages of a byte range back to the kernel once its tensor is copied, so the
    /// mapped file does not double the resident memory of a loaded model.
    fn release(&self, start: usize, end: usize) {
        let page = 4096;
        let lo = start.div_ceil(page) * page;
        let hi = end / page * page;
        if hi > lo {
            // SAFETY: read-only private file mapping; dropped pages are re-read from the file if
            // touched again, and no reference into this range is alive past this point.
            let _ = unsafe {
                self.mmap
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, lo, hi - lo)
            };
        }
    }
}

/// A set of safetensors files seen as one name → tensor map.
///
/// Tensors are copied out of the memory map as they are requested (converted to the target
/// dtype), and the pages they occupied are released at once.
pub struct Checkpoint {
    shards: Vec<Shard>,
    index: HashMap<String, usize>,
    origin: PathBuf,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("tensors", &self.index.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens a list of safetensors files.
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let shard = Shard::open(f)?;
            for name in shard.tensors.keys() {
                index.insert(name.clone(), i);
            }
            shards.push(shard);
        }
        let origin = files.first().cloned().unwrap_or_default();
        Ok(Self {
            shards,
            index,
            origin,
        })
    }

    /// Opens the weights of a checkpoint directory: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json` (found and parsed by [`hub_source::Snapshot`]). A directory
    /// holding only pickle files is refused.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let files = match hub_source::Snapshot::local(dir).safetensors() {
            Ok(files) => files,
            Err(hub_source::HubError::NoSafetensors { .. }) => {
                let pickles = pickle_files(dir);
                if !pickles.is_empty() {
                    return Err(Error::PickleOnly {
                        path: dir.to_path_buf(),
                        files: pickles.join(", "),
                    });
                }
                return Err(Error::MissingFile {
                    path: dir.join(hub_source::SAFETENSORS_FILE),
                    what: "safetensors weights (model.safetensors or model.safetensors.index.json)"
                        .into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut ck = Self::open_files(&files.files)?;
        if let Some(index) = &files.index {
            for (name, file) in index.weight_map() {
                if !ck.index.contains_key(name) {
                    return Err(Error::MissingTensor {
                        path: dir.join(file),
                        name: name.clone(),
                    });
                }
            }
            ck.origin = index.path().to_path_buf();
        }
        Ok(ck)
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|s| s.as_str())
    }

    /// The file a tensor lives in (or the checkpoint's first file when it is absent).
    pub fn file_of(&self, name: &str) -> &Path {
        match self.index.get(name) {
            Some(&i) => &self.shards[i].path,
            None => &self.origin,
        }
    }

    /// The shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        let &i = self.index.get(name)?;
        self.shards[i].tensors.get(name).map(|t| t.1.as_slice())
    }

    /// Reads a tensor, checks its shape (when `shape` is given), converts it to `dtype` on
    /// `device`.
    pub fn get(
        &self,
        name: &str,
        shape: Option<&[usize]>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let &i = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.origin.clone(),
            name: name.to_string(),
        })?;
        let shard = &self.shards[i];
        let (st_dtype, st_shape, start, end) = &shard.tensors[name];
        if let Some(expected) = shape
            && expected != st_shape.as_slice()
        {
            return Err(Error::TensorShape {
                path: shard.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: st_shape.clone(),
            });
        }
        let src = match st_dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(Error::TensorDtype {
                    path: shard.path.clone(),
                    name: name.to_string(),
                    found: format!("{other:?}"),
                });
            }
        };
        let bytes = &shard.mmap[*start..*end];
        let t = Tensor::from_raw_buffer(bytes, src, st_shape, &Device::Cpu)?;
        let t = if src == dtype { t } else { t.to_dtype(dtype)? };
        let t = t.to_device(device)?;
        shard.release(*start, *end);
        Ok(t)
    }
}

/// The pickle checkpoint files in a directory (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`).
pub(crate) fn pickle_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if [".bin", ".pt", ".pth", ".ckpt", ".pkl"]
                .iter()
                .any(|x| name.ends_with(x))
            {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// The tensors of a model, by Hugging Face name: a safetensors checkpoint or a GGUF file.
#[derive(Clone, Debug)]
pub enum TensorSource {
    /// safetensors files, read as stored and converted to the model dtype.
    Safetensors(Arc<Checkpoint>),
    /// A GGUF file, dequantized to f32 (then the model dtype) with llama.cpp's conventions undone.
    Gguf(Arc<GgufTensors>),
}

impl From<Arc<Checkpoint>> for TensorSource {
    fn from(ck: Arc<Checkpoint>) -> Self {
        TensorSource::Safetensors(ck)
    }
}

impl From<Arc<GgufTensors>> for TensorSource {
    fn from(g: Arc<GgufTensors>) -> Self {
        TensorSource::Gguf(g)
    }
}

impl TensorSource {
    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            TensorSource::Safetensors(ck) => ck.contains(name),
            TensorSource::Gguf(g) => g.contains(name),
        }
    }

    /// All tensor names.
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            TensorSource::Safetensors(ck) => Box::new(ck.names()),
            TensorSource::Gguf(g) => Box::new(g.names()),
        }
    }

    /// The shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        match self {
            TensorSource::Safetensors(ck) => ck.shape_of(name),
            TensorSource::Gguf(g) => g.shape_of(name),
        }
    }

    /// The file a tensor lives in (the checkpoint's first file, or the GGUF file).
    pub fn file_of(&self, name: &str) -> &Path {
        match self {
            TensorSource::Safetensors(ck) => ck.file_of(name),
            TensorSource::Gguf(g) => g.path(),
        }
    }

    /// Reads a tensor, checks its shape (when `shape` is given), converts it to `dtype` on
    /// `device`.
    pub fn get(
        &self,
        name: &str,
        shape: Option<&[usize]>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            TensorSource::Safetensors(ck) => ck.get(name, shape, dtype, device),
            TensorSource::Gguf(g) => g.get(name, shape, dtype, device),
        }
    }
}

/// A path into a [`TensorSource`] (like candle's `VarBuilder`):
/// `vb.pp("model").pp("layers").pp(0)` names the tensors below it, and carries the dtype and
/// device the model runs in.
#[derive(Clone, Debug)]
pub struct Weights {
    src: TensorSource,
    prefix: String,
    dtype: DType,
    device: Device,
}

impl Weights {
    /// A root path into a checkpoint (`Arc<Checkpoint>`, `Arc<GgufTensors>` or a
    /// [`TensorSource`]).
    pub fn new(src: impl Into<TensorSource>, dtype: DType, device: &Device) -> Self {
        Self {
            src: src.into(),
            prefix: String::new(),
            dtype,
            device: device.clone(),
        }
    }

    /// The path one level down.
    pub fn pp(&self, s: impl ToString) -> Self {
        let s = s.to_string();
        let prefix = if self.prefix.is_empty() {
            s
        } else {
            format!("{}.{s}", self.prefix)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    /// The dotted path of this node (the PEFT module name of a linear layer).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The model's dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The model's device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tensors.
    pub fn source(&self) -> &TensorSource {
        &self.src
    }

    /// The full tensor name of `name` below this node.
    pub fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Whether `name` below this node exists.
    pub fn contains(&self, name: &str) -> bool {
        self.src.contains(&self.full_name(name))
    }

    /// Reads tensor `name` below this node with the expected shape, in the model's dtype.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.src
            .get(&self.full_name(name), Some(shape), self.dtype, &self.device)
    }

    /// Reads tensor `name` below this node with the expected shape, in `dtype`.
    pub fn get_with_dtype(&self, shape: &[usize], name: &str, dtype: DType) -> Result<Tensor> {
        self.src
            .get(&self.full_name(name), Some(shape), dtype, &self.device)
    }
}
