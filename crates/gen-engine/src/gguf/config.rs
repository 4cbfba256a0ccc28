//! GGUF metadata → the family's `config.json`, as transformers' legacy GGUF loader builds it
//! (`GGUF_CONFIG_MAPPING` of `integrations/ggml.py` and `load_gguf_checkpoint` of
//! `modeling_gguf_pytorch_utils.py`): the keys it maps are read from the file, every other key the
//! families read is set to the value of transformers' config class default, which is what
//! transformers runs the file with. The result is in the hub's 4.x layout (`rope_theta`,
//! `rope_local_base_freq`, explicit `layer_types`) with `architectures` set, so it goes through the
//! same family registry as a `config.json`.
//!
//! Where transformers' mapping ignores a key llama.cpp writes, so does this module, on purpose
//! (parity): Gemma-2's soft-capping values, Gemma-3's rope scaling (`rope.scaling.*`), Llama-3's
//! `rope_freqs` factors, Qwen3's `attention.key_length` (transformers uses its default 128; here
//! the file's value is used when present, which is the same whenever transformers can load it).

use super::GgufFile;
use crate::error::{Error, Result};
use serde_json::{Value, json};

/// The `general.architecture` values this crate loads (llama.cpp's names), each turned into its
/// transformers family: `llama` → `LlamaForCausalLM` (`MistralForCausalLM` when `general.name` is
/// `mistral`, as transformers decides), `mistral` → `MistralForCausalLM`, `qwen2` →
/// `Qwen2ForCausalLM`, `qwen3` → `Qwen3ForCausalLM`, `gemma2` → `Gemma2ForCausalLM`, `gemma3` →
/// `Gemma3ForCausalLM` (text only).
pub const SUPPORTED_GGUF_ARCHITECTURES: &[&str] =
    &["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3"];

/// The family a GGUF architecture loads as: (transformers `model_type`, `architectures[0]`).
pub(crate) fn family_of(gguf: &GgufFile) -> Result<(&'static str, &'static str)> {
    let arch = gguf.architecture();
    Ok(match arch {
        // transformers: `if "llama" in architecture and "mistral" in model_name`, where
        // `model_name` is the list `[general.name]`: only an exact `mistral` name switches.
        "llama" if gguf.get_str("general.name")? == Some("mistral") => {
            ("mistral", "MistralForCausalLM")
        }
        "llama" => ("llama", "LlamaForCausalLM"),
        "mistral" => ("mistral", "MistralForCausalLM"),
        "qwen2" => ("qwen2", "Qwen2ForCausalLM"),
        "qwen3" => ("qwen3", "Qwen3ForCausalLM"),
        "gemma2" => ("gemma2", "Gemma2ForCausalLM"),
        "gemma3" => ("gemma3_text", "Gemma3ForCausalLM"),
        other => {
            return Err(Error::UnknownArchitecture {
                path: gguf.path().to_path_buf(),
                found: other.to_string(),
                supported: SUPPORTED_GGUF_ARCHITECTURES.to_vec(),
            });
        }
    })
}

/// The `config.json` (as a parsed value) of the model in a GGUF file.
///
/// # Errors
/// [`Error::UnknownArchitecture`] for a `general.architecture` outside
/// [`SUPPORTED_GGUF_ARCHITECTURES`]; [`Error::Config`] naming the metadata key when a required one
/// (`<arch>.embedding_length`, `.block_count`, `.feed_forward_length`, `.attention.head_count`) is
/// missing or a value has the wrong type.
pub fn hf_config(gguf: &GgufFile) -> Result<Value> {
    let (model_type, architecture) = family_of(gguf)?;
    let arch = gguf.architecture();
    let key = |k: &str| format!("{arch}.{k}");
    let required = |k: &str| -> Result<u64> {
        gguf.get_u64(&key(k))?
            .ok_or_else(|| Error::config(gguf.path(), key(k), "missing from the GGUF metadata"))
    };
    let hidden = required("embedding_length")?;
    let layers = required("block_count")?;
    let heads = required("attention.head_count")?;
    let intermediate = required("feed_forward_length")?;
    let kv_heads = gguf.get_u64(&key("attention.head_count_kv"))?;
    let vocab = match gguf.get_u64(&key("vocab_size"))? {
        Some(v) => v,
        None => match gguf.get_array("tokenizer.ggml.tokens")? {
            Some(tokens) => tokens.len() as u64,
            None => gguf
                .tensor_shape("token_embd.weight")
                .and_then(|s| s.first())
                .map(|&v| v as u64)
                .ok_or_else(|| {
                    Error::config(
                        gguf.path(),
                        key("vocab_size"),
                        "missing, and no tokenizer.ggml.tokens or token_embd.weight to count",
                    )
                })?,
        },
    };
    let mut c = serde_json::Map::new();
    let mut set = |k: &str, v: Value| {
        c.insert(k.to_string(), v);
    };
    set("architectures", json!([architecture]));
    set("model_type", json!(model_type));
    set("vocab_size", json!(vocab));
    set("hidden_size", json!(hidden));
    set("intermediate_size", json!(intermediate));
    set("num_hidden_layers", json!(layers));
    set("num_attention_heads", json!(heads));
    set("num_key_value_heads", json!(kv_heads.unwrap_or(heads)));
    set("torch_dtype", json!("float32"));
    // llama.cpp writes `output.weight` only when the head is not the embedding matrix.
    set(
        "tie_word_embeddings",
        json!(!gguf.has_tensor("output.weight")),
    );
    for (gguf_key, hf) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Some(id) = gguf.get_u64(gguf_key)? {
            set(hf, json!(id));
        }
    }

    // What the file states, else transformers' config class default.
    let max_pos = gguf.get_u64(&key("context_length"))?;
    let eps = gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))?;
    let theta = gguf.get_f64(&key("rope.freq_base"))?;
    let key_length = gguf.get_u64(&key("attention.key_length"))?;
    let window = gguf.get_u64(&key("attention.sliding_window"))?;
    set("rms_norm_eps", json!(eps.unwrap_or(1e-6)));
    set("rope_scaling", Value::Null);
    match model_type {
        "llama" | "mistral" => {
            let head_dim = gguf
                .get_u64(&key("rope.dimension_count"))?
                .unwrap_or(hidden / heads.max(1));
            let default_pos = if model_type == "llama" { 2048 } else { 131072 };
            set(
                "max_position_embeddings",
                json!(max_pos.unwrap_or(default_pos)),
            );
            set("rope_theta", json!(theta.unwrap_or(10000.0)));
            set("head_dim", json!(head_dim));
            set("hidden_act", json!("silu"));
            if model_type == "llama" {
                set("attention_bias", json!(false));
                set("mlp_bias", json!(false));
            } else {
                // MistralConfig's default; transformers' mapping reads no window for Mistral.
                set("sliding_window", json!(4096));
            }
        }
        "qwen2" | "qwen3" => {
            set("max_position_embeddings", json!(max_pos.unwrap_or(32768)));
            set("rope_theta", json!(theta.unwrap_or(10000.0)));
            set("hidden_act", json!("silu"));
            set("use_sliding_window", json!(false));
            set("sliding_window", Value::Null);
            set("max_window_layers", json!(28));
            set(
                "layer_types",
                json!(vec!["full_attention"; layers as usize]),
            );
            if model_type == "qwen3" {
                set("head_dim", json!(key_length.unwrap_or(128)));
                set("attention_bias", json!(false));
            }
        }
        "gemma2" => {
            set("max_position_embeddings", json!(max_pos.unwrap_or(8192)));
            set("rope_theta", json!(theta.unwrap_or(10000.0)));
            set("head_dim", json!(key_length.unwrap_or(256)));
            set("hidden_activation", json!("gelu_pytorch_tanh"));
            set("query_pre_attn_scalar", json!(256));
            set("sliding_window", json!(window.unwrap_or(4096)));
            set("final_logit_softcapping", json!(30.0));
            set("attn_logit_softcapping", json!(50.0));
            set("attention_bias", json!(false));
        }
        "gemma3_text" => {
            set("max_position_embeddings", json!(max_pos.unwrap_or(131072)));
            set("rope_theta", json!(theta.unwrap_or(1_000_000.0)));
            set("rope_local_base_freq", json!(10000.0));
            set("head_dim", json!(key_length.unwrap_or(256)));
            set("hidden_activation", json!("gelu_pytorch_tanh"));
            set("query_pre_attn_scalar", json!(256));
            set("sliding_window", json!(window.unwrap_or(4096)));
            set("final_logit_softcapping", Value::Null);
            set("attn_logit_softcapping", Value::Null);
            set("attention_bias", json!(false));
            // Gemma3TextConfig's default pattern: every sixth layer global.
            let pattern = 6;
            set("sliding_window_pattern", json!(pattern));
            let types: Vec<&str> = (0..layers)
                .map(|i| {
                    if (i + 1) % pattern != 0 {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                })
                .collect();
            set("layer_types", json!(types));
        }
        _ => {}
    }
    Ok(Value::Object(c))
}
