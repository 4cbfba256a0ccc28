//! Comparison 1 of the paper: base models vs their instruction-tuned variants (Table 1, Figure 1).
//!
//! Runs the models of `comparison1` in a study file (default `studies/paper.toml`) through every
//! stage and writes the report, resumably, with the facade library:
//!
//! ```sh
//! # From the hub (needs a GPU build and HF_TOKEN for the gated Llama / Gemma repos):
//! cargo run --release --features cuda --example comparison1_base_vs_instruct -- --out runs/comparison1
//! # From a directory of checkpoints, one sub-directory per model name of the study
//! # (e.g. checkpoints/gemma-2b-it/{config.json, model.safetensors, tokenizer.json, ...}):
//! cargo run --release --example comparison1_base_vs_instruct -- --checkpoints checkpoints --out runs/comparison1
//! # On the tiny fixtures, offline, in seconds:
//! cargo run --release --example comparison1_base_vs_instruct -- --study studies/smoke.toml --out runs/smoke-comparison1
//! ```

mod common;

fn main() -> std::process::ExitCode {
    common::main(
        "comparison1",
        "Comparison 1 of the paper: base models vs their instruction-tuned variants (Table 1, Figure 1).",
    )
}
