//! Loading a checkpoint: a local directory, a local GGUF file, a hub id
//! (`owner/name[@revision]`) or one GGUF file of a hub repo (`owner/name[@revision]:file.gguf`)
//! through the Hugging Face cache ([`hub_source`]: `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`,
//! `HF_TOKEN` — the token is never logged), its config, weights (safetensors, or GGUF dequantized
//! at load), tokenizer and EOS ids, optionally with a PEFT adapter.

use crate::error::{Error, Result};
use crate::gguf::{self, GgufFile, GgufTensors};
use crate::lora::{Adapter, LinearFactory, LoraPlan, LoraVars};
use crate::models::{self, CausalLm};
use crate::tokenizer::TextTokenizer;
use crate::weights::{Checkpoint, Weights};
use candle_core::{DType, Device};
use hub_source::{Hub, Source};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files a tokenizer may have beside a GGUF file; when `tokenizer.json` is there it wins over the
/// vocabulary in the GGUF metadata.
const TOKENIZER_BESIDE_GGUF: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Whether a path names a GGUF file: a `.gguf` extension or the GGUF magic bytes.
pub fn is_gguf_file(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// Resolves a model source to a local path: a directory holding `config.json`, `tokenizer.json`
/// and the safetensors weights, or a GGUF file. A local directory or GGUF file is taken as given;
/// for a hub repo, the cache snapshot (downloading missing files unless the hub is offline); for a
/// hub repo naming a `.gguf` file, that file in the snapshot (with a `tokenizer.json` beside it
/// when the repo has one).
pub fn checkpoint_dir(source: &Source, hub: &Hub) -> Result<PathBuf> {
    match source {
        Source::Local(p) => {
            if p.is_dir() || is_gguf_file(p) {
                return Ok(p.clone());
            }
            Err(Error::MissingFile {
                path: p.clone(),
                what: if p.is_file() {
                    "checkpoint directory (this is a file, and not a GGUF file)".into()
                } else {
                    "checkpoint directory or GGUF file".into()
                },
            })
        }
        Source::Hub {
            file: Some(file), ..
        } if file.to_ascii_lowercase().ends_with(".gguf") => {
            let snap = source.snapshot(hub);
            let path = snap.file(file)?;
            let dir = match file.rsplit_once('/') {
                Some((d, _)) => format!("{d}/"),
                None => String::new(),
            };
            for beside in TOKENIZER_BESIDE_GGUF {
                let _ = snap.optional(&format!("{dir}{beside}"));
            }
            Ok(path)
        }
        Source::Hub { file: Some(_), .. } => Err(Error::InvalidParam {
            name: "model",
            msg: format!(
                "`{}` names one file; a checkpoint is a whole repo (config, tokenizer, \
                 safetensors weights) or one GGUF file (`owner/name:file.gguf`)",
                source.display_name()
            ),
        }),
        Source::Hub { file: None, .. } => {
            let snap = source.snapshot(hub);
            let config = snap.config()?;
            let dir = config
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| Error::MissingFile {
                    path: config.clone(),
                    what: "the snapshot directory".into(),
                })?;
            snap.file("tokenizer.json")?;
            for optional in [
                "tokenizer_config.json",
                "generation_config.json",
                "special_tokens_map.json",
            ] {
                let _ = snap.optional(optional);
            }
            snap.safetensors()?;
            Ok(dir)
        }
    }
}

/// Parses a device: `cpu` or `cuda:N` (`cuda` = `cuda:0`). CUDA needs the `cuda` feature.
pub fn parse_device(spec: &str) -> Result<Device> {
    let bad = |msg: &str| Error::Device {
        device: spec.to_string(),
        msg: msg.to_string(),
    };
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| bad("expected `cpu` or `cuda:N`"))?,
        None => return Err(bad("expected `cpu` or `cuda:N`")),
    };
    if !cfg!(feature = "cuda") {
        return Err(bad(
            "this build has no CUDA support: rebuild with `--features cuda` (needs nvcc)",
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| bad(&e.to_string()))
}

/// The dtype to run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DTypeChoice {
    /// bfloat16 on a GPU (whatever the checkpoint's `torch_dtype`: GGUF and f32 checkpoints
    /// too); f32 on the CPU (candle's CPU f16/bf16 matmuls widen on every call).
    #[default]
    Auto,
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
}

impl DTypeChoice {
    /// Parses `auto`, `f32`, `f16`, `bf16` (and the torch spellings).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => Self::Auto,
            "f32" | "float32" => Self::F32,
            "f16" | "float16" | "half" => Self::F16,
            "bf16" | "bfloat16" => Self::BF16,
            other => {
                return Err(Error::InvalidParam {
                    name: "dtype",
                    msg: format!("`{other}`: expected f32, f16, bf16 or auto"),
                });
            }
        })
    }

    fn resolve(self, device: &Device) -> DType {
        self.resolve_on(device.is_cpu())
    }

    /// The concrete choice on the CPU (`on_cpu`) or on any other device: `Auto` is f32 on the
    /// CPU and bf16 elsewhere (the one definition of that rule; the study plan reads it too).
    pub fn concrete(self, on_cpu: bool) -> Self {
        match self {
            Self::Auto if on_cpu => Self::F32,
            Self::Auto => Self::BF16,
            d => d,
        }
    }

    /// The dtype on the CPU (`on_cpu`) or on any other device ([`DTypeChoice::concrete`]).
    fn resolve_on(self, on_cpu: bool) -> DType {
        match self.concrete(on_cpu) {
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
            Self::F32 | Self::Auto => DType::F32,
        }
    }
}

/// Options of [`load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The dtype.
    pub dtype: DTypeChoice,
    /// The device (CPU by default).
    pub device: Option<Device>,
    /// The LoRA plan (none, an adapter, or trainable weights).
    pub lora: LoraPlan,
    /// The hub client settings (`Hub::from_env()` when `None`).
    pub hub: Option<Hub>,
    /// Dequantize a GGUF file's quantized weights to f32 at load (the reference path). By
    /// default, for f32 inference on the CPU, they stay packed as int8 codes with per-group
    /// scales (about a third of the memory, streamed per token) and every product is bitwise
    /// the one the dequantized weights give.
    pub dequantize_gguf: bool,
}

impl LoadOptions {
    /// Loads a PEFT adapter directory onto the model, merged into the weights or as a separate
    /// path.
    pub fn with_adapter(mut self, dir: &Path, merge: bool) -> Result<Self> {
        self.lora = LoraPlan::Adapter {
            adapter: Arc::new(Adapter::load(dir)?),
            merge,
        };
        Ok(self)
    }
}

/// A loaded model with its tokenizer and EOS ids.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model.
    pub model: Box<dyn CausalLm>,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// EOS ids (from `generation_config.json`, else `config.json`, else the tokenizer).
    pub eos_token_ids: Vec<u32>,
    /// The checkpoint directory (the file itself for a GGUF checkpoint).
    pub dir: PathBuf,
    /// Trainable LoRA weights (empty unless the plan was [`LoraPlan::Train`]).
    pub lora_vars: LoraVars,
    /// PEFT names of the modules that got a LoRA path.
    pub lora_modules: Vec<String>,
}

impl LoadedModel {
    /// A greedy generator over this model, its tokenizer and its EOS ids
    /// ([`crate::Generator::new`], which validates `params`).
    pub fn generator(&self, params: crate::GenerateParams) -> Result<crate::Generator<'_>> {
        crate::Generator::new(
            self.model.as_ref(),
            &self.tokenizer,
            &self.eos_token_ids,
            params,
        )
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn ids_of(v: &serde_json::Value) -> Option<Vec<u32>> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|x| vec![x as u32]),
        serde_json::Value::Array(a) => a.iter().map(|x| x.as_u64().map(|x| x as u32)).collect(),
        _ => None,
    }
}

/// Loads a model from a source (a local directory or GGUF file, a hub repo, or a GGUF file of a
/// hub repo; see [`checkpoint_dir`]).
pub fn load(source: &Source, opts: &LoadOptions) -> Result<LoadedModel> {
    let hub = opts.hub.clone().unwrap_or_else(Hub::from_env);
    let dir = checkpoint_dir(source, &hub)?;
    load_dir(&dir, opts)
}

/// Loads a model from a local checkpoint directory, or from a GGUF file ([`load_gguf`]).
pub fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    if dir.is_file() {
        return load_gguf(dir, opts);
    }
    let config_path = dir.join("config.json");
    let config_text = std::fs::read_to_string(&config_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile {
            path: config_path.clone(),
            what: "model config".into(),
        },
        _ => Error::io(&config_path, e),
    })?;
    let config: serde_json::Value =
        serde_json::from_str(&config_text).map_err(|source| Error::Json {
            path: config_path.clone(),
            source,
        })?;
    let device = opts.device.clone().unwrap_or(Device::Cpu);
    let dtype = opts.dtype.resolve(&device);
    let tokenizer = TextTokenizer::from_dir(dir)?;
    let ck = Arc::new(Checkpoint::open_dir(dir)?);
    let vb = Weights::new(ck, dtype, &device);
    let factory =
        LinearFactory::new(opts.lora.clone())?.dequantize_gguf_at_load(opts.dequantize_gguf);
    let model = models::build(&config_path, &config_text, &vb, &factory)?;
    let gen_cfg = read_json(&dir.join("generation_config.json"))?;
    let eos = gen_cfg
        .as_ref()
        .and_then(|g| g.get("eos_token_id"))
        .and_then(ids_of)
        .or_else(|| config.get("eos_token_id").and_then(ids_of))
        .or_else(|| tokenizer.eos_token_id().map(|e| vec![e]))
        .unwrap_or_default();
    Ok(LoadedModel {
        model,
        tokenizer,
        eos_token_ids: eos,
        dir: dir.to_path_buf(),
        lora_vars: factory.vars().clone(),
        lora_modules: factory.wrapped_modules(),
    })
}

/// Loads a model from a GGUF file: the family's config rebuilt from the metadata
/// ([`gguf::hf_config`]), the tensors dequantized to f32 at load with llama.cpp's conventions
/// undone ([`GgufTensors`]), the tokenizer from a `tokenizer.json` beside the file when there is
/// one, else rebuilt from the GGUF vocabulary ([`gguf::tokenizer_from_gguf`]); EOS from
/// `tokenizer.ggml.eos_token_id`.
pub fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let file = GgufFile::open(path)?;
    let config = gguf::hf_config(&file)?;
    let beside = path.parent().filter(|d| d.join("tokenizer.json").is_file());
    let tokenizer = match beside {
        Some(dir) => TextTokenizer::from_dir(dir)?,
        None => gguf::tokenizer_from_gguf(&file)?,
    };
    let device = opts.device.clone().unwrap_or(Device::Cpu);
    let dtype = opts.dtype.resolve(&device);
    let tensors = Arc::new(GgufTensors::new(file)?);
    let vb = Weights::new(tensors, dtype, &device);
    let factory =
        LinearFactory::new(opts.lora.clone())?.dequantize_gguf_at_load(opts.dequantize_gguf);
    let config_text = config.to_string();
    let model = models::build(path, &config_text, &vb, &factory)?;
    let eos = config
        .get("eos_token_id")
        .and_then(ids_of)
        .or_else(|| tokenizer.eos_token_id().map(|e| vec![e]))
        .unwrap_or_default();
    Ok(LoadedModel {
        model,
        tokenizer,
        eos_token_ids: eos,
        dir: path.to_path_buf(),
        lora_vars: factory.vars().clone(),
        lora_modules: factory.wrapped_modules(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_f32_on_the_cpu_and_bf16_on_a_gpu() {
        assert_eq!(DTypeChoice::Auto.resolve(&Device::Cpu), DType::F32);
        assert_eq!(DTypeChoice::Auto.resolve_on(true), DType::F32);
        assert_eq!(DTypeChoice::Auto.resolve_on(false), DType::BF16);
        assert_eq!(DTypeChoice::Auto.concrete(false), DTypeChoice::BF16);
        assert_eq!(DTypeChoice::F16.concrete(true), DTypeChoice::F16);
        // An explicit choice is kept on either device.
        for on_cpu in [true, false] {
            assert_eq!(DTypeChoice::F32.resolve_on(on_cpu), DType::F32);
            assert_eq!(DTypeChoice::F16.resolve_on(on_cpu), DType::F16);
            assert_eq!(DTypeChoice::BF16.resolve_on(on_cpu), DType::BF16);
        }
        assert_eq!(DTypeChoice::default(), DTypeChoice::Auto);
    }
}
