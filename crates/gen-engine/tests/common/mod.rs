//! Shared helpers for the integration tests: fixture paths and reference files.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use gen_engine::{LoadOptions, LoadedModel};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/gen"
    ))
    .join(name)
}

#[derive(serde::Deserialize)]
pub struct Reference {
    pub prompts: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u8>>,
    pub completion_token_ids: Vec<Vec<u32>>,
    pub completions: Vec<String>,
    pub finish_reasons: Vec<String>,
    pub eos_token_ids: Vec<u32>,
    pub max_new_tokens: usize,
    #[serde(default)]
    pub merged_completion_token_ids: Option<Vec<Vec<u32>>>,
    #[serde(default)]
    pub long_input_ids: Option<Vec<Vec<u32>>>,
}

pub fn reference(name: &str) -> (Reference, HashMap<String, Tensor>) {
    let dir = fixture(name);
    let r: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let t =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    (r, t)
}

pub fn load(name: &str) -> LoadedModel {
    gen_engine::load_dir(&fixture(name), &LoadOptions::default()).unwrap()
}

/// The unpadded prompt ids of a left-padded reference batch.
pub fn unpadded(r: &Reference) -> Vec<Vec<u32>> {
    r.input_ids
        .iter()
        .zip(&r.attention_mask)
        .map(|(ids, m)| {
            ids.iter()
                .zip(m)
                .filter(|(_, m)| **m == 1)
                .map(|(i, _)| *i)
                .collect()
        })
        .collect()
}

/// Max |a − b| over the real (mask = 1) positions of `[b, t, v]` logits.
pub fn max_diff_real(a: &Tensor, b: &Tensor, mask: &[Vec<u8>]) -> f32 {
    let a = a
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let b = b.to_vec3::<f32>().unwrap();
    let mut worst = 0f32;
    for (bi, row) in mask.iter().enumerate() {
        for (ti, m) in row.iter().enumerate() {
            if *m == 1 {
                for (x, y) in a[bi][ti].iter().zip(&b[bi][ti]) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
    }
    worst
}

pub fn ids_tensor(rows: &[Vec<u32>]) -> Tensor {
    let b = rows.len();
    let t = rows[0].len();
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap()
}

pub fn mask_tensor(rows: &[Vec<u8>]) -> Tensor {
    let b = rows.len();
    let t = rows[0].len();
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap()
}

/// Checks a loaded model against a fixture's references (made by `peer`): the generator's prompt
/// encoding equals the reference's unpadded ids, the logits of the left-padded batch are within
/// 1e-4 at real positions, and the greedy continuations of that batch have the reference's ids
/// and finish reasons. Returns the encoded prompts and the generations for further checks.
pub fn check_against_reference(
    name: &str,
    peer: &str,
    model: &dyn gen_engine::CausalLm,
    g: &gen_engine::Generator<'_>,
    r: &Reference,
    refs: &HashMap<String, Tensor>,
) -> (Vec<Vec<u32>>, Vec<gen_engine::Generation>) {
    let prompts: Vec<&str> = r.prompts.iter().map(String::as_str).collect();
    let encoded = g.encode(&prompts).unwrap();
    assert_eq!(encoded, unpadded(r), "{name}: prompt encoding");
    let ids = ids_tensor(&r.input_ids);
    let mask = mask_tensor(&r.attention_mask);
    let logits = model
        .forward(gen_engine::ForwardCtx::new(&ids).with_mask(&mask))
        .unwrap();
    let diff = max_diff_real(&logits, &refs["logits"], &r.attention_mask);
    eprintln!("{name}: max |logits - {peer}| = {diff:.3e}");
    assert!(diff < 1e-4, "{name}: logits differ by {diff}");
    let gens = g.generate_batch(&encoded).unwrap();
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
    }
    (encoded, gens)
}
