//! AdamW, schedules and clipping against the formulas of torch and HF Transformers.

use candle_core::{Device, Tensor, Var};
use lora_train::optim::{AdamW, AdamWParams, Schedule, clip_grad_norm};

#[test]
fn linear_and_cosine_schedules_follow_hf() {
    // get_linear_schedule_with_warmup(opt, 2, 10): lambdas for steps 0..10.
    let want = [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125];
    for (s, w) in want.iter().enumerate() {
        assert!(
            (Schedule::Linear.factor(s, 2, 10) - w).abs() < 1e-15,
            "step {s}"
        );
    }
    assert_eq!(Schedule::Linear.factor(12, 2, 10), 0.0);
    // get_cosine_schedule_with_warmup(opt, 2, 10): 0.5 (1 + cos(pi * (s - 2) / 8)).
    for s in 2..10 {
        let w = 0.5 * (1.0 + (std::f64::consts::PI * (s as f64 - 2.0) / 8.0).cos());
        assert!((Schedule::Cosine.factor(s, 2, 10) - w).abs() < 1e-15);
    }
    assert_eq!(Schedule::Constant.factor(7, 2, 10), 1.0);
    assert_eq!(Schedule::Constant.factor(1, 2, 10), 0.5);
}

#[test]
fn adamw_matches_torch_single_tensor_update() {
    let dev = Device::Cpu;
    let p0 = [0.5f32, -1.0, 2.0];
    let var = Var::from_tensor(&Tensor::new(&p0, &dev).unwrap()).unwrap();
    let params = AdamWParams {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut opt = AdamW::new(vec![("p".into(), var.clone())], params).unwrap();
    let grads = [[0.1f32, -0.2, 0.3], [0.05, 0.1, -0.3]];
    // The same arithmetic in f64, written out from torch.optim.adamw._single_tensor_adamw.
    let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let (mut m, mut v) = (vec![0f64; 3], vec![0f64; 3]);
    for (t, g) in grads.iter().enumerate() {
        opt.step(&[Some(Tensor::new(g, &dev).unwrap())], params.lr)
            .unwrap();
        let t = (t + 1) as i32;
        for i in 0..3 {
            let gi = g[i] as f64;
            p[i] *= 1.0 - params.lr * params.weight_decay;
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.999 * v[i] + 0.001 * gi * gi;
            let denom = (v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt()) + 1e-8;
            p[i] -= params.lr / (1.0 - 0.9f64.powi(t)) * m[i] / denom;
        }
    }
    let got = var.as_tensor().to_vec1::<f32>().unwrap();
    for i in 0..3 {
        assert!(
            (got[i] as f64 - p[i]).abs() < 1e-6,
            "{i}: {} vs {}",
            got[i],
            p[i]
        );
    }
    assert_eq!(opt.step_count(), 2);
    assert_eq!(opt.state_tensors().len(), 2);
}

#[test]
fn clipping_is_torch_clip_grad_norm() {
    let dev = Device::Cpu;
    let mut g = vec![
        Some(Tensor::new(&[3f32, 0.0], &dev).unwrap()),
        None,
        Some(Tensor::new(&[4f32], &dev).unwrap()),
    ];
    let norm = clip_grad_norm(&mut g, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-9);
    let coef = 1.0 / (5.0 + 1e-6);
    let a = g[0].as_ref().unwrap().to_vec1::<f32>().unwrap();
    let b = g[2].as_ref().unwrap().to_vec1::<f32>().unwrap();
    assert!((a[0] as f64 - 3.0 * coef).abs() < 1e-6 && (b[0] as f64 - 4.0 * coef).abs() < 1e-6);
    // Under the limit: untouched.
    let mut g = vec![Some(Tensor::new(&[0.3f32, 0.4], &dev).unwrap())];
    clip_grad_norm(&mut g, 1.0).unwrap();
    assert_eq!(
        g[0].as_ref().unwrap().to_vec1::<f32>().unwrap(),
        vec![0.3, 0.4]
    );
}

#[test]
fn bad_hyper_parameters_are_rejected() {
    for p in [
        AdamWParams {
            lr: -1.0,
            ..AdamWParams::default()
        },
        AdamWParams {
            beta1: 1.0,
            ..AdamWParams::default()
        },
        AdamWParams {
            beta2: -0.1,
            ..AdamWParams::default()
        },
        AdamWParams {
            eps: f64::NAN,
            ..AdamWParams::default()
        },
        AdamWParams {
            weight_decay: -0.01,
            ..AdamWParams::default()
        },
    ] {
        assert!(p.check().unwrap_err().is_bad_input());
    }
}
