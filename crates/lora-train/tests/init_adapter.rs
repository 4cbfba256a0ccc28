//! `--init-adapter` ergonomics in the library: the LoRA settings not given explicitly come from
//! the initial adapter's `adapter_config.json` (a PEFT-written one: the fixture's rank-4 adapter
//! while the paper's recipe asks for rank 16); an explicit one that disagrees is a bad-input
//! error naming both values; without an adapter, empty targets are the family's (gen-engine's
//! `models::lora_targets`).

use hub_source::Source;
use lora_train::finetune::{FinetuneSpec, LoraGiven, LoraParams, finetune};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn spec(out: &std::path::Path) -> FinetuneSpec {
    let mut s = FinetuneSpec::paper(
        Source::local(fixtures().join("lora/llama")),
        Source::local(fixtures().join("samples/dolly/databricks-dolly-15k.jsonl")),
        out.to_path_buf(),
    );
    s.max_len = 32;
    s.limit = Some(4);
    s.train.max_steps = Some(1);
    s.train.checkpoint_every = 0;
    s
}

#[test]
fn settings_come_from_the_adapter_unless_given() {
    let init = fixtures().join("lora/llama/init_adapter");
    // The paper's r 16 / alpha 16 are not "given": the adapter's r 4 / alpha 8 apply.
    let p = LoraParams::default()
        .with_init_adapter(LoraGiven::default(), &init)
        .unwrap();
    assert_eq!(
        (p.r, p.alpha, p.dropout, p.use_rslora),
        (4, 8.0, 0.0, false)
    );
    let mut t = p.targets.clone();
    t.sort();
    assert_eq!(
        t,
        [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj"
        ]
    );
    // Given and equal: fine. Given and different: an error naming both values.
    let four = LoraParams {
        r: 4,
        ..LoraParams::default()
    };
    let given = LoraGiven {
        r: true,
        ..LoraGiven::default()
    };
    assert_eq!(four.with_init_adapter(given, &init).unwrap().r, 4);
    let e = LoraParams::default()
        .with_init_adapter(given, &init)
        .unwrap_err();
    assert!(e.is_bad_input());
    let msg = e.to_string();
    assert!(msg.contains("r = 4") && msg.contains("r = 16"), "{msg}");
    let e = LoraParams::default()
        .with_init_adapter(
            LoraGiven {
                alpha: true,
                ..LoraGiven::default()
            },
            &init,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lora_alpha = 8") && e.contains("lora_alpha = 16"),
        "{e}"
    );
    let e = LoraParams {
        use_rslora: true,
        ..LoraParams::default()
    }
    .with_init_adapter(
        LoraGiven {
            use_rslora: true,
            ..LoraGiven::default()
        },
        &init,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("use_rslora = false") && e.contains("use_rslora = true"),
        "{e}"
    );
}

#[test]
fn a_rank_4_init_adapter_trains_at_rank_4_under_the_paper_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(tmp.path());
    s.init_adapter = Some(fixtures().join("lora/llama/init_adapter"));
    let report = finetune(&s, &mut |_, _| {}, &mut |_| {}).unwrap();
    assert_eq!((report.lora.r, report.lora.alpha), (4, 8.0));
    assert!(!report.base_4bit);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    // r 4 × (in + out) per module: the adapter's shapes.
    let w = candle_core::safetensors::load(
        tmp.path().join("adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let a = &w["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    assert_eq!(a.dims(), &[4, 64]);
    // An explicit rank that disagrees is refused before training.
    s.lora.r = 16;
    s.lora_given.r = true;
    let e = finetune(&s, &mut |_, _| {}, &mut |_| {}).unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("r = 16"), "{e}");
}

#[test]
fn without_an_adapter_targets_default_to_the_family() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(tmp.path());
    s.lora.r = 2;
    let report = finetune(&s, &mut |_, _| {}, &mut |_| {}).unwrap();
    let want = gen_engine::models::default_lora_targets(&fixtures().join("lora/llama")).unwrap();
    assert_eq!(report.lora.targets, want);
    assert_eq!(report.wrapped_modules, 2 * 7);
}
