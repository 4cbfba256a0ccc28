//! Parity with PEFT: 10 training steps on a tiny Llama and a tiny Phi-3 (fused projections,
//! rsLoRA) from the same initial adapter, on the same batches — per-step loss and final adapter
//! weights against the reference run of `tools/fixtures/fx_lora.py`. QLoRA: 5 steps over the
//! frozen bitsandbytes NF4 + double-quantization base `tests/fixtures/bnb/nf4-dq`, against
//! PEFT over the same 4-bit base.

use hub_source::Source;
use lora_train::data::Fields;
use lora_train::finetune::{FinetuneSpec, LoraGiven, LoraParams, finetune};
use lora_train::optim::{AdamWParams, Schedule};
use lora_train::template::{LossOn, Template, TextEncoder, encode_all};
use lora_train::trainer::TrainParams;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture's settings as a spec (data: the first 40 rows of the sample Dolly file).
pub fn spec_for(name: &str, out: &Path) -> FinetuneSpec {
    let dir = fixtures().join("lora").join(name);
    let r = json(&dir.join("train_ref.json"));
    // QLoRA's base is the 4-bit checkpoint the reference trained over.
    let base = match r["base"].as_str() {
        Some(b) => b.to_string(),
        None => format!("lora/{name}"),
    };
    FinetuneSpec {
        model: Source::local(fixtures().join(&base)),
        base_model_name: Some(format!("tests/fixtures/{base}")),
        data: Source::local(fixtures().join("samples/dolly/databricks-dolly-15k.jsonl")),
        fields: Fields::dolly(),
        template: Template::AuthorsInst,
        max_len: r["max_len"].as_u64().unwrap() as usize,
        loss_on: LossOn::All,
        limit: Some(40),
        lora: LoraParams {
            r: r["r"].as_u64().unwrap() as usize,
            alpha: r["alpha"].as_f64().unwrap(),
            dropout: 0.0,
            targets: r["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
            use_rslora: r["use_rslora"].as_bool().unwrap(),
            init_seed: 0,
        },
        init_adapter: Some(dir.join("init_adapter")),
        lora_given: LoraGiven::all(),
        base_4bit: r["base"].is_string(),
        train: TrainParams {
            adamw: AdamWParams {
                lr: r["lr"].as_f64().unwrap(),
                weight_decay: r["weight_decay"].as_f64().unwrap(),
                ..AdamWParams::default()
            },
            schedule: Schedule::Linear,
            warmup_steps: r["warmup"].as_u64().unwrap() as usize,
            micro_batch: r["micro_batch"].as_u64().unwrap() as usize,
            grad_accum: r["accum"].as_u64().unwrap() as usize,
            max_grad_norm: r["max_grad_norm"].as_f64().unwrap(),
            epochs: 1,
            max_steps: Some(r["steps"].as_u64().unwrap() as usize),
            shuffle: false,
            seed: 0,
            checkpoint_every: 0,
            keep_checkpoints: 1,
        },
        dtype: gen_engine::DTypeChoice::F32,
        device: candle_core::Device::Cpu,
        out: out.to_path_buf(),
        merged_out: None,
        resume: false,
    }
}

#[test]
fn authors_template_tokenises_as_transformers() {
    let refs = json(&fixtures().join("lora/dolly_tokens.json"));
    let enc = TextEncoder::from_dir(&fixtures().join("lora/llama")).unwrap();
    let path = fixtures().join("samples/dolly/databricks-dolly-15k.jsonl");
    let mut records = lora_train::data::read_jsonl(&path, &Fields::dolly()).unwrap();
    records.truncate(refs["rows"].as_u64().unwrap() as usize);
    let max_len = refs["max_len"].as_u64().unwrap() as usize;
    let got = encode_all(&enc, &Template::AuthorsInst, &records, max_len, LossOn::All).unwrap();
    let want: Vec<Vec<u32>> = serde_json::from_value(refs["input_ids"].clone()).unwrap();
    let got_ids: Vec<Vec<u32>> = got.examples.iter().map(|e| e.input_ids.clone()).collect();
    assert_eq!(got_ids, want);
    let truncated = want.iter().filter(|w| w.len() == max_len).count();
    assert!(got.truncated >= 1 && got.truncated <= truncated);
}

fn check_model(name: &str) {
    let dir = fixtures().join("lora").join(name);
    let reference = json(&dir.join("train_ref.json"));
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec_for(name, tmp.path());
    let report = finetune(&spec, &mut |_, _| {}, &mut |_| {}).unwrap();
    let want: Vec<f64> = serde_json::from_value(reference["losses"].clone()).unwrap();
    let want_lr: Vec<f64> = serde_json::from_value(reference["lrs"].clone()).unwrap();
    assert_eq!(report.summary.log.len(), want.len());
    let mut worst_rel = 0f64;
    for (s, (w, wl)) in report.summary.log.iter().zip(want.iter().zip(&want_lr)) {
        let rel = (s.loss - w).abs() / w.abs();
        worst_rel = worst_rel.max(rel);
        assert!(
            rel < 1e-4,
            "{name} step {}: loss {} vs PEFT {w} (rel {rel:.2e})",
            s.step,
            s.loss
        );
        assert!(
            (s.lr - wl).abs() <= 1e-12 + 1e-9 * wl.abs(),
            "{name} step {}: lr {} vs {wl}",
            s.step,
            s.lr
        );
    }
    let dev = candle_core::Device::Cpu;
    let got =
        candle_core::safetensors::load(tmp.path().join("adapter_model.safetensors"), &dev).unwrap();
    let want =
        candle_core::safetensors::load(dir.join("trained_adapter/adapter_model.safetensors"), &dev)
            .unwrap();
    assert_eq!(got.len(), want.len());
    let init =
        candle_core::safetensors::load(dir.join("init_adapter/adapter_model.safetensors"), &dev)
            .unwrap();
    let mut moved = 0f32;
    let mut worst = 0f32;
    for (k, w) in &want {
        let g = got.get(k).unwrap_or_else(|| panic!("{name}: missing {k}"));
        assert_eq!(g.dims(), w.dims(), "{k}");
        assert_eq!(g.dtype(), candle_core::DType::F32);
        let d = (g - w)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "{name} {k}: max |diff| {d:e}");
        worst = worst.max(d);
        let m = (w - &init[k])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        moved = moved.max(m);
    }
    // The comparison means something: training moved the weights well beyond the tolerance.
    assert!(moved > 1e-3, "{name}: weights moved only {moved}");
    eprintln!(
        "{name}: max rel loss diff {worst_rel:.2e}, max |weight diff| {worst:.2e}, weights moved {moved:.3e}"
    );
    let cfg = json(&tmp.path().join("adapter_config.json"));
    assert_eq!(cfg["r"], reference["r"]);
    assert_eq!(report.base_4bit, name == "qlora");
    if name == "qlora" {
        // A PEFT adapter of the 4-bit base, named as PEFT named it.
        let peft_cfg = json(&dir.join("trained_adapter/adapter_config.json"));
        assert_eq!(cfg["base_model_name_or_path"], "tests/fixtures/bnb/nf4-dq");
        assert_eq!(
            cfg["base_model_name_or_path"],
            peft_cfg["base_model_name_or_path"]
        );
        return;
    }
    // Step two of the fixtures: the adapter this code saved (rust_adapter/, still what it
    // produces) loads in PEFT and gives the Rust logits.
    let saved =
        candle_core::safetensors::load(dir.join("rust_adapter/adapter_model.safetensors"), &dev)
            .unwrap();
    for (k, g) in &got {
        let d = (g - &saved[k])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            d < 1e-6,
            "{name} {k}: rust_adapter fixture is stale ({d:e}); rerun parity_export"
        );
    }
    let peft = json(&dir.join("peft_loads_rust.json"));
    assert_eq!(peft["ok"], true);
    assert!(peft["max_abs_logit_diff"].as_f64().unwrap() < 1e-4);
    assert!(peft["adapter_moves_logits_by"].as_f64().unwrap() > 1e-2);
    let cfg = json(&tmp.path().join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], reference["r"]);
    assert_eq!(cfg["use_rslora"], reference["use_rslora"]);
}

#[test]
fn llama_ten_steps_match_peft() {
    check_model("llama");
}

#[test]
fn phi3_fused_ten_steps_match_peft() {
    check_model("phi3");
}

#[test]
fn qlora_five_steps_over_the_4bit_base_match_peft() {
    check_model("qlora");
}

#[test]
fn base_4bit_refuses_a_full_precision_base() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec_for("llama", tmp.path());
    spec.base_4bit = true;
    let e = finetune(&spec, &mut |_, _| {}, &mut |_| {}).unwrap_err();
    assert!(e.is_bad_input());
    let msg = e.to_string();
    assert!(
        msg.contains("base_4bit") && msg.contains("not a bitsandbytes 4-bit checkpoint"),
        "{msg}"
    );
}
