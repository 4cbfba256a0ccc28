//! Generation options beyond the parity batch: chat template, min_new_tokens, input order under
//! bucketing, KV-cache decoding equal to full recomputation.

use crate::common::*;
use candle_core::{Device, Tensor};
use gen_engine::{ForwardCtx, GenerateParams};

#[test]
fn chat_template_mode_renders_the_tokenizer_template() {
    let m = load("llama");
    let g = m
        .generator(GenerateParams::new().chat_template(true).max_new_tokens(4))
        .unwrap();
    let enc = g.encode(&["Hello"]).unwrap();
    let want = m
        .tokenizer
        .encode("<s>[INST] Hello [/INST]", false)
        .unwrap();
    assert_eq!(enc[0], want);
    assert_eq!(enc[0][0], 1, "one BOS, from the template");
    assert_eq!(enc[0].iter().filter(|&&t| t == 1).count(), 1);
}

#[test]
fn min_new_tokens_suppresses_eos() {
    let (r, _) = reference("llama31");
    let m = load("llama31");
    // Row 0 stops on an EOS id after 11 tokens; with min_new_tokens = 20 it must not.
    let ids = unpadded(&r);
    let g = m
        .generator(GenerateParams::new().max_new_tokens(20).min_new_tokens(20))
        .unwrap();
    let out = g.generate_batch(&ids[..1]).unwrap();
    assert_eq!(out[0].token_ids.len(), 20);
    assert_eq!(out[0].token_ids[..10], r.completion_token_ids[0][..10]);
    assert!(
        !out[0].token_ids[..20]
            .iter()
            .any(|t| m.eos_token_ids.contains(t))
    );
}

#[test]
fn bucketing_keeps_input_order() {
    let m = load("gemma");
    let prompts = [
        "Why?",
        "A quiet neighbour argued with the city council",
        "Hello",
        "The tiny robot",
    ];
    let g1 = m
        .generator(GenerateParams::new().max_new_tokens(8).batch_size(1))
        .unwrap();
    let g3 = m
        .generator(GenerateParams::new().max_new_tokens(8).batch_size(3))
        .unwrap();
    let a = g1.generate(&prompts).unwrap();
    let b = g3.generate(&prompts).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.token_ids, y.token_ids, "prompt {i}");
        assert_eq!(
            x.prompt_tokens,
            m.tokenizer.encode(prompts[i], true).unwrap().len()
        );
    }
}

#[test]
fn cached_decoding_equals_full_recomputation() {
    for name in ["llama", "gemma2", "phi3"] {
        let (r, _) = reference(name);
        let m = load(name);
        let ids = &r.input_ids;
        let (b, t) = (ids.len(), ids[0].len());
        // Full forward over prompt + one more token vs. prefill + one cached step.
        let extra: Vec<u32> = (0..b as u32).map(|i| 40 + i).collect();
        let full: Vec<Vec<u32>> = ids
            .iter()
            .zip(&extra)
            .map(|(row, e)| [row.clone(), vec![*e]].concat())
            .collect();
        let fmask: Vec<Vec<u8>> = r
            .attention_mask
            .iter()
            .map(|m| [m.clone(), vec![1]].concat())
            .collect();
        let want = m
            .model
            .forward(ForwardCtx::new(&ids_tensor(&full)).with_mask(&mask_tensor(&fmask)))
            .unwrap()
            .narrow(1, t, 1)
            .unwrap();
        let mut cache = m.model.new_cache(b, t + 1);
        let pmask = mask_tensor(&r.attention_mask);
        m.model
            .forward(
                ForwardCtx::new(&ids_tensor(ids))
                    .with_mask(&pmask)
                    .with_cache(&mut cache),
            )
            .unwrap();
        let step = Tensor::from_vec(extra.clone(), (b, 1), &Device::Cpu).unwrap();
        let fm = mask_tensor(&fmask);
        let got = m
            .model
            .forward(
                ForwardCtx::new(&step)
                    .with_mask(&fm)
                    .with_cache(&mut cache)
                    .last_logits_only(),
            )
            .unwrap();
        assert_eq!(cache.len(), t + 1);
        let d = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "{name}: cached step differs by {d}");
    }
}
