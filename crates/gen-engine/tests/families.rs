//! The family registry: supported architectures, each family's PEFT LoRA targets, and
//! [`gen_engine::models::default_lora_targets`] on checkpoints.

use crate::common;
use crate::common::fixture;
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

const SUPPORTED: [&str; 10] = [
    "LlamaForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Phi3ForCausalLM",
    "Gemma3ForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
    "Olmo2ForCausalLM",
    "SmolLM3ForCausalLM",
];

#[test]
fn every_supported_architecture_has_its_targets() {
    assert_eq!(gen_engine::SUPPORTED_ARCHITECTURES, SUPPORTED);
    for arch in SUPPORTED.iter().filter(|a| **a != "Phi3ForCausalLM") {
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
        ("gemma3", &LLAMA_SEVEN[..]),
        ("gemma3-v5", &LLAMA_SEVEN[..]),
        ("qwen2", &LLAMA_SEVEN[..]),
        ("qwen3", &LLAMA_SEVEN[..]),
        ("mistral", &LLAMA_SEVEN[..]),
        ("olmo2", &LLAMA_SEVEN[..]),
        ("smollm3", &LLAMA_SEVEN[..]),
        ("llama32", &LLAMA_SEVEN[..]),
        ("smollm2", &LLAMA_SEVEN[..]),
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
    for arch in SUPPORTED {
        assert!(e.to_string().contains(arch), "{arch} not listed: {e}");
    }
    assert!(e.is_bad_input());
}

/// Loading a checkpoint whose config names an unsupported family: the typed error names the
/// file, the architecture found, and lists every supported one.
#[test]
fn loading_an_unsupported_architecture_lists_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixture("qwen2")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["Qwen3MoeForCausalLM"]);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let e = gen_engine::load_dir(tmp.path(), &gen_engine::LoadOptions::default()).unwrap_err();
    match &e {
        Error::UnknownArchitecture {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, &path);
            assert_eq!(found, "Qwen3MoeForCausalLM");
            assert_eq!(supported, &SUPPORTED.to_vec());
        }
        other => panic!("expected UnknownArchitecture, got {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("Qwen3MoeForCausalLM") && msg.contains("config.json"),
        "{msg}"
    );
    for arch in SUPPORTED {
        assert!(msg.contains(arch), "{arch} not listed: {msg}");
    }
    assert!(e.is_bad_input());
}

/// Every new family's fixture loads and reports its architecture and parameter count.
#[test]
fn every_family_fixture_loads() {
    // Parameter counts as transformers reports them (fx_gen prints them; tied heads once).
    for (name, arch, params) in [
        ("gemma3", "Gemma3ForCausalLM", 44544),
        ("gemma3-v5", "Gemma3ForCausalLM", 44544),
        ("qwen2", "Qwen2ForCausalLM", 51488),
        ("qwen3", "Qwen3ForCausalLM", 41184),
        ("mistral", "MistralForCausalLM", 51360),
        ("olmo2", "Olmo2ForCausalLM", 51456),
        ("smollm3", "SmolLM3ForCausalLM", 44256),
        ("llama32", "LlamaForCausalLM", 34976),
        ("smollm2", "LlamaForCausalLM", 34976),
    ] {
        let m = common::load(name);
        let info = m.model.info();
        assert_eq!(info.architecture, arch, "{name}");
        assert_eq!(info.vocab_size, 512, "{name}");
        assert_eq!(info.num_params, params, "{name}: parameters");
    }
}
