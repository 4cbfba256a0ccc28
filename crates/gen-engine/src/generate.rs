//! Batched greedy generation, as transformers' `generate(do_sample=False)` with left padding.
//!
//! Prompts are encoded (BOS per the tokenizer's post-processor; optionally through the chat
//! template), bucketed by length into batches, left-padded with the pad id (EOS unless given),
//! and decoded greedily with a KV cache. Every step combines the padding mask with the causal
//! (and sliding-window) mask; positions are `cumsum(mask) − 1` per row. A row stops at any EOS
//! id or after `max_new_tokens`; finished rows leave the batch.
//!
//! Off the CPU the decode step stays on the device: the greedy ids are chosen there (first
//! maximal index, as torch; the `min_new_tokens` EOS ban as a −∞ bias) and fed back as the next
//! input, the padding mask is kept there, and positions come from each row's length; only the
//! chosen ids are read back per token. The CPU keeps its host path.

use crate::error::{Error, Result};
use crate::loader::LoadedModel;
use crate::memory::BatchSize;
use crate::models::{CausalLm, ForwardCtx, KvCache};
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
    batch_size: BatchSize,
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
            batch_size: BatchSize::default(),
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
    /// Prompts per batch (default 16), or [`BatchSize::Auto`]: on a GPU as many as its free
    /// memory holds ([`crate::memory`]).
    pub fn batch_size(mut self, n: impl Into<BatchSize>) -> Self {
        self.batch_size = n.into();
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
        if self.batch_size == BatchSize::Fixed(0) {
            return Err(Error::InvalidParam {
                name: "batch_size",
                msg: "must be at least 1".into(),
            });
        }
        Ok(self)
    }
    /// The batch size.
    pub fn get_batch_size(&self) -> BatchSize {
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

    /// Indices of the prompts grouped into batches (by length when bucketing is on). With
    /// [`BatchSize::Auto`] on a GPU, each batch takes as many prompts as the device's free
    /// memory holds ([`crate::memory`]).
    pub fn plan_batches(&self, lengths: &[usize]) -> Result<Vec<Vec<usize>>> {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        if self.params.bucket_by_length {
            order.sort_by_key(|&i| lengths[i]);
        }
        let info = self.model.info();
        let max = self.params.batch_size.max_rows(&info.device).max(1);
        let budget = match self.params.batch_size {
            BatchSize::Auto => crate::memory::batch_budget(&info.device)?,
            BatchSize::Fixed(_) => None,
        };
        Ok(match budget {
            Some(budget) => {
                let new = self.params.max_new_tokens;
                crate::memory::fit_batches(&order, lengths, max, budget, |rows, longest| {
                    rows * crate::memory::row_bytes(info, longest, new)
                })
            }
            None => order.chunks(max).map(|c| c.to_vec()).collect(),
        })
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
        for batch in self.plan_batches(&lengths)? {
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
        if !self.model.info().device.is_cpu() || rayon::current_thread_index().is_some() {
            return self.batch_here(prompts);
        }
        // On the CPU, called from outside rayon's pool (the usual case): the whole run goes to
        // one of the pool's workers, and this thread sleeps until it is done. Otherwise this
        // thread would run the serial steps (norms, attention, sampling) while the workers that
        // just split a product spin waiting for the next one: with as many workers as cores,
        // three threads would share them (batch 1 on the real Gemma-3-270M: 8% faster).
        let mut out = None;
        rayon::scope(|s| s.spawn(|_| out = Some(self.batch_here(prompts))));
        out.unwrap_or_else(|| {
            Err(Error::InvalidParam {
                name: "internal",
                msg: "the generation task did not run".into(),
            })
        })
    }

    /// [`generate_batch`](Self::generate_batch) on the calling thread.
    fn batch_here(&self, prompts: &[Vec<u32>]) -> Result<Vec<Generation>> {
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
        let (ids, mut mask) = self.left_pad(prompts.iter(), len);
        let any_pad = prompts.iter().any(|p| p.len() != len);
        // Off the CPU the decode step stays on the device: ids chosen there (only they are read
        // back), fed back as the next input, the padding mask kept there, positions from the
        // rows' lengths (see `models::decoder::resident_step`).
        let resident = crate::models::decoder::resident_step(&device);
        // The full padded rows (prompt + new tokens), for a transformers-style cache reset.
        let mut seqs: Vec<Vec<u32>> = ids.chunks(len).map(|c| c.to_vec()).collect();
        let reset_at = self.model.generation_cache_reset();
        let mask_t = mask_tensor(&mask, &device)?;
        let lengths: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
        let groups = if device.is_cpu() && !one_prefill_group() {
            prefill_groups(&lengths)
        } else {
            vec![(0..b).collect()]
        };
        let (mut cache, mut logits) = if groups.len() == 1 {
            let mut cache = self.model.new_cache(b, len + max_new);
            let input = Tensor::from_vec(ids, (b, len), &device)?;
            let ctx = ForwardCtx::new(&input)
                .with_cache(&mut cache)
                .last_logits_only()
                .with_rope_seq_len(len);
            let ctx = if any_pad { ctx.with_mask(&mask_t) } else { ctx };
            let logits = self.model.forward(ctx)?;
            (cache, logits)
        } else {
            self.prefill_grouped(prompts, &groups, len + max_new)?
        };
        // Rows still running: their index in the input, and their row in the current batch.
        let mut active: Vec<usize> = (0..b).collect();
        let mut new_ids: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut reasons: Vec<Option<FinishReason>> = vec![None; b];
        let mut total = len;
        let mut dev = if resident {
            Some(DeviceStep::new(
                mask_t,
                info.vocab_size,
                info.dtype,
                (self.params.min_new_tokens > 0).then_some(self.eos.as_slice()),
            )?)
        } else {
            None
        };
        loop {
            let suppress: Vec<bool> = active
                .iter()
                .map(|&o| new_ids[o].len() < self.params.min_new_tokens)
                .collect();
            let next = match dev.as_mut() {
                Some(d) => d.argmax(&logits, &self.eos, &suppress)?,
                None => argmax_rows(&logits, &self.eos, &suppress)?,
            };
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
                match dev.as_mut() {
                    Some(d) => d.select_rows(&keep_rows)?,
                    None => mask = keep_rows.iter().map(|&r| mask[r].clone()).collect(),
                }
                active = keep_rows.iter().map(|&r| active[r]).collect();
            }
            let mask_t = match dev.as_mut() {
                Some(d) => {
                    d.extend_mask()?;
                    let has_pad = active.iter().any(|&o| prompts[o].len() != len);
                    has_pad.then(|| d.mask.clone())
                }
                None => {
                    for m in mask.iter_mut() {
                        m.push(1);
                    }
                    let has_pad = mask.iter().any(|m| m.contains(&0));
                    if has_pad {
                        Some(mask_tensor(&mask, &device)?)
                    } else {
                        None
                    }
                }
            };
            let n = active.len();
            let mut pos_t = None;
            let recompute = reset_at.is_some_and(|r| total >= r && cache.len() < r);
            let input = if recompute {
                cache = self.model.new_cache(n, len + max_new);
                let rows: Vec<u32> = active
                    .iter()
                    .flat_map(|&o| seqs[o].iter().copied())
                    .collect();
                Tensor::from_vec(rows, (n, total), &device)?
            } else if let Some(d) = &dev {
                // Each row's position: its real tokens so far, minus one.
                let pos: Vec<u32> = active
                    .iter()
                    .map(|&o| (prompts[o].len() + new_ids[o].len() - 1) as u32)
                    .collect();
                pos_t = Some(Tensor::from_vec(pos, (n, 1), &device)?);
                d.next.clone()
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
            if let Some(p) = &pos_t {
                ctx = ctx.with_positions(p);
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

impl Generator<'_> {
    /// Prompts left-padded with the pad id to `len`: the ids row after row, and each row's
    /// padding mask (0 = padding, 1 = token).
    fn left_pad<'p>(
        &self,
        prompts: impl ExactSizeIterator<Item = &'p Vec<u32>>,
        len: usize,
    ) -> (Vec<u32>, Vec<Vec<u8>>) {
        let mut ids = Vec::with_capacity(prompts.len() * len);
        let mut mask = Vec::with_capacity(prompts.len());
        for p in prompts {
            let pad = len - p.len();
            ids.extend(std::iter::repeat_n(self.pad, pad));
            ids.extend_from_slice(p);
            let mut m = vec![0u8; pad];
            m.extend(std::iter::repeat_n(1u8, p.len()));
            mask.push(m);
        }
        (ids, mask)
    }

    /// The prefill of a left-padded batch run as several sub-batches of similar prompt lengths
    /// (each padded only to its own longest prompt), their caches then stacked into the batch's
    /// cache, left-padded to the longest prompt of all, and their last logits put back in the
    /// batch's row order. The padded positions are masked either way, so only the work changes:
    /// a batch of short prompts beside long ones no longer pays for the long ones' padding.
    fn prefill_grouped(
        &self,
        prompts: &[Vec<u32>],
        groups: &[Vec<usize>],
        capacity: usize,
    ) -> Result<(KvCache, Tensor)> {
        let device = self.model.info().device.clone();
        let len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut caches = Vec::with_capacity(groups.len());
        let mut logits = Vec::with_capacity(groups.len());
        for g in groups {
            let glen = g.iter().map(|&i| prompts[i].len()).max().unwrap_or(0);
            let (ids, mask) = self.left_pad(g.iter().map(|&i| &prompts[i]), glen);
            let mut cache = self.model.new_cache(g.len(), glen);
            let input = Tensor::from_vec(ids, (g.len(), glen), &device)?;
            let mask_t = mask_tensor(&mask, &device)?;
            // Positions and the longrope factor set as for the whole batch.
            let ctx = ForwardCtx::new(&input)
                .with_cache(&mut cache)
                .last_logits_only()
                .with_rope_seq_len(len);
            let has_pad = g.iter().any(|&i| prompts[i].len() != glen);
            let ctx = if has_pad { ctx.with_mask(&mask_t) } else { ctx };
            logits.push(self.model.forward(ctx)?);
            caches.push(cache);
        }
        // Row r of the batch is row `rows[r]` of the groups' rows stacked in order.
        let mut rows = vec![0usize; prompts.len()];
        for (at, &i) in groups.iter().flatten().enumerate() {
            rows[i] = at;
        }
        let cache = KvCache::stack_left_padded(&caches, &rows, len, capacity)?;
        let index = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &device,
        )?;
        let logits = Tensor::cat(&logits, 0)?.index_select(&index, 0)?;
        Ok((cache, logits))
    }
}

#[cfg(test)]
thread_local! {
    static ONE_GROUP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this crate's tests asked for the whole batch's prefill in one call.
fn one_prefill_group() -> bool {
    #[cfg(test)]
    if ONE_GROUP.with(|f| f.get()) {
        return true;
    }
    false
}

/// Splits a batch's prefill into groups of similar prompt lengths (indices into `lengths`),
/// minimising the padded positions computed plus a fixed cost per group (a group streams every
/// weight once more: about as much time as 16 more positions on a CPU). One group when
/// splitting does not pay.
fn prefill_groups(lengths: &[usize]) -> Vec<Vec<usize>> {
    /// The cost of one more group, in positions.
    const GROUP_COST: usize = 16;
    let n = lengths.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| lengths[i]);
    // best[j]: least cost of the first j rows (in length order); cut[j]: where its last group
    // starts.
    let mut best = vec![0usize; n + 1];
    let mut cut = vec![0usize; n + 1];
    for j in 1..=n {
        let longest = lengths[order[j - 1]];
        (best[j], cut[j]) = (0..j)
            .map(|i| (best[i] + (j - i) * longest + GROUP_COST, i))
            .min()
            .unwrap_or((0, 0));
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        groups.push(order[cut[j]..j].to_vec());
        j = cut[j];
    }
    groups.reverse();
    groups
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
        let g = loaded.generator(params)?;
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
        self.params
            .batch_size
            .max_rows(&self.loaded.model.info().device)
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
        let group = self.preferred_batch_size().max(1) * HANDOVER_BATCHES;
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

/// The decode state a device-resident generation keeps on the device: the padding mask, the
/// chosen ids (the next input), and what the greedy choice needs there.
struct DeviceStep {
    /// `[n, total]` u8: 1 for a real token.
    mask: Tensor,
    /// `[n, 1]` u32: the ids chosen last, the next step's input.
    next: Tensor,
    /// `[1, vocab]` in the logits' dtype: −∞ at the EOS ids, 0 elsewhere (`min_new_tokens`).
    eos_ban: Option<Tensor>,
    /// `[1, vocab]` u32: 0, 1, …, vocab − 1.
    index: Tensor,
    /// `[1, 1]` u32: vocab (no index).
    no_index: Tensor,
    /// `[1, 1]` in the logits' dtype: −∞.
    neg_inf: Tensor,
}

impl DeviceStep {
    fn new(mask: Tensor, vocab: usize, dtype: DType, ban: Option<&[u32]>) -> Result<Self> {
        let device = mask.device().clone();
        let eos_ban = match ban {
            Some(ids) if !ids.is_empty() => {
                let mut row = vec![0f32; vocab];
                for &id in ids {
                    if let Some(x) = row.get_mut(id as usize) {
                        *x = f32::NEG_INFINITY;
                    }
                }
                Some(Tensor::from_vec(row, (1, vocab), &device)?.to_dtype(dtype)?)
            }
            _ => None,
        };
        Ok(Self {
            next: Tensor::zeros((mask.dim(0)?, 1), DType::U32, &device)?,
            mask,
            eos_ban,
            index: Tensor::arange(0u32, vocab as u32, &device)?.reshape((1, vocab))?,
            no_index: Tensor::full(vocab as u32, (1, 1), &device)?,
            neg_inf: Tensor::full(f32::NEG_INFINITY, (1, 1), &device)?.to_dtype(dtype)?,
        })
    }

    /// The greedy ids of `[b, 1, vocab]` logits, chosen on the device ([`first_argmax`]); only
    /// the `b` ids are read back. Rows flagged in `suppress` never pick an EOS id (all rows of a
    /// batch are flagged together; a mixed step falls back to [`argmax_rows`] on the host, as
    /// would an id out of range, which [`first_argmax`] never gives).
    fn argmax(&mut self, logits: &Tensor, eos: &[u32], suppress: &[bool]) -> Result<Vec<u32>> {
        let (b, _, v) = logits.dims3()?;
        let ban = if suppress.iter().all(|&s| s) {
            self.eos_ban.as_ref()
        } else if suppress.iter().any(|&s| s) {
            return self.host_choice(argmax_rows(logits, eos, suppress)?);
        } else {
            None
        };
        let mut x = logits.reshape((b, v))?;
        if let Some(ban) = ban {
            x = x.broadcast_add(ban)?;
        }
        let next = first_argmax(&x, &self.index, &self.no_index, &self.neg_inf)?;
        let ids = next.flatten_all()?.to_vec1::<u32>()?;
        if ids.iter().any(|&i| i as usize >= v) {
            return self.host_choice(argmax_rows(logits, eos, suppress)?);
        }
        self.next = next;
        Ok(ids)
    }

    fn host_choice(&mut self, ids: Vec<u32>) -> Result<Vec<u32>> {
        let n = ids.len();
        self.next = Tensor::from_vec(ids.clone(), (n, 1), self.mask.device())?;
        Ok(ids)
    }

    /// Keeps the given rows of the mask and of the next input.
    fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), self.mask.device())?;
        self.mask = self.mask.index_select(&idx, 0)?;
        self.next = self.next.index_select(&idx, 0)?;
        Ok(())
    }

    /// One more real position in every row (the token about to be fed).
    fn extend_mask(&mut self) -> Result<()> {
        let n = self.mask.dim(0)?;
        let one = Tensor::ones((n, 1), DType::U8, self.mask.device())?;
        self.mask = Tensor::cat(&[&self.mask, &one], 1)?;
        Ok(())
    }
}

/// The first maximal index of each row of `[b, vocab]` logits, `[b, 1]` u32, on their device:
/// torch's argmax tie rule, which candle's own CUDA argmax does not keep (its block reduction
/// keeps the lowest thread's candidate on a tie, not the lowest index). NaN counts as −∞; the
/// host's [`argmax_rows`] ranks NaN below −∞, so the two differ only on a broken row whose
/// every allowed logit is −∞ or NaN. `index` is `[1, vocab]` 0..vocab,
/// `no_index` `[1, 1]` vocab, `neg_inf` `[1, 1]` −∞ in the logits' dtype.
fn first_argmax(x: &Tensor, index: &Tensor, no_index: &Tensor, neg_inf: &Tensor) -> Result<Tensor> {
    let shape = x.shape().clone();
    let x = x.ne(x)?.where_cond(&neg_inf.broadcast_as(&shape)?, x)?;
    let max = x.max_keepdim(1)?;
    let at_max = x.broadcast_eq(&max)?;
    let candidates = at_max.where_cond(
        &index.broadcast_as(&shape)?,
        &no_index.broadcast_as(&shape)?,
    )?;
    Ok(candidates.min_keepdim(1)?)
}

/// The first maximal index of each row of `[b, 1, vocab]` logits (torch's argmax tie rule);
/// rows flagged in `suppress` never pick an id of `banned` (`min_new_tokens`).
fn argmax_rows(logits: &Tensor, banned: &[u32], suppress: &[bool]) -> Result<Vec<u32>> {
    let (b, _, v) = logits.dims3()?;
    let logits = logits.reshape((b, v))?.to_dtype(DType::F32)?.contiguous()?;
    let choose = |rows: &[f32]| -> Vec<u32> {
        rows.chunks(v.max(1))
            .zip(suppress)
            .map(|(r, &sup)| argmax_row(r, if sup { banned } else { &[] }))
            .collect()
    };
    // Read in place on the CPU (a batch's logits are tens of MB per step with a large
    // vocabulary); copied out elsewhere.
    let (storage, layout) = logits.storage_and_layout();
    if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)), Some((a, e))) =
        (&*storage, layout.contiguous_offsets())
    {
        return Ok(choose(&data[a..e]));
    }
    drop(storage);
    Ok(choose(&logits.flatten_all()?.to_vec1::<f32>()?))
}

/// The first maximal index of a row, never one of `banned` (a NaN never beats a number).
fn argmax_row(r: &[f32], banned: &[u32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in r.iter().enumerate() {
        match best {
            Some((_, b)) if !(x > b || (b.is_nan() && !x.is_nan())) => {}
            _ if banned.contains(&(i as u32)) => {}
            _ => best = Some((i, x)),
        }
    }
    best.map_or(0, |(i, _)| i as u32)
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
            let direct = m
                .generator(params.clone())
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

    /// Every family's transformers reference (tests/fixtures/gen/*/reference.json): greedy ids
    /// and finish reasons of a left-padded batch.
    fn reference(name: &str) -> (Vec<String>, Vec<Vec<u32>>, Vec<String>, usize) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/gen")
            .join(name)
            .join("reference.json");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("reference")).unwrap();
        let strings = |k: &str| -> Vec<String> {
            r[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        let ids = r["completion_token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect();
        let max_new = r["max_new_tokens"].as_u64().unwrap() as usize;
        (strings("prompts"), ids, strings("finish_reasons"), max_new)
    }

    const FAMILIES: [&str; 15] = [
        "llama",
        "llama31",
        "llama32",
        "smollm2",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3-v5",
        "phi3",
        "phi35",
        "qwen2",
        "qwen3",
        "mistral",
        "olmo2",
        "smollm3",
    ];

    #[test]
    fn prefill_groups_split_only_where_padding_costs_more_than_a_group() {
        assert_eq!(prefill_groups(&[5, 6, 7]), vec![vec![0, 1, 2]]);
        assert_eq!(
            prefill_groups(&[60, 3, 58, 4]),
            vec![vec![1, 3], vec![2, 0]]
        );
        assert_eq!(prefill_groups(&[9]), vec![vec![0]]);
        // Every index exactly once, groups in length order.
        let lengths = [97, 12, 45, 8, 80, 33, 33, 61, 5, 70, 90, 14, 29, 52, 75, 9];
        let groups = prefill_groups(&lengths);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        assert!(groups.len() > 1);
        for w in groups.windows(2) {
            let last = w[0].iter().map(|&i| lengths[i]).max().unwrap();
            assert!(w[1].iter().all(|&i| lengths[i] >= last));
        }
    }

    #[test]
    fn a_prefill_split_by_length_generates_what_one_padded_prefill_does() {
        let long = "The committee met on a grey Tuesday morning to discuss the budget, the new \
                    library wing, the state of the roads after the winter storms, and whether \
                    the town fair should move to the spring this year, and nobody agreed";
        let prompts = [long, "Hi", "Hello there", long, "A"];
        for name in FAMILIES {
            let m = fixture(name);
            let params = GenerateParams::new().max_new_tokens(12);
            let g = m.generator(params).unwrap();
            let encoded = g.encode(&prompts).unwrap();
            let lengths: Vec<usize> = encoded.iter().map(|e| e.len()).collect();
            assert!(
                prefill_groups(&lengths).len() > 1,
                "{name}: {lengths:?} splits"
            );
            let split = g.generate_batch(&encoded).unwrap();
            ONE_GROUP.with(|f| f.set(true));
            let whole = g.generate_batch(&encoded);
            ONE_GROUP.with(|f| f.set(false));
            for (i, (a, b)) in split.iter().zip(whole.unwrap()).enumerate() {
                assert_eq!(a.token_ids, b.token_ids, "{name}: row {i}");
                assert_eq!(a.finish_reason, b.finish_reason, "{name}: row {i}");
            }
        }
    }

    #[test]
    fn the_device_resident_step_matches_transformers_for_every_family() {
        // The decode step of a GPU (positions from the rows' lengths, cos/sin and masks built
        // from device tensors, ids chosen by `first_argmax` and fed back) run on the CPU.
        crate::models::decoder::force_resident_step(true);
        for name in FAMILIES {
            let (prompts, want, reasons, max_new) = reference(name);
            let m = fixture(name);
            let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
            let params = GenerateParams::new().max_new_tokens(max_new);
            let g = m.generator(params).unwrap();
            let encoded = g.encode(&prompts).unwrap();
            assert!(
                encoded.iter().any(|e| e.len() != encoded[0].len()),
                "{name}: the batch is padded"
            );
            let got = g.generate_batch(&encoded).unwrap();
            for (i, out) in got.iter().enumerate() {
                assert_eq!(out.token_ids, want[i], "{name}: row {i} ids");
                assert_eq!(out.finish_reason.as_str(), reasons[i], "{name}: row {i}");
            }
            // Batches of 2 (other paddings, rows leaving the batch); not for longrope, whose
            // factor set depends on the batch (see tests/parity.rs).
            if name != "phi35" {
                let params = GenerateParams::new().max_new_tokens(max_new).batch_size(2);
                let g = m.generator(params).unwrap();
                for (i, out) in g.generate(&prompts).unwrap().iter().enumerate() {
                    assert_eq!(out.token_ids, want[i], "{name}: batched row {i} ids");
                }
            }
        }
    }

    #[test]
    fn the_device_resident_step_keeps_min_new_tokens() {
        // llama31's row 0 stops on an EOS id after 11 tokens in transformers' run.
        crate::models::decoder::force_resident_step(true);
        let (prompts, want, _, _) = reference("llama31");
        let m = fixture("llama31");
        let params = GenerateParams::new().max_new_tokens(20).min_new_tokens(20);
        let g = m.generator(params).unwrap();
        let encoded = g.encode(&[prompts[0].as_str()]).unwrap();
        let out = g.generate_batch(&encoded).unwrap();
        assert!(want[0].len() < 20 && m.eos_token_ids.contains(want[0].last().unwrap()));
        assert_eq!(out[0].token_ids.len(), 20);
        assert_eq!(out[0].token_ids[..10], want[0][..10]);
        assert!(!out[0].token_ids.iter().any(|t| m.eos_token_ids.contains(t)));
        assert_eq!(out[0].finish_reason, FinishReason::Length);
    }

    #[test]
    fn the_device_argmax_takes_the_first_maximum_as_torch() {
        let ninf = f32::NEG_INFINITY;
        let rows: Vec<Vec<f32>> = vec![
            vec![0.5, 2.0, 1.0, 2.0, -1.0],          // a tie: the first, 1
            vec![3.0, 3.0, 3.0, 3.0, 3.0],           // all equal: 0
            vec![f32::NAN, 1.0, 4.0, f32::NAN, 4.0], // NaN ignored: 2
            vec![ninf, -7.0, ninf, -7.0, -8.0],      // 1
            vec![1.0, 0.0, 9.0, 9.0, 2.0],           // EOS ids 2 and 4 banned below: 3
        ];
        let v = 5;
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let expect = [1u32, 0, 2, 1, 2];
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let logits =
                Tensor::from_vec(flat.clone(), (rows.len(), 1, v), &candle_core::Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
            let mask = Tensor::ones((rows.len(), 3), DType::U8, &candle_core::Device::Cpu).unwrap();
            let mut d = DeviceStep::new(mask, v, dtype, Some(&[2, 4])).unwrap();
            let none = vec![false; rows.len()];
            assert_eq!(
                d.argmax(&logits, &[2, 4], &none).unwrap(),
                expect,
                "{dtype:?}"
            );
            assert_eq!(argmax_rows(&logits, &[2, 4], &none).unwrap(), expect);
            // The chosen ids are the next input, on the device.
            assert_eq!(d.next.dims(), &[rows.len(), 1]);
            assert_eq!(
                d.next.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
                expect
            );
            // min_new_tokens: the EOS ids 2 and 4 are banned in every row.
            let all = vec![true; rows.len()];
            let banned = [1u32, 0, 1, 1, 3];
            assert_eq!(
                d.argmax(&logits, &[2, 4], &all).unwrap(),
                banned,
                "{dtype:?}"
            );
            assert_eq!(argmax_rows(&logits, &[2, 4], &all).unwrap(), banned);
            // A step where only some rows are banned goes through the host rule.
            let mixed = vec![true, false, true, false, true];
            assert_eq!(
                d.argmax(&logits, &[2, 4], &mixed).unwrap(),
                argmax_rows(&logits, &[2, 4], &mixed).unwrap()
            );
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
