//! The `toxdrift` command-line tool: see `toxdrift --help`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod commands;

/// Did this fine-tune make the model more toxic, and is the difference real?
///
/// toxdrift reproduces Hawkins et al. (2024), "The effect of fine-tuning on language model
/// toxicity": build the prompt set, generate with each model, score the continuations with a
/// hate-speech classifier, and compare models with Bayesian estimation (BEST).
#[derive(Debug, Parser)]
#[command(name = "toxdrift", version, about, long_about)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the prompt set (RTP random + severe, CEB per axis) and write it as JSONL.
    Prompts(commands::prompts::Args),
    /// Fine-tune a model with LoRA on Dolly-15k (the authors' recipe) and save a PEFT adapter.
    Finetune(commands::finetune::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = cli.verbose;
    let result: toxdrift::error::Result<()> = match cli.command {
        Command::Prompts(args) => commands::prompts::run(args),
        Command::Finetune(args) => commands::finetune::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
