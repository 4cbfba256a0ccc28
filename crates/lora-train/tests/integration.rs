//! The integration tests, one binary (each file is a module: one link instead of one per file,
//! and the files' tests run in parallel with each other).

mod data;
mod init_adapter;
mod optim;
mod parity;
mod training;
