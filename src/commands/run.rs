//! `toxdrift run STUDY.toml`: every stage of a study, resumable, then the report.

use std::path::PathBuf;
use toxdrift::error::Result;
use toxdrift::runner::{RunOptions, run as run_study};
use toxdrift::study::Study;

/// The long help of `toxdrift run --help`.
const RUN_HELP: &str = "\
The study file (TOML) lists the prompt sources, the models (grouped by family, each with a role:
base, instruct, dolly-tuned, community, or fine-tune for your own), the fine-tune recipe, the
classifier, the generation and sampler settings, and the comparisons as (baseline, candidate)
pairs; docs/study-file.md lists every key. Start from studies/check-my-finetune.toml (your base
and your fine-tune), studies/smoke.toml (tiny fixtures, offline, well under a minute) or
studies/paper.toml (the paper's 28 models; a GPU build, the hub and HF_TOKEN for gated models).

Stages: prompts -> finetune (dolly-tuned models) -> generate -> score -> compare -> report.
The run is resumable: each unit of work (one model x one stage) is keyed by a hash of its
inputs and settings and skipped when done, so the same command continues after a crash or a
kill, and changing one setting reruns only what it affects. The report (report.md, report.json,
scores.csv, figures/*.svg) is written to the output directory at the end.

Examples:
  toxdrift run studies/smoke.toml
  toxdrift run studies/paper.toml --dry-run   # checks device, paths, cache; prints the plan
  toxdrift -v run my-study.toml --out runs/mine

Exit codes: 0 success; 2 bad input (study file, data, flags: the message names the file and
line); 1 any other failure.";

/// Run a whole study: build the prompt set, fine-tune, generate, score, compare, report.
#[derive(Debug, clap::Args)]
#[command(after_long_help = RUN_HELP)]
pub struct Args {
    /// The study file (TOML); relative paths in it are resolved against its directory.
    pub study: PathBuf,
    /// Output directory (default: the study's `out`, else `runs/<study name>` beside the file).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Check that the plan can run (device, local paths, the hub cache when offline; exit 2 if
    /// not) and print it — every unit, whether it is done, its key and directory — then exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// When another run is using the output directory, wait for it to finish (default: exit 2
    /// naming its pid).
    #[arg(long)]
    pub wait: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let study = Study::load(&args.study, args.out.as_deref())?;
    let opts = RunOptions {
        dry_run: args.dry_run,
        progress: !args.no_progress,
        wait: args.wait,
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
