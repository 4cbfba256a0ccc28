//! Batching up to a device's memory ([`BatchSize::Auto`]).
//!
//! On a GPU, greedy decoding is bound by the per-step launch and weight-streaming cost, which a
//! larger batch shares among more rows. On an H100 (bf16, 50 new tokens) a 6.74B Llama's step
//! took 15.3 ms at batch 16 and at batch 64, and 39.9 ms at 512; its 2,400-prompt study run took
//! 38.6 s with `Auto` against ~115 s in batches of 16 (docs/performance.md, "On a GPU").
//! So with `Auto` a GPU batch takes as many prompts, in length order, as the device's free
//! memory holds (by [`row_bytes`], at most [`AUTO_MAX_BATCH`]); the CPU keeps the study's
//! batches of [`DEFAULT_BATCH`], where a larger batch buys little and costs latency.

use crate::models::ModelInfo;
use crate::{Error, Result};
use candle_core::Device;

/// The study's batch size (the paper's): 16 prompts.
pub const DEFAULT_BATCH: usize = 16;

/// The most prompts one [`BatchSize::Auto`] batch takes on a GPU, whatever its memory: beyond
/// a few hundred rows a step stops getting cheaper per row, and a killed run loses less.
pub const AUTO_MAX_BATCH: usize = 512;

/// The share of the free device memory an automatic batch plans to fill; the rest is left to
/// the allocator's rounding and cuBLAS' workspaces.
const MEMORY_SHARE: f64 = 0.8;

/// How many prompts go into one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "BatchSizeRepr", into = "BatchSizeRepr")]
pub enum BatchSize {
    /// Exactly this many (the last batch may be smaller).
    Fixed(usize),
    /// On a GPU: as many as its free memory holds, up to [`AUTO_MAX_BATCH`]; elsewhere
    /// [`DEFAULT_BATCH`].
    Auto,
}

impl Default for BatchSize {
    fn default() -> Self {
        Self::Fixed(DEFAULT_BATCH)
    }
}

impl From<usize> for BatchSize {
    fn from(n: usize) -> Self {
        Self::Fixed(n)
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for BatchSize {
    type Err = Error;
    /// `auto` or a positive integer.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            t => match t.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Self::Fixed(n)),
                _ => Err(Error::InvalidParam {
                    name: "batch_size",
                    msg: format!("`{s}`: expected a positive integer or `auto`"),
                }),
            },
        }
    }
}

impl BatchSize {
    /// The most prompts one batch takes on `device` (for `Auto`: [`AUTO_MAX_BATCH`] on a GPU,
    /// [`DEFAULT_BATCH`] on the CPU).
    pub fn max_rows(self, device: &Device) -> usize {
        match self {
            Self::Fixed(n) => n,
            Self::Auto if device.is_cpu() => DEFAULT_BATCH,
            Self::Auto => AUTO_MAX_BATCH,
        }
    }
}

/// The study-file and JSON form: an integer or `"auto"`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum BatchSizeRepr {
    Rows(usize),
    Word(String),
}

impl TryFrom<BatchSizeRepr> for BatchSize {
    type Error = String;
    fn try_from(r: BatchSizeRepr) -> std::result::Result<Self, String> {
        match r {
            BatchSizeRepr::Rows(n) => Ok(Self::Fixed(n)),
            BatchSizeRepr::Word(w) if w == "auto" => Ok(Self::Auto),
            BatchSizeRepr::Word(w) => Err(format!(
                "batch_size `{w}`: expected a positive integer or \"auto\""
            )),
        }
    }
}

impl From<BatchSize> for BatchSizeRepr {
    fn from(b: BatchSize) -> Self {
        match b {
            BatchSize::Fixed(n) => Self::Rows(n),
            BatchSize::Auto => Self::Word("auto".into()),
        }
    }
}

/// An estimate, on the safe side, of the device memory one row of a batch needs when its
/// padded prompt has `prompt` tokens and it decodes `new` more: its KV cache at full length,
/// the prefill's largest transient activations (one layer's at a time: residual stream, q/k/v,
/// the gated MLP's three intermediate tensors, f32 attention scores with their softmax and
/// mask), and the last position's logits with their f32 copy.
pub fn row_bytes(info: &ModelInfo, prompt: usize, new: usize) -> usize {
    let dt = info.dtype.size_in_bytes();
    let total = prompt + new;
    let kv = 2 * info.num_layers * info.num_kv_heads * info.head_dim * total * dt;
    let qkv = (info.num_heads + 2 * info.num_kv_heads) * info.head_dim;
    let act = prompt * (6 * info.hidden_size + 3 * info.intermediate_size + qkv) * dt;
    let scores = 3 * info.num_heads * prompt * prompt * 4;
    let logits = info.vocab_size * (dt + 8);
    // A quarter more for what the estimate does not name (rope tables, masks, casts).
    (kv + act + scores + logits) * 5 / 4
}

/// The free memory of `device` in bytes, where it can tell: a CUDA device; `None` elsewhere.
pub fn free_memory(device: &Device) -> Result<Option<usize>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let (free, _total) =
            d.cuda_stream().context().mem_get_info().map_err(|e| {
                Error::Candle(candle_core::Error::Msg(format!("cuMemGetInfo: {e}")))
            })?;
        return Ok(Some(free));
    }
    let _ = device;
    Ok(None)
}

/// The bytes an automatic batch may fill on `device`: [`MEMORY_SHARE`] of its free memory, or
/// `None` where the device cannot tell (the CPU).
pub fn batch_budget(device: &Device) -> Result<Option<usize>> {
    Ok(free_memory(device)?.map(|free| (free as f64 * MEMORY_SHARE) as usize))
}

/// Cuts `order` (prompt indices, shortest first) into consecutive batches of at most `max`
/// prompts each, every batch within `budget` bytes by `bytes(rows, longest prompt)`; a prompt
/// too long to fit even alone still gets a batch of its own (its failure, if any, is the
/// device's to report).
pub(crate) fn fit_batches(
    order: &[usize],
    lengths: &[usize],
    max: usize,
    budget: usize,
    bytes: impl Fn(usize, usize) -> usize,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0;
    for &i in order {
        let l = longest.max(lengths[i]);
        if !cur.is_empty() && (cur.len() == max.max(1) || bytes(cur.len() + 1, l) > budget) {
            out.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(lengths[i]);
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn info() -> ModelInfo {
        // The 124.7M peer-bench Llama's shapes, in bf16.
        ModelInfo {
            architecture: "LlamaForCausalLM".into(),
            vocab_size: 32000,
            hidden_size: 768,
            intermediate_size: 3072,
            num_layers: 12,
            num_heads: 12,
            num_kv_heads: 12,
            head_dim: 64,
            max_position_embeddings: 2048,
            dtype: DType::BF16,
            device: Device::Cpu,
            num_params: 124_668_672,
        }
    }

    #[test]
    fn a_row_costs_at_least_its_kv_cache_and_logits() {
        let i = info();
        let kv = 2 * 12 * 12 * 64 * (18 + 50) * 2;
        let b = row_bytes(&i, 18, 50);
        assert!(b >= kv + 32000 * 2, "{b}");
        // Less than three times those: the estimate is safe, not wasteful.
        assert!(b < 3 * (kv + 32000 * 10), "{b}");
        // Longer prompts cost more; f32 costs more than bf16.
        assert!(row_bytes(&i, 100, 50) > b);
        let f32_info = ModelInfo {
            dtype: DType::F32,
            ..info()
        };
        assert!(row_bytes(&f32_info, 18, 50) > b);
    }

    #[test]
    fn batches_fill_the_budget_in_length_order_and_respect_the_cap() {
        let lengths = [10, 10, 10, 10, 40, 40, 40, 40];
        let order: Vec<usize> = (0..8).collect();
        // A row costs its longest prompt's length: 4 short rows fit 40, 1 long row fits 40.
        let bytes = |rows: usize, longest: usize| rows * longest;
        let b = fit_batches(&order, &lengths, 512, 40, bytes);
        assert_eq!(
            b,
            vec![vec![0, 1, 2, 3], vec![4], vec![5], vec![6], vec![7]]
        );
        // The cap splits even where the budget would not.
        let b = fit_batches(&order, &lengths, 3, usize::MAX, bytes);
        assert_eq!(b, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
        // A prompt too long for the budget still gets a batch of its own.
        let b = fit_batches(&[0, 1], &[100, 100], 512, 40, bytes);
        assert_eq!(b, vec![vec![0], vec![1]]);
    }

    #[test]
    fn auto_parses_and_round_trips_through_json() {
        assert_eq!("auto".parse::<BatchSize>().unwrap(), BatchSize::Auto);
        assert_eq!("16".parse::<BatchSize>().unwrap(), BatchSize::Fixed(16));
        for bad in ["0", "-3", "lots", ""] {
            assert!(bad.parse::<BatchSize>().is_err(), "{bad}");
        }
        let j = serde_json::to_string(&[BatchSize::Auto, BatchSize::Fixed(8)]).unwrap();
        assert_eq!(j, r#"["auto",8]"#);
        let back: Vec<BatchSize> = serde_json::from_str(&j).unwrap();
        assert_eq!(back, vec![BatchSize::Auto, BatchSize::Fixed(8)]);
        let err = serde_json::from_str::<BatchSize>(r#""many""#).unwrap_err();
        assert!(err.to_string().contains("many"), "{err}");
    }

    #[test]
    fn auto_is_the_study_batch_on_the_cpu() {
        assert_eq!(BatchSize::Auto.max_rows(&Device::Cpu), DEFAULT_BATCH);
        assert_eq!(BatchSize::Fixed(5).max_rows(&Device::Cpu), 5);
        assert_eq!(batch_budget(&Device::Cpu).unwrap(), None);
    }
}
