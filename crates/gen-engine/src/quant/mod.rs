//! Quantized weight formats kept packed inside the linear layers ([`crate::LoraLinear`]).
//!
//! - [`bnb`]: bitsandbytes 4-bit (NF4 / FP4, with or without double quantization), as
//!   transformers' `save_pretrained` writes a `load_in_4bit` model; also bnb's quantizer, so
//!   a full-precision base can be quantized at load exactly as bitsandbytes does it.

pub mod bnb;

pub use bnb::{Bnb4Weight, Quant4, Quant4Type};
