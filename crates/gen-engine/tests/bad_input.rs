//! Bad input gets a typed error naming the file, tensor or prompt — never a panic.

use crate::common::*;
use gen_engine::{Error, GenerateParams, LoadOptions, TruncationPolicy};
use std::path::Path;

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path) -> Error {
    gen_engine::load_dir(dir, &LoadOptions::default()).unwrap_err()
}

#[test]
fn missing_weights() {
    let tmp = copy_fixture("llama");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    assert!(e.is_bad_input());
}

#[test]
fn pickle_only_checkpoint_is_refused() {
    let tmp = copy_fixture("llama");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"not loaded").unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, Error::PickleOnly { .. }), "{e}");
    assert!(e.to_string().contains("pytorch_model.bin"), "{e}");
}

#[test]
fn truncated_safetensors() {
    let tmp = copy_fixture("llama");
    let p = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, Error::Safetensors { .. }), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn corrupt_safetensors_header() {
    let tmp = copy_fixture("llama");
    let p = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    for b in bytes.iter_mut().skip(8).take(16) {
        *b = b'#';
    }
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, Error::Safetensors { .. }), "{e}");
}

fn rewrite_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn tensor_shape_disagrees_with_config() {
    let tmp = copy_fixture("llama");
    rewrite_config(tmp.path(), |v| v["intermediate_size"] = 96.into());
    let e = load_err(tmp.path());
    match &e {
        Error::TensorShape { name, .. } => assert!(name.contains("mlp.gate_proj.weight"), "{e}"),
        other => panic!("expected TensorShape, got {other}"),
    }
}

#[test]
fn tensor_dtype_not_float() {
    let tmp = copy_fixture("llama");
    let p = tmp.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    let w = tensors["model.norm.weight"]
        .to_dtype(candle_core::DType::I64)
        .unwrap();
    tensors.insert("model.norm.weight".into(), w);
    candle_core::safetensors::save(&tensors, &p).unwrap();
    let e = load_err(tmp.path());
    match &e {
        Error::TensorDtype { name, .. } => assert_eq!(name, "model.norm.weight"),
        other => panic!("expected TensorDtype, got {other}"),
    }
}

#[test]
fn missing_tensor() {
    let tmp = copy_fixture("llama");
    let p = tmp.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    tensors.remove("model.layers.1.self_attn.k_proj.weight");
    candle_core::safetensors::save(&tensors, &p).unwrap();
    let e = load_err(tmp.path());
    match &e {
        Error::MissingTensor { name, .. } => {
            assert_eq!(name, "model.layers.1.self_attn.k_proj.weight")
        }
        other => panic!("expected MissingTensor, got {other}"),
    }
}

#[test]
fn missing_tokenizer() {
    let tmp = copy_fixture("llama");
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn unknown_architecture_lists_supported() {
    let tmp = copy_fixture("llama");
    rewrite_config(tmp.path(), |v| {
        v["architectures"] = serde_json::json!(["MambaForCausalLM"])
    });
    let e = load_err(tmp.path());
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e}");
    let s = e.to_string();
    assert!(
        s.contains("MambaForCausalLM") && s.contains("Gemma2ForCausalLM"),
        "{s}"
    );
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let tmp = copy_fixture("llama");
    let p = tmp.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    std::fs::remove_file(&p).unwrap();
    let mut a = std::collections::HashMap::new();
    let mut b = std::collections::HashMap::new();
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in tensors.into_iter().enumerate() {
        let file = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(k.clone(), file.into());
        if i % 2 == 0 {
            a.insert(k, v)
        } else {
            b.insert(k, v)
        };
    }
    candle_core::safetensors::save(&a, tmp.path().join("model-00001-of-00002.safetensors"))
        .unwrap();
    candle_core::safetensors::save(&b, tmp.path().join("model-00002-of-00002.safetensors"))
        .unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let (r, refs) = reference("llama");
    let m = gen_engine::load_dir(tmp.path(), &LoadOptions::default()).unwrap();
    let logits = m
        .model
        .forward(
            gen_engine::ForwardCtx::new(&ids_tensor(&r.input_ids))
                .with_mask(&mask_tensor(&r.attention_mask)),
        )
        .unwrap();
    assert!(max_diff_real(&logits, &refs["logits"], &r.attention_mask) < 1e-4);
    // A shard listed in the index but absent.
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.to_string().contains("model-00002-of-00002.safetensors"),
        "{e}"
    );
}

#[test]
fn prompt_too_long_error_or_left_truncate() {
    let m = load("llama");
    let long = "The tiny robot walked to the market. ".repeat(40);
    let g = m.generator(GenerateParams::new()).unwrap();
    let e = g.generate(&[long.as_str()]).unwrap_err();
    assert!(matches!(e, Error::PromptTooLong { index: 0, .. }), "{e}");
    let g = m
        .generator(
            GenerateParams::new()
                .max_new_tokens(6)
                .truncation(TruncationPolicy::LeftTruncate),
        )
        .unwrap();
    let enc = g.encode(&[long.as_str()]).unwrap();
    assert_eq!(enc[0].len() + 6, m.model.info().max_position_embeddings);
    assert_eq!(enc[0][0], 1, "BOS kept");
    let out = g.generate(&[long.as_str()]).unwrap();
    assert_eq!(out[0].token_ids.len(), 6);
}

#[test]
fn empty_prompt_list() {
    let m = load("llama");
    let g = m.generator(GenerateParams::new()).unwrap();
    assert!(matches!(g.generate(&[]).unwrap_err(), Error::EmptyPrompts));
    assert!(matches!(
        g.generate_batch(&[]).unwrap_err(),
        Error::EmptyPrompts
    ));
}

#[test]
fn invalid_parameters() {
    let m = load("llama");
    let e = m
        .generator(GenerateParams::new().batch_size(0))
        .unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidParam {
            name: "batch_size",
            ..
        }
    ));
}

#[test]
fn adapter_for_another_base_names_the_tensor() {
    // A Phi-3 adapter (fused qkv_proj) on the Llama base.
    let opts = LoadOptions::default()
        .with_adapter(&fixture("phi3-lora"), false)
        .unwrap();
    let e = gen_engine::load_dir(&fixture("llama"), &opts).unwrap_err();
    match &e {
        Error::AdapterMismatch { tensor, .. } => {
            assert!(
                tensor.contains("qkv_proj") || tensor.contains("gate_up_proj"),
                "{e}"
            )
        }
        other => panic!("expected AdapterMismatch, got {other}"),
    }
}

#[test]
fn adapter_with_wrong_shapes_names_the_tensor() {
    let tmp = copy_fixture("llama-lora");
    let p = tmp.path().join("adapter_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    let name = "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight";
    tensors.insert(
        name.into(),
        candle_core::Tensor::zeros((4, 48), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
    );
    candle_core::safetensors::save(&tensors, &p).unwrap();
    let opts = LoadOptions::default()
        .with_adapter(tmp.path(), true)
        .unwrap();
    let e = gen_engine::load_dir(&fixture("llama"), &opts).unwrap_err();
    match &e {
        Error::AdapterMismatch { tensor, .. } => assert_eq!(tensor, name),
        other => panic!("expected AdapterMismatch, got {other}"),
    }
}

#[test]
fn unsupported_lora_options_are_rejected() {
    for (key, value) in [
        ("use_dora", serde_json::json!(true)),
        ("rank_pattern", serde_json::json!({"q_proj": 8})),
        ("alpha_pattern", serde_json::json!({"q_proj": 8})),
        ("modules_to_save", serde_json::json!(["lm_head"])),
        ("fan_in_fan_out", serde_json::json!(true)),
        ("bias", serde_json::json!("all")),
    ] {
        let tmp = copy_fixture("llama-lora");
        let p = tmp.path().join("adapter_config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v[key] = value;
        std::fs::write(&p, v.to_string()).unwrap();
        let e = LoadOptions::default()
            .with_adapter(tmp.path(), true)
            .unwrap_err();
        match &e {
            Error::UnsupportedLora { key: k, .. } => assert_eq!(k, key),
            other => panic!("{key}: expected UnsupportedLora, got {other}"),
        }
    }
}

#[test]
fn cuda_device_without_the_feature_is_an_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let e = gen_engine::parse_device("cuda:0").unwrap_err();
    assert!(matches!(e, Error::Device { .. }), "{e}");
    assert!(gen_engine::parse_device("tpu").is_err());
    assert!(gen_engine::parse_device("cpu").is_ok());
}

#[test]
fn token_id_past_the_vocabulary_is_an_error() {
    // Gemma's head is tied (the embedding is looked up in the packed head), Llama's is not.
    for name in ["gemma", "llama"] {
        let m = load(name);
        let vocab = m.model.info().vocab_size as u32;
        let ids =
            candle_core::Tensor::new(&[[1u32, vocab + 7]], &candle_core::Device::Cpu).unwrap();
        let err = m
            .model
            .forward(gen_engine::ForwardCtx::new(&ids))
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("{}", vocab + 7)),
            "{name}: {err}"
        );
    }
}
