//! `toxprompts`: the prompt sets of toxicity studies — RealToxicityPrompts, CEB-Continuation-T and
//! custom prompt JSONL — with seeded, platform-independent sampling.
//!
//! - [`RtpReader`] / [`load_rtp`]: RealToxicityPrompts rows from plain or gzip JSONL, streamed;
//!   `null` scores are `None`.
//! - [`CebSet`]: the four CEB-Continuation-T files (a directory or explicit paths).
//! - [`PromptSetParams`]: the builder of Hawkins et al. (2024) — 1,000 uniform random RTP prompts,
//!   1,000 with `prompt.severe_toxicity > 0.75`, 100 per CEB axis — every count, the threshold and
//!   the seed configurable; [`rng`] documents the exact sampling.
//! - [`PromptRecord`], [`read_prompts`], [`write_prompts`]: the prompts JSONL every later stage
//!   reads; ids encode subset and source row (`rtp-severe-000017` is row 17 of the RTP file).
//! - [`sources`]: RTP and CEB from a local path or their hub datasets (through the
//!   [`hub_source`] crate: the shared Hugging Face cache, honouring `HF_HUB_OFFLINE`).
//!
//! Bad input never panics: each loader either fails with an error naming the file and line
//! ([`Error::Record`]) or, with [`OnBadRecord::Skip`], skips and counts bad records.
//!
//! ```
//! use std::path::Path;
//! use toxprompts::{CebSet, OnBadRecord, PromptSetParams};
//!
//! let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/samples");
//! let ceb = CebSet::from_dir(samples.join("CEB-Continuation-T"), OnBadRecord::Fail)?;
//! let set = PromptSetParams::default()
//!     .random(50)
//!     .severe(20)
//!     .per_axis(10)
//!     .seed(42)
//!     .build(Some(&samples.join("rtp/prompts.jsonl")), Some(&ceb))?;
//! assert_eq!(set.prompts.len(), 50 + 20 + 4 * 10);
//! assert!(set.prompts.iter().any(|p| p.id.starts_with("rtp-severe-")));
//! let jsonl = set.to_jsonl(); // write it with an atomic rename
//! # let _ = jsonl;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod ceb;
mod error;
mod jsonl;
pub mod prompts;
pub mod rng;
pub mod rtp;
mod set;
pub mod sources;

pub use ceb::{CebAxis, CebFile, CebRecord, CebSet, load_ceb_file, parse_ceb_slice};
pub use error::{Error, Problem, Result};
pub use jsonl::{LoadReport, Loaded, OnBadRecord, Skipped};
pub use prompts::{
    CebSource, DEFAULT_SUBSET, PromptRecord, RtpSource, prompts_to_jsonl, read_prompts,
    read_prompts_from, write_prompts,
};
pub use rtp::{RtpReader, RtpRow, RtpText, Scores, load_rtp};
pub use set::{BuildReport, CheckedPromptSetParams, PromptSet, PromptSetParams};

pub use sources::{ceb_from_hub, rtp_from_hub};
