//! The crate's one error type.

use std::fmt;
use std::time::Duration;

/// Which prompt a request carried: its index in the [`engine_api::TextGenerator::complete`]
/// call and its first 40 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRef {
    /// The prompt's index in the call.
    pub index: usize,
    /// Its first 40 characters (`…` appended when cut).
    pub head: String,
}

impl PromptRef {
    /// Characters of the prompt kept in [`PromptRef::head`].
    pub const HEAD_CHARS: usize = 40;

    pub(crate) fn new(index: usize, prompt: &str) -> Self {
        let mut head: String = prompt.chars().take(Self::HEAD_CHARS).collect();
        if prompt.chars().nth(Self::HEAD_CHARS).is_some() {
            head.push('…');
        }
        Self { index, head }
    }
}

impl fmt::Display for PromptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prompt {} ({:?})", self.index, self.head)
    }
}

/// What a request was for, in messages: `GET http://h/v1/models` or
/// `POST http://h/completion for prompt 3 ("The …")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRef {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The URL (user info redacted).
    pub url: String,
    /// The prompt it carried, if any.
    pub prompt: Option<PromptRef>,
}

impl fmt::Display for RequestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)?;
        if let Some(p) = &self.prompt {
            write!(f, " for {p}")?;
        }
        Ok(())
    }
}

/// What can go wrong; each variant names the endpoint, and the prompt where there is one.
///
/// [`Error::is_bad_input`] tells the user's fault (a setting, a URL, a model name, a server
/// that is not what it should be: exit code 2 in the CLI) from a failure of the server or
/// the network (exit code 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range (bad input).
    #[error("remote generation setting `{name}`: {msg}")]
    InvalidParam {
        /// The setting.
        name: &'static str,
        /// What is wrong with it.
        msg: String,
    },
    /// The endpoint answered, but not as an OpenAI-compatible server does: not HTTP, not
    /// JSON, no model list, an unknown host (bad input).
    #[error("{endpoint}: not an OpenAI-compatible server ({request}): {msg}")]
    NotAServer {
        /// The endpoint.
        endpoint: String,
        /// The request that showed it.
        request: Box<RequestRef>,
        /// What came back.
        msg: String,
    },
    /// The endpoint does not serve the model asked for (bad input).
    #[error(
        "{endpoint}: the server does not serve model `{model}`; it serves: {}",
        served.join(", ")
    )]
    UnknownModel {
        /// The endpoint.
        endpoint: String,
        /// The model asked for.
        model: String,
        /// The names in `GET <base>/models`.
        served: Vec<String>,
    },
    /// The endpoint stayed unreachable or overloaded (connection errors, timeouts, 429, 5xx)
    /// for the whole retry budget (an internal error: the server or the network).
    #[error(
        "{endpoint}: {request} failed {attempts} time(s) over {:.1} s, giving up: {last}",
        elapsed.as_secs_f64()
    )]
    Unavailable {
        /// The endpoint.
        endpoint: String,
        /// The request.
        request: Box<RequestRef>,
        /// Tries made.
        attempts: u32,
        /// Time from the first try to giving up.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
    /// The server refused a request with a 4xx status other than 408 and 429: a prompt too
    /// long, a wrong key, a wrong route for the server kind (bad input).
    #[error("{endpoint}: {request} was refused with HTTP {status}: {body}")]
    Rejected {
        /// The endpoint.
        endpoint: String,
        /// The request.
        request: Box<RequestRef>,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// A response is not what the protocol says: not UTF-8, not JSON, a missing or mistyped
    /// field, no choice for the prompt, an unknown finish reason (bad input: the server is
    /// not the kind it was taken for, or not compatible).
    #[error("{endpoint}: {request}: unexpected response: {msg}")]
    BadResponse {
        /// The endpoint.
        endpoint: String,
        /// The request.
        request: Box<RequestRef>,
        /// What is wrong.
        msg: String,
    },
}

impl Error {
    /// Whether the user's input (a setting, an endpoint, a model name, a server of the wrong
    /// kind) is at fault, rather than the server or the network.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Error::Unavailable { .. })
    }

    /// The endpoint the error is about (its display form), when it is about one.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Error::InvalidParam { .. } => None,
            Error::NotAServer { endpoint, .. }
            | Error::UnknownModel { endpoint, .. }
            | Error::Unavailable { endpoint, .. }
            | Error::Rejected { endpoint, .. }
            | Error::BadResponse { endpoint, .. } => Some(endpoint),
        }
    }

    /// The prompt the failing request carried, when it carried one.
    pub fn prompt(&self) -> Option<&PromptRef> {
        match self {
            Error::NotAServer { request, .. }
            | Error::Unavailable { request, .. }
            | Error::Rejected { request, .. }
            | Error::BadResponse { request, .. } => request.prompt.as_ref(),
            _ => None,
        }
    }
}

/// remote-gen's errors cross the seam with their bad-input verdict ([`Error::is_bad_input`]).
impl From<Error> for engine_api::Error {
    fn from(e: Error) -> Self {
        let prompt = e.prompt().map(|p| p.index);
        let out = engine_api::Error::backend(e.is_bad_input(), e);
        match prompt {
            Some(i) => out.with_prompt(i),
            None => out,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_heads() {
        let p = PromptRef::new(3, "short");
        assert_eq!(p.to_string(), "prompt 3 (\"short\")");
        let long = "x".repeat(41);
        let p = PromptRef::new(0, &long);
        assert_eq!(p.head, format!("{}…", "x".repeat(40)));
        let exact = "é".repeat(40);
        assert_eq!(PromptRef::new(0, &exact).head, exact);
    }
}
