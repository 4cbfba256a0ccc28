//! The training path lora-train uses: trainable LoRA Vars under PEFT names, full-sequence logits
//! with differentiable ops, gradients that agree with finite differences, and a training forward
//! that agrees with peft's outputs when started from a peft adapter.

use crate::common::*;
use candle_core::{D, DType, Tensor};
use gen_engine::{Adapter, ForwardCtx, LoadOptions, LoraConfig, LoraInit, LoraPlan};
use std::sync::Arc;

fn train_opts(init: LoraInit, targets: &[&str]) -> LoadOptions {
    LoadOptions {
        lora: LoraPlan::train(LoraConfig::new(4, 8.0, targets), init),
        ..LoadOptions::default()
    }
}

/// Mean next-token cross-entropy of the batch (all real positions but the last).
fn loss(logits: &Tensor, ids: &Tensor) -> Tensor {
    let (b, t, v) = logits.dims3().unwrap();
    let lp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1).unwrap(), D::Minus1).unwrap();
    let tgt = ids
        .narrow(1, 1, t - 1)
        .unwrap()
        .reshape((b * (t - 1), 1))
        .unwrap();
    let picked = lp
        .reshape((b * (t - 1), v))
        .unwrap()
        .gather(&tgt, 1)
        .unwrap();
    picked.mean_all().unwrap().neg().unwrap()
}

const SEVEN: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Sum of |x| of a tensor.
fn abs_sum(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// One LoRA training step on every family, with the family's own PEFT targets: the loss is
/// finite, every target module of every layer gets a trainable pair with finite gradients (B's
/// non-zero at the start, A's non-zero once B has moved), and a small SGD step lowers the loss.
#[test]
fn one_training_step_on_every_family() {
    for base in [
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
    ] {
        let targets = gen_engine::models::default_lora_targets(&fixture(base)).unwrap();
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let m = gen_engine::load_dir(
            &fixture(base),
            &train_opts(LoraInit::Default { seed: 11 }, &targets),
        )
        .unwrap();
        let layers = m.model.info().num_layers;
        let vars = m.lora_vars.named();
        assert_eq!(vars.len(), 2 * layers * targets.len(), "{base}: LoRA vars");
        for l in 0..layers {
            for t in &targets {
                for ab in ["lora_A", "lora_B"] {
                    let want = format!(".layers.{l}.");
                    assert!(
                        vars.iter()
                            .any(|(n, _)| n.contains(&want)
                                && n.ends_with(&format!("{t}.{ab}.weight"))),
                        "{base}: no {ab} for layer {l} {t}"
                    );
                }
            }
        }
        let (r, _) = reference(base);
        let ids = ids_tensor(&r.input_ids);
        let mask = mask_tensor(&r.attention_mask);
        let step_loss = || {
            let logits = m
                .model
                .forward(ForwardCtx::new(&ids).with_mask(&mask).training(true))
                .unwrap();
            loss(&logits, &ids)
        };
        let l0 = step_loss();
        let v0 = l0.to_scalar::<f32>().unwrap();
        assert!(v0.is_finite(), "{base}: loss {v0}");
        let grads = l0.backward().unwrap();
        let lr = 0.05;
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{base}: no gradient for {name}"));
            let s = abs_sum(g);
            assert!(s.is_finite(), "{base} {name}: gradient {s}");
            if name.ends_with("lora_B.weight") {
                assert!(s > 0.0, "{base} {name}: zero gradient");
            }
        }
        for (_, var) in &vars {
            let g = grads.get(var.as_tensor()).unwrap();
            var.set(&(var.as_tensor() - (g * lr).unwrap()).unwrap())
                .unwrap();
        }
        let l1 = step_loss();
        let v1 = l1.to_scalar::<f32>().unwrap();
        eprintln!("{base}: loss {v0:.5} -> {v1:.5} after one SGD step");
        assert!(v1.is_finite() && v1 < v0, "{base}: loss {v0} -> {v1}");
        let grads = l1.backward().unwrap();
        for (name, var) in &vars {
            let s = abs_sum(grads.get(var.as_tensor()).unwrap());
            assert!(s.is_finite() && s > 0.0, "{base} {name}: gradient {s}");
        }
    }
}

#[test]
fn trainable_vars_have_peft_names_and_f32() {
    let targets = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    let m = gen_engine::load_dir(
        &fixture("llama"),
        &train_opts(LoraInit::Default { seed: 3407 }, &targets),
    )
    .unwrap();
    let named = m.lora_vars.named();
    assert_eq!(named.len(), 2 * 7 * 2, "2 layers x 7 modules x (A, B)");
    let (name, a) = &named
        .iter()
        .find(|(n, _)| n.ends_with("layers.0.self_attn.q_proj.lora_A.weight"))
        .unwrap();
    assert_eq!(
        name,
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    assert_eq!(a.dims(), &[4, 32]);
    assert_eq!(a.dtype(), DType::F32);
    let b = &named
        .iter()
        .find(|(n, _)| n.ends_with("layers.1.mlp.down_proj.lora_B.weight"))
        .unwrap()
        .1;
    assert_eq!(b.dims(), &[32, 4]);
    assert_eq!(
        b.as_tensor()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    // Default init: A ~ U(-1/sqrt(in), 1/sqrt(in)), non-zero.
    let amax = a
        .as_tensor()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(amax > 0.05 && amax <= 1.0 / 32f32.sqrt() + 1e-6, "{amax}");
    // B = 0: the model is the base model.
    let (r, refs) = reference("llama");
    let ids = ids_tensor(&r.input_ids);
    let mask = mask_tensor(&r.attention_mask);
    let logits = m
        .model
        .forward(ForwardCtx::new(&ids).with_mask(&mask).training(true))
        .unwrap();
    assert_eq!(logits.dims(), &[4, r.input_ids[0].len(), 512]);
    assert!(max_diff_real(&logits, &refs["logits"], &r.attention_mask) < 1e-4);
}

#[test]
fn training_forward_from_a_peft_adapter_matches_peft() {
    for (base, adapter, targets) in [
        (
            "llama",
            "llama-lora",
            vec![
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        ),
        (
            "phi3",
            "phi3-lora",
            vec!["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        ),
        ("qwen2", "qwen2-lora", SEVEN.to_vec()),
        ("gemma3", "gemma3-lora", SEVEN.to_vec()),
    ] {
        let ad = Arc::new(Adapter::load(&fixture(adapter)).unwrap());
        let mut opts = train_opts(LoraInit::FromAdapter(ad.clone()), &targets);
        if let LoraPlan::Train { config, .. } = &mut opts.lora {
            config.use_rslora = ad.config.use_rslora;
        }
        let m = gen_engine::load_dir(&fixture(base), &opts).unwrap();
        let (r, refs) = reference(adapter);
        let ids = ids_tensor(&r.input_ids);
        let mask = mask_tensor(&r.attention_mask);
        let train = m
            .model
            .forward(ForwardCtx::new(&ids).with_mask(&mask).training(true))
            .unwrap();
        let infer = m
            .model
            .forward(ForwardCtx::new(&ids).with_mask(&mask))
            .unwrap();
        let d_train = max_diff_real(&train, &refs["logits"], &r.attention_mask);
        let d_infer = max_diff_real(&infer, &refs["logits"], &r.attention_mask);
        eprintln!(
            "{adapter}: training forward vs peft {d_train:.3e}, inference forward vs peft {d_infer:.3e}"
        );
        assert!(d_train < 1e-4 && d_infer < 1e-4);
    }
}

#[test]
fn gradients_match_finite_differences() {
    for base in ["llama", "gemma2", "phi35", "gemma3", "qwen2", "olmo2"] {
        let targets: Vec<&str> = if base.starts_with("phi") {
            vec!["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
        } else {
            vec!["q_proj", "v_proj", "down_proj"]
        };
        let m = gen_engine::load_dir(
            &fixture(base),
            &train_opts(LoraInit::Default { seed: 7 }, &targets),
        )
        .unwrap();
        let (r, _) = reference(base);
        let ids = ids_tensor(&r.input_ids);
        let mask = mask_tensor(&r.attention_mask);
        // Non-zero B everywhere so every gradient path is live.
        for (n, v) in m.lora_vars.named() {
            if n.ends_with("lora_B.weight") {
                let dims = v.dims().to_vec();
                v.set(
                    &(Tensor::ones(dims, DType::F32, &candle_core::Device::Cpu).unwrap() * 0.05)
                        .unwrap(),
                )
                .unwrap();
            }
        }
        let f = || {
            let logits = m
                .model
                .forward(ForwardCtx::new(&ids).with_mask(&mask).training(true))
                .unwrap();
            loss(&logits, &ids)
        };
        let l = f();
        let grads = l.backward().unwrap();
        let vars = m.lora_vars.named();
        for (name, var) in [&vars[0], &vars[vars.len() - 1]] {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{base}: no grad for {name}"));
            let g00 = g
                .flatten_all()
                .unwrap()
                .get(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let orig = var.as_tensor().copy().unwrap();
            let eps = 1e-2f32;
            let mut bumped = orig.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            bumped[0] += eps;
            var.set(
                &Tensor::from_vec(bumped.clone(), orig.dims(), &candle_core::Device::Cpu).unwrap(),
            )
            .unwrap();
            let lp = f().to_scalar::<f32>().unwrap();
            bumped[0] -= 2.0 * eps;
            var.set(&Tensor::from_vec(bumped, orig.dims(), &candle_core::Device::Cpu).unwrap())
                .unwrap();
            let lm = f().to_scalar::<f32>().unwrap();
            var.set(&orig).unwrap();
            let fd = (lp - lm) / (2.0 * eps);
            eprintln!("{base} {name}: grad {g00:.5e}, finite difference {fd:.5e}");
            assert!(
                (g00 - fd).abs() <= 2e-3 + 0.05 * fd.abs(),
                "{base} {name}: {g00} vs {fd}"
            );
        }
    }
}
