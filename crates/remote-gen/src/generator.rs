//! The generator: endpoints checked at connect, prompts spread over them, answers in order.

use crate::endpoint::EndpointUrl;
use crate::error::{Error, PromptRef, RequestRef, Result};
use crate::http::{Http, Reply};
use crate::params::{RemoteParams, ServerKind};
use crate::protocol::{Dialect, Note, kind_of, str_at, vllm_before_return_token_ids};
use engine_api::{Completion, EngineInfo, TextGenerator};
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

/// One endpoint as found at [`RemoteGenerator::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The OpenAI base URL (user info redacted).
    pub url: String,
    /// The server kind (detected or given; never [`ServerKind::Auto`]).
    pub kind: ServerKind,
    /// The server's version when it tells one (llama.cpp's `build_info`, vLLM's and TGI's
    /// `version`).
    pub version: Option<String>,
    /// The model names in `GET <base>/models`.
    pub served_models: Vec<String>,
}

#[derive(Debug)]
struct Endpoint {
    url: EndpointUrl,
    dialect: Dialect,
    knobs: Map<String, Value>,
}

/// Greedy completions from one or more OpenAI-compatible servers serving the same model.
///
/// [`RemoteGenerator::connect`] checks every endpoint before any work: it detects the server
/// kind (unless given), records the version and checks that the served model is there.
/// [`TextGenerator::complete`] then sends one request per prompt, spread evenly over the
/// endpoints with [`RemoteParams::max_in_flight`] requests in flight on each (an endpoint that
/// runs out of its share takes prompts queued for a slower one), and returns the completions
/// in the prompts' order.
pub struct RemoteGenerator {
    params: RemoteParams,
    http: Http,
    endpoints: Vec<Endpoint>,
    infos: Vec<EndpointInfo>,
    warnings: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for RemoteGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteGenerator")
            .field("params", &self.params)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl RemoteGenerator {
    /// Validates the parameters and checks every endpoint: its kind (detected when
    /// [`ServerKind::Auto`]: llama.cpp's `GET /props`, TGI's `GET /info`, vLLM's
    /// `GET /version`, else a plain OpenAI server), its version, and that
    /// `GET <base>/models` lists the served model.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] from [`RemoteParams::check`]; [`Error::UnknownModel`] listing
    /// the served names; [`Error::NotAServer`] for a URL that answers but not as an
    /// OpenAI-compatible server; [`Error::Unavailable`] for one that stays unreachable for
    /// the retry budget.
    pub fn connect(params: RemoteParams) -> Result<Self> {
        let params = params.check()?;
        let http = Http::new(&params);
        let mut endpoints = Vec::with_capacity(params.endpoints.len());
        let mut infos = Vec::with_capacity(params.endpoints.len());
        let mut warnings = BTreeSet::new();
        for raw in &params.endpoints {
            let url = EndpointUrl::parse(raw).map_err(|msg| Error::InvalidParam {
                name: "endpoints",
                msg,
            })?;
            let (kind, version) = match params.server_kind {
                ServerKind::Auto => detect(&http, &url)?,
                kind => (kind, probe_version(&http, &url, kind)?),
            };
            let served_models = served_models(&http, &url)?;
            if !served_models.contains(&params.served_model) {
                return Err(Error::UnknownModel {
                    endpoint: url.display.clone(),
                    model: params.served_model.clone(),
                    served: served_models,
                });
            }
            let dialect = Dialect {
                kind,
                vllm_legacy_ids: kind == ServerKind::Vllm
                    && version.as_deref().is_some_and(vllm_before_return_token_ids),
                chat: params.chat_template,
            };
            if !dialect.has_token_ids() {
                warnings.insert(no_ids_warning(&url.display, kind, params.chat_template));
            }
            let knobs = dialect.knobs(&params);
            infos.push(EndpointInfo {
                url: url.display.clone(),
                kind,
                version,
                served_models,
            });
            endpoints.push(Endpoint {
                url,
                dialect,
                knobs,
            });
        }
        Ok(Self {
            params,
            http,
            endpoints,
            infos,
            warnings: Mutex::new(warnings),
        })
    }

    /// The endpoints as found at connect, in the order given.
    pub fn endpoints(&self) -> &[EndpointInfo] {
        &self.infos
    }

    /// The validated parameters.
    pub fn params(&self) -> &RemoteParams {
        &self.params
    }

    /// The run's warnings so far, each once: endpoints whose server returns no token ids
    /// (records carry none), completions stopped on a server-side stop string. Also in
    /// [`TextGenerator::describe`]'s settings under `warnings`; nothing is printed.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `remote:<kind>`, or `remote:mixed` when the endpoints are of different kinds.
    fn backend(&self) -> String {
        let first = self.infos[0].kind;
        if self.infos.iter().all(|e| e.kind == first) {
            format!("remote:{first}")
        } else {
            "remote:mixed".to_string()
        }
    }

    /// One prompt on one endpoint.
    fn run_one(&self, ep: &Endpoint, index: usize, prompt: &str) -> Result<Completion> {
        let url = ep.dialect.url(&ep.url);
        let request = RequestRef {
            method: "POST",
            url: crate::endpoint::redact(&url),
            prompt: Some(PromptRef::new(index, prompt)),
        };
        let endpoint = ep.url.display.as_str();
        let body = serde_json::to_vec(&ep.dialect.body(&ep.knobs, prompt)).map_err(|e| {
            Error::InvalidParam {
                name: "prompt",
                msg: format!("{request}: cannot be sent as JSON: {e}"),
            }
        })?;
        let reply = self.http.send(endpoint, &request, &url, Some(&body))?;
        let value = json_reply(endpoint, &request, reply)?;
        let parsed = ep.dialect.parse(&value).map_err(|msg| Error::BadResponse {
            endpoint: endpoint.to_string(),
            request: Box::new(request.clone()),
            msg,
        })?;
        for note in &parsed.notes {
            let w = match note {
                Note::NoTokenIds if ep.dialect.has_token_ids() => {
                    format!(
                        "{endpoint}: a response carried no token ids; records from it carry none"
                    )
                }
                Note::NoTokenIds => continue, // warned at connect
                Note::StopString(s) => format!(
                    "{endpoint}: a completion stopped on a server-side stop string ({s:?}); recorded as `eos`"
                ),
            };
            if let Ok(mut ws) = self.warnings.lock() {
                ws.insert(w);
            }
        }
        Ok(Completion {
            text: parsed.text,
            token_ids: parsed.token_ids,
            finish_reason: parsed.finish_reason,
        })
    }
}

fn no_ids_warning(endpoint: &str, kind: ServerKind, chat: bool) -> String {
    let route = if chat { "its chat route" } else { "it" };
    format!(
        "{endpoint} ({kind}): {route} returns no token ids; records from it carry text and finish reason only"
    )
}

/// The body as JSON, or a typed error: a refusal (4xx), not UTF-8, not JSON.
fn json_reply(endpoint: &str, request: &RequestRef, reply: Reply) -> Result<Value> {
    if !(200..300).contains(&reply.status) {
        return Err(Error::Rejected {
            endpoint: endpoint.to_string(),
            request: Box::new(request.clone()),
            status: reply.status,
            body: reply.excerpt(),
        });
    }
    let bad = |msg: String| Error::BadResponse {
        endpoint: endpoint.to_string(),
        request: Box::new(request.clone()),
        msg,
    };
    let text = std::str::from_utf8(&reply.body)
        .map_err(|e| bad(format!("the body is not UTF-8 ({e})")))?;
    serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "the body is not JSON ({e}): {}",
            crate::http::excerpt(text.as_bytes())
        ))
    })
}

/// A GET whose 2xx JSON body is returned; `None` for any other status or a non-JSON body.
fn probe(http: &Http, ep: &EndpointUrl, path: &str) -> Result<Option<Value>> {
    let url = format!("{}{path}", ep.root);
    let request = RequestRef {
        method: "GET",
        url: crate::endpoint::redact(&url),
        prompt: None,
    };
    let reply = http.send(&ep.display, &request, &url, None)?;
    if !(200..300).contains(&reply.status) {
        return Ok(None);
    }
    Ok(serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .filter(Value::is_object))
}

/// Detects the kind and version: llama.cpp's `/props` has `default_generation_settings`,
/// TGI's `/info` has `model_id` and `version`, vLLM's `/version` has `version`.
fn detect(http: &Http, ep: &EndpointUrl) -> Result<(ServerKind, Option<String>)> {
    if let Some(props) = probe(http, ep, "/props")?
        && props.get("default_generation_settings").is_some()
    {
        return Ok((ServerKind::LlamaCpp, llamacpp_version(&props)));
    }
    if let Some(info) = probe(http, ep, "/info")?
        && info.get("model_id").is_some()
        && let Ok(v) = str_at(&info, &["version"])
    {
        return Ok((ServerKind::Tgi, Some(v.to_string())));
    }
    if let Some(version) = probe(http, ep, "/version")?
        && let Ok(v) = str_at(&version, &["version"])
    {
        return Ok((ServerKind::Vllm, Some(v.to_string())));
    }
    Ok((ServerKind::OpenAi, None))
}

fn llamacpp_version(props: &Value) -> Option<String> {
    props
        .get("build_info")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The version of a server whose kind was given (`None` when it does not say).
fn probe_version(http: &Http, ep: &EndpointUrl, kind: ServerKind) -> Result<Option<String>> {
    let path = match kind {
        ServerKind::LlamaCpp => "/props",
        ServerKind::Tgi => "/info",
        ServerKind::Vllm => "/version",
        ServerKind::OpenAi | ServerKind::Auto => return Ok(None),
    };
    let Some(v) = probe(http, ep, path)? else {
        return Ok(None);
    };
    Ok(match kind {
        ServerKind::LlamaCpp => llamacpp_version(&v),
        _ => str_at(&v, &["version"]).ok().map(str::to_string),
    })
}

/// `data[].id` of `GET <base>/models`.
fn served_models(http: &Http, ep: &EndpointUrl) -> Result<Vec<String>> {
    let url = format!("{}/models", ep.base);
    let request = RequestRef {
        method: "GET",
        url: crate::endpoint::redact(&url),
        prompt: None,
    };
    let not_a_server = |msg: String| Error::NotAServer {
        endpoint: ep.display.clone(),
        request: Box::new(request.clone()),
        msg,
    };
    let reply = http.send(&ep.display, &request, &url, None)?;
    if reply.status == 401 || reply.status == 403 {
        return Err(Error::Rejected {
            endpoint: ep.display.clone(),
            request: Box::new(request.clone()),
            status: reply.status,
            body: reply.excerpt(),
        });
    }
    if !(200..300).contains(&reply.status) {
        return Err(not_a_server(format!(
            "HTTP {}: {}",
            reply.status,
            reply.excerpt()
        )));
    }
    let v: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| not_a_server(format!("not JSON ({e}): {}", reply.excerpt())))?;
    let data = v.get("data").and_then(Value::as_array).ok_or_else(|| {
        not_a_server(format!(
            "no `data` array in the model list, got {}",
            kind_of(&v)
        ))
    })?;
    data.iter()
        .enumerate()
        .map(|(i, m)| {
            str_at(m, &["id"])
                .map(str::to_string)
                .map_err(|e| not_a_server(format!("model list entry {i}: {e}")))
        })
        .collect()
}

impl TextGenerator for RemoteGenerator {
    fn describe(&self) -> EngineInfo {
        let p = &self.params;
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .zip(&self.infos)
            .map(|(e, info)| {
                json!({
                    "url": info.url,
                    "kind": info.kind.as_str(),
                    "version": info.version,
                    "route": e.dialect.path(),
                    "token_ids": e.dialect.has_token_ids(),
                    "request": e.knobs,
                })
            })
            .collect();
        EngineInfo {
            backend: self.backend(),
            model: p.served_model.clone(),
            settings: json!({
                "endpoints": endpoints,
                "served_model": p.served_model,
                "max_in_flight": p.max_in_flight,
                "max_new_tokens": p.max_new_tokens,
                "chat_template": p.chat_template,
                "seed": p.seed,
                "request_timeout_s": p.request_timeout.as_secs_f64(),
                "retry_budget_s": p.retry_budget.as_secs_f64(),
                "api_key": p.api_key.is_some(),
                "warnings": self.warnings(),
            }),
        }
    }

    /// The requests the endpoints hold in flight together; callers append a few of these at a
    /// time.
    fn preferred_batch_size(&self) -> usize {
        self.endpoints.len() * self.params.max_in_flight
    }

    fn complete(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> engine_api::Result<Vec<Completion>> {
        Ok(self.complete_all(prompts, progress)?)
    }

    /// Completions are handed to `sink` as the requests finish (in any order), so the caller
    /// writes records while later prompts are still in flight.
    fn complete_each(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
        sink: &mut dyn FnMut(usize, Completion) -> engine_api::Result<()>,
    ) -> engine_api::Result<()> {
        self.stream(prompts, progress, sink).map_err(|e| match e {
            StreamError::Remote(e) => e.into(),
            StreamError::Sink(e) => e,
        })
    }
}

impl RemoteGenerator {
    /// [`TextGenerator::complete`] with this crate's own error type: every completion, in the
    /// prompts' order.
    pub fn complete_all(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Completion>> {
        let mut out: Vec<Option<Completion>> = vec![None; prompts.len()];
        self.stream(prompts, progress, &mut |i, c| {
            out[i] = Some(c);
            Ok(())
        })
        .map_err(|e| match e {
            StreamError::Remote(e) => e,
            StreamError::Sink(_) => unreachable_sink(),
        })?;
        Ok(out.into_iter().flatten().collect())
    }

    /// Runs every prompt, spreading them over the endpoints, and hands each completion to
    /// `sink` as it arrives. After the first failure (a request's or the sink's) no new
    /// request starts; the lowest-index prompt's error is returned.
    fn stream(
        &self,
        prompts: &[&str],
        progress: &mut dyn FnMut(usize),
        sink: &mut dyn FnMut(usize, Completion) -> engine_api::Result<()>,
    ) -> std::result::Result<(), StreamError> {
        let n = prompts.len();
        if n == 0 {
            return Ok(());
        }
        let e = self.endpoints.len();
        // Prompt i is endpoint (i mod e)'s: an even spread; an idle endpoint takes from the
        // back of another's queue.
        let queues: Vec<Mutex<VecDeque<usize>>> = (0..e)
            .map(|k| Mutex::new((k..n).step_by(e).collect()))
            .collect();
        let take = |k: usize| -> Option<usize> {
            if let Some(i) = queues[k].lock().ok()?.pop_front() {
                return Some(i);
            }
            (1..e).find_map(|d| queues[(k + d) % e].lock().ok()?.pop_back())
        };
        let failed = AtomicBool::new(false);
        let workers = self.params.max_in_flight.min(n.div_ceil(e).max(1));
        let (tx, rx) = mpsc::channel::<(usize, Result<Completion>)>();
        let mut first_error: Option<(usize, Error)> = None;
        let mut sink_error: Option<engine_api::Error> = None;
        std::thread::scope(|s| {
            for (k, ep) in self.endpoints.iter().enumerate() {
                for _ in 0..workers {
                    let tx = tx.clone();
                    let (take, failed) = (&take, &failed);
                    s.spawn(move || {
                        while !failed.load(Ordering::Relaxed) {
                            let Some(i) = take(k) else { break };
                            let r = self.run_one(ep, i, prompts[i]);
                            if r.is_err() {
                                failed.store(true, Ordering::Relaxed);
                            }
                            if tx.send((i, r)).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
            drop(tx);
            for (i, r) in rx {
                match r {
                    Ok(c) => {
                        if first_error.is_none() && sink_error.is_none() {
                            progress(1);
                            if let Err(e) = sink(i, c) {
                                failed.store(true, Ordering::Relaxed);
                                sink_error = Some(e);
                            }
                        }
                    }
                    Err(err) => {
                        // Keep the lowest prompt's error: the same failure reads the same.
                        if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                            first_error = Some((i, err));
                        }
                    }
                }
            }
        });
        if let Some((_, err)) = first_error {
            return Err(StreamError::Remote(err));
        }
        if let Some(e) = sink_error {
            return Err(StreamError::Sink(e));
        }
        Ok(())
    }
}

/// Why [`RemoteGenerator::stream`] stopped.
enum StreamError {
    /// A request failed.
    Remote(Error),
    /// The caller's sink refused a completion.
    Sink(engine_api::Error),
}

/// `complete_all`'s sink never fails.
fn unreachable_sink() -> Error {
    Error::InvalidParam {
        name: "sink",
        msg: "the collecting sink cannot fail".into(),
    }
}
