//! The family registry: supported architectures, each family's PEFT LoRA targets, and
//! [`gen_engine::models::default_lora_targets`] on checkpoints.

mod common;

use common::fixture;
use gen_engine::Error;
use gen_engine::models::{default_lora_targets, lora_targets};

const LLAMA_SEVEN: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];
const PHI3_FOUR: [&str; 4] = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"];

#[test]
fn every_supported_architecture_has_its_targets() {
    assert_eq!(
        gen_engine::SUPPORTED_ARCHITECTURES,
        [
            "LlamaForCausalLM",
            "GemmaForCausalLM",
            "Gemma2ForCausalLM",
            "Phi3ForCausalLM"
        ]
    );
    for arch in ["LlamaForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM"] {
        assert_eq!(lora_targets(arch), Some(&LLAMA_SEVEN[..]), "{arch}");
    }
    assert_eq!(lora_targets("Phi3ForCausalLM"), Some(&PHI3_FOUR[..]));
    assert_eq!(lora_targets("MambaForCausalLM"), None);
}

#[test]
fn default_targets_follow_the_checkpoint() {
    for (name, want) in [
        ("llama", &LLAMA_SEVEN[..]),
        ("llama31", &LLAMA_SEVEN[..]),
        ("gemma", &LLAMA_SEVEN[..]),
        ("gemma2", &LLAMA_SEVEN[..]),
        ("phi3", &PHI3_FOUR[..]),
        ("phi35", &PHI3_FOUR[..]),
    ] {
        assert_eq!(
            default_lora_targets(&fixture(name)).unwrap(),
            want,
            "{name}"
        );
    }
}

#[test]
fn default_targets_errors_name_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let e = default_lora_targets(tmp.path()).unwrap_err();
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("config.json"), "{e}");

    std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let e = default_lora_targets(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, Error::Config { key, .. } if key == "architectures"),
        "{e}"
    );

    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"architectures": ["MambaForCausalLM"]}"#,
    )
    .unwrap();
    let e = default_lora_targets(tmp.path()).unwrap_err();
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e}");
    assert!(e.to_string().contains("Phi3ForCausalLM"), "{e}");
    assert!(e.is_bad_input());
}
