//! The integration tests, one binary (each file is a module: one link instead of one per file,
//! and the files' tests run in parallel with each other).

mod cli_compare;
mod cli_finetune;
mod cli_gate;
mod cli_generate;
mod cli_prompts;
mod cli_remote;
mod cli_score;
mod common;
mod example_gate;
mod gpu_check_dry;
mod study_bad_input;
mod study_drift;
mod study_file_doc;
mod study_hub_cache;
mod study_own_finetune;
mod study_qlora;
mod study_resume;
mod study_safety;
mod study_smoke;
