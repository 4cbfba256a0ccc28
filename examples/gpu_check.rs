//! The device check of issue 17: on one device (`cpu` or `cuda:N`), the parity of every family
//! fixture, every PEFT adapter fixture, the classifier and LoRA training against the reference
//! implementations, and a greedy-generation throughput benchmark; one JSON file of results.
//!
//! ```text
//! cargo run --release --features cuda --example gpu_check -- --device cuda:0 --out gpu.json \
//!     --peer /tmp/peer                 # the GPU form (tools/gpu-check.sh drives it)
//! cargo run --example gpu_check -- --device cpu --out cpu.json --bench-batches 2 \
//!     --bench-new-tokens 8             # the dry form, on the CPU
//! ```
//!
//! Checks and their tolerances (each result records device, dtype, numbers, tolerance, status):
//! - `family_logits` (f32): the padded batch's logits within 1e-4 of transformers' (CPU) at
//!   every real position, and Phi-3.5's long prompt likewise.
//! - `family_greedy_f32`: the greedy continuations equal transformers' `generate`; a differing
//!   token passes only as a tie, where this device's f32 logits of the two candidates are
//!   within 2e-4 (twice the logits tolerance).
//! - `family_greedy_<bf16|f16>`: against the f32 run of the same device, per row: the share
//!   of identical tokens and the first divergence (free-running; informative, a flip cascades),
//!   and teacher-forced on the f32 continuation: top-1 agreement and the largest logit error
//!   relative to the largest |f32 logit|. Pass: relative error ≤ 0.04 (bf16) / 0.005 (f16) and
//!   every top-1 disagreement at a position whose f32 top-two gap is within twice the largest
//!   absolute logit error (a near-tie that rounding may flip).
//! - `adapter_logits`, `adapter_greedy` (f32): PEFT adapters (unmerged and merged) against
//!   peft's logits (1e-4) and greedy ids (identical).
//! - `classifier` (f32): token ids identical, scores and pooled embeddings within 1e-5 of
//!   transformers' pipeline.
//! - `lora_gradient` (f32): one training step: loss within 1e-5 relative and every LoRA
//!   gradient within 1e-4 of PEFT's (relative to the tensor's largest entry);
//!   `lora_train` (f32): each LoRA fixture's steps (10; QLoRA over a 4-bit base: 5): losses
//!   within 1e-4 relative, final adapter weights within 1e-4 of PEFT's.
//! - `real_greedy_f32` (with `--gguf`): the real Gemma-3-270M GGUF's greedy continuations of
//!   16 prompts at batch 16 and at batch 1 equal transformers' (the committed f32 CPU
//!   reference), a differing token passing only as a tie within 1e-3 on this device's logits;
//!   `real_greedy_bf16`: its bf16 run against the f32 run of the device, as the families'.
//! - `study_time`: each benchmarked model generates `--study-prompts` real prompts (2,400, as a
//!   study's model does) with `--batch-size auto` (batches up to the device's memory): the
//!   batches planned, wall time, new tokens per second.
//! - `bench`: greedy generation (exactly `--bench-new-tokens` new tokens per row) of the
//!   peer-bench Llama at each batch size and dtype: median wall time over `--bench-reps` runs
//!   after one warm-up, new tokens per second, and the token ids of the first timed run (for the
//!   side-by-side with transformers that `tools/gpu/merge.py` makes).
//!
//! The facade has no direct candle dependency, so candle's `Tensor` is never named here: it is
//! made through `TryFrom<Vec<_>>`, its type pinned by `ForwardCtx::new` (see [`tensor`]).
#![allow(clippy::type_complexity)]

use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;
use toxdrift::gen_engine::weights::Checkpoint;
use toxdrift::gen_engine::{
    self, DTypeChoice, ForwardCtx, GenerateParams, Generation, LoadOptions, LoadedModel,
};
use toxdrift::hate_classifier::{Backend, Device, HateClassifier};
use toxdrift::hub_source::Source;
use toxdrift::lora_train;

type Res<T> = Result<T, Box<dyn Error>>;

/// The real model's name in the results.
const GEMMA: &str = "gemma-3-270m-gguf";
/// transformers' greedy continuations of the real Gemma-3-270M GGUF (f32, CPU), committed.
const REAL_REF: &str = "tests/fixtures/real/gemma3-270m/reference.json";
/// A real-model f32 token that differs from transformers' passes only as a tie: the two
/// candidates' logits on this device within this much (the logits reach ~30 in magnitude).
const REAL_TIE: f32 = 1e-3;

/// Command-line options.
#[derive(Parser, Debug, Clone)]
#[command(about = "Parity and throughput checks of toxdrift's engines on one device")]
pub struct Args {
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The JSON file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The repository root holding tests/fixtures (default: the current directory when it has
    /// them, else the source tree this was built from).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Which checks: families, adapters, classifier, lora, real, bench (a device probe always runs;
    /// `--checks probe` runs it alone).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "families,adapters,classifier,lora,real,bench"
    )]
    pub checks: Vec<String>,
    /// Only these family fixtures (directory names under tests/fixtures/gen); default: all.
    #[arg(long, value_delimiter = ',')]
    pub families: Option<Vec<String>>,
    /// Reduced dtypes compared with the f32 run of the same device.
    #[arg(long, value_delimiter = ',', default_value = "bf16,f16")]
    pub dtypes: Vec<String>,
    /// The checkpoint under `--peer` that the benchmark runs (`llama110m`: the 124.7M peer
    /// Llama, named `peer-llama` in the results; another, e.g. `tools/gpu/big_llama.py`'s
    /// `llama7b`, under its own name).
    #[arg(long, default_value = "llama110m")]
    pub bench_model: String,
    /// The peer-bench directory (`llama110m/`, `prompts.jsonl`) of the benchmark.
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// Benchmark batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub bench_batches: Vec<usize>,
    /// New tokens per row in the benchmark (exactly: EOS is suppressed until then).
    #[arg(long, default_value_t = 50)]
    pub bench_new_tokens: usize,
    /// Timed runs per benchmark point (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub bench_reps: usize,
    /// Benchmark dtypes.
    #[arg(long, value_delimiter = ',', default_value = "bf16,f32")]
    pub bench_dtypes: Vec<String>,
    /// The real Gemma-3-270M GGUF: its parity with transformers' committed greedy references
    /// (`real`), and the benchmark in bf16.
    #[arg(long)]
    pub gguf: Option<PathBuf>,
    /// Prompts of the study-time run: each benchmarked model generates this many 50-token
    /// continuations of real prompts in batches as large as the device's memory holds
    /// (`--batch-size auto`), as a study's model does (the paper: 2,400); 0 skips it.
    #[arg(long, default_value_t = 2400)]
    pub study_prompts: usize,
    /// Marks the results as a dry run (the CPU stand-in for the GPU run).
    #[arg(long)]
    pub dry: bool,
}

/// Runs the selected checks, writes the JSON report to `args.out` and returns it.
pub fn run(args: &Args) -> Res<Value> {
    let started = Instant::now();
    let root = repo_root(args.root.as_deref())?;
    let dev = gen_engine::parse_device(&args.device)?;
    let mut results: Vec<Value> = Vec::new();
    let want = |c: &str| args.checks.iter().any(|x| x == c);
    let gen_dir = root.join("tests/fixtures/gen");
    guarded(&mut results, "device_probe", &args.device, args, |out| {
        probe(args, &dev, out)
    });
    if want("families") {
        for name in family_dirs(&gen_dir)? {
            if args.families.as_ref().is_some_and(|f| !f.contains(&name)) {
                continue;
            }
            guarded(&mut results, "family", &name, args, |out| {
                check_family(&gen_dir, &name, args, &dev, out)
            });
        }
    }
    if want("adapters") {
        for (adapter, base) in adapter_dirs(&gen_dir)? {
            if args.families.as_ref().is_some_and(|f| !f.contains(&base)) {
                continue;
            }
            for merge in [false, true] {
                guarded(&mut results, "adapter", &adapter, args, |out| {
                    check_adapter(&gen_dir, &adapter, &base, merge, args, &dev, out)
                });
            }
        }
    }
    if want("classifier") {
        let dir = root.join("tests/fixtures/classifier");
        for (name, batch) in [("tok-json", 32), ("vocab-merges", 5)] {
            guarded(&mut results, "classifier", name, args, |out| {
                check_classifier(&dir, name, batch, args, &dev, out)
            });
        }
    }
    if want("lora") {
        let fx = root.join("tests/fixtures");
        for name in lora_dirs(&fx.join("lora"))? {
            if fx.join("lora").join(&name).join("grad_ref.json").is_file() {
                guarded(&mut results, "lora_gradient", &name, args, |out| {
                    check_lora_gradient(&fx, &name, args, &dev, out)
                });
            }
            guarded(&mut results, "lora_train", &name, args, |out| {
                check_lora_train(&fx, &name, args, &dev, out)
            });
        }
    }
    if want("real") {
        match &args.gguf {
            Some(gguf) => guarded(&mut results, "real_greedy", GEMMA, args, |out| {
                check_real_gemma(gguf, &root, args, &dev, out)
            }),
            None => results.push(skip(
                "real_greedy",
                GEMMA,
                args,
                "no --gguf file given (the 253 MB GGUF needs staging: docs/gpu.md)",
            )),
        }
    }
    if want("bench") {
        match &args.peer {
            Some(peer) => guarded(&mut results, "bench", &bench_name(args), args, |out| {
                bench_peer(peer, args, &dev, out)
            }),
            None => results.push(skip(
                "bench",
                "peer-llama",
                args,
                "no --peer directory given (tools/gpu/peer_llama.py builds it)",
            )),
        }
        match (&args.gguf, &args.peer) {
            (Some(gguf), Some(peer)) => guarded(&mut results, "bench", GEMMA, args, |out| {
                bench_gguf(gguf, peer, args, &dev, out)
            }),
            (Some(_), None) => results.push(skip("bench", GEMMA, args, "no --peer prompts")),
            (None, _) => results.push(skip(
                "bench",
                GEMMA,
                args,
                "no --gguf file given (the 253 MB GGUF needs staging: docs/gpu.md)",
            )),
        }
    }
    let count = |s: &str| results.iter().filter(|r| r["status"] == s).count();
    let report = json!({
        "tool": "gpu_check",
        "schema": 1,
        "device": args.device,
        "dry": args.dry,
        "cuda_feature": cfg!(feature = "cuda"),
        "root": root.display().to_string(),
        "seconds": started.elapsed().as_secs_f64(),
        "summary": {
            "pass": count("pass"), "fail": count("fail"),
            "error": count("error"), "skip": count("skip"),
        },
        "results": results,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(report)
}

/// Runs one check body, turning an error or a panic into an `error` result, so that one broken
/// kernel does not hide the other checks' results.
fn guarded(
    results: &mut Vec<Value>,
    check: &str,
    name: &str,
    args: &Args,
    body: impl FnOnce(&mut Vec<Value>) -> Res<()>,
) {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut out)));
    let msg = match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e}")),
        Err(p) => Some(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    };
    results.append(&mut out);
    if let Some(msg) = msg {
        results.push(json!({
            "check": check, "name": name, "device": args.device, "status": "error",
            "pass": false, "reason": msg, "seconds": t0.elapsed().as_secs_f64(),
        }));
    }
}

fn skip(check: &str, name: &str, args: &Args, reason: &str) -> Value {
    json!({
        "check": check, "name": name, "device": args.device, "status": "skip",
        "pass": Value::Null, "reason": reason,
    })
}

/// One result row.
fn result(
    check: &str,
    name: &str,
    args: &Args,
    dtype: &str,
    pass: bool,
    numbers: Value,
    tolerance: Value,
) -> Value {
    json!({
        "check": check, "name": name, "device": args.device, "dtype": dtype,
        "status": if pass { "pass" } else { "fail" }, "pass": pass,
        "numbers": numbers, "tolerance": tolerance,
    })
}

fn repo_root(given: Option<&Path>) -> Res<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir()?;
    if cwd.join("tests/fixtures/gen").is_dir() {
        return Ok(cwd);
    }
    Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The device works: a small computation there equals the host's (the first CUDA call also
/// loads the driver, cuBLAS and candle's kernels, so its time is the start-up cost).
fn probe(args: &Args, dev: &Device, out: &mut Vec<Value>) -> Res<()> {
    let t0 = Instant::now();
    let xs: Vec<f32> = (0..4096).map(|i| ((i % 97) as f32 - 48.0) / 7.0).collect();
    let want: f64 = xs.iter().map(|x| (*x as f64) * (*x as f64)).sum();
    let t = tensor(xs, ForwardCtx::new)?.to_device(dev)?;
    let got = t
        .sqr()?
        .sum_all()?
        .to_device(&Device::Cpu)?
        .to_scalar::<f32>()? as f64;
    let rel = (got - want).abs() / want;
    out.push(result(
        "device_probe",
        &args.device,
        args,
        "f32",
        rel < 1e-5,
        json!({"sum_of_squares": got, "expected": want, "rel_diff": rel,
               "first_op_s": t0.elapsed().as_secs_f64(), "cuda_feature": cfg!(feature = "cuda")}),
        json!({"rel_diff": 1e-5}),
    ));
    Ok(())
}

/// Fixture directories holding a checkpoint and a transformers reference.
fn family_dirs(gen_dir: &Path) -> Res<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(gen_dir)? {
        let p = e?.path();
        if p.join("config.json").is_file() && p.join("reference.json").is_file() {
            out.push(file_name(&p));
        }
    }
    out.sort();
    Ok(out)
}

/// Adapter fixture directories and the family fixture each was made on.
fn adapter_dirs(gen_dir: &Path) -> Res<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(gen_dir)? {
        let p = e?.path();
        let cfg = p.join("adapter_config.json");
        if cfg.is_file() && p.join("reference.json").is_file() {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg)?)?;
            let base = v["base_model_name_or_path"]
                .as_str()
                .map(|b| file_name(Path::new(b)))
                .ok_or_else(|| format!("{}: no base_model_name_or_path", cfg.display()))?;
            out.push((file_name(&p), base));
        }
    }
    out.sort();
    Ok(out)
}

/// LoRA training fixtures (a `train_ref.json` from tools/fixtures/fx_lora.py).
fn lora_dirs(dir: &Path) -> Res<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.join("train_ref.json").is_file() {
            out.push(file_name(&p));
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Reference {
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u8>>,
    completion_token_ids: Vec<Vec<u32>>,
    max_new_tokens: usize,
    #[serde(default)]
    merged_completion_token_ids: Option<Vec<Vec<u32>>>,
    #[serde(default)]
    long_input_ids: Option<Vec<Vec<u32>>>,
}

fn read_reference(dir: &Path) -> Res<Reference> {
    let p = dir.join("reference.json");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?)
}

/// The unpadded prompt ids of a left-padded batch.
fn unpadded(r: &Reference) -> Vec<Vec<u32>> {
    r.input_ids
        .iter()
        .zip(&r.attention_mask)
        .map(|(ids, m)| {
            ids.iter()
                .zip(m)
                .filter(|(_, m)| **m == 1)
                .map(|(i, _)| *i)
                .collect()
        })
        .collect()
}

/// A CPU tensor from a flat vector: candle's `Tensor`, whose type `pin` (`ForwardCtx::new`)
/// names for the compiler (the facade does not depend on candle directly).
fn tensor<S, T>(data: Vec<S>, _pin: fn(&'static T) -> ForwardCtx<'static>) -> Res<T>
where
    T: TryFrom<Vec<S>>,
    T::Error: Error + 'static,
{
    T::try_from(data).map_err(|e| Box::new(e) as Box<dyn Error>)
}

/// A named f32 tensor of a safetensors file, flattened, with its shape.
fn read_f32(file: &Path, name: &str) -> Res<(Vec<usize>, Vec<f32>)> {
    let ck = Checkpoint::open_files(&[file.to_path_buf()])?;
    let f32_dtype = tensor(vec![0f32], ForwardCtx::new)?.dtype();
    let t = ck.get(name, None, f32_dtype, &Device::Cpu)?;
    Ok((t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
}

/// Full logits `[b][t][vocab]` (as f32) of a batch, with an optional padding mask.
fn forward_logits(
    m: &LoadedModel,
    rows: &[Vec<u32>],
    mask: Option<&[Vec<u8>]>,
    dev: &Device,
) -> Res<Vec<Vec<Vec<f32>>>> {
    let (b, t) = (rows.len(), rows.first().map(Vec::len).unwrap_or(0));
    let ids = tensor(rows.concat(), ForwardCtx::new)?
        .reshape((b, t))?
        .to_device(dev)?;
    let mask_t = match mask {
        Some(m) => Some(
            tensor(m.concat(), ForwardCtx::new)?
                .reshape((b, t))?
                .to_device(dev)?,
        ),
        None => None,
    };
    let mut ctx = ForwardCtx::new(&ids);
    if let Some(mt) = &mask_t {
        ctx = ctx.with_mask(mt);
    }
    let logits = m.model.forward(ctx)?;
    let f32_dtype = tensor(vec![0f32], ForwardCtx::new)?.dtype();
    Ok(logits.to_dtype(f32_dtype)?.to_vec3::<f32>()?)
}

/// Max |a − b| over the real (mask = 1) positions; `want` is flat `[b, t, v]`.
fn max_diff_real(got: &[Vec<Vec<f32>>], want: &[f32], mask: &[Vec<u8>]) -> Res<f32> {
    let mut worst = 0f32;
    let mut off = 0;
    for (bi, row) in mask.iter().enumerate() {
        for (ti, m) in row.iter().enumerate() {
            let g = &got[bi][ti];
            let w = want
                .get(off..off + g.len())
                .ok_or("reference logits are shorter than the model's")?;
            off += g.len();
            if *m == 1 {
                for (x, y) in g.iter().zip(w) {
                    worst = worse(worst, (x - y).abs());
                }
            }
        }
    }
    if off != want.len() {
        return Err(format!("reference logits: {} values, model {off}", want.len()).into());
    }
    Ok(worst)
}

/// The larger of a running maximum and a new difference, a NaN difference counting as infinite.
fn worse(max: f32, d: f32) -> f32 {
    if d.is_nan() {
        f32::INFINITY
    } else {
        max.max(d)
    }
}

fn load(
    dir: &Path,
    dtype: DTypeChoice,
    dev: &Device,
    adapter: Option<(&Path, bool)>,
) -> Res<LoadedModel> {
    let mut opts = LoadOptions {
        dtype,
        device: Some(dev.clone()),
        ..LoadOptions::default()
    };
    if let Some((a, merge)) = adapter {
        opts = opts.with_adapter(a, merge)?;
    }
    Ok(gen_engine::load_dir(dir, &opts)?)
}

fn greedy(m: &LoadedModel, prompts: &[Vec<u32>], max_new: usize) -> Res<Vec<Generation>> {
    let params = GenerateParams::new().max_new_tokens(max_new);
    let g = m.generator(params)?;
    Ok(g.generate_batch(prompts)?)
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || (row[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best
}

/// Logits (as f32) at the positions that predict `cont` after `prompt` (teacher forcing).
fn teacher_forced(
    m: &LoadedModel,
    prompt: &[u32],
    cont: &[u32],
    dev: &Device,
) -> Res<Vec<Vec<f32>>> {
    if cont.is_empty() {
        return Ok(Vec::new());
    }
    let mut seq = prompt.to_vec();
    seq.extend_from_slice(&cont[..cont.len() - 1]);
    let mut l = forward_logits(m, &[seq], None, dev)?;
    let rows = l.pop().ok_or("no logits")?;
    Ok(rows[prompt.len() - 1..].to_vec())
}

/// Free-running comparison of two sets of continuations: the share of identical tokens
/// (position by position, over the reference's tokens) and each row's first divergence.
fn compare_ids(got: &[Vec<u32>], want: &[Vec<u32>]) -> (f64, Vec<Option<usize>>, usize) {
    let (mut same, mut total) = (0usize, 0usize);
    let mut first = Vec::new();
    for (g, w) in got.iter().zip(want) {
        total += w.len().max(g.len());
        same += g.iter().zip(w).filter(|(a, b)| a == b).count();
        let d = g.iter().zip(w).position(|(a, b)| a != b);
        first.push(d.or(if g.len() != w.len() {
            Some(g.len().min(w.len()))
        } else {
            None
        }));
    }
    let rows_identical = first.iter().filter(|d| d.is_none()).count();
    (
        if total == 0 {
            1.0
        } else {
            same as f64 / total as f64
        },
        first,
        rows_identical,
    )
}

fn dtype_choice(s: &str) -> Res<DTypeChoice> {
    Ok(DTypeChoice::parse(s)?)
}

/// Tolerances of a reduced dtype against f32, teacher-forced: the largest relative L2 error
/// of the logits, ‖l − l₃₂‖₂ / ‖l₃₂‖₂ over every position, and the smallest top-1 agreement.
fn reduced_tolerance(dtype: &str) -> (f64, f64) {
    match dtype {
        "f16" | "float16" | "half" => (0.01, 0.95),
        _ => (0.05, 0.9),
    }
}

fn check_family(
    gen_dir: &Path,
    name: &str,
    args: &Args,
    dev: &Device,
    out: &mut Vec<Value>,
) -> Res<()> {
    let dir = gen_dir.join(name);
    let r = read_reference(&dir)?;
    let refs = dir.join("reference.safetensors");
    let m32 = load(&dir, DTypeChoice::F32, dev, None)?;
    let t0 = Instant::now();
    let logits = forward_logits(&m32, &r.input_ids, Some(&r.attention_mask), dev)?;
    let (_, want) = read_f32(&refs, "logits")?;
    let diff = max_diff_real(&logits, &want, &r.attention_mask)?;
    let mut numbers = json!({"max_abs_diff": diff, "seconds": t0.elapsed().as_secs_f64()});
    let mut pass = diff < 1e-4;
    if let Some(long) = &r.long_input_ids {
        let l = forward_logits(&m32, long, None, dev)?;
        let (_, want) = read_f32(&refs, "long_logits")?;
        let mask: Vec<Vec<u8>> = long.iter().map(|row| vec![1u8; row.len()]).collect();
        let d = max_diff_real(&l, &want, &mask)?;
        numbers["long_prompt_max_abs_diff"] = json!(d);
        pass &= d < 1e-4;
    }
    out.push(result(
        "family_logits",
        name,
        args,
        "f32",
        pass,
        numbers,
        json!({"max_abs_diff": 1e-4, "vs": "transformers f32 on the CPU"}),
    ));

    // f32 greedy continuations against transformers.
    let prompts = unpadded(&r);
    let g32 = greedy(&m32, &prompts, r.max_new_tokens)?;
    let ids32: Vec<Vec<u32>> = g32.iter().map(|g| g.token_ids.clone()).collect();
    let (share, first, rows_same) = compare_ids(&ids32, &r.completion_token_ids);
    let mut ties = Vec::new();
    let mut pass = true;
    for (i, d) in first.iter().enumerate() {
        let Some(k) = *d else { continue };
        // A differing token is accepted only as a tie within tolerance of this device's logits.
        let want_row = &r.completion_token_ids[i];
        let (Some(&ours), Some(&theirs)) = (ids32[i].get(k), want_row.get(k)) else {
            pass = false;
            continue;
        };
        let rows = teacher_forced(&m32, &prompts[i], &want_row[..=k], dev)?;
        let l = &rows[k];
        let margin = (l[ours as usize] - l[theirs as usize]).abs();
        pass &= margin <= 2e-4;
        ties.push(json!({"row": i, "position": k, "ours": ours, "reference": theirs, "logit_gap": margin}));
    }
    out.push(result(
        "family_greedy_f32",
        name,
        args,
        "f32",
        pass,
        json!({"identical_token_share": share, "rows_identical": rows_same, "rows": ids32.len(),
               "first_divergence": first, "divergences": ties}),
        json!({"identical": true, "or_tie_within": 2e-4, "vs": "transformers generate (CPU)"}),
    ));

    for dt in &args.dtypes {
        let md = load(&dir, dtype_choice(dt)?, dev, None)?;
        let (numbers, pass, tolerance) =
            reduced_vs_f32(&m32, &md, &prompts, &ids32, r.max_new_tokens, dt, dev)?;
        out.push(result(
            &format!("family_greedy_{dt}"),
            name,
            args,
            dt,
            pass,
            numbers,
            tolerance,
        ));
    }
    Ok(())
}

/// A reduced dtype's model `md` against the f32 model `m32` of the same device: free-running
/// (identical share and first divergence of its greedy continuations against `ids32`,
/// informative: a flip cascades) and teacher-forced on the f32 continuations (top-1 agreement
/// and relative L2 logit error, the pass criterion). Returns numbers, pass, tolerance.
fn reduced_vs_f32(
    m32: &LoadedModel,
    md: &LoadedModel,
    prompts: &[Vec<u32>],
    ids32: &[Vec<u32>],
    max_new: usize,
    dt: &str,
    dev: &Device,
) -> Res<(Value, bool, Value)> {
    let gd = greedy(md, prompts, max_new)?;
    let idsd: Vec<Vec<u32>> = gd.iter().map(|g| g.token_ids.clone()).collect();
    let (share, first, rows_same) = compare_ids(&idsd, ids32);
    let (mut agree, mut n, mut max_abs) = (0usize, 0usize, 0f32);
    let (mut err2, mut ref2) = (0f64, 0f64);
    let mut flips = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let a = teacher_forced(m32, p, &ids32[i], dev)?;
        let b = teacher_forced(md, p, &ids32[i], dev)?;
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            let (ax, ay) = (argmax(x), argmax(y));
            n += 1;
            if ax == ay {
                agree += 1;
            } else {
                flips.push(json!({"row": i, "position": k, "f32_top2_gap": x[ax] - x[ay]}));
            }
            for (u, v) in x.iter().zip(y) {
                let d = (u - v).abs();
                max_abs = worse(max_abs, d);
                err2 += (d as f64).powi(2);
                ref2 += (*u as f64).powi(2);
            }
        }
    }
    let rel = (err2 / ref2.max(f64::MIN_POSITIVE)).sqrt();
    let agreement = agree as f64 / n.max(1) as f64;
    let (tol_rel, tol_agree) = reduced_tolerance(dt);
    let pass = rel.is_finite() && rel <= tol_rel && agreement >= tol_agree;
    Ok((
        json!({
            "free_running": {"identical_token_share": share, "rows_identical": rows_same,
                             "rows": idsd.len(), "first_divergence": first},
            "teacher_forced": {"top1_agreement": agreement, "positions": n,
                               "relative_l2_logit_error": rel, "max_abs_logit_diff": max_abs,
                               "flips": flips},
        }),
        pass,
        json!({"vs": "f32 run of the same device, teacher-forced on its continuation",
               "relative_l2_logit_error": tol_rel, "top1_agreement": tol_agree}),
    ))
}

fn check_adapter(
    gen_dir: &Path,
    adapter: &str,
    base: &str,
    merge: bool,
    args: &Args,
    dev: &Device,
    out: &mut Vec<Value>,
) -> Res<()> {
    let adir = gen_dir.join(adapter);
    let r = read_reference(&adir)?;
    let m = load(
        &gen_dir.join(base),
        DTypeChoice::F32,
        dev,
        Some((&adir, merge)),
    )?;
    let logits = forward_logits(&m, &r.input_ids, Some(&r.attention_mask), dev)?;
    let key = if merge { "merged_logits" } else { "logits" };
    let (_, want) = read_f32(&adir.join("reference.safetensors"), key)?;
    let diff = max_diff_real(&logits, &want, &r.attention_mask)?;
    let label = format!("{adapter} ({})", if merge { "merged" } else { "unmerged" });
    out.push(result(
        "adapter_logits",
        &label,
        args,
        "f32",
        diff < 1e-4,
        json!({"max_abs_diff": diff}),
        json!({"max_abs_diff": 1e-4, "vs": "peft f32 on the CPU"}),
    ));
    let want_ids = if merge {
        r.merged_completion_token_ids
            .clone()
            .ok_or("reference has no merged_completion_token_ids")?
    } else {
        r.completion_token_ids.clone()
    };
    let got: Vec<Vec<u32>> = greedy(&m, &unpadded(&r), r.max_new_tokens)?
        .into_iter()
        .map(|g| g.token_ids)
        .collect();
    let (share, first, rows_same) = compare_ids(&got, &want_ids);
    out.push(result(
        "adapter_greedy",
        &label,
        args,
        "f32",
        rows_same == got.len(),
        json!({"identical_token_share": share, "rows_identical": rows_same, "first_divergence": first}),
        json!({"identical": true, "vs": "peft generate (CPU)"}),
    ));
    Ok(())
}

fn check_classifier(
    dir: &Path,
    name: &str,
    batch: usize,
    args: &Args,
    dev: &Device,
    out: &mut Vec<Value>,
) -> Res<()> {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json"))?)?;
    let texts: Vec<String> = serde_json::from_value(r["texts"].clone())?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let m = &r["models"][name];
    let clf = HateClassifier::params()
        .backend(Backend::Candle)
        .device(dev.clone())
        .batch_size(batch)
        .load(dir.join(name).to_string_lossy())?;
    let ids = clf.encode(&refs)?;
    let want_ids: Vec<Vec<u32>> = serde_json::from_value(m["input_ids"].clone())?;
    let t0 = Instant::now();
    let scores = clf.score(&refs)?;
    let secs = t0.elapsed().as_secs_f64();
    let want: Vec<f64> = serde_json::from_value(m["hate"].clone())?;
    let worst = scores
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    let pooled = clf.embed(&refs[..4.min(refs.len())])?;
    let want_pooled: Vec<Vec<f64>> = serde_json::from_value(m["pooled"].clone())?;
    let mut worst_pooled = 0f64;
    for (g, w) in pooled.iter().zip(&want_pooled) {
        for (a, b) in g.iter().zip(w) {
            worst_pooled = worst_pooled.max((*a as f64 - b).abs());
        }
    }
    let pass = ids == want_ids && scores.len() == want.len() && worst < 1e-5 && worst_pooled < 1e-5;
    out.push(result(
        "classifier",
        &format!("{name} (batch {batch})"),
        args,
        "f32",
        pass,
        json!({"token_ids_identical": ids == want_ids, "texts": scores.len(),
               "max_abs_score_diff": worst, "max_abs_pooled_diff": worst_pooled, "seconds": secs}),
        json!({"score": 1e-5, "pooled": 1e-5, "vs": "transformers pipeline (CPU)"}),
    ));
    Ok(())
}

fn lora_params(r: &Value) -> Res<lora_train::finetune::LoraParams> {
    Ok(lora_train::finetune::LoraParams {
        r: r["r"].as_u64().ok_or("train_ref.json: r")? as usize,
        alpha: r["alpha"].as_f64().ok_or("train_ref.json: alpha")?,
        dropout: 0.0,
        targets: serde_json::from_value(r["targets"].clone())?,
        use_rslora: r["use_rslora"]
            .as_bool()
            .ok_or("train_ref.json: use_rslora")?,
        init_seed: 0,
    })
}

fn read_json(p: &Path) -> Res<Value> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn check_lora_gradient(
    fx: &Path,
    name: &str,
    args: &Args,
    dev: &Device,
    out: &mut Vec<Value>,
) -> Res<()> {
    use lora_train::trainer::TrainableLm;
    let dir = fx.join("lora").join(name);
    let r = read_json(&dir.join("train_ref.json"))?;
    let tm = lora_train::finetune::load_for_training(
        &Source::local(&dir),
        &lora_params(&r)?,
        Some(&dir.join("grad_adapter")),
        DTypeChoice::F32,
        dev,
    )?;
    let g = read_json(&dir.join("grad_ref.json"))?;
    let ids: Vec<Vec<u32>> = serde_json::from_value(g["batch"]["input_ids"].clone())?;
    let labels: Vec<Vec<i64>> = serde_json::from_value(g["batch"]["labels"].clone())?;
    let (b, t) = (ids.len(), ids.first().map(Vec::len).unwrap_or(0));
    let input = tensor(ids.concat(), ForwardCtx::new)?
        .reshape((b, t))?
        .to_device(dev)?;
    let t0 = Instant::now();
    let logits = tm.model.train_logits(&input)?;
    let (sum, n) = lora_train::loss::causal_lm_loss_sum(&logits, &labels)?;
    let loss = (sum / n as f64)?;
    let l = loss.to_device(&Device::Cpu)?.to_scalar::<f32>()? as f64;
    let want_loss = g["loss"].as_f64().ok_or("grad_ref.json: loss")?;
    let loss_rel = (l - want_loss).abs() / want_loss.abs();
    let grads = loss.backward()?;
    let grad_file = dir.join("grad_ref.safetensors");
    let mut worst_rel = 0f64;
    let mut missing = Vec::new();
    for (key, var) in &tm.vars {
        let Some(got) = grads.get(var.as_tensor()) else {
            missing.push(key.clone());
            continue;
        };
        let got = got
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (_, want) = read_f32(&grad_file, key)?;
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-6);
        let d = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        worst_rel = worst_rel.max((d / scale) as f64);
    }
    let secs = t0.elapsed().as_secs_f64();
    let pass = missing.is_empty() && loss_rel < 1e-5 && worst_rel < 1e-4;
    out.push(result(
        "lora_gradient",
        name,
        args,
        "f32",
        pass,
        json!({"loss": l, "reference_loss": want_loss, "loss_rel_diff": loss_rel,
               "tensors": tm.vars.len(), "missing_gradients": missing,
               "max_grad_rel_diff": worst_rel, "seconds": secs}),
        json!({"loss_rel": 1e-5, "grad_rel_to_tensor_max": 1e-4, "vs": "peft backward (CPU)"}),
    ));
    Ok(())
}

fn check_lora_train(
    fx: &Path,
    name: &str,
    args: &Args,
    dev: &Device,
    out: &mut Vec<Value>,
) -> Res<()> {
    use lora_train::optim::{AdamWParams, Schedule};
    use lora_train::template::{LossOn, Template};
    use lora_train::trainer::TrainParams;
    let dir = fx.join("lora").join(name);
    let r = read_json(&dir.join("train_ref.json"))?;
    let tmp = tempfile::tempdir()?;
    let num = |k: &str| r[k].as_f64().ok_or_else(|| format!("train_ref.json: {k}"));
    let int = |k: &str| {
        r[k].as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| format!("train_ref.json: {k}"))
    };
    // QLoRA's base is the 4-bit checkpoint the reference trained over.
    let base = match r["base"].as_str() {
        Some(b) => b.to_string(),
        None => format!("lora/{name}"),
    };
    let mut spec = lora_train::finetune::FinetuneSpec::paper(
        Source::local(fx.join(&base)),
        Source::local(fx.join("samples/dolly/databricks-dolly-15k.jsonl")),
        tmp.path().to_path_buf(),
    );
    spec.base_model_name = Some(format!("tests/fixtures/{base}"));
    spec.max_len = int("max_len")?;
    spec.loss_on = LossOn::All;
    spec.template = Template::AuthorsInst;
    spec.limit = Some(40);
    spec.lora = lora_params(&r)?;
    spec.init_adapter = Some(dir.join("init_adapter"));
    spec.lora_given = lora_train::finetune::LoraGiven::all();
    spec.base_4bit = r["base"].is_string();
    spec.train = TrainParams {
        adamw: AdamWParams {
            lr: num("lr")?,
            weight_decay: num("weight_decay")?,
            ..AdamWParams::default()
        },
        schedule: Schedule::Linear,
        warmup_steps: int("warmup")?,
        micro_batch: int("micro_batch")?,
        grad_accum: int("accum")?,
        max_grad_norm: num("max_grad_norm")?,
        epochs: 1,
        max_steps: Some(int("steps")?),
        shuffle: false,
        seed: 0,
        checkpoint_every: 0,
        keep_checkpoints: 1,
    };
    spec.dtype = DTypeChoice::F32;
    spec.device = dev.clone();
    let t0 = Instant::now();
    let report = lora_train::finetune::finetune(&spec, &mut |_, _| {}, &mut |_| {})?;
    let secs = t0.elapsed().as_secs_f64();
    let want: Vec<f64> = serde_json::from_value(r["losses"].clone())?;
    let losses: Vec<f64> = report.summary.log.iter().map(|s| s.loss).collect();
    let loss_rel = losses
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / b.abs())
        .fold(0f64, f64::max);
    let got_file = tmp.path().join("adapter_model.safetensors");
    let want_file = dir.join("trained_adapter/adapter_model.safetensors");
    let want_ck = Checkpoint::open_files(std::slice::from_ref(&want_file))?;
    let names: Vec<String> = want_ck.names().map(str::to_string).collect();
    let init_file = dir.join("init_adapter/adapter_model.safetensors");
    let (mut worst, mut moved) = (0f32, 0f32);
    for k in &names {
        let (_, g) = read_f32(&got_file, k)?;
        let (_, w) = read_f32(&want_file, k)?;
        let (_, i) = read_f32(&init_file, k)?;
        if g.len() != w.len() {
            return Err(format!("{k}: {} values, PEFT's {}", g.len(), w.len()).into());
        }
        worst = g
            .iter()
            .zip(&w)
            .fold(worst, |a, (x, y)| a.max((x - y).abs()));
        moved = w
            .iter()
            .zip(&i)
            .fold(moved, |a, (x, y)| a.max((x - y).abs()));
    }
    // The comparison means something only when training moved the weights beyond it.
    let pass = losses.len() == want.len() && loss_rel < 1e-4 && worst < 1e-4 && moved > 1e-3;
    out.push(result(
        "lora_train",
        name,
        args,
        "f32",
        pass,
        json!({"steps": losses.len(), "reference_steps": want.len(), "losses": losses,
               "max_loss_rel_diff": loss_rel, "first_step_loss_rel_diff":
                   losses.first().zip(want.first()).map(|(a, b)| (a - b).abs() / b.abs()),
               "adapter_tensors": names.len(), "max_abs_weight_diff": worst,
               "base_4bit": spec.base_4bit, "peft_weights_moved": moved, "seconds": secs}),
        json!({"loss_rel": 1e-4, "weight_abs": 1e-4, "weights_moved_over": 1e-3,
               "vs": "peft Trainer (CPU)"}),
    ));
    Ok(())
}

/// The benchmark's prompts: the peer bench's `prompts.jsonl`, repeated up to `n`.
fn bench_prompts(peer: &Path, n: usize) -> Res<Vec<String>> {
    let p = peer.join("prompts.jsonl");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let base: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            Ok(v["text"].as_str().unwrap_or_default().to_string())
        })
        .collect::<Res<_>>()?;
    if base.is_empty() {
        return Err(format!("{}: no prompts", p.display()).into());
    }
    Ok(base.iter().cycle().take(n).cloned().collect())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// The benchmarked checkpoint's name in the results.
fn bench_name(args: &Args) -> String {
    match args.bench_model.as_str() {
        "llama110m" => "peer-llama".into(),
        other => other.into(),
    }
}

fn bench_peer(peer: &Path, args: &Args, dev: &Device, out: &mut Vec<Value>) -> Res<()> {
    let dir = peer.join(&args.bench_model);
    let name = bench_name(args);
    for dt in &args.bench_dtypes {
        let t0 = Instant::now();
        let m = load(&dir, dtype_choice(dt)?, dev, None)?;
        bench_model(&name, &m, t0.elapsed().as_secs_f64(), dt, peer, args, out)?;
        study_time(&name, &m, dt, args, out)?;
    }
    Ok(())
}

/// Greedy generation of `m` at each benchmark batch size, on the peer bench's prompts.
fn bench_model(
    name: &str,
    m: &LoadedModel,
    load_s: f64,
    dt: &str,
    peer: &Path,
    args: &Args,
    out: &mut Vec<Value>,
) -> Res<()> {
    let n_new = args.bench_new_tokens;
    for &b in &args.bench_batches {
        let texts = bench_prompts(peer, b)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let params = GenerateParams::new()
            .max_new_tokens(n_new)
            .min_new_tokens(n_new)
            .batch_size(b);
        let g = m.generator(params)?;
        let tw = Instant::now();
        g.generate(&refs)?;
        let warmup_s = tw.elapsed().as_secs_f64();
        let mut times = Vec::new();
        let mut first_ids: Vec<Vec<u32>> = Vec::new();
        for rep in 0..args.bench_reps.max(1) {
            let t = Instant::now();
            let gens = g.generate(&refs)?;
            times.push(t.elapsed().as_secs_f64());
            if rep == 0 {
                first_ids = gens.into_iter().map(|g| g.token_ids).collect();
            }
        }
        let med = median(&times);
        let new_tokens: usize = first_ids.iter().map(Vec::len).sum();
        let exact = first_ids.iter().all(|r| r.len() == n_new);
        out.push(json!({
            "check": "bench", "name": name, "engine": "toxdrift",
            "device": args.device, "dtype": dt, "batch": b,
            "status": if exact { "pass" } else { "fail" }, "pass": exact,
            "numbers": {
                "params": m.model.info().num_params, "new_tokens_per_row": n_new,
                "load_s": load_s, "warmup_s": warmup_s, "runs_s": times, "median_s": med,
                "new_tokens_per_s": new_tokens as f64 / med,
                "ms_per_step": 1000.0 * med / n_new as f64,
            },
            "tolerance": {"every_row_exactly_new_tokens": n_new},
            "token_ids": first_ids,
        }));
    }
    Ok(())
}

/// The real Gemma-3-270M (`--gguf`, Q4_K_M) in bf16, loaded through `gen_engine::load` (the
/// GGUF weights dequantised at load), on the peer bench's prompts.
fn bench_gguf(
    gguf: &Path,
    peer: &Path,
    args: &Args,
    dev: &Device,
    out: &mut Vec<Value>,
) -> Res<()> {
    let t0 = Instant::now();
    let m = load_gguf(gguf, DTypeChoice::BF16, dev)?;
    bench_model(
        GEMMA,
        &m,
        t0.elapsed().as_secs_f64(),
        "bf16",
        peer,
        args,
        out,
    )?;
    study_time(GEMMA, &m, "bf16", args, out)
}

fn load_gguf(gguf: &Path, dtype: DTypeChoice, dev: &Device) -> Res<LoadedModel> {
    let opts = LoadOptions {
        dtype,
        device: Some(dev.clone()),
        ..LoadOptions::default()
    };
    Ok(gen_engine::load(&Source::local(gguf), &opts)?)
}

/// The real Gemma-3-270M (`--gguf`) on the device against transformers' greedy continuations
/// of the same file ([`REAL_REF`]: f32 on the CPU), at batch 16 and batch 1: identical tokens,
/// or a tie within [`REAL_TIE`]; then bf16 against this device's f32 run, teacher-forced, as
/// the families are checked.
fn check_real_gemma(
    gguf: &Path,
    root: &Path,
    args: &Args,
    dev: &Device,
    out: &mut Vec<Value>,
) -> Res<()> {
    let r = read_json(&root.join(REAL_REF))?;
    let field = |v: &Value, k: &str| -> Res<Value> {
        v.get(k)
            .cloned()
            .ok_or_else(|| format!("{REAL_REF}: no `{k}`").into())
    };
    let prompts: Vec<String> = serde_json::from_value(field(&r, "prompts")?)?;
    let max_new: usize = serde_json::from_value(field(&r, "max_new_tokens")?)?;
    let m32 = load_gguf(gguf, DTypeChoice::F32, dev)?;
    let ids = prompts
        .iter()
        .map(|p| m32.tokenizer.encode(p, true))
        .collect::<Result<Vec<_>, _>>()?;
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let mut ids32 = Vec::new();
    for (key, batch) in [("batch16", 16usize), ("batch1", 1)] {
        let want: Vec<Vec<u32>> =
            serde_json::from_value(field(&field(&r, key)?, "completion_token_ids")?)?;
        let params = GenerateParams::new()
            .max_new_tokens(max_new)
            .batch_size(batch);
        let g = m32.generator(params)?;
        let t = Instant::now();
        let got: Vec<Vec<u32>> = g
            .generate(&texts)?
            .into_iter()
            .map(|g| g.token_ids)
            .collect();
        let secs = t.elapsed().as_secs_f64();
        let (share, first, rows_same) = compare_ids(&got, &want);
        let (mut pass, mut ties) = (got.len() == want.len(), Vec::new());
        for (i, d) in first.iter().enumerate() {
            let Some(k) = *d else { continue };
            let (Some(&ours), Some(&theirs)) = (got[i].get(k), want[i].get(k)) else {
                pass = false;
                continue;
            };
            let rows = teacher_forced(&m32, &ids[i], &want[i][..=k], dev)?;
            let gap = (rows[k][ours as usize] - rows[k][theirs as usize]).abs();
            pass &= gap <= REAL_TIE;
            ties.push(
                json!({"row": i, "position": k, "ours": ours, "reference": theirs,
                             "logit_gap": gap}),
            );
        }
        out.push(result(
            "real_greedy_f32",
            &format!("{GEMMA} {key}"),
            args,
            "f32",
            pass,
            json!({"identical_token_share": share, "rows_identical": rows_same,
                   "rows": got.len(), "first_divergence": first, "divergences": ties,
                   "seconds": secs}),
            json!({"identical": true, "or_tie_within": REAL_TIE,
                   "vs": "transformers generate, f32 on the CPU (committed reference)"}),
        ));
        if batch == 16 {
            ids32 = got;
        }
    }
    let md = load_gguf(gguf, DTypeChoice::BF16, dev)?;
    let (numbers, pass, tolerance) = reduced_vs_f32(&m32, &md, &ids, &ids32, max_new, "bf16", dev)?;
    out.push(result(
        "real_greedy_bf16",
        GEMMA,
        args,
        "bf16",
        pass,
        numbers,
        tolerance,
    ));
    Ok(())
}

/// A study's share of work for one model: `--study-prompts` real prompts (the real Gemma
/// reference's, 8 of them CEB prompts, cycled), 50 new tokens each, in batches as large as the
/// device's memory holds ([`gen_engine::BatchSize::Auto`]); the batches planned, wall time and
/// throughput. Passes when every prompt got its continuation.
fn study_time(name: &str, m: &LoadedModel, dt: &str, args: &Args, out: &mut Vec<Value>) -> Res<()> {
    if args.study_prompts == 0 {
        return Ok(());
    }
    let root = repo_root(args.root.as_deref())?;
    let r = read_json(&root.join(REAL_REF))?;
    let base: Vec<String> = serde_json::from_value(r["prompts"].clone())?;
    let texts: Vec<&str> = base
        .iter()
        .map(String::as_str)
        .cycle()
        .take(args.study_prompts)
        .collect();
    let n_new = args.bench_new_tokens;
    let params = GenerateParams::new()
        .max_new_tokens(n_new)
        .min_new_tokens(n_new)
        .batch_size(gen_engine::BatchSize::Auto)
        // The dry run's tiny stand-in has a 256-token window; the real models fit every prompt.
        .truncation(gen_engine::TruncationPolicy::LeftTruncate);
    let g = m.generator(params)?;
    let lengths = texts
        .iter()
        .map(|t| m.tokenizer.encode(t, true).map(|ids| ids.len()))
        .collect::<Result<Vec<_>, _>>()?;
    let plan: Vec<usize> = g.plan_batches(&lengths)?.iter().map(Vec::len).collect();
    let free = gen_engine::memory::free_memory(&m.model.info().device)?;
    let t = Instant::now();
    let gens = g.generate(&texts)?;
    let secs = t.elapsed().as_secs_f64();
    let tokens: usize = gens.iter().map(|g| g.token_ids.len()).sum();
    let exact = gens.len() == texts.len() && gens.iter().all(|g| g.token_ids.len() == n_new);
    out.push(json!({
        "check": "study_time", "name": name, "engine": "toxdrift", "device": args.device,
        "dtype": dt, "batch": "auto",
        "status": if exact { "pass" } else { "fail" }, "pass": exact,
        "numbers": {
            "prompts": texts.len(), "new_tokens_per_row": n_new, "batches": plan.len(),
            "largest_batch": plan.iter().max(), "batch_sizes": plan,
            "free_device_bytes_before": free,
            "prompt_tokens_min": lengths.iter().min(), "prompt_tokens_max": lengths.iter().max(),
            "seconds": secs, "new_tokens_per_s": tokens as f64 / secs,
            "seconds_per_1000_prompts": 1000.0 * secs / texts.len() as f64,
        },
        "tolerance": {"every_prompt_exactly_new_tokens": n_new},
    }));
    Ok(())
}

#[allow(dead_code)]
fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            let s = &report["summary"];
            eprintln!(
                "gpu_check on {}: {} pass, {} fail, {} error, {} skip -> {}",
                args.device,
                s["pass"],
                s["fail"],
                s["error"],
                s["skip"],
                args.out.display()
            );
            let bad = s["fail"].as_u64().unwrap_or(0) + s["error"].as_u64().unwrap_or(0);
            std::process::exit(if bad == 0 { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(2);
        }
    }
}
