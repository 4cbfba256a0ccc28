//! `toxdrift run STUDY.toml`: every stage of a study, resumable, then the report.

use std::path::PathBuf;
use toxdrift::error::Result;
use toxdrift::runner::{RunOptions, run as run_study};
use toxdrift::study::Study;

/// Run a whole study: build the prompt set, fine-tune, generate, score, compare, report.
///
/// The study file (TOML) lists the prompt sources, the models (grouped by family, each with a
/// role: base, instruct, dolly-tuned, community), the fine-tune recipe, the classifier, the
/// generation and sampler settings, and the comparisons as (baseline, candidate) pairs. See
/// `studies/smoke.toml` (tiny fixtures, offline, about a minute) and `studies/paper.toml` (the
/// paper's 28 models; needs a GPU and the hub).
///
/// The run is resumable: each unit of work (one model × one stage) is keyed by a hash of its
/// inputs and settings and skipped when done, so running the same command again after a crash
/// or a kill continues where it stopped, and changing one setting reruns only what it affects.
/// The report (`report.md`, `report.json`, `scores.csv`, `figures/*.svg`) is written to the
/// output directory at the end.
///
/// Exit codes: 0 success; 2 bad input (study file, data, flags); 1 any other failure.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The study file (TOML); relative paths in it are resolved against its directory.
    pub study: PathBuf,
    /// Output directory (default: the study's `out`, else `runs/<study name>` beside the file).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the plan — every unit, whether it is done, its key and directory — and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let study = Study::load(&args.study, args.out.as_deref())?;
    let opts = RunOptions {
        dry_run: args.dry_run,
        progress: !args.no_progress,
    };
    let summary = run_study(&study, &opts)?;
    if args.dry_run {
        print!("{}", summary.plan);
        return Ok(());
    }
    println!(
        "ran {} unit(s); report in {}",
        summary.ran.len(),
        study.out.join("report.md").display()
    );
    Ok(())
}
