//! The integration tests, one binary (each file is a module: one link instead of one per file,
//! and the files' tests run in parallel with each other).

mod api;
mod common;
mod diagnostics;
mod logp;
mod posterior;
mod rates;
