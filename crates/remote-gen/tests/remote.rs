//! remote-gen against a real HTTP server on 127.0.0.1 that replays recorded responses:
//! request and response shapes per server kind, kind detection, the model check, retries,
//! failures, order and spread over replicas.

mod common;

use common::{MockServer, Reply, Request, data, data_json, dead_port};
use engine_api::{FinishReason, TextGenerator};
use remote_gen::{Error, RemoteGenerator, RemoteParams, ServerKind};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const LLAMACPP_MODEL: &str = "gemma-3-270m";
const VLLM_MODEL: &str = "meta-llama/Llama-3.1-8B";
const TGI_MODEL: &str = "mistralai/Mistral-7B-v0.1";
const OPENAI_MODEL: &str = "gpt-3.5-turbo-instruct";

/// A server of `kind` answering its discovery routes from `tests/data/<kind>/` and its
/// generation route with `generate`.
fn server(
    kind: &'static str,
    generate: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> MockServer {
    MockServer::start(move |r| match (kind, r.method.as_str(), r.path.as_str()) {
        ("llamacpp", "GET", "/props") => Reply::ok(data("llamacpp/props.json")),
        ("vllm", "GET", "/version") => Reply::ok(data("vllm/version.json")),
        ("tgi", "GET", "/info") => Reply::ok(data("tgi/info.json")),
        (_, "GET", "/v1/models") => Reply::ok(data(&format!("{kind}/v1_models.json"))),
        ("llamacpp", "POST", "/completion")
        | ("tgi", "POST", "/generate")
        | ("vllm" | "openai", "POST", "/v1/completions")
        | (_, "POST", "/v1/chat/completions") => generate(r),
        _ => Reply::not_found(),
    })
}

fn params(s: &MockServer, model: &str) -> RemoteParams {
    RemoteParams::new()
        .endpoint(s.base())
        .served_model(model)
        .initial_backoff(Duration::from_millis(10))
        .retry_budget(Duration::from_secs(5))
}

fn complete(
    g: &RemoteGenerator,
    prompts: &[&str],
) -> engine_api::Result<Vec<engine_api::Completion>> {
    let mut done = 0;
    let out = g.complete(prompts, &mut |n| done += n);
    if out.is_ok() {
        assert_eq!(done, prompts.len(), "progress adds up to the prompts");
    }
    out
}

fn completion_requests(s: &MockServer) -> Vec<Request> {
    s.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

fn remote_error(e: engine_api::Error) -> Error {
    *e.into_inner()
        .downcast::<Error>()
        .expect("a remote-gen error")
}

// ---------------------------------------------------------------- llama.cpp (recorded live)

/// The recorded `/completion` reply for a recorded prompt (`requests.json` holds the requests
/// behind each recorded reply).
fn llamacpp_replay(r: &Request) -> Reply {
    let requests = data_json("llamacpp/requests.json");
    let prompt = r.prompt();
    for name in [
        "completion_limit_0",
        "completion_limit_1",
        "completion_limit_2",
    ] {
        if requests[name]["body"]["prompt"] == prompt.as_str() {
            return Reply::ok(data(&format!("llamacpp/{name}.json")));
        }
    }
    Reply::ok(data("llamacpp/completion_eos.json"))
}

#[test]
fn llamacpp_native_completion_with_token_ids() {
    let s = server("llamacpp", llamacpp_replay);
    let g = RemoteGenerator::connect(params(&s, LLAMACPP_MODEL)).unwrap();
    let info = &g.endpoints()[0];
    assert_eq!(info.kind, ServerKind::LlamaCpp);
    assert_eq!(info.version.as_deref(), Some("b0-unknown"));
    assert_eq!(info.served_models, [LLAMACPP_MODEL]);
    // Detection stopped at /props: no /info or /version asked.
    assert_eq!(s.paths(), ["/props", "/v1/models"]);

    let requests = data_json("llamacpp/requests.json");
    let recorded: Vec<String> = (0..3)
        .map(|i| {
            requests[format!("completion_limit_{i}")]["body"]["prompt"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let prompts: Vec<&str> = recorded
        .iter()
        .map(String::as_str)
        .chain(["any other prompt"])
        .collect();
    let out = complete(&g, &prompts).unwrap();
    for (i, c) in out.iter().enumerate().take(3) {
        let rec = data_json(&format!("llamacpp/completion_limit_{i}.json"));
        assert_eq!(
            c.text,
            rec["content"].as_str().unwrap().trim(),
            "trimmed as gen-engine"
        );
        let ids: Vec<u32> = serde_json::from_value(rec["tokens"].clone()).unwrap();
        assert_eq!(c.token_ids.as_deref(), Some(&ids[..]));
        assert_eq!(ids.len(), 50);
        assert_eq!(c.finish_reason, FinishReason::Length);
    }
    // Stopped on EOS: the EOS id (1) is the last id, as gen-engine records it.
    assert_eq!(out[3].finish_reason, FinishReason::Eos);
    assert_eq!(out[3].token_ids.as_ref().unwrap().last(), Some(&1));
    assert!(out[3].text.starts_with("The club was formed"));

    // The request: the paper's settings, every sampler knob neutral, no prompt cache.
    for r in completion_requests(&s) {
        assert_eq!(r.path, "/completion");
        let b = r.json();
        for (k, v) in [
            ("n_predict", json!(50)),
            ("temperature", json!(0.0)),
            ("top_k", json!(1)),
            ("top_p", json!(1.0)),
            ("min_p", json!(0.0)),
            ("typical_p", json!(1.0)),
            ("repeat_penalty", json!(1.0)),
            ("presence_penalty", json!(0.0)),
            ("frequency_penalty", json!(0.0)),
            ("dry_multiplier", json!(0.0)),
            ("xtc_probability", json!(0.0)),
            ("mirostat", json!(0)),
            ("cache_prompt", json!(false)),
            ("return_tokens", json!(true)),
            ("stream", json!(false)),
            ("seed", json!(0)),
        ] {
            assert_eq!(b[k], v, "{k}");
        }
        // The recorded requests carried the same decoding settings.
        let rec = &requests["completion_limit_0"]["body"];
        for (k, v) in rec.as_object().unwrap() {
            if k != "prompt" {
                assert_eq!(&b[k], v, "{k} as recorded");
            }
        }
        assert!(b.get("model").is_none() && b.get("stop").is_none());
    }

    let d = g.describe();
    assert_eq!(d.backend, "remote:llamacpp");
    assert_eq!(d.model, LLAMACPP_MODEL);
    let ep = &d.settings["endpoints"][0];
    assert_eq!(ep["kind"], "llamacpp");
    assert_eq!(ep["version"], "b0-unknown");
    assert_eq!(ep["route"], "/completion");
    assert_eq!(ep["token_ids"], true);
    assert_eq!(ep["request"]["cache_prompt"], false);
    assert!(ep["request"].get("prompt").is_none());
    assert_eq!(d.settings["max_new_tokens"], 50);
    assert_eq!(d.settings["seed"], 0);
    assert_eq!(d.settings["warnings"], json!([]));
}

#[test]
fn llamacpp_eos_on_the_first_token_is_an_empty_text() {
    let s = server("llamacpp", |_| {
        Reply::ok(data("llamacpp/completion_eos_first_token.json"))
    });
    let g = RemoteGenerator::connect(params(&s, LLAMACPP_MODEL)).unwrap();
    let out = complete(&g, &["x"]).unwrap();
    assert_eq!(out[0].text, "");
    assert_eq!(out[0].token_ids, Some(vec![1]));
    assert_eq!(out[0].finish_reason, FinishReason::Eos);
}

#[test]
fn llamacpp_stop_word_is_eos_with_one_warning() {
    let s = server("llamacpp", |_| {
        let mut v = data_json("llamacpp/completion_eos.json");
        v["stop_type"] = json!("word");
        v["stopping_word"] = json!("\n\n");
        Reply::value(&v)
    });
    let g = RemoteGenerator::connect(params(&s, LLAMACPP_MODEL)).unwrap();
    let out = complete(&g, &["a", "b", "c"]).unwrap();
    assert!(out.iter().all(|c| c.finish_reason == FinishReason::Eos));
    let w = g.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("stop string"), "{w:?}");
}

#[test]
fn llamacpp_refusal_is_bad_input_naming_endpoint_and_prompt() {
    let s = server("llamacpp", |_| {
        Reply::json(400, data("llamacpp/error_400_missing_prompt.json"))
    });
    let g = RemoteGenerator::connect(params(&s, LLAMACPP_MODEL)).unwrap();
    let e = complete(&g, &["first", "second prompt"]).unwrap_err();
    assert!(e.is_bad_input());
    let e = remote_error(e);
    assert!(matches!(e, Error::Rejected { status: 400, .. }), "{e}");
    assert_eq!(e.endpoint(), Some(s.base().as_str()));
    assert_eq!(e.prompt().unwrap().index, 0);
    let msg = e.to_string();
    assert!(
        msg.contains(&s.base()) && msg.contains("prompt 0 (\"first\")"),
        "{msg}"
    );
    assert!(msg.contains("key 'prompt' not found"), "{msg}");
}

// ---------------------------------------------------------------- vLLM (shapes from its schema)

#[test]
fn vllm_completions_with_return_token_ids() {
    let s = server("vllm", |r| {
        if r.prompt().starts_with("long") {
            Reply::ok(data("vllm/v1_completions_length.json"))
        } else {
            Reply::ok(data("vllm/v1_completions_stop.json"))
        }
    });
    let g = RemoteGenerator::connect(params(&s, VLLM_MODEL)).unwrap();
    assert_eq!(g.endpoints()[0].kind, ServerKind::Vllm);
    assert_eq!(g.endpoints()[0].version.as_deref(), Some("0.11.0"));
    assert_eq!(s.paths(), ["/props", "/info", "/version", "/v1/models"]);

    let out = complete(&g, &["The weather today is", "long one"]).unwrap();
    assert_eq!(out[0].text, "a beautiful day in the neighborhood.");
    assert_eq!(
        out[0].token_ids,
        Some(vec![264, 6366, 1938, 304, 279, 12818, 13, 128001])
    );
    assert_eq!(out[0].finish_reason, FinishReason::Eos);
    assert_eq!(out[1].finish_reason, FinishReason::Length);
    assert_eq!(out[1].text, "is a good man, and he");

    let r = &completion_requests(&s)[0];
    assert_eq!(r.path, "/v1/completions");
    let b = r.json();
    let expected = json!({
        "model": VLLM_MODEL, "prompt": r.prompt(), "max_tokens": 50,
        "temperature": 0.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0,
        "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "n": 1, "stream": false, "seed": 0,
        "add_special_tokens": true, "skip_special_tokens": true, "return_token_ids": true,
    });
    assert_eq!(b, expected);
    assert_eq!(g.describe().backend, "remote:vllm");
    assert!(g.warnings().is_empty());
}

#[test]
fn vllm_before_0_10_2_gets_ids_through_logprobs() {
    let s = MockServer::start(|r| match r.path.as_str() {
        "/version" => Reply::ok(r#"{"version":"0.9.2"}"#),
        "/v1/models" => Reply::ok(data("vllm/v1_models.json")),
        "/v1/completions" => Reply::ok(data("vllm/v1_completions_legacy_logprobs.json")),
        _ => Reply::not_found(),
    });
    let g = RemoteGenerator::connect(params(&s, VLLM_MODEL)).unwrap();
    let out = complete(&g, &["The weather today is"]).unwrap();
    assert_eq!(out[0].token_ids, Some(vec![264, 6366, 1938]));
    assert_eq!(out[0].finish_reason, FinishReason::Length);
    let b = completion_requests(&s)[0].json();
    assert_eq!(b["logprobs"], 1);
    assert_eq!(b["return_tokens_as_token_ids"], true);
}

#[test]
fn vllm_chat_template_goes_through_the_chat_route() {
    let s = server("vllm", |_| Reply::ok(data("vllm/v1_chat_completions.json")));
    let g = RemoteGenerator::connect(params(&s, VLLM_MODEL).chat_template(true)).unwrap();
    let out = complete(&g, &["Hi"]).unwrap();
    assert_eq!(out[0].text, "Hello! How can I help?");
    assert_eq!(out[0].token_ids.as_ref().unwrap().last(), Some(&128009));
    let r = &completion_requests(&s)[0];
    assert_eq!(r.path, "/v1/chat/completions");
    let b = r.json();
    assert_eq!(b["messages"], json!([{"role": "user", "content": "Hi"}]));
    assert_eq!(b["add_special_tokens"], false, "the template holds BOS");
    assert!(b.get("prompt").is_none());
}

// ---------------------------------------------------------------- TGI (shapes from its schema)

#[test]
fn tgi_generate_with_details() {
    let s = server("tgi", |_| Reply::ok(data("tgi/generate.json")));
    let g = RemoteGenerator::connect(params(&s, TGI_MODEL)).unwrap();
    assert_eq!(g.endpoints()[0].kind, ServerKind::Tgi);
    assert_eq!(g.endpoints()[0].version.as_deref(), Some("3.3.4"));
    let out = complete(&g, &["I live in"]).unwrap();
    assert_eq!(out[0].text, "a small town in the north of England.");
    assert_eq!(
        out[0].token_ids,
        Some(vec![264, 1741, 3878, 297, 272, 3687, 302, 4985, 28723, 2])
    );
    assert_eq!(out[0].finish_reason, FinishReason::Eos);
    let r = &completion_requests(&s)[0];
    assert_eq!(r.path, "/generate");
    // No temperature (it switches sampling on) and no top_p/top_k (TGI refuses neutral ones).
    assert_eq!(
        r.json(),
        json!({"inputs": "I live in", "parameters": {
            "max_new_tokens": 50, "do_sample": false, "details": true,
            "return_full_text": false, "seed": 0}})
    );
    assert_eq!(g.describe().backend, "remote:tgi");
}

#[test]
fn tgi_length_and_missing_details() {
    let s = server("tgi", |r| {
        let mut v = data_json("tgi/generate.json");
        if r.prompt() == "no details" {
            v.as_object_mut().unwrap().remove("details");
        } else {
            v["details"]["finish_reason"] = json!("length");
        }
        Reply::value(&v)
    });
    let g = RemoteGenerator::connect(params(&s, TGI_MODEL)).unwrap();
    assert_eq!(
        complete(&g, &["x"]).unwrap()[0].finish_reason,
        FinishReason::Length
    );
    let e = remote_error(complete(&g, &["x", "no details"]).unwrap_err());
    assert!(matches!(e, Error::BadResponse { .. }), "{e}");
    assert_eq!(e.prompt().unwrap().index, 1);
    assert!(e.to_string().contains("details"), "{e}");
}

// ---------------------------------------------------------------- plain OpenAI

#[test]
fn plain_openai_has_no_ids_and_warns_once() {
    let s = server("openai", |_| Reply::ok(data("openai/v1_completions.json")));
    let g = RemoteGenerator::connect(params(&s, OPENAI_MODEL).api_key(Some("sk-test-123".into())))
        .unwrap();
    assert_eq!(g.endpoints()[0].kind, ServerKind::OpenAi);
    assert_eq!(g.endpoints()[0].version, None);
    let out = complete(&g, &["a", "b", "c", "d", "e"]).unwrap();
    assert!(out.iter().all(|c| c.token_ids.is_none()));
    assert_eq!(out[0].text, "This is a test.");
    assert_eq!(out[0].finish_reason, FinishReason::Length);
    assert_eq!(g.warnings().len(), 1, "{:?}", g.warnings());
    assert!(g.warnings()[0].contains("no token ids"));
    let d = g.describe();
    assert_eq!(d.settings["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(d.settings["endpoints"][0]["token_ids"], false);

    let b = completion_requests(&s)
        .into_iter()
        .find(|r| r.prompt() == "a")
        .unwrap()
        .json();
    assert_eq!(
        b,
        json!({"model": OPENAI_MODEL, "prompt": "a", "max_tokens": 50, "temperature": 0.0,
               "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "n": 1,
               "stream": false, "seed": 0})
    );
    // The key went to every request as a bearer token, and is shown nowhere.
    assert!(
        s.requests()
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer sk-test-123"))
    );
    assert!(!d.settings.to_string().contains("sk-test-123"));
    assert_eq!(d.settings["api_key"], true);
    assert!(!format!("{g:?}").contains("sk-test-123"));
}

// ---------------------------------------------------------------- connect

#[test]
fn explicit_kind_skips_detection() {
    let s = server("vllm", |_| Reply::ok(data("vllm/v1_completions_stop.json")));
    let g = RemoteGenerator::connect(params(&s, VLLM_MODEL).server_kind(ServerKind::Vllm)).unwrap();
    assert_eq!(s.paths(), ["/version", "/v1/models"]);
    assert_eq!(g.endpoints()[0].version.as_deref(), Some("0.11.0"));
    // Given as plain OpenAI, a vLLM server gets the plain request and yields no ids.
    let g =
        RemoteGenerator::connect(params(&s, VLLM_MODEL).server_kind(ServerKind::OpenAi)).unwrap();
    let out = complete(&g, &["x"]).unwrap();
    assert_eq!(out[0].token_ids, None);
    assert!(
        completion_requests(&s)
            .last()
            .unwrap()
            .json()
            .get("return_token_ids")
            .is_none()
    );
}

#[test]
fn wrong_model_name_is_bad_input_listing_the_served_names() {
    let s = server("llamacpp", llamacpp_replay);
    let e = RemoteGenerator::connect(params(&s, "gemma-3-1b")).unwrap_err();
    assert!(e.is_bad_input());
    let Error::UnknownModel {
        ref served,
        ref model,
        ref endpoint,
    } = e
    else {
        panic!("{e}")
    };
    assert_eq!(
        (served.as_slice(), model.as_str()),
        (&[LLAMACPP_MODEL.to_string()][..], "gemma-3-1b")
    );
    assert_eq!(endpoint, &s.base());
    assert!(e.to_string().contains("it serves: gemma-3-270m"), "{e}");
    assert_eq!(completion_requests(&s).len(), 0, "nothing generated");
    // Across the seam, still bad input (exit code 2).
    assert!(engine_api::Error::from(e).is_bad_input());
}

#[test]
fn a_dead_port_fails_within_the_retry_budget_naming_the_endpoint() {
    let url = format!("http://127.0.0.1:{}/v1", dead_port());
    let t = Instant::now();
    let e = RemoteGenerator::connect(
        RemoteParams::new()
            .endpoint(&url)
            .served_model("m")
            .initial_backoff(Duration::from_millis(50))
            .retry_budget(Duration::from_millis(800)),
    )
    .unwrap_err();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let Error::Unavailable {
        attempts,
        ref endpoint,
        ..
    } = e
    else {
        panic!("{e}")
    };
    assert!(attempts >= 3, "{attempts}");
    assert_eq!(endpoint, &url);
    assert!(
        !e.is_bad_input(),
        "a server that stays down is not the user's input"
    );
    assert!(!engine_api::Error::from(e).is_bad_input());
}

#[test]
fn urls_that_are_not_openai_servers_are_typed_bad_input() {
    // Not HTTP at all.
    let s = MockServer::start(|_| Reply::raw(b"SSH-2.0-OpenSSH_9.6\r\n"));
    let e = RemoteGenerator::connect(params(&s, "m")).unwrap_err();
    assert!(
        matches!(e, Error::NotAServer { .. }) && e.is_bad_input(),
        "{e}"
    );
    assert!(e.to_string().contains(&s.base()), "{e}");
    // HTTP, but a web page for every path.
    let s = MockServer::start(|_| Reply::html(200, "<html><body>Welcome</body></html>"));
    let e = RemoteGenerator::connect(params(&s, "m")).unwrap_err();
    assert!(
        matches!(e, Error::NotAServer { .. }) && e.is_bad_input(),
        "{e}"
    );
    assert!(e.to_string().contains("not JSON"), "{e}");
    // JSON, but no model list.
    let s = MockServer::start(|_| Reply::not_found());
    let e = RemoteGenerator::connect(params(&s, "m")).unwrap_err();
    assert!(matches!(e, Error::NotAServer { .. }), "{e}");
    assert!(
        e.to_string().contains("/v1/models") && e.to_string().contains("404"),
        "{e}"
    );
    let s = MockServer::start(|_| Reply::ok(r#"{"models": []}"#));
    let e = RemoteGenerator::connect(params(&s, "m")).unwrap_err();
    assert!(e.to_string().contains("no `data` array"), "{e}");
}

#[test]
fn invalid_settings_fail_before_any_request() {
    for (p, name) in [
        (RemoteParams::new().served_model("m"), "endpoints"),
        (
            RemoteParams::new()
                .endpoint("localhost:8000")
                .served_model("m"),
            "endpoints",
        ),
        (
            RemoteParams::new()
                .endpoint("http://h/v1")
                .endpoint("http://h/v1/")
                .served_model("m"),
            "endpoints",
        ),
        (RemoteParams::new().endpoint("http://h/v1"), "served_model"),
        (
            RemoteParams::new()
                .endpoint("http://h/v1")
                .served_model("m")
                .max_in_flight(0),
            "max_in_flight",
        ),
        (
            RemoteParams::new()
                .endpoint("http://h/v1")
                .served_model("m")
                .max_new_tokens(0),
            "max_new_tokens",
        ),
        (
            RemoteParams::new()
                .endpoint("http://h/v1")
                .served_model("m")
                .request_timeout(Duration::ZERO),
            "request_timeout",
        ),
        (
            RemoteParams::new()
                .endpoint("http://h/v1")
                .served_model("m")
                .api_key(Some("a\nb".into())),
            "api_key",
        ),
        (
            RemoteParams::new()
                .endpoint("http://h/v1")
                .served_model("m")
                .seed(u32::MAX),
            "seed",
        ),
    ] {
        let e = RemoteGenerator::connect(p).unwrap_err();
        assert!(
            matches!(e, Error::InvalidParam { name: n, .. } if n == name),
            "{name}: {e}"
        );
        assert!(e.is_bad_input());
    }
    let e = RemoteParams::new()
        .endpoint("http://h/v1")
        .served_model("m")
        .api_key(Some("sk-\u{7}secret".into()))
        .check()
        .unwrap_err();
    assert!(!e.to_string().contains("secret"), "{e}");
    assert!("nope".parse::<ServerKind>().is_err());
    assert_eq!("TGI".parse::<ServerKind>().unwrap(), ServerKind::Tgi);
}

// ---------------------------------------------------------------- retries

#[test]
fn a_server_answering_500_for_a_while_recovers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let s = server("llamacpp", move |r| {
        if c.fetch_add(1, Ordering::SeqCst) < 3 {
            Reply::json(
                500,
                r#"{"error":{"code":500,"message":"slot unavailable"}}"#,
            )
        } else {
            llamacpp_replay(r)
        }
    });
    let g = RemoteGenerator::connect(params(&s, LLAMACPP_MODEL)).unwrap();
    let out = complete(&g, &["x"]).unwrap();
    assert_eq!(out[0].finish_reason, FinishReason::Eos);
    assert_eq!(s.count("/completion"), 4, "three 500s, then the answer");
}

#[test]
fn a_429_is_retried_with_growing_delays_and_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let s = server("llamacpp", move |r| {
        match c.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::json(429, r#"{"error":"busy"}"#),
            1 => Reply::json(429, r#"{"error":"busy"}"#),
            2 => Reply::json(429, r#"{"error":"busy"}"#).header("Retry-After", "1"),
            _ => llamacpp_replay(r),
        }
    });
    let g = RemoteGenerator::connect(
        params(&s, LLAMACPP_MODEL).initial_backoff(Duration::from_millis(200)),
    )
    .unwrap();
    complete(&g, &["x"]).unwrap();
    let at: Vec<Instant> = completion_requests(&s).iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 4);
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Backoff 200 ms then 400 ms, each times a jitter in [0.5, 1); then Retry-After: 1 s.
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(1000), "{gaps:?}");
}

#[test]
fn a_server_that_stays_down_mid_run_ends_with_an_internal_error_naming_the_prompt() {
    let s = server("llamacpp", |_| {
        Reply::json(503, r#"{"error":"loading model"}"#)
    });
    let g = RemoteGenerator::connect(
        params(&s, LLAMACPP_MODEL).retry_budget(Duration::from_millis(300)),
    )
    .unwrap();
    let t = Instant::now();
    let e = complete(
        &g,
        &["The quick brown fox jumps over the lazy dog again and again"],
    )
    .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(!e.is_bad_input());
    let e = remote_error(e);
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("prompt 0 (\"The quick brown fox jumps over the lazy …\")"),
        "{msg}"
    );
    assert!(msg.contains("HTTP 503") && msg.contains(&s.base()), "{msg}");
}

// ---------------------------------------------------------------- malformed responses

#[test]
fn malformed_responses_are_typed_errors_naming_endpoint_and_prompt() {
    let s = server("vllm", |r| match r.prompt().as_str() {
        "html" => Reply::html(200, "<html>oops</html>"),
        "no text" => Reply::ok(r#"{"choices":[{"index":0,"finish_reason":"stop"}]}"#),
        "no choices" => Reply::ok(r#"{"id":"x","choices":[]}"#),
        "not utf8" => Reply::ok(b"{\"choices\":[{\"text\":\"\xff\xfe\"}]}".to_vec()),
        "bad reason" => Reply::ok(
            r#"{"choices":[{"index":0,"text":"x","finish_reason":"abort","token_ids":[1]}]}"#,
        ),
        "bad ids" => Reply::ok(
            r#"{"choices":[{"index":0,"text":"x","finish_reason":"stop","token_ids":"1,2"}]}"#,
        ),
        _ => Reply::ok(data("vllm/v1_completions_stop.json")),
    });
    let g = RemoteGenerator::connect(params(&s, VLLM_MODEL)).unwrap();
    for (bad, expect) in [
        ("html", "not JSON"),
        ("no text", "missing field `text`"),
        ("no choices", "`choices` is empty"),
        ("not utf8", "not UTF-8"),
        ("bad reason", "`abort`"),
        ("bad ids", "token_ids"),
    ] {
        let e = complete(&g, &["fine", bad, "fine too"]).unwrap_err();
        assert!(e.is_bad_input(), "{bad}");
        let e = remote_error(e);
        assert!(matches!(e, Error::BadResponse { .. }), "{bad}: {e}");
        assert_eq!(e.prompt().map(|p| p.index), Some(1), "{bad}");
        let msg = e.to_string();
        assert!(
            msg.contains(expect) && msg.contains(&s.base()),
            "{bad}: {msg}"
        );
        assert!(msg.contains(&format!("prompt 1 ({bad:?})")), "{bad}: {msg}");
    }
}

// ---------------------------------------------------------------- concurrency

/// A vLLM-shaped server whose completion echoes the prompt after a delay that varies by prompt.
fn echo_server(delay_ms: fn(usize) -> u64) -> MockServer {
    server("vllm", move |r| {
        let p = r.prompt();
        let i: usize = p.trim_start_matches("prompt ").parse().unwrap();
        let v = json!({"choices": [{"index": 0, "text": format!(" echo {p} "), "finish_reason": "length",
                       "stop_reason": null, "token_ids": [i as u32, 7]}]});
        Reply::value(&v).after(Duration::from_millis(delay_ms(i)))
    })
}

#[test]
fn order_is_kept_with_eight_in_flight_over_two_endpoints() {
    let a = echo_server(|i| (i * 37 % 11) as u64 * 3);
    let b = echo_server(|i| (i * 13 % 7) as u64 * 4);
    let g = RemoteGenerator::connect(
        RemoteParams::new()
            .endpoints([a.base(), b.base()])
            .served_model(VLLM_MODEL)
            .max_in_flight(4),
    )
    .unwrap();
    assert_eq!(g.preferred_batch_size(), 2 * 4);
    let prompts: Vec<String> = (0..96).map(|i| format!("prompt {i}")).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let mut calls = 0;
    let out = g
        .complete(&refs, &mut |n| {
            assert_eq!(n, 1);
            calls += 1
        })
        .unwrap();
    assert_eq!(calls, 96);
    for (i, c) in out.iter().enumerate() {
        assert_eq!(c.text, format!("echo prompt {i}"));
        assert_eq!(c.token_ids, Some(vec![i as u32, 7]));
    }
    // Each server saw at most its share of requests in flight, and was kept busy.
    for s in [&a, &b] {
        assert!(s.max_in_flight() <= 4, "{}", s.max_in_flight());
        assert!(s.max_in_flight() >= 3, "{}", s.max_in_flight());
    }
    let d = g.describe();
    assert_eq!(d.settings["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(d.settings["max_in_flight"], 4);
}

#[test]
fn prompts_are_spread_evenly_over_replicas() {
    let servers: Vec<MockServer> = (0..3).map(|_| echo_server(|_| 5)).collect();
    let g = RemoteGenerator::connect(
        RemoteParams::new()
            .endpoints(servers.iter().map(MockServer::base))
            .served_model(VLLM_MODEL)
            .max_in_flight(2),
    )
    .unwrap();
    let prompts: Vec<String> = (0..60).map(|i| format!("prompt {i}")).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    complete(&g, &refs).unwrap();
    let counts: Vec<usize> = servers.iter().map(|s| s.count("/v1/completions")).collect();
    assert_eq!(counts.iter().sum::<usize>(), 60);
    assert!(counts.iter().all(|&c| (17..=23).contains(&c)), "{counts:?}");
}

#[test]
fn a_slow_replica_hands_its_queue_to_a_fast_one() {
    let slow = echo_server(|_| 80);
    let fast = echo_server(|_| 1);
    let g = RemoteGenerator::connect(
        RemoteParams::new()
            .endpoints([slow.base(), fast.base()])
            .served_model(VLLM_MODEL)
            .max_in_flight(1),
    )
    .unwrap();
    let prompts: Vec<String> = (0..20).map(|i| format!("prompt {i}")).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let out = complete(&g, &refs).unwrap();
    assert_eq!(out[19].text, "echo prompt 19");
    assert!(
        slow.count("/v1/completions") < 10,
        "{}",
        slow.count("/v1/completions")
    );
}

#[test]
fn one_failure_stops_new_requests_and_nothing_is_returned() {
    let s = server("vllm", |r| {
        if r.prompt() == "prompt 3" {
            Reply::ok(r#"{"choices":[]}"#)
        } else {
            Reply::ok(data("vllm/v1_completions_stop.json")).after(Duration::from_millis(5))
        }
    });
    let g = RemoteGenerator::connect(params(&s, VLLM_MODEL).max_in_flight(2)).unwrap();
    let prompts: Vec<String> = (0..200).map(|i| format!("prompt {i}")).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let e = remote_error(g.complete(&refs, &mut |_| {}).unwrap_err());
    assert_eq!(e.prompt().unwrap().index, 3);
    assert!(
        s.count("/v1/completions") < 20,
        "{}",
        s.count("/v1/completions")
    );
}

#[test]
fn no_prompts_no_requests() {
    let s = server("llamacpp", llamacpp_replay);
    let g = RemoteGenerator::connect(params(&s, LLAMACPP_MODEL)).unwrap();
    let before = s.requests().len();
    assert!(complete(&g, &[]).unwrap().is_empty());
    assert_eq!(s.requests().len(), before);
}

#[test]
fn mixed_kinds_are_described_per_endpoint() {
    let a = server("llamacpp", llamacpp_replay);
    // A TGI server serving the model under the same name.
    let b = MockServer::start(|r| match r.path.as_str() {
        "/v1/models" => Reply::value(&json!({"object": "list", "data": [{"id": LLAMACPP_MODEL}]})),
        "/info" => Reply::ok(data("tgi/info.json")),
        "/generate" => Reply::ok(data("tgi/generate.json")),
        _ => Reply::not_found(),
    });
    let g = RemoteGenerator::connect(
        RemoteParams::new()
            .endpoints([a.base(), b.base()])
            .served_model(LLAMACPP_MODEL),
    )
    .unwrap();
    let d = g.describe();
    assert_eq!(d.backend, "remote:mixed");
    let kinds: Vec<&Value> = d.settings["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["kind"])
        .collect();
    assert_eq!(kinds, [&json!("llamacpp"), &json!("tgi")]);
    let out = complete(&g, &["a", "b"]).unwrap();
    assert_eq!(out[1].text, "a small town in the north of England.");
}
