//! GGUF checkpoints: parity with transformers loading the same files
//! (`from_pretrained(dir, gguf_file=...)`, fixtures from `tools/fixtures/fx_gguf.py`) — the config
//! rebuilt from the metadata, tokenizer ids, logits of a left-padded batch within 1e-4 and 50-token
//! greedy continuations identical — and the typed errors for bad files.

use crate::common::{ids_tensor, mask_tensor, max_diff_real};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use gen_engine::gguf::{GgufFile, hf_config, tokenizer_from_gguf};
use gen_engine::{Error, ForwardCtx, GenerateParams, LoadOptions, LoadedModel};
use hub_source::{Hub, HubRepo, RepoKind, Source, layout};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/gguf"
    ))
    .join(name)
}

#[derive(serde::Deserialize)]
struct Reference {
    prompts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u8>>,
    completion_token_ids: Vec<Vec<u32>>,
    completions: Vec<String>,
    finish_reasons: Vec<String>,
    eos_token_ids: Vec<u32>,
    max_new_tokens: usize,
    tokenizer_texts: Vec<String>,
    tokenizer_ids: Vec<Vec<u32>>,
    tokenizer_ids_no_special: Vec<Vec<u32>>,
    decoded: Vec<String>,
    vocab_size: usize,
    hf_config: serde_json::Map<String, serde_json::Value>,
}

fn reference(name: &str) -> (Reference, HashMap<String, Tensor>) {
    let dir = fixture(name);
    let r: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let t =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    (r, t)
}

fn load(path: &Path) -> LoadedModel {
    gen_engine::load_dir(path, &LoadOptions::default()).unwrap()
}

/// The config rebuilt from the metadata agrees with the one transformers built (its 5.x
/// `rope_parameters` against the 4.x keys emitted here).
fn check_config(name: &str, r: &Reference) {
    let file = GgufFile::open(&fixture(name).join("model.gguf")).unwrap();
    let ours = hf_config(&file).unwrap();
    for (k, want) in &r.hf_config {
        if k == "rope_parameters" {
            if let Some(full) = want.get("full_attention") {
                assert_eq!(ours["rope_theta"], full["rope_theta"], "{name}: rope_theta");
                let local = &want["sliding_attention"]["rope_theta"];
                assert_eq!(&ours["rope_local_base_freq"], local, "{name}: local rope");
            } else {
                assert_eq!(ours["rope_theta"], want["rope_theta"], "{name}: rope_theta");
            }
            continue;
        }
        let got = ours.get(k).cloned().unwrap_or(serde_json::Value::Null);
        let same = match (got.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
            _ => &got == want,
        };
        assert!(
            same,
            "{name}: config `{k}`: ours {got}, transformers {want}"
        );
    }
}

fn check_case(name: &str) {
    let (r, refs) = reference(name);
    check_config(name, &r);
    let m = load(&fixture(name).join("model.gguf"));
    assert_eq!(m.eos_token_ids, r.eos_token_ids, "{name}: EOS ids");

    // Tokenizer ids, with and without special tokens, and decoding.
    let tok = &m.tokenizer;
    assert_eq!(
        tok.inner().get_vocab_size(true),
        r.vocab_size,
        "{name}: vocabulary size with added tokens"
    );
    for (i, text) in r.tokenizer_texts.iter().enumerate() {
        assert_eq!(
            tok.encode(text, true).unwrap(),
            r.tokenizer_ids[i],
            "{name}: ids of {text:?}"
        );
        assert_eq!(
            tok.encode(text, false).unwrap(),
            r.tokenizer_ids_no_special[i],
            "{name}: ids (no special tokens) of {text:?}"
        );
        let decoded = tok.inner().decode(&r.tokenizer_ids[i], true).unwrap();
        assert_eq!(decoded, r.decoded[i], "{name}: decode of {text:?}");
    }

    // Logits of the left-padded batch.
    let ids = ids_tensor(&r.input_ids);
    let mask = mask_tensor(&r.attention_mask);
    let logits = m
        .model
        .forward(ForwardCtx::new(&ids).with_mask(&mask))
        .unwrap();
    let diff = max_diff_real(&logits, &refs["logits"], &r.attention_mask);
    eprintln!("{name}: max |logits - transformers| = {diff:.3e}");
    assert!(diff < 1e-4, "{name}: logits differ by {diff}");
    // The weights kept quantized (the default) give bitwise the logits of the weights
    // dequantized at load.
    let opts = LoadOptions {
        dequantize_gguf: true,
        ..Default::default()
    };
    let f32_model = gen_engine::load_dir(&fixture(name).join("model.gguf"), &opts).unwrap();
    let f32_logits = f32_model
        .model
        .forward(ForwardCtx::new(&ids).with_mask(&mask))
        .unwrap();
    let bits = |t: &Tensor| -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
    assert!(
        bits(&logits) == bits(&f32_logits),
        "{name}: quantized and dequantized weights give different logits"
    );

    // Greedy continuations of the same batch, from the prompt texts.
    let prompts: Vec<&str> = r.prompts.iter().map(String::as_str).collect();
    let params = GenerateParams::new()
        .max_new_tokens(r.max_new_tokens)
        .batch_size(prompts.len());
    let g = m.generator(params).unwrap();
    let gens = g.generate(&prompts).unwrap();
    for (i, got) in gens.iter().enumerate() {
        assert_eq!(
            got.token_ids, r.completion_token_ids[i],
            "{name}: row {i} ids"
        );
        assert_eq!(
            got.finish_reason.as_str(),
            r.finish_reasons[i],
            "{name}: row {i} finish"
        );
        assert_eq!(got.text, r.completions[i], "{name}: row {i} text");
    }
}

#[test]
fn llama_sentencepiece_vocab_and_every_tensor_type() {
    check_case("llama");
    // Every supported ggml type is in this file.
    let file = GgufFile::open(&fixture("llama").join("model.gguf")).unwrap();
    let mut types: Vec<&str> = file
        .tensor_names()
        .filter_map(|n| file.tensor_type(n))
        .collect();
    types.sort();
    types.dedup();
    let mut all = gen_engine::gguf::SUPPORTED_GGML_TYPES.to_vec();
    all.sort();
    assert_eq!(types, all);
}

#[test]
fn llama_byte_level_vocab_with_merges_and_tied_head() {
    check_case("llama-bpe");
}

#[test]
fn gemma3_norms_sliding_layers_and_gemma_vocab() {
    check_case("gemma3");
}

#[test]
fn qwen2_biases_tied_head_and_qwen2_split_without_bos() {
    check_case("qwen2");
    let (r, _) = reference("qwen2");
    // No BOS: the first id is the text's own.
    assert_eq!(r.tokenizer_ids[0], r.tokenizer_ids_no_special[0]);
    assert!(r.finish_reasons.iter().any(|f| f == "eos"));
}

#[test]
fn qwen3_qk_norms_and_wide_heads() {
    check_case("qwen3");
}

#[test]
fn tokenizer_json_beside_the_file_wins() {
    // The SentencePiece GGUF beside the byte-level BPE tokenizer.json of tests/fixtures/tokenizer:
    // the two spell the same text with different ids, so which one was taken shows.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("llama").join("model.gguf"),
        tmp.path().join("m.gguf"),
    )
    .unwrap();
    let tok_dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tokenizer"
    ));
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok_dir.join(f), tmp.path().join(f)).unwrap();
    }
    let m = load(&tmp.path().join("m.gguf"));
    assert_eq!(m.tokenizer.path(), tmp.path().join("tokenizer.json"));
    let own = gen_engine::TextTokenizer::from_dir(&tok_dir).unwrap();
    let from_gguf =
        tokenizer_from_gguf(&GgufFile::open(&fixture("llama").join("model.gguf")).unwrap())
            .unwrap();
    let text = "The tiny robot walked to the market";
    let ids = m.tokenizer.encode(text, true).unwrap();
    assert_eq!(ids, own.encode(text, true).unwrap());
    assert_ne!(ids, from_gguf.encode(text, true).unwrap());
}

#[test]
fn hub_repo_with_a_gguf_file_from_the_offline_cache() {
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::model("tiny/gguf").unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    layout::put_file(
        cache.path(),
        &repo,
        commit,
        "tiny-Q8.gguf",
        &fixture("llama-bpe").join("model.gguf"),
    )
    .unwrap();
    layout::set_ref(cache.path(), &repo, "main", commit).unwrap();
    let opts = LoadOptions {
        hub: Some(Hub::with_cache_dir(cache.path()).offline(true)),
        ..LoadOptions::default()
    };
    let src = Source::parse("tiny/gguf:tiny-Q8.gguf", RepoKind::Model).unwrap();
    let m = gen_engine::load(&src, &opts).unwrap();
    let (r, refs) = reference("llama-bpe");
    let logits = m
        .model
        .forward(
            ForwardCtx::new(&ids_tensor(&r.input_ids)).with_mask(&mask_tensor(&r.attention_mask)),
        )
        .unwrap();
    assert!(max_diff_real(&logits, &refs["logits"], &r.attention_mask) < 1e-4);
    // A file the repo does not have is named.
    let absent = Source::parse("tiny/gguf:other.gguf", RepoKind::Model).unwrap();
    let e = gen_engine::load(&absent, &opts).unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("other.gguf"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// A small llama-architecture GGUF written by candle: metadata given, one F32 tensor.
fn write_gguf(path: &Path, metadata: &[(&str, Value)], tensor: Option<(&str, QTensor)>) {
    let mut f = std::fs::File::create(path).unwrap();
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensor.iter().map(|(n, t)| (*n, t)).collect();
    gguf_file::write(&mut f, &md, &ts).unwrap();
}

fn llama_metadata(arch: &str) -> Vec<(&'static str, Value)> {
    let s = |x: &str| Value::String(x.to_string());
    let k = |x: &str| -> &'static str { Box::leak(format!("{arch}.{x}").into_boxed_str()) };
    vec![
        ("general.architecture", s(arch)),
        (k("embedding_length"), Value::U32(32)),
        (k("block_count"), Value::U32(1)),
        (k("feed_forward_length"), Value::U32(64)),
        (k("attention.head_count"), Value::U32(2)),
        (k("attention.head_count_kv"), Value::U32(1)),
        (k("context_length"), Value::U32(64)),
    ]
}

fn f32_tensor(rows: usize, cols: usize) -> QTensor {
    let t = Tensor::zeros((rows, cols), candle_core::DType::F32, &Device::Cpu).unwrap();
    QTensor::quantize(&t, GgmlDType::F32).unwrap()
}

#[test]
fn unknown_architecture_is_named_with_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("mamba.gguf");
    write_gguf(
        &p,
        &llama_metadata("mamba"),
        Some(("token_embd.weight", f32_tensor(8, 32))),
    );
    let e = gen_engine::load_dir(&p, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::UnknownArchitecture { found, .. } if found == "mamba"),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("mamba.gguf") && msg.contains("gemma3") && msg.contains("qwen2"),
        "{msg}"
    );
    assert!(e.is_bad_input());
}

/// Rewrites the type of the first tensor of a GGUF file (the u32 after its name and dims).
fn set_tensor_type(path: &Path, name: &str, ggml_type: u32) {
    let mut b = std::fs::read(path).unwrap();
    let needle = name.as_bytes();
    let at = b.windows(needle.len()).position(|w| w == needle).unwrap();
    let mut p = at + needle.len();
    let dims = u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
    p += 4 + 8 * dims;
    b[p..p + 4].copy_from_slice(&ggml_type.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

#[test]
fn unsupported_tensor_types_are_named_with_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    // 16 = IQ2_XXS: a type candle's reader does not know at all.
    // 15 = Q8_K: one candle knows, but not a storage type this crate dequantizes.
    for (id, type_name) in [(16u32, "IQ2_XXS"), (15, "Q8_K")] {
        let p = tmp.path().join(format!("t{id}.gguf"));
        write_gguf(
            &p,
            &llama_metadata("llama"),
            Some(("blk.0.attn_q.weight", f32_tensor(256, 256))),
        );
        set_tensor_type(&p, "blk.0.attn_q.weight", id);
        let e = gen_engine::load_dir(&p, &LoadOptions::default()).unwrap_err();
        match &e {
            Error::GgufTensorType {
                name, ggml_type, ..
            } => {
                assert_eq!(name, "blk.0.attn_q.weight");
                assert_eq!(ggml_type, type_name);
            }
            other => panic!("expected GgufTensorType, got {other}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("t{id}.gguf")) && msg.contains("Q4_K"),
            "{msg}"
        );
        assert!(e.is_bad_input());
    }
}

#[test]
fn truncated_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("llama").join("model.gguf")).unwrap();
    // Cut inside the tensor data: the tensor running past the end is named.
    let p = tmp.path().join("data-cut.gguf");
    std::fs::write(&p, &full[..full.len() - 1000]).unwrap();
    let e = gen_engine::load_dir(&p, &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Gguf { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("data-cut.gguf") && msg.contains("truncated") && msg.contains("tensor `"),
        "{msg}"
    );
    // Cut inside the header (the vocabulary).
    let p = tmp.path().join("header-cut.gguf");
    std::fs::write(&p, &full[..2000]).unwrap();
    let e = gen_engine::load_dir(&p, &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Gguf { .. }), "{e}");
    assert!(e.to_string().contains("header-cut.gguf"), "{e}");
    assert!(e.is_bad_input());
    // Not a GGUF file at all.
    let p = tmp.path().join("text.gguf");
    std::fs::write(&p, "hello, world").unwrap();
    let e = gen_engine::load_dir(&p, &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
}

#[test]
fn no_vocabulary_and_no_tokenizer_json_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("novocab.gguf");
    write_gguf(
        &p,
        &llama_metadata("llama"),
        Some(("token_embd.weight", f32_tensor(8, 32))),
    );
    let e = gen_engine::load_dir(&p, &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Tokenizer { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("novocab.gguf")
            && msg.contains("tokenizer.ggml.tokens")
            && msg.contains("tokenizer.json"),
        "{msg}"
    );
    assert!(e.is_bad_input());
}

#[test]
fn missing_required_metadata_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("nolayers.gguf");
    let md: Vec<_> = llama_metadata("llama")
        .into_iter()
        .filter(|(k, _)| *k != "llama.block_count")
        .collect();
    write_gguf(&p, &md, Some(("token_embd.weight", f32_tensor(8, 32))));
    let e = gen_engine::load_dir(&p, &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("llama.block_count"), "{e}");
}

#[test]
fn default_lora_targets_read_the_family_from_gguf_metadata() {
    let t = gen_engine::models::default_lora_targets(&fixture("qwen2").join("model.gguf")).unwrap();
    assert_eq!(
        t,
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj"
        ]
    );
}
