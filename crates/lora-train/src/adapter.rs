//! PEFT adapter directories: `adapter_config.json` + `adapter_model.safetensors`, written atomically.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use gen_engine::lora::{LoraConfig, PEFT_PREFIX};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Reads every tensor of `adapter_model.safetensors` in f32 onto `device`.
pub fn read_weights(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join("adapter_model.safetensors");
    if !path.exists() {
        return Err(Error::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let raw = candle_core::safetensors::load(&path, device).map_err(|e| Error::BadTensor {
        path: path.clone(),
        tensor: String::new(),
        message: e.to_string(),
    })?;
    raw.into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect()
}

/// Writes a safetensors file through a temporary file in the same directory and a rename.
pub fn write_safetensors_atomic(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let tmp = tmp_sibling(path);
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&map, &tmp)?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes a text file atomically (temporary sibling, fsync, rename).
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = tmp_sibling(path);
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes a PEFT adapter directory: the tensors (f32, PEFT key names) and the config.
///
/// The directory is built under a temporary name beside `dir` and renamed into place, so a
/// reader never sees a half-written adapter; an existing `dir` is replaced.
pub fn save_adapter(dir: &Path, config: &LoraConfig, tensors: &[(String, Tensor)]) -> Result<()> {
    let tmp = tmp_sibling(dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let f32s: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    write_safetensors_atomic(&tmp.join("adapter_model.safetensors"), &f32s)?;
    write_adapter_config(&tmp, config)?;
    replace_dir(&tmp, dir)
}

/// Writes `adapter_config.json` (PEFT's keys, `inference_mode` true as PEFT saves it) into `dir`.
pub fn write_adapter_config(dir: &Path, config: &LoraConfig) -> Result<()> {
    let mut cfg = config.clone();
    cfg.inference_mode = true;
    cfg.peft_type = "LORA".into();
    cfg.task_type = Some("CAUSAL_LM".into());
    let path = dir.join("adapter_config.json");
    let json = serde_json::to_string_pretty(&cfg).map_err(|e| Error::BadJson {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_text_atomic(&path, &(json + "\n"))
}

/// Moves the finished directory `tmp` to `dir`, replacing an old `dir`.
pub(crate) fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        let old = tmp_sibling(&dir.with_extension("old"));
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        std::fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    } else {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Files copied from the base model into a merged model directory (when present).
const MODEL_SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "model.safetensors.index.json",
];

/// Writes a merged model in HF layout: every base weight `W` of a LoRA-wrapped module becomes
/// `W + scale · B A` (computed in f32, stored in `W`'s dtype); the other tensors, the shard
/// layout, `config.json` and the tokenizer files are copied. The directory appears atomically.
pub fn merge_to_hf(
    base_dir: &Path,
    config: &LoraConfig,
    lora: &[(String, Tensor)],
    out_dir: &Path,
) -> Result<()> {
    let scale = config.scale();
    let lookup: std::collections::HashMap<&str, &Tensor> =
        lora.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let index = base_dir.join("model.safetensors.index.json");
    let shards: Vec<String> = if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadJson {
            path: index.clone(),
            message: e.to_string(),
        })?;
        let mut files: Vec<String> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.values()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        files
    } else {
        vec!["model.safetensors".to_string()]
    };
    let tmp = tmp_sibling(out_dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut used = 0usize;
    for shard in &shards {
        let path = base_dir.join(shard);
        let tensors =
            candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| Error::BadTensor {
                path: path.clone(),
                tensor: String::new(),
                message: e.to_string(),
            })?;
        let mut out = Vec::with_capacity(tensors.len());
        for (name, w) in tensors {
            let merged = match name.strip_suffix(".weight") {
                Some(module) => {
                    let a = lookup.get(format!("{PEFT_PREFIX}{module}.lora_A.weight").as_str());
                    let b = lookup.get(format!("{PEFT_PREFIX}{module}.lora_B.weight").as_str());
                    match (a, b) {
                        (Some(a), Some(b)) => {
                            used += 2;
                            let delta = (b
                                .to_device(&Device::Cpu)?
                                .to_dtype(DType::F32)?
                                .matmul(&a.to_device(&Device::Cpu)?.to_dtype(DType::F32)?)?
                                * scale)?;
                            if delta.dims() != w.dims() {
                                return Err(Error::BadTensor {
                                    path: path.clone(),
                                    tensor: name.clone(),
                                    message: format!(
                                        "shape {:?}, LoRA delta {:?}",
                                        w.dims(),
                                        delta.dims()
                                    ),
                                });
                            }
                            (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?
                        }
                        _ => w,
                    }
                }
                None => w,
            };
            out.push((name, merged));
        }
        write_safetensors_atomic(&tmp.join(shard), &out)?;
    }
    if used != lora.len() {
        return Err(Error::BadTensor {
            path: base_dir.to_path_buf(),
            tensor: format!("{} LoRA tensors", lora.len() - used),
            message: "have no matching base weight to merge into".into(),
        });
    }
    for f in MODEL_SIDE_FILES {
        let src = base_dir.join(f);
        if src.is_file() {
            let dst = tmp.join(f);
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        }
    }
    replace_dir(&tmp, out_dir)
}
