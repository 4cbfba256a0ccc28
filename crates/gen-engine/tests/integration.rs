//! The integration tests, one binary (each file is a module: one link instead of one per file,
//! and the files' tests run in parallel with each other).

mod adapters;
mod bad_input;
mod bnb;
mod common;
mod families;
mod generation;
mod gguf;
mod loading;
mod parity;
mod real_gemma3;
mod training;
