//! `gen-engine`: batched greedy generation for decoder LMs (the families of [`models`]) from
//! safetensors or GGUF checkpoints, with PEFT LoRA adapters, on candle.
//!
//! - [`CausalLm`] is the one trait every family implements ([`LlamaForCausalLM`] — also
//!   Llama-3.2 and SmolLM2 —, [`GemmaForCausalLM`], [`Gemma2ForCausalLM`],
//!   [`Gemma3ForCausalLM`], [`Phi3ForCausalLM`], [`Qwen2ForCausalLM`], [`Qwen3ForCausalLM`],
//!   [`MistralForCausalLM`], [`Olmo2ForCausalLM`], [`SmolLM3ForCausalLM`]), driven by a
//!   [`ForwardCtx`] (token ids, padding mask, per-row positions, optional [`KvCache`], training
//!   flag); full-sequence logits are always available, and with `training` every op is
//!   differentiable.
//! - LoRA lives at the layer level: [`LoraLinear`] is plain or LoRA-wrapped, built by a
//!   [`LinearFactory`] from a [`LoraPlan`] (none, a PEFT [`Adapter`] merged or separate, or
//!   trainable f32 `Var`s collected in [`LoraVars`] under PEFT tensor names).
//! - For f32 inference on the CPU every linear weight is packed once at load into column panels
//!   for the crate's own matrix kernel (AVX-512F / AVX2+FMA / portable, chosen at run time),
//!   which decodes about twice as fast as a general GEMM that repacks the weight at every step
//!   ([`LoraLinear::into_packed`]); training keeps a differentiable layout.
//! - [`weights::Checkpoint`] reads one or sharded safetensors files, memory-mapped;
//!   [`gguf::GgufTensors`] reads a GGUF file (llama.cpp's format, through candle's reader) with
//!   the converter's conventions undone, its config rebuilt from the metadata and its tokenizer
//!   from the vocabulary, as transformers does. For f32 inference on the CPU its quantized linear
//!   weights stay int8 codes with per-group scales in the kernel's panels, dequantized in
//!   registers with the operations transformers' dequantization uses, so every product is
//!   bitwise the dequantized weight's ([`LoadOptions::dequantize_gguf`] dequantizes at load
//!   instead, the reference path); both
//!   sit behind one [`weights::Weights`] path. [`load`] / [`load_dir`] resolve a local directory
//!   or GGUF file, a hub id, or a GGUF file of a hub repo (`owner/name:file.gguf`, through the
//!   shared Hugging Face cache of [`hub_source`]) and pick the family from `architectures[0]`.
//! - [`Generator`] does batched greedy generation (left padding, pad = EOS, per-row positions,
//!   KV cache, per-row EOS stop, `max_new_tokens` 50), as transformers'
//!   `generate(do_sample=False)`.
//! - [`LocalGenerator`] owns a [`LoadedModel`] and its parameters and implements
//!   [`engine_api::TextGenerator`], the seam through which the toxdrift facade drives any
//!   generation backend; [`FinishReason`] is engine-api's.
//!
//! ```
//! use gen_engine::{GenerateParams, LoadOptions};
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/gen/llama");
//! let m = gen_engine::load_dir(dir.as_ref(), &LoadOptions::default())?;
//! let params = GenerateParams::new().max_new_tokens(8).batch_size(16);
//! let g = m.generator(params)?;
//! let out = g.generate(&["The tiny robot walked to the market", "Hello"])?;
//! assert_eq!(out.len(), 2);
//! assert!(out[0].token_ids.len() <= 8);
//! println!("{} ({})", out[0].text, out[0].finish_reason.as_str());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Training through the crate (what `lora-train` does): load with
//! `LoraPlan::train(LoraConfig::new(16, 16.0, &["q_proj", "v_proj"]), LoraInit::Default { seed })`,
//! take [`LoadedModel::lora_vars`] (f32 `Var`s named like PEFT's tensors) for the optimiser, and
//! run `model.forward(ForwardCtx::new(&ids).with_mask(&mask).training(true))` for full
//! `[b, t, vocab]` logits through differentiable ops.
#![deny(missing_docs)]

pub mod error;
mod fused;
pub mod gguf;
pub mod lora;
pub mod models;
mod ops;
pub mod quant;
mod rope;
pub mod weights;

pub use error::{Error, Result};
pub use lora::{
    Adapter, LinearFactory, LoraConfig, LoraInit, LoraLinear, LoraPlan, LoraVars, TargetModules,
};
pub use models::{
    CausalLm, ForwardCtx, Gemma2ForCausalLM, Gemma3ForCausalLM, GemmaForCausalLM, KvCache,
    LlamaForCausalLM, LogitsWanted, MistralForCausalLM, ModelInfo, Olmo2ForCausalLM,
    Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, SUPPORTED_ARCHITECTURES,
    SmolLM3ForCausalLM,
};
pub mod generate;
pub mod loader;
pub mod memory;
pub mod tokenizer;

pub use generate::{
    FinishReason, GenerateParams, Generation, Generator, LocalGenerator, TruncationPolicy,
};
pub use hub_source::{Hub, Source};
pub use loader::{
    DTypeChoice, LoadOptions, LoadedModel, checkpoint_dir, is_gguf_file, load, load_dir, load_gguf,
    parse_device,
};
pub use memory::BatchSize;
pub use tokenizer::TextTokenizer;
