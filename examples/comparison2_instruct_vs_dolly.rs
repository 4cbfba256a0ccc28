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

use clap::Parser;
use std::path::PathBuf;

/// Comparison 2 of the paper: instruction-tuned models vs their own LoRA fine-tune on Dolly-15k (Table 2, Figure 2). The fine-tunes are trained first, with the paper's recipe.
#[derive(Debug, Parser)]
struct Args {
    /// The study file that defines the models and settings.
    #[arg(long, default_value = "studies/paper.toml")]
    study: PathBuf,
    /// A directory with one checkpoint sub-directory per model name; models found there are
    /// read from it instead of the hub.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// Output directory (default: the study's).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match toxdrift::runner::run_comparison(
        &args.study,
        "comparison2",
        args.checkpoints.as_deref(),
        args.out.as_deref(),
        true,
    ) {
        Ok((study, summary)) => {
            println!("ran {} unit(s)", summary.ran.len());
            println!("report: {}", study.out.join("report.md").display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // 2: bad input (study file, data, arguments); 1: anything else.
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
