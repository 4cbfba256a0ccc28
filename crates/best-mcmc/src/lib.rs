//! `best-mcmc`: Bayesian estimation supersedes the t-test (Kruschke's BEST) by NUTS, with diagnostics, plus a toxic-rate comparison.
//!
//! This crate is part of [toxdrift](https://github.com/toxdrift/toxdrift); its API lands with its own issue.
#![deny(missing_docs)]
