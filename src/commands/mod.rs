//! One module per `toxdrift` subcommand: each has an `Args` struct (clap) and a `run` function.

pub mod compare;
pub mod finetune;
pub mod gate;
pub mod generate;
pub mod prompts;
pub mod run;
pub mod score;

/// A bad-input error of a comparison of two files, prefixed with the two files' names.
pub fn name_pair(
    e: toxdrift::error::Error,
    a: &std::path::Path,
    b: &std::path::Path,
) -> toxdrift::error::Error {
    match e {
        toxdrift::error::Error::BadInput(m) => {
            toxdrift::error::Error::BadInput(format!("{} vs {}: {m}", a.display(), b.display()))
        }
        e => e,
    }
}
