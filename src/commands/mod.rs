//! One module per `toxdrift` subcommand: each has an `Args` struct (clap) and a `run` function.

pub mod compare;
pub mod finetune;
pub mod gate;
pub mod generate;
pub mod prompts;
pub mod run;
pub mod score;
