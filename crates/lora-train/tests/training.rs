//! The loop through gen-engine's models: gradients reach every LoRA tensor (and equal PEFT's),
//! a killed run resumes exactly, a NaN loss stops with the last good checkpoint, bad LoRA
//! settings are typed errors, and the merged model gives the adapter's logits.

use candle_core::{DType, Device, Tensor};
use gen_engine::{ForwardCtx, LoadOptions};
use hub_source::Source;
use lora_train::Error;
use lora_train::data::Fields;
use lora_train::finetune::{FinetuneSpec, LoraGiven, LoraParams, finetune, load_for_training};
use lora_train::loss::causal_lm_loss_sum;
use lora_train::optim::{AdamWParams, Schedule};
use lora_train::template::{LossOn, Template};
use lora_train::trainer::{TrainParams, TrainableLm, latest_checkpoint};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check_gradients(name: &str) {
    let dir = fixtures().join("lora").join(name);
    let r = json(&dir.join("train_ref.json"));
    let lora = LoraParams {
        r: r["r"].as_u64().unwrap() as usize,
        alpha: r["alpha"].as_f64().unwrap(),
        dropout: 0.0,
        targets: serde_json::from_value(r["targets"].clone()).unwrap(),
        use_rslora: r["use_rslora"].as_bool().unwrap(),
        init_seed: 0,
    };
    // An adapter with non-zero B, so that A receives gradient too.
    let tm = load_for_training(
        &Source::local(&dir),
        &lora,
        Some(&dir.join("grad_adapter")),
        gen_engine::DTypeChoice::F32,
        &Device::Cpu,
    )
    .unwrap();
    let g = json(&dir.join("grad_ref.json"));
    let ids: Vec<Vec<u32>> = serde_json::from_value(g["batch"]["input_ids"].clone()).unwrap();
    let labels: Vec<Vec<i64>> = serde_json::from_value(g["batch"]["labels"].clone()).unwrap();
    let t = ids[0].len();
    let input = Tensor::from_vec(ids.concat(), (ids.len(), t), &Device::Cpu).unwrap();
    let logits = tm.model.train_logits(&input).unwrap();
    let (sum, n) = causal_lm_loss_sum(&logits, &labels).unwrap();
    let loss = (sum / n as f64).unwrap();
    let l = loss.to_scalar::<f32>().unwrap() as f64;
    let want_loss = g["loss"].as_f64().unwrap();
    assert!(
        (l - want_loss).abs() / want_loss < 1e-5,
        "{name}: loss {l} vs PEFT {want_loss}"
    );
    let grads = loss.backward().unwrap();
    let want =
        candle_core::safetensors::load(dir.join("grad_ref.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(tm.vars.len(), want.len());
    for (key, var) in &tm.vars {
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient for {key}"));
        let zeros = got
            .eq(0f32)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(
            zeros, 0.0,
            "{name} {key}: {zeros} gradient entries are exactly zero"
        );
        let w = &want[key];
        let scale = w
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1e-6);
        let d = max_abs_diff(got, w);
        assert!(
            d / scale < 1e-4,
            "{name} {key}: gradient differs from PEFT's by {d:e} (scale {scale:e})"
        );
    }
}

#[test]
fn every_lora_tensor_gets_peft_gradient_llama() {
    check_gradients("llama");
}

#[test]
fn every_lora_tensor_gets_peft_gradient_phi3_fused() {
    check_gradients("phi3");
}

#[test]
fn empty_targets_are_the_family_projections() {
    let lora = LoraParams {
        r: 2,
        ..LoraParams::default()
    };
    for (name, want) in [
        (
            "llama",
            &[
                "down_proj",
                "gate_proj",
                "k_proj",
                "o_proj",
                "q_proj",
                "up_proj",
                "v_proj",
            ][..],
        ),
        (
            "phi3",
            &["down_proj", "gate_up_proj", "o_proj", "qkv_proj"][..],
        ),
    ] {
        let tm = load_for_training(
            &Source::local(fixtures().join("lora").join(name)),
            &lora,
            None,
            gen_engine::DTypeChoice::F32,
            &Device::Cpu,
        )
        .unwrap();
        let mut got = tm.lora.targets.clone();
        got.sort_unstable();
        assert_eq!(got, want, "{name}");
        assert_eq!(tm.lora.r, 2);
    }
}

fn small_spec(out: &Path) -> FinetuneSpec {
    FinetuneSpec {
        model: Source::local(fixtures().join("lora/llama")),
        base_model_name: None,
        data: Source::local(fixtures().join("samples/dolly/databricks-dolly-15k.jsonl")),
        fields: Fields::dolly(),
        template: Template::AuthorsInst,
        max_len: 48,
        loss_on: LossOn::All,
        limit: Some(24),
        lora: LoraParams {
            r: 4,
            alpha: 8.0,
            init_seed: 5,
            ..LoraParams::default()
        },
        init_adapter: None,
        lora_given: LoraGiven::default(),
        base_4bit: false,
        train: TrainParams {
            adamw: AdamWParams {
                lr: 5e-3,
                weight_decay: 0.01,
                ..AdamWParams::default()
            },
            schedule: Schedule::Cosine,
            warmup_steps: 1,
            micro_batch: 2,
            grad_accum: 2,
            max_grad_norm: 1.0,
            epochs: 1,
            max_steps: None,
            shuffle: true,
            seed: 99,
            checkpoint_every: 2,
            keep_checkpoints: 2,
        },
        dtype: gen_engine::DTypeChoice::F32,
        device: Device::Cpu,
        out: out.to_path_buf(),
        merged_out: None,
        resume: false,
    }
}

#[test]
fn a_killed_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    // The uninterrupted run.
    let a = tmp.path().join("a");
    let full = finetune(&small_spec(&a), &mut |_, _| {}, &mut |_| {}).unwrap();
    assert_eq!(full.summary.log.len(), 6);
    // The same run, "killed" after step 5: its checkpoints (2 and 4) and a step log that ran
    // past the last checkpoint, but no final adapter.
    let b = tmp.path().join("b");
    let spec_b = small_spec(&b);
    finetune(&spec_b, &mut |_, _| {}, &mut |_| {}).unwrap();
    std::fs::remove_file(b.join("adapter_model.safetensors")).unwrap();
    std::fs::remove_file(b.join("adapter_config.json")).unwrap();
    let ck = latest_checkpoint(&b).unwrap().unwrap();
    assert!(ck.ends_with("checkpoint-4"), "{ck:?}");
    assert!(
        !b.join("checkpoints/checkpoint-2").exists() || b.join("checkpoints/checkpoint-4").exists()
    );
    let resumed = finetune(
        &FinetuneSpec {
            resume: true,
            ..spec_b
        },
        &mut |_, _| {},
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resumed.summary.resumed_from, 4);
    // Steps after the checkpoint are recomputed: bit-identical. Steps before it come back from
    // trainer_state.json (JSON floats: equal to 1e-15 relative).
    assert_eq!(resumed.summary.log.len(), full.summary.log.len());
    for (r, f) in resumed.summary.log.iter().zip(&full.summary.log) {
        assert_eq!(
            (r.step, r.loss_tokens, r.tokens),
            (f.step, f.loss_tokens, f.tokens)
        );
        for (x, y) in [(r.loss, f.loss), (r.lr, f.lr), (r.grad_norm, f.grad_norm)] {
            assert!(
                (x - y).abs() <= 1e-15 * y.abs().max(1.0),
                "step {}: {x} vs {y}",
                r.step
            );
        }
        if r.step > 4 {
            assert_eq!(r, f, "recomputed step {} differs", r.step);
        }
    }
    let wa =
        candle_core::safetensors::load(a.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let wb =
        candle_core::safetensors::load(b.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    for (k, t) in &wa {
        assert_eq!(max_abs_diff(t, &wb[k]), 0.0, "{k} differs after resume");
    }
    let log_lines = std::fs::read_to_string(b.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(log_lines, 6);
    // Resuming with other settings is refused.
    let mut other = small_spec(&b);
    other.resume = true;
    other.train.adamw.lr = 1e-3;
    let e = finetune(&other, &mut |_, _| {}, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::ResumeMismatch { .. }), "{e}");
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = small_spec(tmp.path());
    spec.train.adamw.lr = 1e30;
    spec.train.schedule = Schedule::Constant;
    spec.train.warmup_steps = 0;
    spec.train.checkpoint_every = 1;
    let e = finetune(&spec, &mut |_, _| {}, &mut |_| {}).unwrap_err();
    match &e {
        Error::NonFiniteLoss {
            step,
            last_checkpoint: Some(ck),
            ..
        } => {
            assert!(*step >= 2);
            assert!(ck.join("adapter_model.safetensors").is_file());
            assert!(ck.ends_with(format!("checkpoint-{}", step - 1)));
        }
        other => panic!("expected NonFiniteLoss with a checkpoint, got {other}"),
    }
    assert!(e.to_string().contains("not finite"));
    assert!(
        !tmp.path().join("adapter_model.safetensors").exists(),
        "no adapter from a failed run"
    );
}

#[test]
fn bad_lora_settings_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = small_spec(tmp.path());
    spec.lora.targets = vec!["q_proj".into(), "qkv_proj".into()];
    let e = finetune(&spec, &mut |_, _| {}, &mut |_| {}).unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("qkv_proj"),
        "{e}"
    );
    let mut spec = small_spec(tmp.path());
    spec.lora.r = 0;
    assert!(matches!(
        finetune(&spec, &mut |_, _| {}, &mut |_| {}),
        Err(Error::InvalidParam { name: "r", .. })
    ));
    let mut spec = small_spec(tmp.path());
    spec.data = Source::local(tmp.path().join("none.jsonl"));
    assert!(finetune(&spec, &mut |_, _| {}, &mut |_| {}).is_err());
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let mut spec = small_spec(tmp.path());
    spec.data = Source::local(&empty);
    assert!(matches!(
        finetune(&spec, &mut |_, _| {}, &mut |_| {}),
        Err(Error::EmptyDataset { .. })
    ));
}

#[test]
fn merged_model_gives_the_adapter_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = small_spec(&tmp.path().join("adapter"));
    spec.train.max_steps = Some(2);
    spec.train.checkpoint_every = 0;
    spec.merged_out = Some(tmp.path().join("merged"));
    finetune(&spec, &mut |_, _| {}, &mut |_| {}).unwrap();
    let ids = Tensor::new(&[[1u32, 61, 43, 48, 53, 54, 63, 223, 53, 87]], &Device::Cpu).unwrap();
    let merged = gen_engine::load_dir(&tmp.path().join("merged"), &LoadOptions::default()).unwrap();
    let a = merged.model.forward(ForwardCtx::new(&ids)).unwrap();
    let opts = LoadOptions::default()
        .with_adapter(&tmp.path().join("adapter"), false)
        .unwrap();
    let sep = gen_engine::load_dir(&fixtures().join("lora/llama"), &opts).unwrap();
    let b = sep.model.forward(ForwardCtx::new(&ids)).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4);
    let base =
        gen_engine::load_dir(&fixtures().join("lora/llama"), &LoadOptions::default()).unwrap();
    let c = base.model.forward(ForwardCtx::new(&ids)).unwrap();
    assert!(
        max_abs_diff(&a, &c) > 1e-3,
        "the adapter changes the logits"
    );
    assert!(tmp.path().join("merged/tokenizer.json").is_file());
    assert!(tmp.path().join("merged/config.json").is_file());
}
