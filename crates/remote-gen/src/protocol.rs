//! What each server kind is sent for one prompt, and how its answer is read.
//!
//! Every request asks for the paper's decoding: the raw prompt (the server's tokenizer adds
//! BOS as the model's tokenizer says), greedy, every sampler knob neutral, a fixed seed,
//! `max_new_tokens`, stop at EOS only, special tokens skipped; the text is trimmed as
//! gen-engine trims it. With the chat template on, the prompt goes to the OpenAI chat route
//! as one user message instead.

use crate::endpoint::EndpointUrl;
use crate::params::{RemoteParams, ServerKind};
use engine_api::FinishReason;
use serde_json::{Map, Value, json};

/// How one endpoint is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    /// The resolved kind (never `Auto`).
    pub kind: ServerKind,
    /// vLLM older than 0.10.2: ids through `logprobs` + `return_tokens_as_token_ids`.
    pub vllm_legacy_ids: bool,
    /// The chat route with the served model's template.
    pub chat: bool,
}

/// Something about a response worth one warning per run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Note {
    /// The response carried no token ids.
    NoTokenIds,
    /// The server stopped on a stop string (`word`, `stop_sequence`): recorded as `eos`.
    StopString(String),
}

/// One prompt's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub text: String,
    pub token_ids: Option<Vec<u32>>,
    pub finish_reason: FinishReason,
    pub notes: Vec<Note>,
}

impl Dialect {
    /// The route's path, for messages and the manifest.
    pub fn path(&self) -> &'static str {
        match (self.chat, self.kind) {
            (true, _) => "/chat/completions",
            (false, ServerKind::LlamaCpp) => "/completion",
            (false, ServerKind::Tgi) => "/generate",
            (false, _) => "/completions",
        }
    }

    /// The route's URL on an endpoint.
    pub fn url(&self, ep: &EndpointUrl) -> String {
        match (self.chat, self.kind) {
            (false, ServerKind::LlamaCpp | ServerKind::Tgi) => {
                format!("{}{}", ep.root, self.path())
            }
            _ => format!("{}{}", ep.base, self.path()),
        }
    }

    /// Whether responses are expected to carry token ids.
    pub fn has_token_ids(&self) -> bool {
        match (self.chat, self.kind) {
            (false, ServerKind::LlamaCpp | ServerKind::Tgi | ServerKind::Vllm) => true,
            (true, ServerKind::Vllm) => !self.vllm_legacy_ids,
            _ => false,
        }
    }

    /// Every key of the request but the prompt: the model and every decoding knob sent.
    pub fn knobs(&self, p: &RemoteParams) -> Map<String, Value> {
        let n = p.max_new_tokens;
        let seed = p.seed;
        let model = p.served_model.as_str();
        let v = match (self.chat, self.kind) {
            (false, ServerKind::LlamaCpp) => json!({
                "n_predict": n,
                "temperature": 0.0,
                "top_k": 1,
                "top_p": 1.0,
                "min_p": 0.0,
                "typical_p": 1.0,
                "repeat_penalty": 1.0,
                "presence_penalty": 0.0,
                "frequency_penalty": 0.0,
                "dry_multiplier": 0.0,
                "xtc_probability": 0.0,
                "mirostat": 0,
                "n_probs": 0,
                "ignore_eos": false,
                "cache_prompt": false,
                "return_tokens": true,
                "stream": false,
                "seed": seed,
            }),
            (true, ServerKind::LlamaCpp) => json!({
                "model": model,
                "max_tokens": n,
                "temperature": 0.0,
                "top_k": 1,
                "top_p": 1.0,
                "min_p": 0.0,
                "typical_p": 1.0,
                "repeat_penalty": 1.0,
                "presence_penalty": 0.0,
                "frequency_penalty": 0.0,
                "dry_multiplier": 0.0,
                "xtc_probability": 0.0,
                "mirostat": 0,
                "cache_prompt": false,
                "stream": false,
                "seed": seed,
            }),
            (chat, ServerKind::Vllm) => {
                let mut v = json!({
                    "model": model,
                    "max_tokens": n,
                    "temperature": 0.0,
                    "top_p": 1.0,
                    "top_k": -1,
                    "min_p": 0.0,
                    "repetition_penalty": 1.0,
                    "presence_penalty": 0.0,
                    "frequency_penalty": 0.0,
                    "n": 1,
                    "stream": false,
                    "seed": seed,
                    // The chat template holds its own BOS; a raw prompt gets the tokenizer's.
                    "add_special_tokens": !chat,
                    "skip_special_tokens": true,
                    "return_token_ids": true,
                });
                if self.vllm_legacy_ids && !chat {
                    v["logprobs"] = json!(1);
                    v["return_tokens_as_token_ids"] = json!(true);
                }
                v
            }
            (false, ServerKind::Tgi) => json!({
                "parameters": {
                    "max_new_tokens": n,
                    "do_sample": false,
                    "details": true,
                    "return_full_text": false,
                    "seed": seed,
                }
            }),
            // TGI's chat route maps `presence_penalty` to a repetition penalty of x + 2 and
            // `temperature: 0` to greedy: send neither penalty.
            (true, ServerKind::Tgi) => json!({
                "model": model,
                "max_tokens": n,
                "temperature": 0.0,
                "stream": false,
                "seed": seed,
            }),
            (_, ServerKind::OpenAi | ServerKind::Auto) => json!({
                "model": model,
                "max_tokens": n,
                "temperature": 0.0,
                "top_p": 1.0,
                "presence_penalty": 0.0,
                "frequency_penalty": 0.0,
                "n": 1,
                "stream": false,
                "seed": seed,
            }),
        };
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The request body for one prompt.
    pub fn body(&self, knobs: &Map<String, Value>, prompt: &str) -> Value {
        let mut m = knobs.clone();
        let (key, value) = match (self.chat, self.kind) {
            (true, _) => ("messages", json!([{ "role": "user", "content": prompt }])),
            (false, ServerKind::Tgi) => ("inputs", json!(prompt)),
            (false, _) => ("prompt", json!(prompt)),
        };
        m.insert(key.to_string(), value);
        Value::Object(m)
    }

    /// Reads one response.
    ///
    /// # Errors
    /// A message naming the missing or mistyped field, or the unknown finish reason.
    pub fn parse(&self, v: &Value) -> Result<Parsed, String> {
        if !v.is_object() {
            return Err(format!("expected a JSON object, got {}", kind_of(v)));
        }
        match (self.chat, self.kind) {
            (false, ServerKind::LlamaCpp) => parse_llamacpp(v),
            (false, ServerKind::Tgi) => parse_tgi(v),
            (chat, kind) => parse_openai(v, chat, kind),
        }
    }
}

fn parse_llamacpp(v: &Value) -> Result<Parsed, String> {
    let text = str_at(v, &["content"])?;
    let stop = str_at(v, &["stop_type"])?;
    let mut notes = Vec::new();
    let finish_reason = match stop {
        "eos" => FinishReason::Eos,
        "limit" => FinishReason::Length,
        "word" => {
            let word = v.get("stopping_word").and_then(Value::as_str).unwrap_or("");
            notes.push(Note::StopString(word.to_string()));
            FinishReason::Eos
        }
        other => {
            return Err(format!(
                "`stop_type` is `{other}`, not `eos`, `limit` or `word`"
            ));
        }
    };
    // `tokens` is always present (empty unless `return_tokens`) on servers that know the
    // flag; a server that stopped on EOS or the limit produced at least one token.
    let token_ids = match v.get("tokens") {
        None | Some(Value::Null) => None,
        Some(t) => Some(ids(t, "tokens")?).filter(|t: &Vec<u32>| !t.is_empty()),
    };
    if token_ids.is_none() {
        notes.push(Note::NoTokenIds);
    }
    Ok(Parsed {
        text: text.trim().to_string(),
        token_ids,
        finish_reason,
        notes,
    })
}

fn parse_tgi(v: &Value) -> Result<Parsed, String> {
    let text = str_at(v, &["generated_text"])?;
    let details = v
        .get("details")
        .filter(|d| d.is_object())
        .ok_or("missing object `details` (was `details: true` ignored?)")?;
    let mut notes = Vec::new();
    let finish_reason = match str_at(details, &["finish_reason"])
        .map_err(|e| format!("details: {e}"))?
    {
        "eos_token" => FinishReason::Eos,
        "length" => FinishReason::Length,
        "stop_sequence" => {
            notes.push(Note::StopString(String::new()));
            FinishReason::Eos
        }
        other => {
            return Err(format!(
                "`details.finish_reason` is `{other}`, not `eos_token`, `length` or `stop_sequence`"
            ));
        }
    };
    let tokens = details
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or("missing array `details.tokens`")?;
    let token_ids = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.get("id")
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| format!("`details.tokens[{i}].id` is not a token id"))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    Ok(Parsed {
        text: text.trim().to_string(),
        token_ids: Some(token_ids),
        finish_reason,
        notes,
    })
}

fn parse_openai(v: &Value, chat: bool, kind: ServerKind) -> Result<Parsed, String> {
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("missing array `choices`")?;
    let choice = choices
        .first()
        .ok_or("`choices` is empty: no completion for the prompt")?;
    let text = if chat {
        str_at(choice, &["message", "content"]).map_err(|e| format!("choices[0]: {e}"))?
    } else {
        str_at(choice, &["text"]).map_err(|e| format!("choices[0]: {e}"))?
    };
    let finish_reason = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("stop") => FinishReason::Eos,
        Some("length") => FinishReason::Length,
        Some(other) => {
            return Err(format!(
                "`choices[0].finish_reason` is `{other}`, not `stop` or `length`"
            ));
        }
        None => return Err("missing string `choices[0].finish_reason`".into()),
    };
    let mut notes = Vec::new();
    // vLLM's stop_reason names a stop string or stop token id; null means EOS (or length).
    if finish_reason == FinishReason::Eos
        && let Some(s) = choice.get("stop_reason").filter(|s| s.is_string())
    {
        notes.push(Note::StopString(s.as_str().unwrap_or("").to_string()));
    }
    let token_ids = match kind {
        ServerKind::Vllm => match choice.get("token_ids") {
            Some(t) if !t.is_null() => Some(ids(t, "choices[0].token_ids")?),
            _ => legacy_vllm_ids(choice)?,
        },
        _ => None,
    };
    if token_ids.is_none() {
        notes.push(Note::NoTokenIds);
    }
    Ok(Parsed {
        text: text.trim().to_string(),
        token_ids,
        finish_reason,
        notes,
    })
}

/// vLLM before 0.10.2: `logprobs.tokens` as `token_id:N` strings.
fn legacy_vllm_ids(choice: &Value) -> Result<Option<Vec<u32>>, String> {
    let Some(tokens) = choice
        .get("logprobs")
        .and_then(|l| l.get("tokens"))
        .and_then(Value::as_array)
    else {
        return Ok(None);
    };
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_str()
                .and_then(|s| s.strip_prefix("token_id:"))
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| {
                    format!("`choices[0].logprobs.tokens[{i}]` is not `token_id:N` (was `return_tokens_as_token_ids` ignored?)")
                })
        })
        .collect::<Result<Vec<u32>, String>>()
        .map(Some)
}

fn ids(v: &Value, what: &str) -> Result<Vec<u32>, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| format!("`{what}` is {}, not an array of token ids", kind_of(v)))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| format!("`{what}[{i}]` is not a token id"))
        })
        .collect()
}

/// The string at a path of object keys.
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, String> {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(key)
            .ok_or_else(|| format!("missing field `{}`", path.join(".")))?;
    }
    cur.as_str()
        .ok_or_else(|| format!("`{}` is {}, not a string", path.join("."), kind_of(cur)))
}

/// `null`, `a boolean`, `a number`, `a string`, `an array` or `an object`.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a vLLM version string (`0.10.2`, `0.11.0rc1`, `0.9.1.dev12+g…`) is older than
/// 0.10.2, the first with `return_token_ids`. An unreadable version counts as new.
pub(crate) fn vllm_before_return_token_ids(version: &str) -> bool {
    let nums: Vec<u64> = version
        .split('.')
        .take(3)
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect::<Option<Vec<u64>>>()
        .unwrap_or_default();
    match nums.as_slice() {
        [major, minor, patch] => (*major, *minor, *patch) < (0, 10, 2),
        [major, minor] => (*major, *minor) < (0, 10),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_versions() {
        assert!(vllm_before_return_token_ids("0.10.1"));
        assert!(vllm_before_return_token_ids("0.9.2.dev1+gabc"));
        assert!(!vllm_before_return_token_ids("0.10.2"));
        assert!(!vllm_before_return_token_ids("0.11.0rc1"));
        assert!(!vllm_before_return_token_ids("1.0.0"));
        assert!(!vllm_before_return_token_ids("dev"));
    }

    #[test]
    fn routes() {
        let ep = EndpointUrl::parse("http://h:1/v1").unwrap();
        let d = |kind, chat| Dialect {
            kind,
            vllm_legacy_ids: false,
            chat,
        };
        assert_eq!(
            d(ServerKind::LlamaCpp, false).url(&ep),
            "http://h:1/completion"
        );
        assert_eq!(d(ServerKind::Tgi, false).url(&ep), "http://h:1/generate");
        assert_eq!(
            d(ServerKind::Vllm, false).url(&ep),
            "http://h:1/v1/completions"
        );
        assert_eq!(
            d(ServerKind::OpenAi, false).url(&ep),
            "http://h:1/v1/completions"
        );
        assert_eq!(
            d(ServerKind::Tgi, true).url(&ep),
            "http://h:1/v1/chat/completions"
        );
    }

    #[test]
    fn field_errors_name_the_field() {
        let d = Dialect {
            kind: ServerKind::Vllm,
            vllm_legacy_ids: false,
            chat: false,
        };
        let e = d
            .parse(&json!({"choices": [{"finish_reason": "stop"}]}))
            .unwrap_err();
        assert!(e.contains("missing field `text`"), "{e}");
        let e = d.parse(&json!([1])).unwrap_err();
        assert!(e.contains("an array"), "{e}");
        let e = d
            .parse(
                &json!({"choices": [{"text": "a", "finish_reason": "stop", "token_ids": [1, -2]}]}),
            )
            .unwrap_err();
        assert!(e.contains("token_ids[1]"), "{e}");
    }
}
