//! `hub-source`: checkpoints and data files from a local directory or the Hugging Face hub,
//! through the cache Python's `huggingface_hub` shares. It is the only crate of the workspace
//! that talks to the hub (through hf-hub); the prompt-set, generation, classifier and training
//! crates all resolve their files with it.
//!
//! - [`Source`]: a local path, or a hub repo at a revision, optionally one file inside it;
//!   parsed from `PATH`, `owner/name`, `owner/name@revision` or `owner/name@revision:file`.
//! - [`Hub`]: the cache directory and online/offline mode, from the environment as Python reads
//!   it ([`Hub::from_env`]: `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HF_HUB_OFFLINE`,
//!   `HF_ENDPOINT`, `HF_TOKEN` — the token is never logged nor shown by `Debug`). The cache is
//!   read first; a miss is downloaded only when online.
//! - [`Snapshot`]: the files of a resolved source — [`Snapshot::config`],
//!   [`Snapshot::safetensors`] (single file or shards; [`WeightIndex`] is the one parser of
//!   `model.safetensors.index.json`), [`Snapshot::tokenizer`] (`tokenizer.json`, else
//!   `vocab.json` + `merges.txt`), [`Snapshot::file`] and [`Snapshot::optional`].
//! - [`layout`]: writes the cache layout `huggingface_hub` writes ([`layout::put_file`],
//!   [`layout::put_dir`], [`layout::set_ref`]): seed an offline cache from local files, or lay
//!   one out in a test.
//! - [`HubError`]: the one error type; [`HubError::is_bad_input`] tells the user's fault (a bad
//!   spec, a file missing offline or locally) from a failed download.
//!
//! ```
//! use hub_source::{Hub, HubRepo, RepoKind, Source, TokenizerFiles, layout};
//!
//! // A cache laid out as huggingface_hub writes it: refs/<revision> holds a commit,
//! // snapshots/<commit>/ the files (links into blobs/).
//! let cache = tempfile::tempdir()?;
//! let repo = HubRepo::model("tiny/llama")?;
//! for f in ["config.json", "tokenizer.json", "model.safetensors"] {
//!     layout::put_bytes(cache.path(), &repo, "abc123", f, b"{}")?;
//! }
//! layout::set_ref(cache.path(), &repo, "main", "abc123")?;
//! let snap = cache.path().join("models--tiny--llama/snapshots/abc123");
//!
//! let hub = Hub::with_cache_dir(cache.path()).offline(true);
//! let source = Source::parse("tiny/llama@main", RepoKind::Model)?;
//! assert_eq!(source.display_name(), "tiny/llama");
//! assert_eq!(
//!     serde_json::to_string(&source)?,
//!     r#"{"hub":{"repo":"tiny/llama","revision":"main"}}"#
//! );
//! let files = source.snapshot(&hub);
//! assert_eq!(files.config()?, snap.join("config.json"));
//! assert_eq!(files.safetensors()?.files, [snap.join("model.safetensors")]);
//! assert_eq!(files.tokenizer()?, TokenizerFiles::Json(snap.join("tokenizer.json")));
//! assert_eq!(files.optional("generation_config.json"), None); // offline and absent
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod error;
mod hub;
pub mod layout;
mod snapshot;
mod source;

pub use error::HubError;
pub use hub::{Hub, HubRepo, RepoKind, cache_dir_from_env, offline_from_env};
pub use snapshot::{
    SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, SafetensorsFiles, Snapshot, TokenizerFiles,
    WeightIndex,
};
pub use source::Source;
