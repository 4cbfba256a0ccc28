//! PEFT adapters made by peft: outputs match peft's, merged into the base and as a separate path.

use crate::common::*;
use gen_engine::{ForwardCtx, GenerateParams, LoadOptions};

fn check_adapter(base: &str, adapter: &str, merge: bool) {
    let (r, refs) = reference(adapter);
    let opts = LoadOptions::default()
        .with_adapter(&fixture(adapter), merge)
        .unwrap();
    let m = gen_engine::load_dir(&fixture(base), &opts).unwrap();
    assert!(!m.lora_modules.is_empty());
    let ids = ids_tensor(&r.input_ids);
    let mask = mask_tensor(&r.attention_mask);
    let logits = m
        .model
        .forward(ForwardCtx::new(&ids).with_mask(&mask))
        .unwrap();
    let key = if merge { "merged_logits" } else { "logits" };
    let diff = max_diff_real(&logits, &refs[key], &r.attention_mask);
    eprintln!("{adapter} (merge {merge}): max |logits - peft| = {diff:.3e}");
    assert!(diff < 1e-4, "{adapter}: logits differ by {diff}");
    // The adapter really changes the model.
    let (_, base_refs) = reference(base);
    let base_diff = max_diff_real(&logits, &base_refs["logits"], &r.attention_mask);
    assert!(base_diff > 1e-2, "adapter has no effect ({base_diff})");
    let g = m
        .generator(GenerateParams::new().max_new_tokens(r.max_new_tokens))
        .unwrap();
    let gens = g.generate_batch(&unpadded(&r)).unwrap();
    let want = if merge {
        r.merged_completion_token_ids.clone().unwrap()
    } else {
        r.completion_token_ids.clone()
    };
    for (i, got) in gens.iter().enumerate() {
        assert_eq!(got.token_ids, want[i], "{adapter} merge {merge}: row {i}");
    }
}

#[test]
fn llama_adapter_unmerged() {
    check_adapter("llama", "llama-lora", false);
}

#[test]
fn llama_adapter_merged() {
    check_adapter("llama", "llama-lora", true);
}

#[test]
fn phi3_rslora_adapter_on_fused_projections() {
    check_adapter("phi3", "phi3-lora", false);
    check_adapter("phi3", "phi3-lora", true);
}

#[test]
fn qwen2_adapter_on_biased_projections() {
    check_adapter("qwen2", "qwen2-lora", false);
    check_adapter("qwen2", "qwen2-lora", true);
}

#[test]
fn gemma3_adapter_unmerged_and_merged() {
    check_adapter("gemma3", "gemma3-lora", false);
    check_adapter("gemma3", "gemma3-lora", true);
}
