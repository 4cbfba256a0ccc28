//! `remote-gen`: the paper's greedy completions from OpenAI-compatible servers — vLLM, Hugging
//! Face TGI, llama.cpp's `llama-server`, or any `/v1/completions` server — behind
//! [`engine_api::TextGenerator`], so toxdrift's pipeline drives them as it drives its own local
//! engine and keeps its records, resumability and statistics.
//!
//! - [`RemoteParams`]: the endpoints (OpenAI base URLs such as `http://host:8000/v1`; several
//!   are replicas of one model), the served model's name, requests in flight per endpoint, the
//!   server kind ([`ServerKind::Auto`] detects it), the API key, and the decoding settings
//!   (50 new tokens, no chat template, seed 0 by default). [`RemoteParams::check`] validates.
//! - [`RemoteGenerator::connect`] checks every endpoint before any work: kind (llama.cpp's
//!   `GET /props`, TGI's `GET /info`, vLLM's `GET /version`), version, and the served model
//!   against `GET <base>/models` (a wrong name is bad input listing the served names).
//! - [`engine_api::TextGenerator::complete`] sends one request per prompt, spread evenly over
//!   the endpoints with `max_in_flight` in flight on each, and returns completions in the
//!   prompts' order, calling `progress` as each finishes.
//!   [`engine_api::TextGenerator::preferred_batch_size`] is endpoints × `max_in_flight` (the
//!   requests in flight together); toxdrift appends four of those at a time.
//!
//! What each kind is sent (every sampler knob set neutral, so server defaults such as
//! llama.cpp's repeat penalty 1.1 or vLLM's `generation_config` cannot change the decoding):
//!
//! | kind | route | token ids from |
//! |---|---|---|
//! | llama.cpp | native `POST /completion`, `cache_prompt: false`, `top_k: 1`, `repeat_penalty: 1` … | `tokens` (`return_tokens: true`) |
//! | vLLM | `POST /v1/completions`, `temperature: 0`, `top_k: -1`, `repetition_penalty: 1` … | `choices[0].token_ids` (`return_token_ids`, vLLM >= 0.10.2; older: `logprobs` + `return_tokens_as_token_ids`) |
//! | TGI | native `POST /generate`, `do_sample: false`, `details: true` | `details.tokens[].id` |
//! | OpenAI | `POST /v1/completions`, `temperature: 0`, `top_p: 1` … | none: records carry text only, with one warning |
//!
//! The ids include the EOS id when a completion stopped on it (as gen-engine's); texts are
//! trimmed as gen-engine trims them; finish reasons map to `eos` and `length`. With
//! [`RemoteParams::chat_template`] the prompt goes to `POST /v1/chat/completions` as one user
//! message instead (token ids from vLLM only).
//!
//! Robustness: each request has a timeout (120 s by default) and is retried on connection
//! errors, timeouts, 408, 429 and 5xx with exponential backoff from 0.5 s and jitter, for a
//! retry budget (120 s by default); then [`Error::Unavailable`] names the endpoint (an
//! internal error: exit code 1). A URL that answers but not as an OpenAI server, a refused
//! request, a response that is not UTF-8, not JSON or lacks a field are typed errors naming
//! the endpoint and the prompt (its index and first 40 characters), all bad input
//! ([`Error::is_bad_input`]; exit code 2). The API key is sent as a bearer token and never
//! shown (`Debug` redacts it; the manifest records only whether one was set).
//!
//! ```no_run
//! use engine_api::TextGenerator;
//! use remote_gen::{RemoteGenerator, RemoteParams};
//!
//! // `vllm serve meta-llama/Llama-3.1-8B` on two machines.
//! let params = RemoteParams::new()
//!     .endpoint("http://gpu-a:8000/v1")
//!     .endpoint("http://gpu-b:8000/v1")
//!     .served_model("meta-llama/Llama-3.1-8B")
//!     .max_in_flight(16)
//!     .api_key(std::env::var("VLLM_API_KEY").ok());
//! let generator = RemoteGenerator::connect(params)?;
//! let mut done = 0;
//! let completions = generator.complete(&["The weather today is", "My neighbour"], &mut |n| {
//!     done += n
//! })?;
//! assert_eq!(completions.len(), 2);
//! println!("{} via {}", completions[0].text, generator.describe().backend); // remote:vllm
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Settings are checked before any network traffic:
//!
//! ```
//! use remote_gen::{RemoteParams, ServerKind};
//!
//! let params = RemoteParams::new()
//!     .endpoint("http://127.0.0.1:8080/v1")
//!     .served_model("gemma-3-270m")
//!     .server_kind("llama.cpp".parse()?)
//!     .api_key(Some("sk-secret".into()))
//!     .check()?;
//! assert_eq!(params.get_server_kind(), ServerKind::LlamaCpp);
//! assert_eq!(params.get_max_in_flight(), remote_gen::DEFAULT_MAX_IN_FLIGHT);
//! assert!(!format!("{params:?}").contains("sk-secret"));
//!
//! let err = RemoteParams::new().served_model("m").check().unwrap_err();
//! assert!(err.is_bad_input());
//! assert!(err.to_string().contains("endpoint"));
//! # Ok::<(), remote_gen::Error>(())
//! ```
#![deny(missing_docs)]

mod endpoint;
mod error;
mod generator;
mod http;
mod params;
mod protocol;

pub use error::{Error, PromptRef, RequestRef, Result};
pub use generator::{EndpointInfo, RemoteGenerator};
pub use params::{
    DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BUDGET, MAX_BACKOFF, MAX_IN_FLIGHT_LIMIT, RemoteParams,
    ServerKind,
};
