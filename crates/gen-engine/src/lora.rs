//! LoRA at the layer level: one linear-like layer, plain or LoRA-wrapped, built by a factory
//! that knows each module's PEFT name and the adapter's [`LoraConfig`].
//!
//! A LoRA-wrapped layer computes `y = x Wᵀ + b + scale · (dropout(x) Aᵀ) Bᵀ` with `A` (`r × in`),
//! `B` (`out × r`) and `scale = alpha / r` (or `alpha / √r` with rsLoRA), exactly as PEFT's
//! `lora.Linear`. The low-rank weights come from one of three places ([`LoraPlan`]):
//! - none: every layer is plain;
//! - a PEFT adapter ([`Adapter`], `adapter_config.json` + `adapter_model.safetensors`), either
//!   merged into the base weight at load time (`W + scale · B A`) or kept as a separate path;
//! - trainable [`candle_core::Var`]s (always f32, whatever the base dtype), registered in a
//!   [`LoraVars`] collection under their PEFT tensor names
//!   (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`) so a trainer can hand
//!   them to an optimiser and save them in PEFT format.
//!
//! Base weights are plain tensors (never `Var`s), so gradients flow only into the LoRA weights.
//!
//! A base layer stored by bitsandbytes in 4 bits (`<m>.weight.absmax`,
//! `<m>.weight.quant_state.bitsandbytes__nf4|fp4`; see [`crate::quant::bnb`]) keeps its packed
//! codes and dequantizes at each product, in the forward and in training's input-gradient
//! product alike (QLoRA: LoRA over a frozen 4-bit base, as PEFT over a bitsandbytes model), or,
//! with [`LinearFactory::dequantize_4bit_at_load`], is dequantized once when loaded.

use crate::error::{Error, Result};
use crate::fused;
use crate::quant::bnb::{self, Bnb4Weight, RawReader};
use crate::weights::{Checkpoint, Weights};
use candle_core::{DType, Tensor, Var};
use packed_matmul::PackedLinear;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The prefix PEFT puts before a module name in adapter tensor names.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// `target_modules` of a PEFT config: a list of module-name suffixes, or one regular expression
/// that must match the whole module name (`"all-linear"` is PEFT's keyword for every linear layer
/// but the output head).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module-name suffixes (`q_proj` matches `model.layers.0.self_attn.q_proj`).
    List(Vec<String>),
    /// A regular expression matched against the whole module name, or `"all-linear"`.
    Regex(String),
}

fn default_bias() -> String {
    "none".into()
}
fn default_peft_type() -> String {
    "LORA".into()
}
fn default_true() -> bool {
    true
}

/// PEFT's `adapter_config.json` for LoRA (the keys this crate reads; others are ignored).
///
/// Options that change the computation and are not implemented (DoRA, rank/alpha patterns,
/// `modules_to_save`, `fan_in_fan_out`, trained biases, layer selection, …) are rejected by
/// [`LoraConfig::validate`] with an error naming the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoraConfig {
    /// The rank `r`.
    pub r: usize,
    /// `lora_alpha`: the scale is `alpha / r` (or `alpha / √r` with rsLoRA).
    pub lora_alpha: f64,
    /// Which modules get a LoRA path.
    pub target_modules: TargetModules,
    /// Dropout on the LoRA input during training.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Bias training: only `"none"` is supported.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// rsLoRA scaling (`alpha / √r`).
    #[serde(default)]
    pub use_rslora: bool,
    /// Conv1D-style transposed weights (GPT-2); unsupported when true.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// DoRA; unsupported when true.
    #[serde(default)]
    pub use_dora: bool,
    /// Per-module ranks; unsupported when non-empty.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    /// Per-module alphas; unsupported when non-empty.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
    /// Fully trained extra modules; unsupported when non-empty.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// The base model the adapter was made for (informative).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// PEFT task type (`CAUSAL_LM`).
    #[serde(default)]
    pub task_type: Option<String>,
    /// Must be `LORA`.
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    /// PEFT's inference-mode flag (informative).
    #[serde(default = "default_true")]
    pub inference_mode: bool,
    /// Only some layer indices get LoRA; unsupported when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Modules excluded from the targets; unsupported when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_modules: Option<serde_json::Value>,
    /// LoRA on the B bias; unsupported when true.
    #[serde(default)]
    pub lora_bias: bool,
    /// Layer replication; unsupported when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_replication: Option<serde_json::Value>,
    /// LoRA on raw parameters; unsupported when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_parameters: Option<serde_json::Value>,
    /// Trainable token rows; unsupported when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainable_token_indices: Option<serde_json::Value>,
}

impl LoraConfig {
    /// A config for training: rank `r`, `alpha`, and the target module suffixes; dropout 0, no
    /// bias, task `CAUSAL_LM`.
    pub fn new(r: usize, lora_alpha: f64, targets: &[&str]) -> Self {
        Self {
            r,
            lora_alpha,
            target_modules: TargetModules::List(targets.iter().map(|s| s.to_string()).collect()),
            lora_dropout: 0.0,
            bias: "none".into(),
            use_rslora: false,
            fan_in_fan_out: false,
            use_dora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            modules_to_save: None,
            base_model_name_or_path: None,
            task_type: Some("CAUSAL_LM".into()),
            peft_type: "LORA".into(),
            inference_mode: false,
            layers_to_transform: None,
            exclude_modules: None,
            lora_bias: false,
            layer_replication: None,
            target_parameters: None,
            trainable_token_indices: None,
        }
    }

    /// Reads and validates an `adapter_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_path_buf(),
                what: "PEFT adapter config".into(),
            },
            _ => Error::io(path, e),
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Rejects options this crate does not implement; `path` names the config in the error.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, msg: &str| {
            Err(Error::UnsupportedLora {
                path: path.to_path_buf(),
                key: key.into(),
                msg: msg.into(),
            })
        };
        if !self.peft_type.eq_ignore_ascii_case("lora") {
            return bad("peft_type", &format!("`{}` is not LORA", self.peft_type));
        }
        if self.r == 0 {
            return bad("r", "the rank must be at least 1");
        }
        if !self.lora_alpha.is_finite() {
            return bad("lora_alpha", "must be a finite number");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad("lora_dropout", "must be in [0, 1)");
        }
        if self.bias != "none" {
            return bad(
                "bias",
                "only \"none\" is supported (trained biases are not)",
            );
        }
        if self.fan_in_fan_out {
            return bad(
                "fan_in_fan_out",
                "Conv1D-style weights (GPT-2) are not supported",
            );
        }
        if self.use_dora {
            return bad("use_dora", "DoRA is not supported");
        }
        if !self.rank_pattern.is_empty() {
            return bad("rank_pattern", "per-module ranks are not supported");
        }
        if !self.alpha_pattern.is_empty() {
            return bad("alpha_pattern", "per-module alphas are not supported");
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return bad(
                "modules_to_save",
                "fully trained extra modules are not supported",
            );
        }
        if self
            .layers_to_transform
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return bad("layers_to_transform", "layer selection is not supported");
        }
        if self.exclude_modules.as_ref().is_some_and(|v| !v.is_null()) {
            return bad("exclude_modules", "module exclusion is not supported");
        }
        if self.lora_bias {
            return bad("lora_bias", "a bias on lora_B is not supported");
        }
        if self
            .layer_replication
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return bad("layer_replication", "layer replication is not supported");
        }
        if self
            .target_parameters
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return bad(
                "target_parameters",
                "LoRA on raw parameters is not supported",
            );
        }
        if self
            .trainable_token_indices
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return bad(
                "trainable_token_indices",
                "trainable tokens are not supported",
            );
        }
        if let TargetModules::Regex(re) = &self.target_modules
            && re != "all-linear"
            && regex::Regex::new(&format!("^(?:{re})$")).is_err()
        {
            return bad(
                "target_modules",
                &format!("`{re}` is not a valid regular expression"),
            );
        }
        Ok(())
    }

    /// The LoRA scale: `alpha / r`, or `alpha / √r` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Whether the module with this PEFT name (e.g. `model.layers.0.self_attn.q_proj`) gets a
    /// LoRA path, by PEFT's rules: a list entry matches the whole name or its last components; a
    /// string is a regular expression matched against the whole name; `"all-linear"` matches every
    /// linear layer but `lm_head`.
    pub fn targets(&self, module: &str) -> bool {
        match &self.target_modules {
            TargetModules::List(list) => list
                .iter()
                .any(|t| module == t || module.ends_with(&format!(".{t}"))),
            TargetModules::Regex(re) if re == "all-linear" => module != "lm_head",
            TargetModules::Regex(re) => regex::Regex::new(&format!("^(?:{re})$"))
                .map(|r| r.is_match(module))
                .unwrap_or(false),
        }
    }
}

/// A PEFT adapter on disk: its config and its weights.
#[derive(Debug)]
pub struct Adapter {
    /// The validated config.
    pub config: LoraConfig,
    weights: Checkpoint,
    dir: PathBuf,
    used: Mutex<BTreeSet<String>>,
}

impl Adapter {
    /// Loads `adapter_config.json` and `adapter_model.safetensors` from a directory. A pickle-only
    /// adapter (`adapter_model.bin`) is refused.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = LoraConfig::from_file(&dir.join("adapter_config.json"))?;
        let file = dir.join("adapter_model.safetensors");
        if !file.is_file() {
            let pickles = crate::weights::pickle_files(dir);
            if !pickles.is_empty() {
                return Err(Error::PickleOnly {
                    path: dir.to_path_buf(),
                    files: pickles.join(", "),
                });
            }
        }
        let weights = Checkpoint::open_files(&[file])?;
        Ok(Self {
            config,
            weights,
            dir: dir.to_path_buf(),
            used: Mutex::new(BTreeSet::new()),
        })
    }

    /// The adapter directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PEFT names of the modules the adapter holds weights for
    /// (`model.layers.0.self_attn.q_proj`), sorted.
    pub fn module_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .weights
            .names()
            .filter_map(|n| {
                n.strip_prefix(PEFT_PREFIX)?
                    .strip_suffix(".lora_A.weight")
                    .map(str::to_string)
            })
            .collect();
        out.sort();
        out
    }

    fn file(&self) -> PathBuf {
        self.dir.join("adapter_model.safetensors")
    }

    /// Reads the `(A, B)` pair of a module in f32, checking their shapes against the base layer.
    fn pair(
        &self,
        module: &str,
        in_dim: usize,
        out_dim: usize,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let a_name = format!("{PEFT_PREFIX}{module}.lora_A.weight");
        let b_name = format!("{PEFT_PREFIX}{module}.lora_B.weight");
        if !self.weights.contains(&a_name) && !self.weights.contains(&b_name) {
            return Ok(None);
        }
        let r = self.config.r;
        let mut out = Vec::new();
        for (name, shape) in [(&a_name, [r, in_dim]), (&b_name, [out_dim, r])] {
            let found = self
                .weights
                .shape_of(name)
                .ok_or_else(|| Error::AdapterMismatch {
                    path: self.file(),
                    tensor: name.clone(),
                    msg: "missing (its A/B partner is present)".into(),
                })?;
            if found != shape {
                return Err(Error::AdapterMismatch {
                    path: self.file(),
                    tensor: name.clone(),
                    msg: format!("shape {found:?}, the base layer with rank {r} needs {shape:?}"),
                });
            }
            out.push(
                self.weights
                    .get(name, None, DType::F32, &candle_core::Device::Cpu)?,
            );
            if let Ok(mut used) = self.used.lock() {
                used.insert(name.clone());
            }
        }
        let b = out.pop().ok_or_else(|| Error::InvalidParam {
            name: "adapter",
            msg: "empty pair".into(),
        })?;
        let a = out.pop().ok_or_else(|| Error::InvalidParam {
            name: "adapter",
            msg: "empty pair".into(),
        })?;
        Ok(Some((a, b)))
    }

    /// Errors on the first adapter tensor no module of the base consumed (an adapter for another
    /// base).
    pub(crate) fn check_all_used(&self) -> Result<()> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let mut names: Vec<&str> = self.weights.names().collect();
        names.sort();
        if let Some(n) = names.into_iter().find(|n| !used.contains(*n)) {
            return Err(Error::AdapterMismatch {
                path: self.file(),
                tensor: n.to_string(),
                msg: "the base model has no such LoRA-targetable module".into(),
            });
        }
        Ok(())
    }
}

/// How trainable LoRA weights start.
#[derive(Debug, Clone)]
pub enum LoraInit {
    /// PEFT's default: `A` Kaiming-uniform (bound `1/√in`), `B` zero; drawn from this seed
    /// (deterministic per module name).
    Default {
        /// The seed.
        seed: u64,
    },
    /// Copied from an existing PEFT adapter (e.g. to continue training or to replay a
    /// reference run).
    FromAdapter(Arc<Adapter>),
}

/// Where the LoRA weights of a model come from.
#[derive(Debug, Clone, Default)]
pub enum LoraPlan {
    /// No LoRA: every layer is plain.
    #[default]
    None,
    /// A PEFT adapter for inference, merged into the base weights or kept as a separate path.
    Adapter {
        /// The adapter.
        adapter: Arc<Adapter>,
        /// Fold `scale · B A` into the base weight at load time.
        merge: bool,
    },
    /// Trainable f32 `Var`s for every targeted module.
    Train {
        /// The LoRA config (rank, alpha, targets, dropout).
        config: Box<LoraConfig>,
        /// How the weights start.
        init: LoraInit,
    },
}

impl LoraPlan {
    /// Trainable LoRA weights with this config and initialisation.
    pub fn train(config: LoraConfig, init: LoraInit) -> Self {
        Self::Train {
            config: Box::new(config),
            init,
        }
    }

    /// Whether the plan gives the module `name` a LoRA path (an adapter's or a trainable one).
    pub fn targets(&self, name: &str) -> bool {
        match self {
            Self::None => false,
            Self::Adapter { adapter, .. } => adapter.config.targets(name),
            Self::Train { config, .. } => config.targets(name),
        }
    }
}

/// The trainable LoRA weights of a model, keyed by their PEFT tensor names
/// (`base_model.model.<module>.lora_A.weight`, `….lora_B.weight`). Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct LoraVars {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
}

impl LoraVars {
    fn insert(&self, name: String, var: Var) {
        if let Ok(mut v) = self.vars.lock() {
            v.insert(name, var);
        }
    }

    /// `(PEFT name, Var)` pairs, sorted by name.
    pub fn named(&self) -> Vec<(String, Var)> {
        self.vars
            .lock()
            .map(|v| v.iter().map(|(k, x)| (k.clone(), x.clone())).collect())
            .unwrap_or_default()
    }

    /// All the Vars, sorted by name (hand these to an optimiser).
    pub fn all_vars(&self) -> Vec<Var> {
        self.named().into_iter().map(|(_, v)| v).collect()
    }

    /// How many tensors.
    pub fn len(&self) -> usize {
        self.vars.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.named().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Writes the weights as PEFT's `adapter_model.safetensors` (f32) to `path`, through a
    /// temporary file renamed over it.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> = self
            .named()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct LoraPath {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f32,
}

/// Layers with more outputs than this are stored in column blocks.
const WIDE: usize = 8192;
/// The column block width of wide layers.
const BLOCK: usize = 4096;

/// How a layer's frozen base weight is stored.
#[derive(Debug, Clone)]
enum Store {
    /// `[out, in]` as in the checkpoint (e.g. a head tied to the embedding matrix, shared
    /// rather than copied).
    Rows(Tensor),
    /// Transposed, `[in, out]` contiguous: candle's CPU gemm is several times faster on that
    /// layout for the skinny products of decoding than on a transposed view. Very wide layers
    /// (an output head) are split into contiguous column blocks, whose products candle's gemm
    /// runs several times faster than one wide one. Differentiable (training, any dtype/device).
    Cols(Vec<Tensor>),
    /// Packed once into column panels for the f32 CPU kernel of [`packed_matmul`], bias
    /// included: inference only.
    Packed(Arc<PackedLinear>),
    /// bitsandbytes 4-bit codes and scales, dequantized to the compute dtype at each product
    /// (differentiable in the input, as [`Store::Cols`]).
    Bnb4(Arc<Bnb4Weight>, DType),
}

/// A linear layer `y = x Wᵀ + b`, optionally with a LoRA path. Built by [`LinearFactory`].
///
/// The base weight is frozen (a plain tensor); with trainable LoRA, `A` and `B` are the tensors of
/// the registered [`Var`]s, so `loss.backward()` yields their gradients. Weights read from a
/// checkpoint are stored transposed (`in × out`, contiguous), or, for f32 inference on the CPU,
/// pre-packed for the decoding kernel ([`LoraLinear::into_packed`]).
#[derive(Debug, Clone)]
pub struct LoraLinear {
    w: Store,
    bias: Option<Tensor>,
    lora: Option<LoraPath>,
    name: String,
    /// The frozen weight packed for training's fused products (CPU, f32), built on first use.
    train_packed: fused::PackedCache,
}

impl LoraLinear {
    /// A plain layer from a weight (`out × in`) and an optional bias.
    pub fn plain(weight: Tensor, bias: Option<Tensor>, name: impl Into<String>) -> Self {
        Self {
            w: Store::Rows(weight),
            bias,
            lora: None,
            name: name.into(),
            train_packed: Default::default(),
        }
    }

    /// A plain layer over an already packed weight (bias inside it), e.g. a quantized tied head
    /// shared with the embedding lookup.
    pub(crate) fn packed_plain(p: Arc<PackedLinear>, name: impl Into<String>) -> Self {
        Self {
            w: Store::Packed(p),
            bias: None,
            lora: None,
            name: name.into(),
            train_packed: Default::default(),
        }
    }

    /// Stores the weight transposed (`in × out`, contiguous) for faster products; layers wider
    /// than 8192 outputs are split into column blocks of 4096. Differentiable: the layout
    /// training uses. A packed layer is unpacked.
    pub fn into_transposed(mut self) -> Result<Self> {
        let w = match &self.w {
            Store::Cols(_) | Store::Bnb4(..) => return Ok(self),
            Store::Rows(w) => w.clone(),
            Store::Packed(_) => self.weight()?,
        };
        let (out, _) = w.dims2()?;
        self.w = Store::Cols(if out > WIDE {
            let mut blocks = Vec::with_capacity(out.div_ceil(BLOCK));
            for start in (0..out).step_by(BLOCK) {
                let n = BLOCK.min(out - start);
                blocks.push(w.narrow(0, start, n)?.t()?.contiguous()?);
            }
            blocks
        } else {
            vec![w.t()?.contiguous()?]
        });
        Ok(self)
    }

    /// For inference: an f32 weight on the CPU is packed once into the column panels of the
    /// decoding kernel (about twice candle's gemm speed on the few-row products of batched
    /// decoding, since the weight is not repacked at every call), bias included. Other dtypes
    /// and devices are stored transposed ([`LoraLinear::into_transposed`]). A separate LoRA
    /// path stays as it is. The packed base carries no gradient: never pack a layer that
    /// training must backpropagate through (the factory packs only outside [`LoraPlan::Train`]).
    /// A 4-bit layer stays 4-bit.
    pub fn into_packed(self) -> Result<Self> {
        let w = match &self.w {
            Store::Packed(_) | Store::Bnb4(..) => return Ok(self),
            Store::Rows(w) => w.clone(),
            Store::Cols(_) => self.weight()?,
        };
        if w.dtype() != DType::F32 || !w.device().is_cpu() {
            return self.into_transposed();
        }
        let (n, k) = w.dims2()?;
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        // Packed straight from the tensor's buffer: no third copy of the weight while loading.
        let w = w.contiguous()?;
        let (storage, layout) = w.storage_and_layout();
        let packed = match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
                PackedLinear::from_rows(&v[a..b], n, k, bias).map_err(|e| Error::InvalidParam {
                    name: "weight",
                    msg: format!("{}: {e}", self.name),
                })?
            }
            _ => {
                return Err(Error::InvalidParam {
                    name: "weight",
                    msg: format!("{}: expected a contiguous f32 CPU tensor", self.name),
                });
            }
        };
        drop(storage);
        Ok(Self {
            w: Store::Packed(Arc::new(packed)),
            ..self
        })
    }

    /// The packed weight, when the layer is stored packed.
    pub(crate) fn packed(&self) -> Option<Arc<PackedLinear>> {
        match &self.w {
            Store::Packed(p) => Some(Arc::clone(p)),
            _ => None,
        }
    }

    /// The PEFT module name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The frozen base weight, `out × in` (with a merged adapter, the merged one; possibly a
    /// transposed view of the stored tensor; a 4-bit one dequantized to the compute dtype).
    pub fn weight(&self) -> Result<Tensor> {
        match &self.w {
            Store::Bnb4(q, dtype) => q.dequantize(*dtype),
            Store::Rows(w) => Ok(w.clone()),
            Store::Cols(blocks) if blocks.len() == 1 => Ok(blocks[0].t()?),
            Store::Cols(blocks) => Ok(Tensor::cat(blocks, 1)?.t()?),
            Store::Packed(p) => {
                let wt = Tensor::from_vec(
                    p.to_transposed(),
                    (p.in_dim(), p.out_dim()),
                    &candle_core::Device::Cpu,
                )?;
                Ok(wt.t()?)
            }
        }
    }

    /// Whether the layer carries a separate (unmerged) LoRA path.
    pub fn has_lora(&self) -> bool {
        self.lora.is_some()
    }

    /// The bitsandbytes 4-bit base weight, when the layer keeps one.
    pub fn bnb4(&self) -> Option<&Bnb4Weight> {
        match &self.w {
            Store::Bnb4(q, _) => Some(q),
            _ => None,
        }
    }

    /// A 4-bit layer with its base dequantized once (to the compute dtype, stored like a
    /// checkpoint's weight); other layers unchanged.
    pub fn dequantized(self) -> Result<Self> {
        match &self.w {
            Store::Bnb4(q, dtype) => {
                let w = q.dequantize(*dtype)?;
                Ok(Self {
                    w: Store::Rows(w),
                    ..self
                })
            }
            _ => Ok(self),
        }
    }

    fn device(&self) -> candle_core::Device {
        match &self.w {
            Store::Rows(w) => w.device().clone(),
            Store::Cols(b) => b
                .first()
                .map(|t| t.device().clone())
                .unwrap_or(candle_core::Device::Cpu),
            Store::Packed(_) => candle_core::Device::Cpu,
            Store::Bnb4(q, _) => q.device().clone(),
        }
    }

    /// `(out, in)` of the layer.
    pub fn dims(&self) -> Result<(usize, usize)> {
        match &self.w {
            Store::Rows(w) => Ok(w.dims2()?),
            Store::Cols(blocks) => {
                let mut out = 0;
                let mut inp = 0;
                for b in blocks {
                    let (i, o) = b.dims2()?;
                    out += o;
                    inp = i;
                }
                Ok((out, inp))
            }
            Store::Packed(p) => Ok((p.out_dim(), p.in_dim())),
            Store::Bnb4(q, _) => Ok(q.dims()),
        }
    }

    /// Forward in inference mode (no dropout).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// Forward; `training` turns the LoRA dropout on.
    pub fn forward_t(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let n: usize = dims[..dims.len() - 1].iter().product();
        if training && let Some(y) = self.fused_train(x)? {
            return Ok(y);
        }
        let x2 = x.reshape((n, in_dim))?;
        let mut y = match &self.w {
            // Bias included.
            Store::Packed(p) => x2.contiguous()?.apply_op1_no_bwd(&PackedProduct(p))?,
            Store::Cols(blocks) if training => frozen_product(&x2, blocks, true)?,
            Store::Rows(w) if training => frozen_product(&x2, std::slice::from_ref(w), false)?,
            Store::Bnb4(q, _) if training => frozen_bnb4_product(&x2, q)?,
            Store::Bnb4(q, _) => x2.matmul(&q.dequantize(x2.dtype())?.t()?)?,
            Store::Cols(blocks) if blocks.len() == 1 => x2.matmul(&blocks[0])?,
            Store::Cols(blocks) => {
                let ys = blocks
                    .iter()
                    .map(|b| x2.matmul(b))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&ys, 1)?
            }
            // (W xᵀ)ᵀ: the row-major `[out, in]` weight as the left operand.
            Store::Rows(w) => w.matmul(&x2.t()?)?.t()?,
        };
        if let (Some(b), false) = (&self.bias, matches!(self.w, Store::Packed(_))) {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let mut xl = x2.to_dtype(l.a.dtype())?;
            if training && l.dropout > 0.0 {
                xl = candle_nn::ops::dropout(&xl, l.dropout)?;
            }
            let h = xl.matmul(&l.a.t()?)?.matmul(&l.b.t()?)?;
            let h = (h * l.scale)?;
            let dtype = y.dtype();
            y = (y.to_dtype(h.dtype())? + h)?.to_dtype(dtype)?;
        }
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = y.dim(1)?;
        Ok(y.reshape(out_dims)?)
    }

    /// The training product as one fused op ([`crate::fused::linear`]: base product, bias and
    /// LoRA path, backward without the frozen weight's gradient), where it applies: an f32 CPU
    /// layer with a dense base and no LoRA dropout. `None` sends the caller to the composed path.
    /// `x` is `[…, in]`, the result `[…, out]` (no reshape nodes in the graph).
    fn fused_train(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let blocks: Vec<fused::WeightBlock> = match &self.w {
            Store::Cols(b) => b.iter().cloned().map(fused::WeightBlock::Cols).collect(),
            Store::Rows(w) => vec![fused::WeightBlock::Rows(w.clone())],
            Store::Packed(_) | Store::Bnb4(..) => return Ok(None),
        };
        let lora = match &self.lora {
            Some(l) if l.dropout > 0.0 => return Ok(None),
            Some(l) => Some((&l.a, &l.b, l.scale)),
            None => None,
        };
        fused::linear(
            x,
            &blocks,
            self.bias.as_ref(),
            lora,
            Some(&self.train_packed),
        )
    }

    /// Fuses layers sharing an input into one (weights stacked along the output dimension), when
    /// none carries a separate LoRA path and all store their weight the same way; `None`
    /// otherwise. The fused output is the concatenation of the parts' outputs in order.
    pub fn fuse(parts: &[&LoraLinear], name: impl Into<String>) -> Result<Option<LoraLinear>> {
        if parts.is_empty() || parts.iter().any(|p| p.has_lora()) {
            return Ok(None);
        }
        let w = if parts.iter().all(|p| matches!(p.w, Store::Packed(_))) {
            let packed: Vec<&PackedLinear> = parts
                .iter()
                .filter_map(|p| match &p.w {
                    Store::Packed(q) => Some(q.as_ref()),
                    _ => None,
                })
                .collect();
            match PackedLinear::concat(&packed) {
                Some(p) => Store::Packed(Arc::new(p)),
                None => return Ok(None),
            }
        } else if let Some(ws) = parts
            .iter()
            .map(|p| match &p.w {
                Store::Cols(b) if b.len() == 1 => Some(&b[0]),
                _ => None,
            })
            .collect::<Option<Vec<&Tensor>>>()
        {
            Store::Cols(vec![Tensor::cat(&ws, 1)?])
        } else if let Some(ws) = parts
            .iter()
            .map(|p| match &p.w {
                Store::Rows(w) => Some(w),
                _ => None,
            })
            .collect::<Option<Vec<&Tensor>>>()
        {
            Store::Rows(Tensor::cat(&ws, 0)?)
        } else {
            return Ok(None);
        };
        let bias = if parts.iter().any(|p| p.bias.is_some()) {
            let mut bs = Vec::new();
            for p in parts {
                let (out, _) = p.dims()?;
                bs.push(match &p.bias {
                    Some(b) => b.clone(),
                    None => {
                        let dtype = parts
                            .iter()
                            .find_map(|q| q.bias.as_ref())
                            .map(|b| b.dtype());
                        let w = p.weight()?;
                        Tensor::zeros(out, dtype.unwrap_or(w.dtype()), w.device())?
                    }
                });
            }
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Some(LoraLinear {
            w,
            bias,
            lora: None,
            name: name.into(),
            train_packed: Default::default(),
        }))
    }
}

/// `x Wᵀ + b` through a packed weight, as a candle op (no backward).
struct PackedProduct<'a>(&'a PackedLinear);

impl candle_core::CustomOp1 for PackedProduct<'_> {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (m, k) = l.shape().dims2()?;
        if k != self.0.in_dim() {
            candle_core::bail!(
                "packed-linear: input has {k} features, the layer {}",
                self.0.in_dim()
            );
        }
        let x = match (s, l.contiguous_offsets()) {
            (candle_core::CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            (candle_core::CpuStorage::F32(_), None) => {
                candle_core::bail!("packed-linear: input not contiguous")
            }
            _ => {
                use candle_core::backend::BackendStorage;
                candle_core::bail!("packed-linear: input is {:?}, expected f32", s.dtype())
            }
        };
        let n = self.0.out_dim();
        let mut out = vec![0f32; m * n];
        self.0
            .matmul(x, m, &mut out)
            .map_err(|e| candle_core::Error::Msg(format!("packed-linear: {e}")))?;
        Ok((candle_core::CpuStorage::F32(out), (m, n).into()))
    }
}

/// Builds the linear layers of a model: plain, or LoRA-wrapped per the [`LoraPlan`], by PEFT
/// module name (the [`Weights`] path of the layer, e.g. `model.layers.0.self_attn.q_proj`).
#[derive(Debug, Default)]
pub struct LinearFactory {
    plan: LoraPlan,
    vars: LoraVars,
    wrapped: Mutex<Vec<String>>,
    /// Reads the uint8 tensors of bitsandbytes layers.
    raw: RawReader,
    /// Dequantize 4-bit layers once at load instead of at each product.
    dequantize_4bit: bool,
    /// Dequantize quantized GGUF weights to f32 at load instead of keeping their codes packed.
    dequantize_gguf: bool,
}

impl LinearFactory {
    /// A factory for a plan.
    pub fn new(plan: LoraPlan) -> Result<Self> {
        if let LoraPlan::Train { config, init } = &plan {
            config.validate(Path::new("<LoRA training config>"))?;
            if let LoraInit::FromAdapter(a) = init
                && a.config.r != config.r
            {
                return Err(Error::AdapterMismatch {
                    path: a.dir().to_path_buf(),
                    tensor: "lora_A".into(),
                    msg: format!(
                        "initial adapter has rank {}, training asks for {}",
                        a.config.r, config.r
                    ),
                });
            }
        }
        Ok(Self {
            plan,
            vars: LoraVars::default(),
            wrapped: Mutex::new(Vec::new()),
            raw: RawReader::default(),
            dequantize_4bit: false,
            dequantize_gguf: false,
        })
    }

    /// Dequantizes the quantized weights of a GGUF file to f32 at load (the reference path)
    /// instead of keeping them as packed codes and scales (the default for f32 inference on the
    /// CPU, whose products are bitwise those of the dequantized weights).
    pub fn dequantize_gguf_at_load(mut self, yes: bool) -> Self {
        self.dequantize_gguf = yes;
        self
    }

    /// For f32 inference on the CPU from a GGUF file, a quantized weight (Q4_0 … Q8_0, Q2_K …
    /// Q6_K) at `vb` kept as int8 codes with per-group scales and mins in the panels of
    /// [`packed_matmul`] (about 1.1–1.5 bytes per weight instead of 4), dequantized in the
    /// kernel's registers with the same operations as at load, so every product is bitwise the
    /// one the dequantized f32 weight gives. `None` (load it as f32) when training, for other
    /// dtypes and devices, safetensors checkpoints, unquantized tensors, and layers an adapter
    /// is merged into (a merge changes the weight).
    pub(crate) fn gguf_quantized(
        &self,
        vb: &Weights,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        bias: Option<&Tensor>,
    ) -> Result<Option<PackedLinear>> {
        let crate::weights::TensorSource::Gguf(g) = vb.source() else {
            return Ok(None);
        };
        let merged_here = match &self.plan {
            LoraPlan::None => false,
            LoraPlan::Adapter { adapter, merge } => *merge && adapter.config.targets(name),
            LoraPlan::Train { .. } => return Ok(None),
        };
        if self.dequantize_gguf || merged_here || vb.dtype() != DType::F32 || !vb.device().is_cpu()
        {
            return Ok(None);
        }
        let full = vb.full_name("weight");
        let Some(groups) = g.quantized(&full, &[out_dim, in_dim])? else {
            return Ok(None);
        };
        let bias = match bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        let rows = packed_matmul::QuantRows {
            q: &groups.q,
            scales: &groups.scales,
            mins: groups.mins.as_deref(),
            group: groups.group,
        };
        let packed =
            PackedLinear::from_quantized(rows, out_dim, in_dim, bias).map_err(|e| Error::Gguf {
                path: g.path().to_path_buf(),
                msg: format!("tensor `{full}`: {e}"),
            })?;
        Ok(Some(packed))
    }

    /// Dequantizes bitsandbytes 4-bit layers once, when they are built (full-precision
    /// resident, the speed of a plain checkpoint), instead of keeping them packed and
    /// dequantizing at each product (the default: about 4-bit resident).
    pub fn dequantize_4bit_at_load(mut self, yes: bool) -> Self {
        self.dequantize_4bit = yes;
        self
    }

    /// The plan.
    pub fn plan(&self) -> &LoraPlan {
        &self.plan
    }

    /// The trainable Vars registered so far (empty unless the plan is [`LoraPlan::Train`]).
    pub fn vars(&self) -> &LoraVars {
        &self.vars
    }

    /// The PEFT names of the modules that got a LoRA path (merged or not).
    pub fn wrapped_modules(&self) -> Vec<String> {
        self.wrapped.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Builds the layer at `vb` (`weight` `out × in`, optional `bias`) with its LoRA path if the
    /// plan targets it. A bitsandbytes 4-bit weight ([`crate::quant::bnb`]) stays packed.
    pub fn linear(
        &self,
        vb: &Weights,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<LoraLinear> {
        let bias = if bias {
            Some(vb.get(&[out_dim], "bias")?)
        } else {
            None
        };
        if bnb::is_bnb8(vb) {
            let name = vb.full_name("weight.SCB");
            return Err(Error::Config {
                path: vb.source().file_of(&name).to_path_buf(),
                key: name,
                msg: "bitsandbytes 8-bit (LLM.int8) weights are not supported; 4-bit (NF4, \
                      FP4) checkpoints are"
                    .into(),
            });
        }
        if bnb::is_bnb4(vb) {
            let q = Bnb4Weight::load(vb, &self.raw, out_dim, in_dim)?;
            let mut layer = LoraLinear {
                w: Store::Bnb4(Arc::new(q), vb.dtype()),
                bias,
                lora: None,
                name: vb.prefix().to_string(),
                train_packed: Default::default(),
            };
            if self.dequantize_4bit {
                layer = layer.dequantized()?;
            }
            let layer = self.attach(layer)?;
            return match self.plan {
                LoraPlan::Train { .. } => layer.into_transposed(),
                _ => layer.into_packed(),
            };
        }
        if let Some(p) = self.gguf_quantized(vb, vb.prefix(), in_dim, out_dim, bias.as_ref())? {
            let layer = LoraLinear {
                w: Store::Packed(Arc::new(p)),
                bias,
                lora: None,
                name: vb.prefix().to_string(),
                train_packed: Default::default(),
            };
            return self.attach(layer);
        }
        let weight = vb.get(&[out_dim, in_dim], "weight")?;
        let layer = self.wrap(weight, bias, vb.prefix())?;
        match self.plan {
            // Training backpropagates through every base layer: the differentiable layout.
            LoraPlan::Train { .. } => layer.into_transposed(),
            _ => layer.into_packed(),
        }
    }

    /// Wraps an already loaded weight (e.g. a tied head) as the module `name`.
    pub fn wrap(&self, weight: Tensor, bias: Option<Tensor>, name: &str) -> Result<LoraLinear> {
        self.attach(LoraLinear::plain(weight, bias, name))
    }

    /// Gives a plain layer its LoRA path (or merges it) per the plan. An adapter is never
    /// merged into a 4-bit base: it stays a separate path (PEFT's merge would re-quantize).
    fn attach(&self, mut layer: LoraLinear) -> Result<LoraLinear> {
        let name = layer.name.clone();
        let name = name.as_str();
        let (out_dim, in_dim) = layer.dims()?;
        let dev = layer.device();
        match &self.plan {
            LoraPlan::None => {}
            LoraPlan::Adapter { adapter, merge } => {
                let targeted = adapter.config.targets(name);
                let Some((a, b)) = adapter.pair(name, in_dim, out_dim)? else {
                    if targeted && name != "lm_head" {
                        return Err(Error::AdapterMismatch {
                            path: adapter.file(),
                            tensor: format!("{PEFT_PREFIX}{name}.lora_A.weight"),
                            msg: "targeted by adapter_config.json but absent from the weights"
                                .into(),
                        });
                    }
                    return Ok(layer);
                };
                let (a, b) = (a.to_device(&dev)?, b.to_device(&dev)?);
                let scale = adapter.config.scale();
                if let (true, Store::Rows(weight)) = (*merge, &layer.w) {
                    let delta = (b.matmul(&a)? * scale)?;
                    let w = (weight.to_dtype(DType::F32)? + delta)?;
                    layer.w = Store::Rows(w.to_dtype(weight.dtype())?);
                } else {
                    layer.lora = Some(LoraPath {
                        a,
                        b,
                        scale,
                        dropout: 0.0,
                    });
                }
                self.note(name);
            }
            LoraPlan::Train { config, init } => {
                if !config.targets(name) {
                    return Ok(layer);
                }
                let r = config.r;
                let (a, b) = match init {
                    LoraInit::Default { seed } => {
                        let bound = 1.0 / (in_dim as f64).sqrt();
                        let vals = uniform(*seed, name, r * in_dim, bound);
                        let a = Tensor::from_vec(vals, (r, in_dim), &dev)?;
                        let b = Tensor::zeros((out_dim, r), DType::F32, &dev)?;
                        (a, b)
                    }
                    LoraInit::FromAdapter(adapter) => match adapter.pair(name, in_dim, out_dim)? {
                        Some((a, b)) => (a.to_device(&dev)?, b.to_device(&dev)?),
                        None => {
                            return Err(Error::AdapterMismatch {
                                path: adapter.file(),
                                tensor: format!("{PEFT_PREFIX}{name}.lora_A.weight"),
                                msg: "the initial adapter has no weights for this targeted module"
                                    .into(),
                            });
                        }
                    },
                };
                let va = Var::from_tensor(&a)?;
                let vb_ = Var::from_tensor(&b)?;
                self.vars
                    .insert(format!("{PEFT_PREFIX}{name}.lora_A.weight"), va.clone());
                self.vars
                    .insert(format!("{PEFT_PREFIX}{name}.lora_B.weight"), vb_.clone());
                layer.lora = Some(LoraPath {
                    a: va.as_tensor().clone(),
                    b: vb_.as_tensor().clone(),
                    scale: config.scale(),
                    dropout: config.lora_dropout as f32,
                });
                self.note(name);
            }
        }
        Ok(layer)
    }

    fn note(&self, name: &str) {
        if let Ok(mut w) = self.wrapped.lock() {
            w.push(name.to_string());
        }
    }

    /// After the model is built: errors if an adapter holds tensors no module consumed.
    pub fn finish(&self) -> Result<()> {
        match &self.plan {
            LoraPlan::Adapter { adapter, .. } => adapter.check_all_used(),
            LoraPlan::Train {
                init: LoraInit::FromAdapter(adapter),
                ..
            } => adapter.check_all_used(),
            _ => Ok(()),
        }
    }
}

/// Deterministic uniform(-bound, bound) draws for one module (splitmix64 seeded by the seed and
/// the module name), independent of any global RNG.
fn uniform(seed: u64, name: &str, n: usize, bound: f64) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut state = seed ^ h;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64;
            ((2.0 * u - 1.0) * bound) as f32
        })
        .collect()
}

/// The frozen base product `x Wᵀ` in training (added for lora-train): the result carries a
/// backward that gives the input's gradient only. candle's matmul backward always computes
/// the weight's gradient too — a full extra matmul and a weight-sized buffer per layer and
/// micro-batch — although base weights are never trained. The forward runs the same fast
/// products as inference (on the detached input), then [`FrozenProduct`] attaches it to `x`.
///
/// `w` is one weight, or (transposed storage of a wide layer) its column blocks in order.
fn frozen_product(x: &Tensor, w: &[Tensor], transposed: bool) -> Result<Tensor> {
    let xd = x.detach();
    let y = if transposed {
        let ys = w
            .iter()
            .map(|b| xd.matmul(b))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&ys, 1)?
    } else {
        let w0 = w.first().ok_or_else(|| Error::InvalidParam {
            name: "weight",
            msg: "empty".into(),
        })?;
        w0.matmul(&xd.t()?)?.t()?
    };
    Ok(x.apply_op1(FrozenProduct {
        y: y.contiguous()?,
        w: Frozen::Dense {
            w: w.to_vec(),
            transposed,
        },
    })?)
}

/// [`frozen_product`] over a 4-bit base: the weight is dequantized for the forward product and
/// again for the input-gradient product (as bitsandbytes' `MatMul4Bit`), so no full-precision
/// copy lives in the graph between them.
fn frozen_bnb4_product(x: &Tensor, q: &Arc<Bnb4Weight>) -> Result<Tensor> {
    let xd = x.detach();
    let y = xd.matmul(&q.dequantize(xd.dtype())?.t()?)?;
    Ok(x.apply_op1(FrozenProduct {
        y: y.contiguous()?,
        w: Frozen::Bnb4(Arc::clone(q)),
    })?)
}

/// The frozen weight of a [`FrozenProduct`].
enum Frozen {
    /// The weight, or the column blocks of a wide transposed one.
    Dense { w: Vec<Tensor>, transposed: bool },
    /// A bitsandbytes 4-bit weight.
    Bnb4(Arc<Bnb4Weight>),
}

/// Returns the precomputed `y = x Wᵀ` as a node of `x`'s graph with backward `g ↦ g W`.
struct FrozenProduct {
    y: Tensor,
    w: Frozen,
}

impl candle_core::CustomOp1 for FrozenProduct {
    fn name(&self) -> &'static str {
        "frozen-product"
    }

    fn cpu_fwd(
        &self,
        _s: &candle_core::CpuStorage,
        _l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (st, _) = self.y.storage_and_layout();
        match &*st {
            candle_core::Storage::Cpu(c) => Ok((c.clone(), self.y.shape().clone())),
            _ => candle_core::bail!("frozen-product: input and weight on different devices"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _s: &candle_core::CudaStorage,
        _l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::backend::BackendStorage;
        let (st, l) = self.y.storage_and_layout();
        match &*st {
            candle_core::Storage::Cuda(c) => Ok((c.try_clone(l)?, self.y.shape().clone())),
            _ => candle_core::bail!("frozen-product: input and weight on different devices"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = grad.detach();
        let (w, transposed) = match &self.w {
            Frozen::Dense { w, transposed } => (w, *transposed),
            Frozen::Bnb4(q) => {
                let w = q
                    .dequantize(g.dtype())
                    .map_err(|e| candle_core::Error::Msg(format!("frozen-product: {e}")))?;
                return Ok(Some(g.matmul(&w)?));
            }
        };
        if transposed {
            // Σ over column blocks of (Wᵀ-block [in, n_i]) · g_iᵀ, transposed back: the weight
            // stays the left operand.
            let mut acc: Option<Tensor> = None;
            let mut off = 0;
            for b in w {
                let n = b.dim(1)?;
                let part = b.matmul(&g.narrow(1, off, n)?.t()?)?;
                off += n;
                acc = Some(match acc {
                    None => part,
                    Some(a) => (a + part)?,
                });
            }
            match acc {
                Some(a) => Ok(Some(a.t()?)),
                None => candle_core::bail!("frozen-product: no weight"),
            }
        } else {
            match w.first() {
                Some(w) => Ok(Some(g.matmul(w)?)),
                None => candle_core::bail!("frozen-product: no weight"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn transposed_and_blocked_storage_compute_the_same_product() {
        let d = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (10_000, 24), &d).unwrap();
        let b = Tensor::randn(0f32, 1.0, 10_000, &d).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 24), &d).unwrap();
        let plain = LoraLinear::plain(w.clone(), Some(b.clone()), "lm_head");
        let blocked = plain.clone().into_transposed().unwrap();
        assert!(matches!(&blocked.w, Store::Cols(b) if b.len() == 3));
        assert_eq!(blocked.dims().unwrap(), (10_000, 24));
        let y0 = plain.forward(&x).unwrap();
        let y1 = blocked.forward(&x).unwrap();
        assert_eq!(y1.dims(), &[2, 3, 10_000]);
        let diff = max_diff(&y0, &y1);
        assert!(diff < 1e-4, "{diff}");
        assert_eq!(max_diff(&blocked.weight().unwrap(), &w), 0.0);
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn packed_storage_computes_the_same_product_and_fuses() {
        let d = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 40), &d).unwrap();
        let mut parts = Vec::new();
        for (i, out) in [48usize, 32, 20].into_iter().enumerate() {
            let w = Tensor::randn(0f32, 1.0, (out, 40), &d).unwrap();
            let b = (i != 1).then(|| Tensor::randn(0f32, 1.0, out, &d).unwrap());
            parts.push(LoraLinear::plain(w, b, format!("p{i}")));
        }
        let mut packed = Vec::new();
        for p in &parts {
            let q = p.clone().into_packed().unwrap();
            assert!(matches!(q.w, Store::Packed(_)));
            assert_eq!(q.dims().unwrap(), p.dims().unwrap());
            assert_eq!(max_diff(&q.weight().unwrap(), &p.weight().unwrap()), 0.0);
            assert!(max_diff(&q.forward(&x).unwrap(), &p.forward(&x).unwrap()) < 1e-4);
            // And back to the differentiable layout, unchanged.
            let t = q.clone().into_transposed().unwrap();
            assert_eq!(max_diff(&t.weight().unwrap(), &p.weight().unwrap()), 0.0);
            packed.push(q);
        }
        let refs: Vec<&LoraLinear> = packed.iter().collect();
        let fused = LoraLinear::fuse(&refs, "fused").unwrap().unwrap();
        assert!(matches!(fused.w, Store::Packed(_)));
        let y = fused.forward(&x).unwrap();
        let mut off = 0;
        for p in &parts {
            let n = p.dims().unwrap().0;
            let want = p.forward(&x).unwrap();
            assert!(max_diff(&y.narrow(2, off, n).unwrap(), &want) < 1e-4);
            off += n;
        }
        // 20 outputs are not whole panels: not fusable in front of another layer.
        let refs: Vec<&LoraLinear> = vec![&packed[2], &packed[0]];
        assert!(LoraLinear::fuse(&refs, "f").unwrap().is_none());
    }

    #[test]
    fn peft_target_matching() {
        let c = LoraConfig::new(4, 8.0, &["q_proj", "mlp.down_proj"]);
        assert!(c.targets("model.layers.0.self_attn.q_proj"));
        assert!(c.targets("model.layers.3.mlp.down_proj"));
        assert!(!c.targets("model.layers.0.self_attn.qq_proj"));
        assert!(!c.targets("lm_head"));
        let mut r = c.clone();
        r.target_modules = TargetModules::Regex(r".*\.(q|v)_proj".into());
        assert!(r.targets("model.layers.0.self_attn.v_proj"));
        assert!(!r.targets("model.layers.0.self_attn.k_proj"));
        r.target_modules = TargetModules::Regex("all-linear".into());
        assert!(r.targets("model.layers.0.mlp.gate_proj") && !r.targets("lm_head"));
        assert_eq!(c.scale(), 2.0);
        let mut rs = c;
        rs.use_rslora = true;
        assert_eq!(rs.scale(), 4.0);
    }
}
