//! The backend's settings: a linfa-style builder validated by [`RemoteParams::check`].

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Requests in flight per endpoint unless set ([`RemoteParams::max_in_flight`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// New tokens per prompt unless set (the paper's 50).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 50;
/// How long one HTTP request may take unless set.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one request is retried (connection errors, 429, 5xx, timeouts) unless set.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(120);
/// The first retry's delay (before jitter) unless set; each further retry doubles it.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// The longest delay between two tries of one request (before jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most requests in flight per endpoint that [`RemoteParams::check`] accepts.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1024;

/// Which server an endpoint is, and so which request it gets.
///
/// Serialized as [`ServerKind::as_str`] (`llamacpp`, …); [`FromStr`] and deserialization also
/// take `llama.cpp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// Detect it: llama.cpp answers `GET /props`, TGI `GET /info`, vLLM `GET /version`;
    /// anything else is treated as a plain OpenAI-compatible server.
    #[default]
    Auto,
    /// llama.cpp's `llama-server`: native `POST /completion` with `return_tokens`.
    #[serde(alias = "llama.cpp")]
    LlamaCpp,
    /// vLLM: `POST /v1/completions` with `return_token_ids` (vLLM >= 0.10.2; older versions
    /// through `logprobs` with `return_tokens_as_token_ids`).
    Vllm,
    /// Hugging Face text-generation-inference: native `POST /generate` with `details`.
    Tgi,
    /// Any other OpenAI-compatible server: `POST /v1/completions`, no token ids.
    OpenAi,
}

impl ServerKind {
    /// `auto`, `llamacpp`, `vllm`, `tgi` or `openai` (the CLI's and the manifest's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::LlamaCpp => "llamacpp",
            Self::Vllm => "vllm",
            Self::Tgi => "tgi",
            Self::OpenAi => "openai",
        }
    }

    /// Every kind, `Auto` first.
    pub const ALL: [ServerKind; 5] = [
        Self::Auto,
        Self::LlamaCpp,
        Self::Vllm,
        Self::Tgi,
        Self::OpenAi,
    ];
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServerKind {
    type Err = Error;

    /// Accepts [`ServerKind::as_str`]'s spellings, case-insensitively, and `llama.cpp`,
    /// `llama-cpp`, `llama_cpp`, `text-generation-inference`.
    fn from_str(s: &str) -> Result<Self> {
        let k = match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "llamacpp" | "llama.cpp" | "llama-cpp" | "llama_cpp" => Self::LlamaCpp,
            "vllm" => Self::Vllm,
            "tgi" | "text-generation-inference" => Self::Tgi,
            "openai" => Self::OpenAi,
            _ => {
                return Err(Error::InvalidParam {
                    name: "server_kind",
                    msg: format!(
                        "`{s}` is not one of {}",
                        Self::ALL.map(Self::as_str).join(", ")
                    ),
                });
            }
        };
        Ok(k)
    }
}

/// Validated settings of a [`crate::RemoteGenerator`] (a linfa-style builder: set, then
/// [`RemoteParams::check`]).
///
/// The defaults are the paper's: 50 new tokens, no chat template, greedy with a fixed seed 0.
/// The API key is the key itself (the caller reads it from an environment variable); it is
/// sent as `Authorization: Bearer …`, never logged, and `Debug` shows it as `<redacted>`.
#[derive(Clone, PartialEq)]
pub struct RemoteParams {
    pub(crate) endpoints: Vec<String>,
    pub(crate) served_model: String,
    pub(crate) max_in_flight: usize,
    pub(crate) server_kind: ServerKind,
    pub(crate) api_key: Option<String>,
    pub(crate) max_new_tokens: usize,
    pub(crate) chat_template: bool,
    pub(crate) seed: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_budget: Duration,
    pub(crate) initial_backoff: Duration,
}

impl Default for RemoteParams {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            served_model: String::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            server_kind: ServerKind::Auto,
            api_key: None,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            chat_template: false,
            seed: 0,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_budget: DEFAULT_RETRY_BUDGET,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
        }
    }
}

impl fmt::Debug for RemoteParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteParams")
            .field("endpoints", &self.endpoints)
            .field("served_model", &self.served_model)
            .field("max_in_flight", &self.max_in_flight)
            .field("server_kind", &self.server_kind)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_new_tokens", &self.max_new_tokens)
            .field("chat_template", &self.chat_template)
            .field("seed", &self.seed)
            .field("request_timeout", &self.request_timeout)
            .field("retry_budget", &self.retry_budget)
            .field("initial_backoff", &self.initial_backoff)
            .finish()
    }
}

impl RemoteParams {
    /// No endpoint and no model yet; every other setting at its default.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an endpoint: an OpenAI base URL such as `http://host:8000/v1` (a bare
    /// `http://host:8000` means `http://host:8000/v1`). Several endpoints are replicas of one
    /// model; prompts are spread over them.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints.push(url.into());
        self
    }
    /// Sets every endpoint at once (replacing those added before).
    pub fn endpoints<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = urls.into_iter().map(Into::into).collect();
        self
    }
    /// The model's name on the servers (checked against `GET <base>/models`).
    pub fn served_model(mut self, name: impl Into<String>) -> Self {
        self.served_model = name.into();
        self
    }
    /// Requests in flight per endpoint (default 4).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }
    /// The server kind (default: detected).
    pub fn server_kind(mut self, kind: ServerKind) -> Self {
        self.server_kind = kind;
        self
    }
    /// The API key itself (default: none), sent as a bearer token.
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key;
        self
    }
    /// New tokens per prompt at most (default 50).
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }
    /// Wraps each prompt in the served model's chat template, through the server's chat
    /// endpoint (default: off, as the study).
    pub fn chat_template(mut self, on: bool) -> Self {
        self.chat_template = on;
        self
    }
    /// The sampling seed sent with every request (default 0; greedy decoding ignores it, but
    /// a server whose defaults sample would otherwise draw a random one).
    pub fn seed(mut self, seed: u32) -> Self {
        self.seed = seed;
        self
    }
    /// How long one HTTP request may take (default 120 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }
    /// How long one request is retried after connection errors, timeouts, 429 and 5xx, with
    /// exponential backoff and jitter (default 120 s; zero: no retry).
    pub fn retry_budget(mut self, d: Duration) -> Self {
        self.retry_budget = d;
        self
    }
    /// The first retry's delay before jitter (default 0.5 s); it doubles per retry, up to
    /// [`MAX_BACKOFF`].
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Validates the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the setting: no endpoint, a URL that is not
    /// `http(s)://host[:port][/path]`, the same endpoint twice, an empty model name, zero or
    /// more than [`MAX_IN_FLIGHT_LIMIT`] requests in flight, zero new tokens, a zero timeout
    /// or initial backoff, an empty API key or one with control characters, seed `u32::MAX`
    /// (llama.cpp's "random seed").
    pub fn check(self) -> Result<Self> {
        let invalid = |name: &'static str, msg: String| Err(Error::InvalidParam { name, msg });
        if self.endpoints.is_empty() {
            return invalid("endpoints", "give at least one endpoint URL".into());
        }
        let mut seen = Vec::new();
        for url in &self.endpoints {
            let parsed =
                crate::endpoint::EndpointUrl::parse(url).map_err(|msg| Error::InvalidParam {
                    name: "endpoints",
                    msg: format!("`{}`: {msg}", crate::endpoint::redact(url)),
                })?;
            if seen.contains(&parsed.base) {
                return invalid("endpoints", format!("`{}` is given twice", parsed.display));
            }
            seen.push(parsed.base);
        }
        if self.served_model.trim().is_empty() {
            return invalid(
                "served_model",
                "give the model's name on the server (see GET <endpoint>/models)".into(),
            );
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT_LIMIT {
            return invalid(
                "max_in_flight",
                format!("must be between 1 and {MAX_IN_FLIGHT_LIMIT}"),
            );
        }
        if self.max_new_tokens == 0 {
            return invalid("max_new_tokens", "must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be more than zero".into());
        }
        if self.initial_backoff.is_zero() {
            return invalid("initial_backoff", "must be more than zero".into());
        }
        if let Some(key) = &self.api_key
            && (key.is_empty() || key.chars().any(char::is_control))
        {
            return invalid(
                "api_key",
                "is empty or holds control characters (it is not shown)".into(),
            );
        }
        if self.seed == u32::MAX {
            return invalid(
                "seed",
                format!("{} means a random seed to llama.cpp", u32::MAX),
            );
        }
        Ok(self)
    }

    /// The endpoint URLs, as given.
    pub fn get_endpoints(&self) -> &[String] {
        &self.endpoints
    }
    /// The served model's name.
    pub fn get_served_model(&self) -> &str {
        &self.served_model
    }
    /// Requests in flight per endpoint.
    pub fn get_max_in_flight(&self) -> usize {
        self.max_in_flight
    }
    /// The server kind asked for.
    pub fn get_server_kind(&self) -> ServerKind {
        self.server_kind
    }
    /// Whether an API key is set (the key itself is not readable back).
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }
    /// The new-token budget.
    pub fn get_max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }
    /// Whether prompts go through the chat template.
    pub fn get_chat_template(&self) -> bool {
        self.chat_template
    }
    /// The seed.
    pub fn get_seed(&self) -> u32 {
        self.seed
    }
    /// The per-request timeout.
    pub fn get_request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// The per-request retry budget.
    pub fn get_retry_budget(&self) -> Duration {
        self.retry_budget
    }
    /// The first retry's delay.
    pub fn get_initial_backoff(&self) -> Duration {
        self.initial_backoff
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_round_trip() {
        use super::ServerKind;
        for k in ServerKind::ALL {
            let s = serde_json::to_string(&k).unwrap();
            assert_eq!(s, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<ServerKind>(&s).unwrap(), k);
            assert_eq!(k.as_str().parse::<ServerKind>().unwrap(), k);
        }
        let k: ServerKind = serde_json::from_str("\"llama.cpp\"").unwrap();
        assert_eq!(k, ServerKind::LlamaCpp);
    }
}
