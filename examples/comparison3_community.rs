//! Comparison 3 of the paper: instruction-tuned models vs two popular community fine-tunes each from the hub (Table 3, Figures 3 and 4).
//!
//! Runs the models of `comparison3` in a study file (default `studies/paper.toml`) through every
//! stage and writes the report, resumably, with the facade library:
//!
//! ```sh
//! # From the hub (needs a GPU build and HF_TOKEN for the gated Llama / Gemma repos):
//! cargo run --release --features cuda --example comparison3_community -- --out runs/comparison3
//! # From a directory of checkpoints, one sub-directory per model name of the study
//! # (e.g. checkpoints/gemma-2b-it/{config.json, model.safetensors, tokenizer.json, ...}):
//! cargo run --release --example comparison3_community -- --checkpoints checkpoints --out runs/comparison3
//! # On the tiny fixtures, offline, in seconds:
//! cargo run --release --example comparison3_community -- --study studies/smoke.toml --out runs/smoke-comparison3
//! ```

mod common;

fn main() -> std::process::ExitCode {
    common::main(
        "comparison3",
        "Comparison 3 of the paper: instruction-tuned models vs two popular community fine-tunes each from the hub (Table 3, Figures 3 and 4).",
    )
}
