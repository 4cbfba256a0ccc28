//! One optimizer step (forward, backward, AdamW) on the tiny Llama fixture, and the fused
//! causal-LM loss at the peer benchmark's size (2 × 256 tokens, vocabulary 32,000). The
//! real-size side-by-side with PEFT is `examples/peer_lora.rs` (see docs/performance.md).

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lora_train::finetune::{LoraParams, load_for_training};
use lora_train::loss::causal_lm_loss_sum;
use lora_train::optim::{AdamWParams, Schedule};
use lora_train::template::Example;
use lora_train::trainer::{TrainParams, Trainer};
use std::path::PathBuf;

fn train_step(c: &mut Criterion) {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/lora/llama"
    ));
    let lora = LoraParams {
        r: 4,
        alpha: 8.0,
        init_seed: 7,
        ..LoraParams::default()
    };
    let tm = load_for_training(
        &hub_source::Source::local(&dir),
        &lora,
        None,
        gen_engine::DTypeChoice::F32,
        &Device::Cpu,
    )
    .expect("tiny llama fixture");
    let mut group = c.benchmark_group("train_step_tiny_llama");
    for len in [64usize, 128] {
        let examples: Vec<Example> = (0..2)
            .map(|r| {
                let ids: Vec<u32> = (0..len)
                    .map(|i| ((i * 7 + r * 13) % 500 + 3) as u32)
                    .collect();
                Example {
                    labels: ids.iter().map(|&t| t as i64).collect(),
                    input_ids: ids,
                    truncated_from: None,
                }
            })
            .collect();
        let params = TrainParams {
            adamw: AdamWParams::default(),
            schedule: Schedule::Constant,
            warmup_steps: 0,
            micro_batch: 2,
            grad_accum: 1,
            max_grad_norm: 1.0,
            epochs: 1,
            max_steps: None,
            shuffle: false,
            seed: 0,
            checkpoint_every: 0,
            keep_checkpoints: 1,
        };
        let trainer = Trainer::new(&tm.model, tm.vars.clone(), params, 2).expect("trainer");
        group.bench_with_input(BenchmarkId::from_parameter(len), &examples, |b, ex| {
            b.iter(|| trainer.train(ex, None, &mut |_| {}).expect("step"))
        });
    }
    group.finish();
}

fn loss(c: &mut Criterion) {
    let dev = Device::Cpu;
    let logits = Tensor::randn(0f32, 1.0, (2, 256, 32000), &dev).expect("logits");
    let labels: Vec<Vec<i64>> = (0..2)
        .map(|r| (0..256).map(|i| ((i * 31 + r) % 32000) as i64).collect())
        .collect();
    let var = candle_core::Var::from_tensor(&logits).expect("var");
    c.bench_function("fused_causal_lm_loss_fwd_bwd_2x256x32000", |b| {
        b.iter(|| {
            let (sum, _) = causal_lm_loss_sum(var.as_tensor(), &labels).expect("loss");
            sum.backward().expect("backward")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = train_step, loss
}
criterion_main!(benches);
