//! Comparison 2 of the paper: instruction-tuned models vs their own LoRA fine-tune on Dolly-15k (Table 2, Figure 2). The fine-tunes are trained first, with the paper's recipe.
//!
//! Runs the models of `comparison2` in a study file (default `studies/paper.toml`) through every
//! stage and writes the report, resumably, with the facade library:
//!
//! ```sh
//! # From the hub (needs a GPU build and HF_TOKEN for the gated Llama / Gemma repos):
//! cargo run --release --features cuda --example comparison2_instruct_vs_dolly -- --out runs/comparison2
//! # From a directory of checkpoints, one sub-directory per model name of the study
//! # (e.g. checkpoints/gemma-2b-it/{config.json, model.safetensors, tokenizer.json, ...}):
//! cargo run --release --example comparison2_instruct_vs_dolly -- --checkpoints checkpoints --out runs/comparison2
//! # On the tiny fixtures, offline, in seconds:
//! cargo run --release --example comparison2_instruct_vs_dolly -- --study studies/smoke.toml --out runs/smoke-comparison2
//! ```

mod common;

fn main() -> std::process::ExitCode {
    common::main(
        "comparison2",
        "Comparison 2 of the paper: instruction-tuned models vs their own LoRA fine-tune on Dolly-15k (Table 2, Figure 2). The fine-tunes are trained first, with the paper's recipe.",
    )
}
