//! Batched greedy generation, as transformers' `generate(do_sample=False)` with left padding.
//!
//! Prompts are encoded (BOS per the tokenizer's post-processor; optionally through the chat
//! template), bucketed by length into batches, left-padded with the pad id (EOS unless given),
//! and decoded greedily with a KV cache. Every step combines the padding mask with the causal
//! (and sliding-window) mask; positions are `cumsum(mask) − 1` per row. A row stops at any EOS
//! id or after `max_new_tokens`; finished rows leave the batch.

use crate::error::{Error, Result};
use crate::loader::LoadedModel;
use crate::models::{CausalLm, ForwardCtx};
use crate::tokenizer::TextTokenizer;
use candle_core::{DType, Tensor};

/// Why a row stopped: [`FinishReason::Eos`] (it produced an EOS id, included in the token ids)
/// or [`FinishReason::Length`] (it reached `max_new_tokens`). The one enum of `engine-api`.
pub use engine_api::FinishReason;

/// What to do with a prompt that does not fit the context window with its new tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationPolicy {
    /// Refuse with [`Error::PromptTooLong`] (the default).
    #[default]
    Error,
    /// Keep the prompt's last tokens (and its first token when it is BOS) so that prompt plus
    /// new tokens fill the window exactly.
    LeftTruncate,
}

impl TruncationPolicy {
    /// `error` or `truncate-left` (the study file's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::LeftTruncate => "truncate-left",
        }
    }
}

/// One prompt's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The continuation: new ids decoded, special tokens skipped, trimmed.
    pub text: String,
    /// The new token ids (with the EOS id when it stopped on one).
    pub token_ids: Vec<u32>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// The prompt's length in tokens (after truncation).
    pub prompt_tokens: usize,
}

/// Validated generation parameters (a linfa-style builder: set, then [`GenerateParams::check`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    max_new_tokens: usize,
    min_new_tokens: usize,
    batch_size: usize,
    pad_token_id: Option<u32>,
    truncation: TruncationPolicy,
    chat_template: bool,
    bucket_by_length: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 50,
            min_new_tokens: 0,
            batch_size: 16,
            pad_token_id: None,
            truncation: TruncationPolicy::Error,
            chat_template: false,
            bucket_by_length: true,
        }
    }
}

impl GenerateParams {
    /// The study's settings: 50 new tokens, batches of 16, pad = EOS, no chat template.
    pub fn new() -> Self {
        Self::default()
    }
    /// New tokens per prompt at most (default 50).
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }
    /// EOS ids are suppressed until this many new tokens exist (transformers'
    /// `min_new_tokens`; default 0). Benchmarks use it to generate exactly `max_new_tokens`.
    pub fn min_new_tokens(mut self, n: usize) -> Self {
        self.min_new_tokens = n;
        self
    }
    /// Prompts per batch (default 16).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
    /// The padding id (default: the first EOS id).
    pub fn pad_token_id(mut self, id: Option<u32>) -> Self {
        self.pad_token_id = id;
        self
    }
    /// The too-long-prompt policy (default: error).
    pub fn truncation(mut self, p: TruncationPolicy) -> Self {
        self.truncation = p;
        self
    }
    /// Wraps each prompt in the checkpoint's chat template (default: off, as the study).
    pub fn chat_template(mut self, on: bool) -> Self {
        self.chat_template = on;
        self
    }
    /// Sorts prompts by length before batching (default: on; results stay in input order).
    pub fn bucket_by_length(mut self, on: bool) -> Self {
        self.bucket_by_length = on;
        self
    }
    /// Validates the parameters.
    pub fn check(self) -> Result<Self> {
        if self.max_new_tokens == 0 {
            return Err(Error::InvalidParam {
                name: "max_new_tokens",
                msg: "must be at least 1".into(),
            });
        }
        if self.batch_size == 0 {
            return Err(Error::InvalidParam {
                name: "batch_size",
                msg: "must be at least 1".into(),
            });
        }
        Ok(self)
    }
    /// The batch size.
    pub fn get_batch_size(&self) -> usize {
        self.batch_size
    }
    /// The new-token budget.
    pub fn get_max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }
}

/// Greedy generation with one model.
#[derive(Debug)]
pub struct Generator<'a> {
    model: &'a dyn CausalLm,
    tokenizer: &'a TextTokenizer,
    eos: Vec<u32>,
    pad: u32,
    params: GenerateParams,
}

impl<'a> Generator<'a> {
    /// A generator; the parameters are validated here.
    pub fn new(
        model: &'a dyn CausalLm,
        tokenizer: &'a TextTokenizer,
        eos_token_ids: &[u32],
        params: GenerateParams,
    ) -> Result<Self> {
        let params = params.check()?;
        let pad = match (params.pad_token_id, eos_token_ids.first()) {
            (Some(p), _) => p,
            (None, Some(&e)) => e,
            (None, None) => {
                return Err(Error::InvalidParam {
                    name: "pad_token_id",
                    msg: "no EOS id known to pad with; give a pad id".into(),
                });
            }
        };
        Ok(Self {
            model,
            tokenizer,
            eos: eos_token_ids.to_vec(),
            pad,
            params,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &GenerateParams {
        &self.params
    }

    /// Encodes prompts (chat template if set), applying the truncation policy.
    pub fn encode(&self, prompts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let window = self.model.info().max_position_embeddings;
        let max_new = self.params.max_new_tokens;
        let bos = self.tokenizer.inner().token_to_id("<s>");
        prompts
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let mut ids = if self.params.chat_template {
                    let text = self.tokenizer.apply_chat_template(p)?;
                    self.tokenizer.encode(&text, false)?
                } else {
                    self.tokenizer.encode(p, true)?
                };
                if ids.is_empty() {
                    return Err(Error::EmptyPrompt { index });
                }
                if ids.len() + max_new > window {
                    match self.params.truncation {
                        TruncationPolicy::Error => {
                            return Err(Error::PromptTooLong {
                                index,
                                tokens: ids.len(),
                                max_new_tokens: max_new,
                                window,
                            });
                        }
                        TruncationPolicy::LeftTruncate => {
                            let keep = window.saturating_sub(max_new);
                            if keep == 0 {
                                return Err(Error::PromptTooLong {
                                    index,
                                    tokens: ids.len(),
                                    max_new_tokens: max_new,
                                    window,
                                });
                            }
                            let first = ids[0];
                            let keep_bos = bos == Some(first) || self.tokenizer_adds_first(first);
                            let tail_len = if keep_bos { keep - 1 } else { keep };
                            let mut out = Vec::with_capacity(keep);
                            if keep_bos {
                                out.push(first);
                            }
                            out.extend_from_slice(&ids[ids.len() - tail_len..]);
                            ids = out;
                        }
                    }
                }
                Ok(ids)
            })
            .collect()
    }

    fn tokenizer_adds_first(&self, id: u32) -> bool {
        // The post-processor's added first token (BOS): present in an empty encoding.
        self.tokenizer
            .encode("", true)
            .map(|e| e.first() == Some(&id))
            .unwrap_or(false)
    }

    /// Indices of the prompts grouped into batches (by length when bucketing is on).
    pub fn plan_batches(&self, lengths: &[usize]) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        if self.params.bucket_by_length {
            order.sort_by_key(|&i| lengths[i]);
        }
        order
            .chunks(self.params.batch_size)
            .map(|c| c.to_vec())
            .collect()
    }

    /// Generates for every prompt; results in input order.
    pub fn generate(&self, prompts: &[&str]) -> Result<Vec<Generation>> {
        self.generate_with_progress(prompts, &mut |_| {})
    }

    /// As [`Generator::generate`], calling `progress(n)` after each batch of `n` prompts.
    pub fn generate_with_progress(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Generation>> {
        if prompts.is_empty() {
            return Err(Error::EmptyPrompts);
        }
        let encoded = self.encode(prompts)?;
        let lengths: Vec<usize> = encoded.iter().map(|e| e.len()).collect();
        let mut out: Vec<Option<Generation>> = vec![None; prompts.len()];
        for batch in self.plan_batches(&lengths) {
            let ids: Vec<Vec<u32>> = batch.iter().map(|&i| encoded[i].clone()).collect();
            let gens = self.generate_batch(&ids)?;
            for (i, g) in batch.iter().zip(gens) {
                out[*i] = Some(g);
            }
            progress(batch.len());
        }
        out.into_iter()
            .map(|g| {
                g.ok_or_else(|| Error::InvalidParam {
                    name: "internal",
                    msg: "a prompt was not generated".into(),
                })
            })
            .collect()
    }

    /// Generates for one batch of encoded prompts exactly as given (left-padded together).
    pub fn generate_batch(&self, prompts: &[Vec<u32>]) -> Result<Vec<Generation>> {
        if prompts.is_empty() {
            return Err(Error::EmptyPrompts);
        }
        if let Some(index) = prompts.iter().position(|p| p.is_empty()) {
            return Err(Error::EmptyPrompt { index });
        }
        let info = self.model.info();
        let device = info.device.clone();
        let max_new = self.params.max_new_tokens;
        let b = prompts.len();
        let len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(b * len);
        let mut mask: Vec<Vec<u8>> = Vec::with_capacity(b);
        for p in prompts {
            let pad = len - p.len();
            ids.extend(std::iter::repeat_n(self.pad, pad));
            ids.extend_from_slice(p);
            let mut m = vec![0u8; pad];
            m.extend(std::iter::repeat_n(1u8, p.len()));
            mask.push(m);
        }
        let any_pad = prompts.iter().any(|p| p.len() != len);
        // The full padded rows (prompt + new tokens), for a transformers-style cache reset.
        let mut seqs: Vec<Vec<u32>> = ids.chunks(len).map(|c| c.to_vec()).collect();
        let reset_at = self.model.generation_cache_reset();
        let mut cache = self.model.new_cache(b, len + max_new);
        let input = Tensor::from_vec(ids, (b, len), &device)?;
        let mask_t = mask_tensor(&mask, &device)?;
        let ctx = ForwardCtx::new(&input)
            .with_cache(&mut cache)
            .last_logits_only()
            .with_rope_seq_len(len);
        let ctx = if any_pad { ctx.with_mask(&mask_t) } else { ctx };
        let mut logits = self.model.forward(ctx)?;
        // Rows still running: their index in the input, and their row in the current batch.
        let mut active: Vec<usize> = (0..b).collect();
        let mut new_ids: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut reasons: Vec<Option<FinishReason>> = vec![None; b];
        let mut total = len;
        loop {
            let suppress: Vec<bool> = active
                .iter()
                .map(|&o| new_ids[o].len() < self.params.min_new_tokens)
                .collect();
            let next = argmax_rows(&logits, &self.eos, &suppress)?;
            let mut keep_rows = Vec::with_capacity(active.len());
            for (row, &orig) in active.iter().enumerate() {
                let tok = next[row];
                new_ids[orig].push(tok);
                seqs[orig].push(tok);
                if self.eos.contains(&tok) {
                    reasons[orig] = Some(FinishReason::Eos);
                } else if new_ids[orig].len() >= max_new {
                    reasons[orig] = Some(FinishReason::Length);
                } else {
                    keep_rows.push(row);
                }
            }
            total += 1;
            if keep_rows.is_empty() {
                break;
            }
            if keep_rows.len() != active.len() {
                cache.select_rows(&keep_rows)?;
                mask = keep_rows.iter().map(|&r| mask[r].clone()).collect();
                active = keep_rows.iter().map(|&r| active[r]).collect();
            }
            for m in mask.iter_mut() {
                m.push(1);
            }
            let has_pad = mask.iter().any(|m| m.contains(&0));
            let mask_t = if has_pad {
                Some(mask_tensor(&mask, &device)?)
            } else {
                None
            };
            let n = active.len();
            let recompute = reset_at.is_some_and(|r| total >= r && cache.len() < r);
            let input = if recompute {
                cache = self.model.new_cache(n, len + max_new);
                let rows: Vec<u32> = active
                    .iter()
                    .flat_map(|&o| seqs[o].iter().copied())
                    .collect();
                Tensor::from_vec(rows, (n, total), &device)?
            } else {
                let step: Vec<u32> = active
                    .iter()
                    .map(|&o| *new_ids[o].last().unwrap_or(&self.pad))
                    .collect();
                Tensor::from_vec(step, (n, 1), &device)?
            };
            let mut ctx = ForwardCtx::new(&input)
                .with_cache(&mut cache)
                .last_logits_only()
                .with_rope_seq_len(total);
            if let Some(m) = &mask_t {
                ctx = ctx.with_mask(m);
            }
            logits = self.model.forward(ctx)?;
        }
        prompts
            .iter()
            .zip(new_ids)
            .zip(reasons)
            .map(|((p, ids), r)| {
                Ok(Generation {
                    text: self.tokenizer.decode(&ids)?,
                    token_ids: ids,
                    finish_reason: r.unwrap_or(FinishReason::Length),
                    prompt_tokens: p.len(),
                })
            })
            .collect()
    }
}

/// A generator that owns its model: a [`LoadedModel`] and validated [`GenerateParams`].
///
/// [`Generator`] borrows its model and tokenizer; this owns them, so a caller can keep one in a
/// `Box<dyn engine_api::TextGenerator>`. Through [`engine_api::TextGenerator::complete`] it
/// generates exactly as [`Generator::generate_with_progress`] (token ids always present).
///
/// ```
/// use engine_api::TextGenerator;
/// use gen_engine::{GenerateParams, LoadOptions, LocalGenerator};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/gen/llama");
/// let m = gen_engine::load_dir(dir.as_ref(), &LoadOptions::default())?;
/// let params = GenerateParams::new().max_new_tokens(4).batch_size(8);
/// let g: Box<dyn TextGenerator> = Box::new(LocalGenerator::new(m, params)?.with_model_name("tiny"));
/// let out = g.complete(&["Hello"], &mut |_| {})?;
/// assert!(out[0].token_ids.as_ref().is_some_and(|ids| ids.len() <= 4));
/// assert_eq!(g.describe().model, "tiny");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LocalGenerator {
    loaded: LoadedModel,
    params: GenerateParams,
    pad: u32,
    name: String,
}

impl LocalGenerator {
    /// An owning generator; the parameters are validated here (as [`Generator::new`] does), and
    /// the model is named by its directory until [`LocalGenerator::with_model_name`].
    pub fn new(loaded: LoadedModel, params: GenerateParams) -> Result<Self> {
        let g = Generator::new(
            loaded.model.as_ref(),
            &loaded.tokenizer,
            &loaded.eos_token_ids,
            params,
        )?;
        let (pad, params) = (g.pad, g.params);
        let name = loaded.dir.display().to_string();
        Ok(Self {
            loaded,
            params,
            pad,
            name,
        })
    }

    /// Names the model in [`engine_api::TextGenerator::describe`] (a hub id, a study's model
    /// name) instead of its directory.
    pub fn with_model_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The borrowing generator over this model.
    pub fn generator(&self) -> Generator<'_> {
        Generator {
            model: self.loaded.model.as_ref(),
            tokenizer: &self.loaded.tokenizer,
            eos: self.loaded.eos_token_ids.clone(),
            pad: self.pad,
            params: self.params.clone(),
        }
    }

    /// The loaded model.
    pub fn loaded(&self) -> &LoadedModel {
        &self.loaded
    }

    /// Gives the loaded model back.
    pub fn into_loaded(self) -> LoadedModel {
        self.loaded
    }

    /// The validated parameters.
    pub fn params(&self) -> &GenerateParams {
        &self.params
    }
}

impl engine_api::TextGenerator for LocalGenerator {
    fn describe(&self) -> engine_api::EngineInfo {
        let info = self.loaded.model.info();
        let p = &self.params;
        let device = match info.device.location() {
            candle_core::DeviceLocation::Cpu => "cpu".to_string(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        };
        engine_api::EngineInfo {
            backend: env!("CARGO_PKG_NAME").to_string(),
            model: self.name.clone(),
            settings: serde_json::json!({
                "architecture": info.architecture,
                "dtype": info.dtype.as_str(),
                "device": device,
                "max_new_tokens": p.max_new_tokens,
                "min_new_tokens": p.min_new_tokens,
                "batch_size": p.batch_size,
                "pad_token_id": self.pad,
                "eos_token_ids": self.loaded.eos_token_ids,
                "truncation": p.truncation.as_str(),
                "chat_template": p.chat_template,
                "bucket_by_length": p.bucket_by_length,
            }),
        }
    }

    fn preferred_batch_size(&self) -> usize {
        self.params.batch_size
    }

    fn complete(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> engine_api::Result<Vec<engine_api::Completion>> {
        let gens = self.generator().generate_with_progress(prompts, progress)?;
        Ok(gens
            .into_iter()
            .map(|g| engine_api::Completion {
                text: g.text,
                token_ids: Some(g.token_ids),
                finish_reason: g.finish_reason,
            })
            .collect())
    }

    /// Hands completions over [`HANDOVER_BATCHES`] batches at a time, in order (prompts are
    /// sorted by length within each such group, as a chunk of that size always was).
    fn complete_each(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
        sink: &mut dyn FnMut(usize, engine_api::Completion) -> engine_api::Result<()>,
    ) -> engine_api::Result<()> {
        let group = self.params.get_batch_size().max(1) * HANDOVER_BATCHES;
        for (g, chunk) in prompts.chunks(group).enumerate() {
            let done = self.complete(chunk, progress)?;
            engine_api::Error::check_count("completions", chunk.len(), done.len())?;
            for (j, c) in done.into_iter().enumerate() {
                sink(g * group + j, c)?;
            }
        }
        Ok(())
    }
}

/// [`LocalGenerator`] hands completions to a caller this many batches at a time.
pub const HANDOVER_BATCHES: usize = 4;

/// gen-engine's errors cross the seam with their bad-input verdict ([`Error::is_bad_input`]).
impl From<Error> for engine_api::Error {
    fn from(e: Error) -> Self {
        engine_api::Error::backend(e.is_bad_input(), e)
    }
}

fn mask_tensor(mask: &[Vec<u8>], device: &candle_core::Device) -> Result<Tensor> {
    let b = mask.len();
    let t = mask.first().map(|m| m.len()).unwrap_or(0);
    let flat: Vec<u8> = mask.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (b, t), device)?)
}

/// The first maximal index of each row of `[b, 1, vocab]` logits (torch's argmax tie rule);
/// rows flagged in `suppress` never pick an id of `banned` (`min_new_tokens`).
fn argmax_rows(logits: &Tensor, banned: &[u32], suppress: &[bool]) -> Result<Vec<u32>> {
    let (b, _, v) = logits.dims3()?;
    let rows = logits
        .reshape((b, v))?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(suppress)
        .map(|(r, &sup)| {
            let mut best: Option<usize> = None;
            for (i, &x) in r.iter().enumerate() {
                if sup && banned.contains(&(i as u32)) {
                    continue;
                }
                best = match best {
                    None => Some(i),
                    Some(j) if x > r[j] || (r[j].is_nan() && !x.is_nan()) => Some(i),
                    keep => keep,
                };
            }
            best.unwrap_or(0) as u32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{LoadOptions, load_dir};
    use engine_api::TextGenerator;

    fn fixture(name: &str) -> LoadedModel {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/gen")
            .join(name);
        load_dir(&dir, &LoadOptions::default()).expect("fixture loads")
    }

    #[test]
    fn the_generator_seam_gives_the_borrowing_generator_s_output() {
        let prompts = [
            "The tiny robot walked to the market",
            "Hello",
            "Once upon a time, in a land far away, there lived",
        ];
        for family in ["llama", "phi3"] {
            let params = GenerateParams::new().max_new_tokens(6).batch_size(2);
            let m = fixture(family);
            let (mut direct_calls, mut seam_calls) = (Vec::new(), Vec::new());
            let direct = Generator::new(
                m.model.as_ref(),
                &m.tokenizer,
                &m.eos_token_ids,
                params.clone(),
            )
            .unwrap()
            .generate_with_progress(&prompts, &mut |n| direct_calls.push(n))
            .unwrap();
            let local = LocalGenerator::new(m, params).unwrap();
            assert_eq!(local.preferred_batch_size(), 2);
            let boxed: Box<dyn TextGenerator> = Box::new(local);
            let seam = boxed
                .complete(&prompts, &mut |n| seam_calls.push(n))
                .unwrap();
            assert_eq!(direct_calls, seam_calls);
            assert_eq!(seam.len(), direct.len());
            for (s, d) in seam.iter().zip(&direct) {
                assert_eq!(s.text, d.text);
                assert_eq!(s.token_ids.as_deref(), Some(d.token_ids.as_slice()));
                assert_eq!(s.finish_reason, d.finish_reason);
            }
            let info = boxed.describe();
            assert_eq!(info.backend, "gen-engine");
            assert_eq!(info.settings["max_new_tokens"], 6);
            assert_eq!(info.settings["truncation"], "error");
        }
    }

    #[test]
    fn errors_keep_their_verdict_across_the_seam() {
        let local = LocalGenerator::new(fixture("llama"), GenerateParams::new()).unwrap();
        let e = local.complete(&[], &mut |_| {}).unwrap_err();
        assert!(e.is_bad_input());
        assert_eq!(e.to_string(), Error::EmptyPrompts.to_string());
        assert!(matches!(
            e.downcast_ref::<Error>(),
            Some(Error::EmptyPrompts)
        ));
        let internal: engine_api::Error = Error::Candle(candle_core::Error::Msg("x".into())).into();
        assert!(!internal.is_bad_input());
        // Invalid parameters are refused when the owning generator is built.
        assert!(matches!(
            LocalGenerator::new(fixture("llama"), GenerateParams::new().batch_size(0)),
            Err(Error::InvalidParam {
                name: "batch_size",
                ..
            })
        ));
    }
}
