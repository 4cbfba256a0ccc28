//! The causal-LM trait every family implements, the forward context, the KV cache, and the
//! family registry: `architectures[0]` → the family's constructor and PEFT LoRA targets.
//!
//! A family is one file (its `Config`: [`CommonConfig`] flattened plus its own keys, and a `spec`
//! that adjusts the base decoder spec) and one line in the `FAMILIES` table.

use crate::error::{Error, Result};
use crate::lora::LinearFactory;
use crate::weights::Weights;
use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;
use std::path::Path;

mod common;
pub(crate) mod decoder;
pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod llama;
pub mod mistral;
pub mod olmo2;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod smollm3;

pub use common::CommonConfig;
pub use gemma::GemmaForCausalLM;
pub use gemma2::Gemma2ForCausalLM;
pub use gemma3::Gemma3ForCausalLM;
pub use llama::LlamaForCausalLM;
pub use mistral::MistralForCausalLM;
pub use olmo2::Olmo2ForCausalLM;
pub use phi3::Phi3ForCausalLM;
pub use qwen2::Qwen2ForCausalLM;
pub use qwen3::Qwen3ForCausalLM;
pub use smollm3::SmolLM3ForCausalLM;

/// Parses a family's config (the parsed `config.json` at the given path) and builds the model.
pub(crate) type BuildFn =
    fn(&serde_json::Value, &Path, &Weights, &LinearFactory) -> Result<Box<dyn CausalLm>>;

/// One model family: what `architectures[0]` names it, its PEFT LoRA targets and its
/// constructor.
#[derive(Clone, Copy)]
pub(crate) struct Family {
    /// `architectures[0]` in `config.json`.
    pub architecture: &'static str,
    /// The PEFT `target_modules` of the paper's recipe (every attention and MLP projection).
    pub lora_targets: &'static [&'static str],
    /// Parses the config and builds the model.
    pub build: BuildFn,
}

/// The registered families.
pub(crate) const FAMILIES: &[Family] = &[
    llama::FAMILY,
    gemma::FAMILY,
    gemma2::FAMILY,
    phi3::FAMILY,
    gemma3::FAMILY,
    qwen2::FAMILY,
    qwen3::FAMILY,
    mistral::FAMILY,
    olmo2::FAMILY,
    smollm3::FAMILY,
];

const ARCHITECTURES: [&str; FAMILIES.len()] = {
    let mut out = [""; FAMILIES.len()];
    let mut i = 0;
    while i < FAMILIES.len() {
        out[i] = FAMILIES[i].architecture;
        i += 1;
    }
    out
};

/// The architectures (`config.json` `architectures[0]`) this crate implements.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &ARCHITECTURES;

fn family(architecture: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.architecture == architecture)
}

/// The PEFT LoRA `target_modules` of the paper's recipe for an architecture (`architectures[0]`):
/// Llama-style families the seven projections (`q_proj k_proj v_proj o_proj gate_proj up_proj
/// down_proj`), Phi-3 its fused four (`qkv_proj o_proj gate_up_proj down_proj`). `None` for an
/// architecture this crate does not implement.
///
/// ```
/// let t = gen_engine::models::lora_targets("Phi3ForCausalLM").unwrap();
/// assert_eq!(t, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]);
/// ```
pub fn lora_targets(architecture: &str) -> Option<&'static [&'static str]> {
    family(architecture).map(|f| f.lora_targets)
}

/// [`lora_targets`] for the checkpoint in `dir`, by `architectures[0]` of its `config.json`
/// (or, for a GGUF file, of the config its metadata gives). Errors name the file and key: a
/// missing or invalid `config.json`, a missing `architectures`, or an architecture this crate
/// does not implement.
pub fn default_lora_targets(dir: &Path) -> Result<Vec<String>> {
    if crate::loader::is_gguf_file(dir) {
        let v = crate::gguf::hf_config(&crate::gguf::GgufFile::open(dir)?)?;
        let f = family_of(&v, dir)?;
        return Ok(f.lora_targets.iter().map(|s| s.to_string()).collect());
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile {
            path: path.clone(),
            what: "model config".into(),
        },
        _ => Error::io(&path, e),
    })?;
    let v = parse_json(&path, &text)?;
    let f = family_of(&v, &path)?;
    Ok(f.lora_targets.iter().map(|s| s.to_string()).collect())
}

fn parse_json(path: &Path, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The registered family named by `architectures[0]` of a parsed config.
fn family_of(config: &serde_json::Value, path: &Path) -> Result<&'static Family> {
    let arch = config
        .get("architectures")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|a| a.as_str())
        .ok_or_else(|| Error::config(path, "architectures", "missing or not a list of strings"))?;
    family(arch).ok_or_else(|| Error::UnknownArchitecture {
        path: path.to_path_buf(),
        found: arch.to_string(),
        supported: SUPPORTED_ARCHITECTURES.to_vec(),
    })
}

/// Deserialises a family's `Config` from the parsed `config.json` at `path`.
pub(crate) fn parse_config<C: DeserializeOwned>(
    config: &serde_json::Value,
    path: &Path,
) -> Result<C> {
    C::deserialize(config).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Declares a family's model type over the shared decoder: the struct (documented by the given
/// attributes), its `new` from the family's `Config`, its [`CausalLm`] impl, and the family's
/// registration `FAMILY` with the LoRA targets of its projection layout (from its `Defaults`).
macro_rules! decoder_family {
    ($(#[$doc:meta])* $name:ident, $defaults:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name($crate::models::decoder::Decoder);

        impl $name {
            /// Builds the model from its config (read from `path`), weights and linear-layer
            /// factory.
            pub fn new(
                cfg: &Config,
                path: &::std::path::Path,
                vb: &$crate::weights::Weights,
                factory: &$crate::lora::LinearFactory,
            ) -> $crate::error::Result<Self> {
                Ok(Self($crate::models::decoder::Decoder::new(
                    &cfg.spec(path)?,
                    path,
                    vb,
                    factory,
                )?))
            }
        }

        impl $crate::models::CausalLm for $name {
            fn forward(
                &self,
                ctx: $crate::models::ForwardCtx<'_>,
            ) -> $crate::error::Result<::candle_core::Tensor> {
                self.0.forward(ctx)
            }
            fn info(&self) -> &$crate::models::ModelInfo {
                self.0.info()
            }
            fn generation_cache_reset(&self) -> Option<usize> {
                self.0.generation_cache_reset()
            }
        }

        /// This family's registration.
        pub(crate) const FAMILY: $crate::models::Family = $crate::models::Family {
            architecture: stringify!($name),
            lora_targets: $defaults.layout.lora_targets(),
            build: |v, path, vb, factory| {
                let cfg: Config = $crate::models::parse_config(v, path)?;
                Ok(Box::new($name::new(&cfg, path, vb, factory)?))
            },
        };
    };
}
use decoder_family;

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsWanted {
    /// Every position: `[b, t, vocab]` (training, scoring).
    #[default]
    All,
    /// Only the last position: `[b, 1, vocab]` (generation).
    Last,
}

/// The inputs of one forward call.
///
/// ```text
/// input_ids       [b, t]          u32 token ids (left or right padded)
/// attention_mask  [b, past + t]   1 for a real token, 0 for padding (default: all real)
/// position_ids    [b, t]          (default: cumsum(mask) − 1 per row, 0 on padding, as
///                                  transformers' generate; or past + 0..t without a mask)
/// cache           the KV cache to read and extend (None: no cache, e.g. training)
/// training        differentiable ops everywhere and LoRA dropout on
/// ```
#[derive(Debug)]
pub struct ForwardCtx<'a> {
    /// Token ids `[b, t]` (u32).
    pub input_ids: &'a Tensor,
    /// Padding mask `[b, past + t]` (any integer or float dtype; non-zero = real token).
    pub attention_mask: Option<&'a Tensor>,
    /// Position ids `[b, t]`.
    pub position_ids: Option<&'a Tensor>,
    /// KV cache to use and extend.
    pub cache: Option<&'a mut KvCache>,
    /// Training mode.
    pub training: bool,
    /// Which logits to return.
    pub logits: LogitsWanted,
    /// The sequence length longrope decides its factor set from (transformers:
    /// `max(position_ids) + 1` over the whole batch). Default: computed from this call's
    /// positions; a generator that drops finished rows passes the full batch's length here.
    pub rope_seq_len: Option<usize>,
}

impl<'a> ForwardCtx<'a> {
    /// A context with only the token ids: no mask, default positions, no cache, inference,
    /// all logits.
    pub fn new(input_ids: &'a Tensor) -> Self {
        Self {
            input_ids,
            attention_mask: None,
            position_ids: None,
            cache: None,
            training: false,
            logits: LogitsWanted::All,
            rope_seq_len: None,
        }
    }

    /// Sets the sequence length longrope decides from (see [`ForwardCtx::rope_seq_len`]).
    pub fn with_rope_seq_len(mut self, len: usize) -> Self {
        self.rope_seq_len = Some(len);
        self
    }

    /// Sets the padding mask.
    pub fn with_mask(mut self, mask: &'a Tensor) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Sets explicit position ids.
    pub fn with_positions(mut self, pos: &'a Tensor) -> Self {
        self.position_ids = Some(pos);
        self
    }

    /// Uses (and extends) a KV cache.
    pub fn with_cache(mut self, cache: &'a mut KvCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Sets training mode.
    pub fn training(mut self, training: bool) -> Self {
        self.training = training;
        self
    }

    /// Asks for the last position's logits only.
    pub fn last_logits_only(mut self) -> Self {
        self.logits = LogitsWanted::Last;
        self
    }
}

/// Facts about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// `architectures[0]`.
    pub architecture: String,
    /// Vocabulary size (logits width).
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// The MLP's intermediate size.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// The context window (`max_position_embeddings`).
    pub max_position_embeddings: usize,
    /// The dtype the model runs in.
    pub dtype: DType,
    /// The device it runs on.
    pub device: Device,
    /// Parameters of the base model (embedding counted once when tied).
    pub num_params: usize,
}

/// One interface for every causal-LM family (mistral.rs' `NormalModel` in spirit).
pub trait CausalLm: Send + Sync + std::fmt::Debug {
    /// Runs the model: logits `[b, t, vocab]` (or `[b, 1, vocab]` with
    /// [`LogitsWanted::Last`]) in the model dtype. With a cache, the new keys and values are
    /// appended to it.
    fn forward(&self, ctx: ForwardCtx<'_>) -> Result<Tensor>;

    /// Facts about the model.
    fn info(&self) -> &ModelInfo;

    /// The padded sequence length at which greedy generation drops the KV cache and recomputes
    /// the whole sequence, as transformers' `prepare_inputs_for_generation` does for Phi-3 when
    /// the length first exceeds `original_max_position_embeddings` (so that every cached key is
    /// rotated with the long longrope factors). `None` for the other families.
    fn generation_cache_reset(&self) -> Option<usize> {
        None
    }

    /// An empty KV cache for `batch` rows, preallocated for `capacity` positions.
    fn new_cache(&self, batch: usize, capacity: usize) -> KvCache {
        KvCache::new(self.info().num_layers, batch, capacity)
    }
}

/// A preallocated key/value cache: per layer `[b, kv_heads, capacity, head_dim]` buffers written
/// in place (no concatenation per step), grown when a call would overflow them.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    batch: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers, `batch` rows and `capacity` positions.
    pub fn new(num_layers: usize, batch: usize, capacity: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
            batch,
            capacity: capacity.max(1),
        }
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows of the cache.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Appends `k`, `v` `[b, kv, t, d]` for layer `i` at the current length and returns the
    /// cached keys and values up to and including them.
    pub(crate) fn append(&mut self, i: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, t, d) = k.dims4()?;
        if b != self.batch {
            return Err(Error::InvalidParam {
                name: "cache",
                msg: format!("cache has {} rows, the batch {b}", self.batch),
            });
        }
        let need = self.len + t;
        let slot = &mut self.layers[i];
        let grow = match slot {
            Some((kc, _)) => kc.dim(2)? < need,
            None => true,
        };
        if grow {
            let cap = need.max(self.capacity);
            let kc = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
            let vc = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
            if let Some((ok, ov)) = slot.take()
                && self.len > 0
            {
                kc.slice_set(&ok.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                vc.slice_set(&ov.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            }
            *slot = Some((kc, vc));
        }
        let Some((kc, vc)) = slot.as_ref() else {
            return Err(Error::InvalidParam {
                name: "cache",
                msg: "layer buffer missing".into(),
            });
        };
        kc.slice_set(&k.contiguous()?, 2, self.len)?;
        vc.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((kc.narrow(2, 0, need)?, vc.narrow(2, 0, need)?))
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// One cache from the caches of groups of a batch's rows (prefilled apart): each group's
    /// positions left-padded with zeros to `len` (masked positions, as a left-padded batch's),
    /// the groups' rows stacked in order, then row `r` taken from stacked row `rows[r]`;
    /// preallocated for `capacity` positions.
    pub(crate) fn stack_left_padded(
        parts: &[KvCache],
        rows: &[usize],
        len: usize,
        capacity: usize,
    ) -> Result<Self> {
        let internal = |msg: String| Error::InvalidParam { name: "cache", msg };
        let num_layers = parts.first().map(|p| p.layers.len()).unwrap_or(0);
        let total: usize = parts.iter().map(|p| p.batch).sum();
        if rows.len() != total || rows.iter().any(|&r| r >= total) {
            return Err(internal(format!(
                "{} rows asked of {total} stacked rows",
                rows.len()
            )));
        }
        let mut out = KvCache::new(num_layers, total, capacity.max(len));
        for i in 0..num_layers {
            let mut ks = Vec::with_capacity(parts.len());
            let mut vs = Vec::with_capacity(parts.len());
            for p in parts {
                let (Some((k, v)), true) = (&p.layers[i], p.len <= len) else {
                    return Err(internal(format!("layer {i} of a group's cache is missing")));
                };
                let (k, v) = (k.narrow(2, 0, p.len)?, v.narrow(2, 0, p.len)?);
                let pad = len - p.len;
                let (k, v) = if pad > 0 {
                    let (b, h, _, d) = k.dims4()?;
                    let z = Tensor::zeros((b, h, pad, d), k.dtype(), k.device())?;
                    (Tensor::cat(&[&z, &k], 2)?, Tensor::cat(&[&z, &v], 2)?)
                } else {
                    (k, v)
                };
                ks.push(k);
                vs.push(v);
            }
            let (k, v) = (Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?);
            let index = Tensor::from_vec(
                rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                rows.len(),
                k.device(),
            )?;
            let (k, v) = (k.index_select(&index, 0)?, v.index_select(&index, 0)?);
            let (b, h, _, d) = k.dims4()?;
            let cap = out.capacity;
            let kc = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
            let vc = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
            kc.slice_set(&k.contiguous()?, 2, 0)?;
            vc.slice_set(&v.contiguous()?, 2, 0)?;
            out.layers[i] = Some((kc, vc));
        }
        out.len = len;
        Ok(out)
    }

    /// Keeps only the given rows (e.g. drop finished sequences from a batch).
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        if rows.len() == self.batch {
            return Ok(());
        }
        let first = self
            .layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone());
        let Some(dev) = first else {
            self.batch = rows.len();
            return Ok(());
        };
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &dev,
        )?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        self.batch = rows.len();
        Ok(())
    }
}

/// Builds the model named by `architectures[0]` of the config at `config_path` (its text in
/// `config_text`).
pub(crate) fn build(
    config_path: &Path,
    config_text: &str,
    vb: &Weights,
    factory: &LinearFactory,
) -> Result<Box<dyn CausalLm>> {
    let v = parse_json(config_path, config_text)?;
    (family_of(&v, config_path)?.build)(&v, config_path, vb, factory)
}
