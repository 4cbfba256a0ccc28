//! Step two of the PEFT parity fixtures (see `tools/fixtures/fx_lora.py`): trains the tiny Llama
//! and the tiny Phi-3 of `tests/fixtures/lora/` with the reference settings (10 steps from
//! `init_adapter/`), saves the adapters as `<model>/rust_adapter/` and the adapter's logits on a
//! fixed input as `<model>/rust_logits.json`. Then `make_fixtures.py lora` loads each
//! `rust_adapter/` in PEFT and records the logit difference in `<model>/peft_loads_rust.json`.
//!
//! ```text
//! .venv-ref/bin/python tools/fixtures/make_fixtures.py lora     # 1. references
//! cargo run -p lora-train --example parity_export               # 2. Rust adapters
//! .venv-ref/bin/python tools/fixtures/make_fixtures.py lora     # 3. PEFT loads them
//! ```

use candle_core::{Device, Tensor};
use gen_engine::{DTypeChoice, ForwardCtx, LoadOptions};
use hub_source::Source;
use lora_train::data::Fields;
use lora_train::finetune::{FinetuneSpec, LoraGiven, LoraParams, finetune};
use lora_train::optim::{AdamWParams, Schedule};
use lora_train::template::{LossOn, Template};
use lora_train::trainer::TrainParams;
use std::path::{Path, PathBuf};

fn json(path: &Path) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fixtures = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"));
    for name in ["llama", "phi3"] {
        let dir = fixtures.join("lora").join(name);
        let r = json(&dir.join("train_ref.json"))?;
        let num = |k: &str| r[k].as_f64().ok_or(format!("train_ref.json: {k}"));
        let tmp = tempfile::tempdir()?;
        let spec = FinetuneSpec {
            model: Source::local(&dir),
            base_model_name: Some(format!("tests/fixtures/lora/{name}")),
            data: Source::local(fixtures.join("samples/dolly/databricks-dolly-15k.jsonl")),
            fields: Fields::dolly(),
            template: Template::AuthorsInst,
            max_len: num("max_len")? as usize,
            loss_on: LossOn::All,
            limit: Some(40),
            lora: LoraParams {
                r: num("r")? as usize,
                alpha: num("alpha")?,
                dropout: 0.0,
                targets: serde_json::from_value(r["targets"].clone())?,
                use_rslora: r["use_rslora"].as_bool().unwrap_or(false),
                init_seed: 0,
            },
            init_adapter: Some(dir.join("init_adapter")),
            lora_given: LoraGiven::all(),
            base_4bit: false,
            train: TrainParams {
                adamw: AdamWParams {
                    lr: num("lr")?,
                    weight_decay: num("weight_decay")?,
                    ..AdamWParams::default()
                },
                schedule: Schedule::Linear,
                warmup_steps: num("warmup")? as usize,
                micro_batch: num("micro_batch")? as usize,
                grad_accum: num("accum")? as usize,
                max_grad_norm: num("max_grad_norm")?,
                epochs: 1,
                max_steps: Some(num("steps")? as usize),
                shuffle: false,
                seed: 0,
                checkpoint_every: 0,
                keep_checkpoints: 1,
            },
            dtype: DTypeChoice::F32,
            device: Device::Cpu,
            out: tmp.path().join("run"),
            merged_out: None,
            resume: false,
        };
        let report = finetune(&spec, &mut |_, _| {}, &mut |_| {})?;
        let out = dir.join("rust_adapter");
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        std::fs::create_dir_all(&out)?;
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(tmp.path().join("run").join(f), out.join(f))?;
        }
        // The Rust model with the Rust adapter (unmerged LoRA path), on a fixed input.
        let ids: Vec<u32> = vec![
            1, 1, 61, 43, 48, 53, 54, 63, 223, 53, 87, 79, 79, 67, 282, 297,
        ];
        let input = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu)?;
        let loaded =
            gen_engine::load_dir(&dir, &LoadOptions::default().with_adapter(&out, false)?)?;
        let logits = loaded.model.forward(ForwardCtx::new(&input))?;
        let logits: Vec<Vec<Vec<f32>>> = logits.to_vec3()?;
        let doc = serde_json::json!({
            "input_ids": [ids],
            "logits": logits,
            "losses": report.summary.log.iter().map(|s| s.loss).collect::<Vec<_>>(),
        });
        std::fs::write(dir.join("rust_logits.json"), doc.to_string() + "\n")?;
        println!("{name}: rust_adapter/ and rust_logits.json written");
    }
    Ok(())
}
