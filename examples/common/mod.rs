//! The command line shared by the `comparisonN_*` examples: one comparison of a study file
//! through every stage, resumably, with the facade library.

use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;

/// The examples' arguments (the `about` text is each example's own).
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

/// Parses the command line (`about` is the help's description), runs `comparison` of the study
/// and prints where the report is. Exit code 2: bad input (study file, data, arguments);
/// 1: anything else.
pub fn main(comparison: &str, about: &'static str) -> std::process::ExitCode {
    toxdrift::threads::join_pool();
    let matches = Args::command().about(about).get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match toxdrift::runner::run_comparison(
        &args.study,
        comparison,
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
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
