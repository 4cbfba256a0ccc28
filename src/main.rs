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

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole study from a TOML file (all stages, resumable) and write the report.
    Run(commands::run::Args),
    /// Build the prompt set (RTP random + severe, CEB per axis) and write it as JSONL.
    Prompts(commands::prompts::Args),
    /// Fine-tune a model with LoRA on Dolly-15k (the authors' recipe) and save a PEFT adapter.
    Finetune(commands::finetune::Args),
    /// Generate greedy continuations of a prompt set with one model (and optional LoRA adapter).
    Generate(commands::generate::Args),
    /// Score the continuations of a generations file with the hate-speech classifier.
    Score(commands::score::Args),
    /// Compare two scored files: BEST on the scores and the toxic-rate posterior, per subset.
    Compare(commands::compare::Args),
    /// Release gate on two scores files: exit 3 when P(rate_B − rate_A > margin) ≥ 0.95.
    Gate(commands::gate::Args),
}

/// Logs go to stderr: warnings by default, `-v` info, `-vv` debug, `-vvv` trace; `RUST_LOG`
/// (e.g. `RUST_LOG=toxdrift=debug,gen_engine=info`) overrides. Colour only when stderr is a
/// terminal and `NO_COLOR` is not set.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_target(verbose >= 2)
        .try_init();
}

fn main() -> ExitCode {
    // This thread does its share of every parallel product (see `toxdrift::threads`).
    toxdrift::threads::join_pool();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Ctrl-C: every output is written crash-safe (fsynced appends, atomic files), so stopping
    // at once loses nothing finished; say what was kept and how to resume. 130 = 128 + SIGINT.
    let _ = ctrlc::set_handler(|| {
        eprintln!("\n{}", toxdrift::progress::interrupt_note());
        std::process::exit(130);
    });
    // Training (and, less, generation) reallocates large buffers at every op: keep them.
    toxdrift::lora_train::memory::keep_freed_memory();
    let result: toxdrift::error::Result<()> = match cli.command {
        Command::Prompts(args) => commands::prompts::run(args),
        Command::Compare(args) => commands::compare::run(args),
        Command::Finetune(args) => commands::finetune::run(args),
        // The gate's verdict is its exit code: 0 pass, 3 fail (`toxdrift::gate::EXIT_FAIL`).
        Command::Gate(args) => match commands::gate::run(args) {
            Ok(verdict) if !verdict.pass => return ExitCode::from(toxdrift::gate::EXIT_FAIL),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
        Command::Generate(args) => commands::generate::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Score(args) => commands::score::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
