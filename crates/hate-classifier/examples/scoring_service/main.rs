//! The hate-speech scorer embedded in a small HTTP/1.1 JSON service: one classifier shared by
//! every connection (`Arc<HateClassifier>`; the classifier is `Send + Sync`), the texts of
//! concurrent requests batched into one forward pass. std::net only, no web framework.
//!
//! ```text
//! cargo run --release -p hate-classifier --example scoring_service -- \
//!     [--model DIR|HUB] [--port N] [--batch-size N] [--wait-ms N]
//! ```
//! It listens on 127.0.0.1; `--port 0` (the default) picks a free port, and the first line on
//! stdout says which: `listening on http://127.0.0.1:PORT`. It runs until the process is stopped.
//!
//! - On the real checkpoint: the model defaults to
//!   `facebook/roberta-hate-speech-dynabench-r4-target`, fetched into the Hugging Face cache on
//!   first use (`HF_HUB_OFFLINE=1` reads the cache only; `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` as
//!   usual).
//! - Offline, on the tiny test checkpoint (random weights: the scores mean nothing, the plumbing
//!   is the same): `--model tests/fixtures/classifier/vocab-merges`, from the workspace root.
//!
//! Then:
//! ```text
//! curl -s localhost:PORT/score -d '{"text": "You are a stupid idiot."}'
//! # e.g. {"score":0.97,"toxic":true}
//! curl -s localhost:PORT/score -d '{"texts": ["Hello world", "You are a stupid idiot."]}'
//! # e.g. {"scores":[0.0004,0.97],"toxic":[false,true]}
//! curl -s localhost:PORT/health    # the scorer's backend, model and settings
//! curl -s localhost:PORT/stats     # requests, texts, batches, batches of more than one text
//! ```
//! Texts of requests that arrive together (up to `--batch-size`, default 32, within
//! `--wait-ms`, default 5, of the first) are scored in one call; the server's module docs
//! (`server.rs`) describe the threads, the routes and the shutdown.

// Shared with tests/service.rs, which also uses what this binary does not (`Server::shutdown`,
// `Server::stats`): the binary runs until the process is stopped.
#[allow(dead_code)]
mod server;

use hate_classifier::HateClassifier;
use std::sync::Arc;
use std::time::Duration;

fn value<T: std::str::FromStr>(args: &mut Vec<String>, flag: &str) -> Result<Option<T>, String> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    if i + 1 >= args.len() {
        return Err(format!("{flag} needs a value"));
    }
    let v = args.remove(i + 1);
    args.remove(i);
    v.parse()
        .map(Some)
        .map_err(|_| format!("{flag}: cannot read {v:?}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let model: String =
        value(&mut args, "--model")?.unwrap_or_else(|| hate_classifier::DEFAULT_MODEL.into());
    let port: u16 = value(&mut args, "--port")?.unwrap_or(0);
    let defaults = server::Options::default();
    let options = server::Options {
        batch_size: value(&mut args, "--batch-size")?.unwrap_or(defaults.batch_size),
        max_wait: value(&mut args, "--wait-ms")?.map_or(defaults.max_wait, Duration::from_millis),
        ..defaults
    };
    if let Some(extra) = args.first() {
        return Err(format!("unexpected argument {extra:?} (see the example's docs)").into());
    }

    let clf = Arc::new(
        HateClassifier::params()
            .batch_size(options.batch_size)
            .load(&model)?,
    );
    let service = server::Server::start(Arc::clone(&clf), ("127.0.0.1", port), options)?;
    println!("listening on http://{}", service.addr());
    eprintln!(
        "scoring with {} (label `{}`, threshold {}); batches of up to {} texts, {:?} wait",
        clf.origin().display(),
        clf.label(),
        clf.threshold(),
        options.batch_size,
        options.max_wait
    );
    service.join()?;
    Ok(())
}
