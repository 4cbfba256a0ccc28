//! One HTTP client for every endpoint: per-request timeout, bounded retries with exponential
//! backoff and jitter on connection errors, timeouts, 408, 429 and 5xx.

use crate::error::{Error, RequestRef, Result};
use crate::params::{MAX_BACKOFF, RemoteParams};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Response bodies larger than this are refused (a completion is a few kilobytes).
const MAX_BODY_BYTES: u64 = 64 << 20;
/// Connecting may take at most this long per try (capped by the request timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A request whose tries all fail with HTTP protocol errors (and never see an HTTP status)
/// is "not a server" after this many tries, not "unavailable" after the whole budget.
const PROTOCOL_TRIES: u32 = 3;

/// A response: its status and body (any status the retry policy does not retry).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The start of the body, for messages.
    pub fn excerpt(&self) -> String {
        excerpt(&self.body)
    }
}

/// The first 300 characters of a body, lossily decoded, on one line.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(300).is_some() {
        out.push('…');
    }
    out.trim().to_string()
}

/// The client: one connection pool, the key, the retry policy.
pub(crate) struct Http {
    agent: ureq::Agent,
    auth: Option<String>,
    budget: Duration,
    initial_backoff: Duration,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("budget", &self.budget)
            .field("initial_backoff", &self.initial_backoff)
            .finish_non_exhaustive()
    }
}

enum Failure {
    /// Worth another try (connection refused or reset, timeout, 408/429/5xx).
    Transient {
        why: String,
        retry_after: Option<Duration>,
    },
    /// An HTTP protocol error: retried a little, then "not a server".
    Protocol(String),
    /// Not worth another try (unknown host, TLS, redirects).
    Fatal(String),
}

impl Http {
    /// A client for `params`, pooling enough idle connections for every request in flight.
    pub fn new(params: &RemoteParams) -> Self {
        let in_flight = params.max_in_flight * params.endpoints.len();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(params.request_timeout))
            .timeout_connect(Some(CONNECT_TIMEOUT.min(params.request_timeout)))
            .max_idle_connections(in_flight + params.endpoints.len())
            .max_idle_connections_per_host(in_flight + 1)
            .user_agent(concat!("toxdrift-remote-gen/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: config.into(),
            auth: params.api_key.as_ref().map(|k| format!("Bearer {k}")),
            budget: params.retry_budget,
            initial_backoff: params.initial_backoff,
        }
    }

    /// Sends a GET (no body) or a JSON POST, retrying transient failures within the budget.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the budget runs out; [`Error::NotAServer`] for an unknown
    /// host, a TLS failure or repeated protocol errors.
    pub fn send(
        &self,
        endpoint: &str,
        request: &RequestRef,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply> {
        let start = Instant::now();
        let mut backoff = self.initial_backoff;
        let mut attempts = 0u32;
        let mut protocol_errors = 0u32;
        loop {
            attempts += 1;
            let (why, retry_after) = match self.once(url, body) {
                Ok(reply) => return Ok(reply),
                Err(Failure::Transient { why, retry_after }) => (why, retry_after),
                Err(Failure::Protocol(why)) => {
                    protocol_errors += 1;
                    if protocol_errors == attempts && protocol_errors >= PROTOCOL_TRIES {
                        return Err(Error::NotAServer {
                            endpoint: endpoint.to_string(),
                            request: Box::new(request.clone()),
                            msg: format!("not HTTP: {why}"),
                        });
                    }
                    (why, None)
                }
                Err(Failure::Fatal(why)) => {
                    return Err(Error::NotAServer {
                        endpoint: endpoint.to_string(),
                        request: Box::new(request.clone()),
                        msg: why,
                    });
                }
            };
            let elapsed = start.elapsed();
            let Some(left) = self.budget.checked_sub(elapsed).filter(|d| !d.is_zero()) else {
                return Err(Error::Unavailable {
                    endpoint: endpoint.to_string(),
                    request: Box::new(request.clone()),
                    attempts,
                    elapsed,
                    last: why,
                });
            };
            let mut delay = jitter(backoff);
            if let Some(ra) = retry_after {
                delay = delay.max(ra);
            }
            std::thread::sleep(delay.min(left));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One try.
    fn once(&self, url: &str, body: Option<&[u8]>) -> Result<Reply, Failure> {
        let sent = match body {
            None => {
                let mut rb = self.agent.get(url);
                if let Some(a) = &self.auth {
                    rb = rb.header("Authorization", a);
                }
                rb.call()
            }
            Some(b) => {
                let mut rb = self
                    .agent
                    .post(url)
                    .header("Content-Type", "application/json");
                if let Some(a) = &self.auth {
                    rb = rb.header("Authorization", a);
                }
                rb.send(b)
            }
        };
        let mut resp = sent.map_err(classify)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    Failure::Fatal(format!("the response is over {MAX_BODY_BYTES} bytes"))
                }
                e => classify(e),
            })?;
        let reply = Reply { status, body };
        if status == 408 || status == 429 || (500..600).contains(&status) {
            return Err(Failure::Transient {
                why: format!("HTTP {status}: {}", reply.excerpt()),
                retry_after,
            });
        }
        Ok(reply)
    }
}

fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    match e {
        E::Io(_) | E::Timeout(_) | E::ConnectionFailed | E::BodyStalled => Failure::Transient {
            why: e.to_string(),
            retry_after: None,
        },
        E::Protocol(_) => Failure::Protocol(e.to_string()),
        E::HostNotFound => Failure::Fatal("host not found".into()),
        other => Failure::Fatal(other.to_string()),
    }
}

/// `d` times a random factor in [0.5, 1): "equal jitter", so that replicas' retries spread.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * unit_random())
}

/// A random number in [0, 1) from the standard library's randomly keyed hasher.
fn unit_random() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_its_band() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d < Duration::from_millis(1000));
        }
        let draws: Vec<f64> = (0..64).map(|_| unit_random()).collect();
        assert!(draws.iter().any(|&x| x != draws[0]));
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt(b"a\nb"), "a b");
        let long = vec![b'x'; 400];
        assert_eq!(excerpt(&long).chars().count(), 301);
        assert_eq!(excerpt(&[0xff, b'o', b'k']), "\u{fffd}ok");
    }
}
