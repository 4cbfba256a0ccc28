//! The training loop: batching, gradient accumulation, clipping, AdamW, schedule, checkpoints.

use crate::adapter::{read_weights, replace_dir, write_safetensors_atomic, write_text_atomic};
use crate::error::{Error, Result};
use crate::loss::causal_lm_loss_sum;
use crate::optim::{AdamW, AdamWParams, Schedule, clip_grad_norm};
use crate::template::{Example, IGNORE_INDEX};
use candle_core::{Device, Tensor, Var};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A causal LM that gives full-sequence logits in training mode (differentiable ops, LoRA
/// dropout on). Implemented for gen-engine's models; tests can plug in anything.
pub trait TrainableLm {
    /// `(B, T)` u32 token ids → `(B, T, V)` logits, every position, training mode.
    fn train_logits(&self, input_ids: &Tensor) -> Result<Tensor>;
    /// The device the model lives on.
    fn device(&self) -> &Device;
}

/// The authors' seed (`seed = 3407` in their notebooks): data shuffling and LoRA initialisation.
pub const PAPER_SEED: u64 = 3407;

/// Training-loop settings (the LoRA shape lives in the model's LoRA config).
///
/// Build with [`TrainParams::default`] (the authors' recipe) and the setters, then
/// [`TrainParams::check`] (the trainer checks again before it starts).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    /// AdamW hyper-parameters.
    pub adamw: AdamWParams,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Warm-up optimizer steps.
    pub warmup_steps: usize,
    /// Sequences per micro-batch (HF's per-device batch size).
    pub micro_batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Global gradient-norm clip; 0 disables it.
    pub max_grad_norm: f64,
    /// Passes over the data (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Stop after this many optimizer steps (cycling through the data as needed).
    pub max_steps: Option<usize>,
    /// Shuffle the examples each epoch.
    pub shuffle: bool,
    /// Seed of the shuffling.
    pub seed: u64,
    /// Write a checkpoint every this many optimizer steps (0: never).
    pub checkpoint_every: usize,
    /// How many checkpoints to keep (oldest removed first; at least 1).
    pub keep_checkpoints: usize,
}

impl Default for TrainParams {
    /// The authors' recipe: batch 2 × accumulation 8, lr 2e-4, 5 warm-up steps then linear
    /// decay, AdamW with weight decay 0.01, clip 1.0, one epoch, seed 3407, shuffled.
    fn default() -> Self {
        TrainParams {
            adamw: AdamWParams {
                weight_decay: 0.01,
                ..AdamWParams::default()
            },
            schedule: Schedule::Linear,
            warmup_steps: 5,
            micro_batch: 2,
            grad_accum: 8,
            max_grad_norm: 1.0,
            epochs: 1,
            max_steps: None,
            shuffle: true,
            seed: PAPER_SEED,
            checkpoint_every: 0,
            keep_checkpoints: 2,
        }
    }
}

impl TrainParams {
    /// Validates the ranges.
    pub fn check(&self) -> Result<()> {
        self.adamw.check()?;
        if self.micro_batch == 0 {
            return Err(Error::param("micro_batch", "must be at least 1"));
        }
        if self.grad_accum == 0 {
            return Err(Error::param("grad_accum", "must be at least 1"));
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            return Err(Error::param(
                "epochs",
                "must be at least 1 (or give max_steps)",
            ));
        }
        if self.max_steps == Some(0) {
            return Err(Error::param("max_steps", "must be at least 1"));
        }
        if self.max_grad_norm.is_nan() || self.max_grad_norm < 0.0 {
            return Err(Error::param("max_grad_norm", "must be >= 0"));
        }
        if self.keep_checkpoints == 0 {
            return Err(Error::param("keep_checkpoints", "must be at least 1"));
        }
        Ok(())
    }
}

/// A deterministic permutation of `0..n`: Fisher–Yates driven by SplitMix64 seeded with
/// `seed` and the epoch (a pure function of both, so a resumed run re-derives it exactly).
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if !shuffle {
        return order;
    }
    let mut state = seed ^ (epoch as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// One optimizer step's worth of data: micro-batches of example indices.
pub type Window = Vec<Vec<usize>>;

/// The whole run's data plan: for each optimizer step, its micro-batches (HF Trainer's
/// arithmetic: an epoch's micro-batches grouped by `grad_accum`, the last group possibly
/// shorter; with `max_steps`, epochs repeat until enough steps).
pub fn plan_steps(n_examples: usize, p: &TrainParams) -> Vec<Window> {
    let mut steps = Vec::new();
    let mut epoch = 0;
    loop {
        let order = epoch_order(n_examples, p.seed, epoch, p.shuffle);
        let micro: Vec<Vec<usize>> = order.chunks(p.micro_batch).map(|c| c.to_vec()).collect();
        for w in micro.chunks(p.grad_accum) {
            steps.push(w.to_vec());
            if p.max_steps.is_some_and(|m| steps.len() >= m) {
                return steps;
            }
        }
        epoch += 1;
        if p.max_steps.is_none() && epoch >= p.epochs {
            return steps;
        }
        if n_examples == 0 {
            return steps;
        }
    }
}

/// Right-pads a micro-batch with `pad_id` (labels [`IGNORE_INDEX`] there): a causal model's
/// real positions never see the padding, so no attention mask is needed.
pub fn collate(
    examples: &[&Example],
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor, Vec<Vec<i64>>)> {
    let t = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let mut ids = Vec::with_capacity(examples.len() * t);
    let mut labels = Vec::with_capacity(examples.len());
    for e in examples {
        ids.extend_from_slice(&e.input_ids);
        ids.extend(std::iter::repeat_n(pad_id, t - e.input_ids.len()));
        let mut l = e.labels.clone();
        l.resize(t, IGNORE_INDEX);
        labels.push(l);
    }
    Ok((Tensor::from_vec(ids, (examples.len(), t), device)?, labels))
}

/// What the loop reports after each optimizer step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepLog {
    /// The optimizer step, 1-based.
    pub step: usize,
    /// Total optimizer steps of the run.
    pub total_steps: usize,
    /// The mean token loss over the step's accumulation window (HF's logged loss).
    pub loss: f64,
    /// The learning rate this step used.
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens in the loss this step.
    pub loss_tokens: usize,
    /// Tokens fed (padding included) this step.
    pub tokens: usize,
}

/// The end result of [`Trainer::train`].
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Every step's log, from the first step of the run (resumed steps included).
    pub log: Vec<StepLog>,
    /// The step a resumed run started from (0 when fresh).
    pub resumed_from: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct TrainerState {
    step: usize,
    total_steps: usize,
    fingerprint: String,
    seed: u64,
    log: Vec<StepLog>,
}

/// Runs the loop over a model's trainable LoRA variables.
pub struct Trainer<'a> {
    model: &'a dyn TrainableLm,
    vars: Vec<(String, Var)>,
    params: TrainParams,
    pad_id: u32,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("vars", &self.vars.len())
            .field("params", &self.params)
            .finish()
    }
}

/// Where the trainer writes checkpoints and its step log, and how it saves the adapter in them.
pub struct Outputs<'a> {
    /// The run directory: `checkpoints/checkpoint-<step>/` and `train_log.jsonl` go here.
    pub dir: PathBuf,
    /// Writes `adapter_config.json` into a checkpoint directory.
    pub write_adapter_config: &'a dyn Fn(&Path) -> Result<()>,
    /// Resume from the newest checkpoint in `dir` if there is one.
    pub resume: bool,
}

impl<'a> Trainer<'a> {
    /// A trainer for `model` whose trainable tensors are `vars` (PEFT names).
    pub fn new(
        model: &'a dyn TrainableLm,
        vars: Vec<(String, Var)>,
        params: TrainParams,
        pad_id: u32,
    ) -> Result<Self> {
        params.check()?;
        if vars.is_empty() {
            return Err(Error::param(
                "target_modules",
                "no module of the model was wrapped with LoRA",
            ));
        }
        Ok(Trainer {
            model,
            vars,
            params,
            pad_id,
        })
    }

    /// Trains on `examples`, calling `on_step` after every optimizer step.
    ///
    /// With `outputs`, checkpoints go to `outputs.dir/checkpoints/` every `checkpoint_every`
    /// steps (adapter, optimizer moments, step, the step log) and every step is appended to
    /// `train_log.jsonl`; with `resume`, the newest checkpoint is loaded first and the run goes
    /// on exactly where it stopped (the data order is a function of seed and epoch).
    ///
    /// On the CPU, call it from a thread of rayon's pool — e.g. a `main` that first ran
    /// `rayon::ThreadPoolBuilder::new().use_current_thread().build_global()`, as the `toxdrift`
    /// binary does (`toxdrift::threads::join_pool`): from any other thread the serial parts of
    /// each step run beside the pool's spinning workers (13–15% slower per step on 2 cores).
    pub fn train(
        &self,
        examples: &[Example],
        outputs: Option<&Outputs<'_>>,
        on_step: &mut dyn FnMut(&StepLog),
    ) -> Result<TrainSummary> {
        let plan = plan_steps(examples.len(), &self.params);
        let total = plan.len();
        let mut opt = AdamW::new(self.vars.clone(), self.params.adamw)?;
        let fingerprint = fingerprint(examples, &self.params, &self.vars);
        let mut log: Vec<StepLog> = Vec::new();
        let mut start = 0;
        let mut last_ckpt: Option<PathBuf> = None;
        if let Some(out) = outputs {
            std::fs::create_dir_all(&out.dir).map_err(|e| Error::io(&out.dir, e))?;
            if out.resume
                && let Some(ck) = latest_checkpoint(&out.dir)?
            {
                let state = self.load_checkpoint(&ck, &mut opt, &fingerprint, total)?;
                start = state.step;
                log = state.log;
                last_ckpt = Some(ck);
            }
            rewrite_log(&out.dir.join("train_log.jsonl"), &log)?;
        }
        let resumed_from = start;
        for (step_idx, window) in plan.iter().enumerate().skip(start) {
            let lr = self.params.adamw.lr
                * self
                    .params
                    .schedule
                    .factor(step_idx, self.params.warmup_steps, total);
            let mut batches = Vec::with_capacity(window.len());
            let mut n_items = 0usize;
            let mut tokens = 0usize;
            for mb in window {
                let exs: Vec<&Example> = mb.iter().map(|&i| &examples[i]).collect();
                let (ids, labels) = collate(&exs, self.pad_id, self.model.device())?;
                n_items += labels
                    .iter()
                    .map(|l| l.iter().skip(1).filter(|&&x| x != IGNORE_INDEX).count())
                    .sum::<usize>();
                tokens += ids.elem_count();
                batches.push((ids, labels));
            }
            let denom = n_items.max(1) as f64;
            let mut grads: Vec<Option<Tensor>> = vec![None; self.vars.len()];
            let mut loss_total = 0f64;
            for (ids, labels) in &batches {
                let logits = self.model.train_logits(ids)?;
                let (sum, _) = causal_lm_loss_sum(&logits, labels)?;
                let loss = (sum / denom)?;
                loss_total += loss.to_scalar::<f32>()? as f64;
                let store = loss.backward()?;
                drop(logits);
                for (i, (_, var)) in self.vars.iter().enumerate() {
                    if let Some(g) = store.get(var.as_tensor()) {
                        grads[i] = Some(match grads[i].take() {
                            Some(acc) => (acc + g)?,
                            None => g.clone(),
                        });
                    }
                }
            }
            if !loss_total.is_finite() {
                return Err(Error::NonFiniteLoss {
                    step: step_idx + 1,
                    loss: loss_total,
                    last_checkpoint: last_ckpt,
                });
            }
            let grad_norm = clip_grad_norm(&mut grads, self.params.max_grad_norm)?;
            if !grad_norm.is_finite() {
                return Err(Error::NonFiniteLoss {
                    step: step_idx + 1,
                    loss: grad_norm,
                    last_checkpoint: last_ckpt,
                });
            }
            opt.step(&grads, lr)?;
            let entry = StepLog {
                step: step_idx + 1,
                total_steps: total,
                loss: loss_total,
                lr,
                grad_norm,
                loss_tokens: n_items,
                tokens,
            };
            if let Some(out) = outputs {
                append_log(&out.dir.join("train_log.jsonl"), &entry)?;
            }
            log.push(entry.clone());
            on_step(&entry);
            if let Some(out) = outputs {
                let every = self.params.checkpoint_every;
                if every > 0 && (step_idx + 1) % every == 0 && step_idx + 1 < total {
                    let state = TrainerState {
                        step: step_idx + 1,
                        total_steps: total,
                        fingerprint: fingerprint.clone(),
                        seed: self.params.seed,
                        log: log.clone(),
                    };
                    last_ckpt = Some(self.save_checkpoint(out, &opt, &state)?);
                }
            }
        }
        Ok(TrainSummary { log, resumed_from })
    }

    fn save_checkpoint(
        &self,
        out: &Outputs<'_>,
        opt: &AdamW,
        state: &TrainerState,
    ) -> Result<PathBuf> {
        let root = out.dir.join("checkpoints");
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let dir = root.join(format!("checkpoint-{}", state.step));
        let tmp = root.join(format!(".checkpoint-{}.tmp", state.step));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let weights: Vec<(String, Tensor)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        write_safetensors_atomic(&tmp.join("adapter_model.safetensors"), &weights)?;
        (out.write_adapter_config)(&tmp)?;
        write_safetensors_atomic(&tmp.join("optimizer.safetensors"), &opt.state_tensors())?;
        let json = serde_json::to_string_pretty(state).map_err(|e| Error::BadJson {
            path: tmp.join("trainer_state.json"),
            message: e.to_string(),
        })?;
        write_text_atomic(&tmp.join("trainer_state.json"), &json)?;
        replace_dir(&tmp, &dir)?;
        // Keep the newest `keep_checkpoints`.
        let mut all = list_checkpoints(&out.dir)?;
        while all.len() > self.params.keep_checkpoints {
            let (_, old) = all.remove(0);
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        Ok(dir)
    }

    fn load_checkpoint(
        &self,
        dir: &Path,
        opt: &mut AdamW,
        fingerprint: &str,
        total: usize,
    ) -> Result<TrainerState> {
        let state_path = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::BadJson {
            path: state_path.clone(),
            message: e.to_string(),
        })?;
        if state.fingerprint != fingerprint || state.total_steps != total {
            return Err(Error::ResumeMismatch {
                path: dir.to_path_buf(),
                message: "the checkpoint was written for other data or other settings".into(),
            });
        }
        let device = self.model.device();
        let weights = read_weights(dir, device)?;
        let wpath = dir.join("adapter_model.safetensors");
        for (name, var) in &self.vars {
            let t = weights.get(name).ok_or_else(|| Error::BadTensor {
                path: wpath.clone(),
                tensor: name.clone(),
                message: "missing".into(),
            })?;
            if t.dims() != var.dims() {
                return Err(Error::BadTensor {
                    path: wpath.clone(),
                    tensor: name.clone(),
                    message: format!("shape {:?}, expected {:?}", t.dims(), var.dims()),
                });
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        let opath = dir.join("optimizer.safetensors");
        let moments =
            candle_core::safetensors::load(&opath, device).map_err(|e| Error::BadTensor {
                path: opath.clone(),
                tensor: String::new(),
                message: e.to_string(),
            })?;
        opt.load_state(&opath, &moments, state.step)?;
        Ok(state)
    }
}

fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = dir.join("checkpoints");
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&root, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse::<usize>().ok())
            && entry.path().join("trainer_state.json").is_file()
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint under `dir/checkpoints/`, if any.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(dir)?.pop().map(|(_, p)| p))
}

fn fingerprint(examples: &[Example], p: &TrainParams, vars: &[(String, Var)]) -> String {
    // FNV-1a over the token ids, labels, variable names/shapes and the loop settings.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for e in examples {
        for id in &e.input_ids {
            eat(&id.to_le_bytes());
        }
        for l in &e.labels {
            eat(&l.to_le_bytes());
        }
        eat(b"|");
    }
    for (name, var) in vars {
        eat(name.as_bytes());
        eat(format!("{:?}", var.dims()).as_bytes());
    }
    let mut q = p.clone();
    q.checkpoint_every = 0;
    q.keep_checkpoints = 1;
    eat(format!("{q:?}").as_bytes());
    format!("{h:016x}")
}

fn append_log(path: &Path, entry: &StepLog) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let line = serde_json::to_string(entry).map_err(|e| Error::BadJson {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
    f.sync_data().map_err(|e| Error::io(path, e))
}

fn rewrite_log(path: &Path, log: &[StepLog]) -> Result<()> {
    let mut text = String::new();
    for e in log {
        let line = serde_json::to_string(e).map_err(|e| Error::BadJson {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    write_text_atomic(path, &text)
}
