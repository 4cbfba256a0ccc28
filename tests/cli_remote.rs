//! `toxdrift generate --endpoint` and a study's `endpoint` model against a REAL llama.cpp HTTP
//! server (the `xllamacpp` wheel) serving the real Gemma-3-270M GGUF, started on 127.0.0.1 by
//! the tests and killed by pid. Needs `bash tools/remote/setup.sh` (the README's test command
//! runs it; without it these tests fail, naming that command).
//!
//! The reference is llama.cpp's own `/completion` called directly, one prompt at a time, with the
//! paper's settings (`tools/remote/direct_completion.py`), on a one-slot server so that batching
//! cannot change the numerics.

#[path = "../crates/remote-gen/tests/common/llama_server.rs"]
mod llama_server;

use crate::common;
use crate::common::toxdrift;
use llama_server::{LlamaServer, MODEL_NAME};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// The first `n` RealToxicityPrompts sample prompts as a toxdrift prompt set.
fn prompt_set(dir: &Path, n: usize) -> (std::path::PathBuf, Vec<String>) {
    let rtp = common::root().join("tests/fixtures/samples/rtp/prompts.jsonl");
    let texts: Vec<String> = std::fs::read_to_string(rtp)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["prompt"]["text"].as_str().unwrap().to_string()
        })
        .filter(|t| !t.trim().is_empty())
        .take(n)
        .collect();
    assert_eq!(texts.len(), n, "the RTP sample has {n} prompts");
    let path = dir.join("prompts.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": format!("p{i:03}"), "subset": "random", "text": t, "source": {}})
                .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, texts)
}

/// The most prompts a test here generates.
const MAX_PROMPTS: usize = 8;

/// New tokens per prompt: fewer than the paper's 50, as these tests check the client (order,
/// concurrency, replicas, failures), not the model; every run and the reference use the same.
const NEW_TOKENS: usize = 20;

/// The reference for the first `n` prompts: direct `/completion` calls, as (text, token ids,
/// finish reason). Computed once per test binary, on a one-slot server of its own (the same
/// build, model and settings as every test's server), and shared by the tests.
fn reference(n: usize) -> Vec<(String, Vec<u32>, String)> {
    static REFERENCE: std::sync::OnceLock<Vec<(String, Vec<u32>, String)>> =
        std::sync::OnceLock::new();
    assert!(n <= MAX_PROMPTS);
    let all = REFERENCE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let (_, texts) = prompt_set(tmp.path(), MAX_PROMPTS);
        let server = LlamaServer::start(1, 1).unwrap();
        server
            .direct_completions(&texts, NEW_TOKENS)
            .unwrap()
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let ids = v["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect();
                let reason = match v["stop_type"].as_str().unwrap() {
                    "eos" => "eos",
                    "limit" => "length",
                    other => panic!("unexpected stop_type {other}"),
                };
                (
                    v["text"].as_str().unwrap().trim().to_string(),
                    ids,
                    reason.to_string(),
                )
            })
            .collect()
    });
    all[..n].to_vec()
}

fn generate(
    urls: &[String],
    prompts: &Path,
    out: &Path,
    in_flight: usize,
    extra: &[&str],
) -> Output {
    let mut c = toxdrift();
    c.arg("generate");
    for u in urls {
        c.arg("--endpoint").arg(u);
    }
    c.args(["--served-model", MODEL_NAME])
        .arg("--max-new-tokens")
        .arg(NEW_TOKENS.to_string())
        .arg("--max-in-flight")
        .arg(in_flight.to_string())
        .arg("--prompts")
        .arg(prompts)
        .arg("--out")
        .arg(out)
        .args(extra);
    c.output().unwrap()
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_matches_reference(path: &Path, reference: &[(String, Vec<u32>, String)]) {
    let recs = records(path);
    assert_eq!(recs.len(), reference.len());
    for (i, (r, (text, ids, reason))) in recs.iter().zip(reference).enumerate() {
        assert_eq!(r["id"], format!("p{i:03}"), "records in prompt order");
        assert_eq!(r["model"], MODEL_NAME);
        assert_eq!(r["completion"].as_str().unwrap(), text, "prompt {i}");
        let got: Vec<u32> = r["completion_token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(&got, ids, "prompt {i}");
        assert_eq!(r["finish_reason"].as_str().unwrap(), reason, "prompt {i}");
    }
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn records_equal_direct_completion_calls_at_1_and_8_in_flight_and_over_two_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let (prompts, _) = prompt_set(tmp.path(), 8);
    let expected = reference(8);
    let a = LlamaServer::start(1, 1).unwrap();

    let one = tmp.path().join("one.jsonl");
    ok(&generate(&[a.base_url()], &prompts, &one, 1, &[]));
    assert_matches_reference(&one, &expected);

    let eight = tmp.path().join("eight.jsonl");
    ok(&generate(&[a.base_url()], &prompts, &eight, 8, &[]));
    assert_matches_reference(&eight, &expected);

    // Two one-slot servers as replicas: the same records, in prompt order.
    let b = LlamaServer::start(1, 1).unwrap();
    let two = tmp.path().join("two.jsonl");
    ok(&generate(
        &[a.base_url(), b.base_url()],
        &prompts,
        &two,
        2,
        &[],
    ));
    assert_matches_reference(&two, &expected);
}

#[test]
fn a_wrong_model_name_exits_2_listing_the_served_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (prompts, _) = prompt_set(tmp.path(), 2);
    let server = LlamaServer::start(1, 1).unwrap();
    let out = tmp.path().join("gens.jsonl");
    let o = toxdrift()
        .args(["generate", "--endpoint", &server.base_url()])
        .args(["--served-model", "no-such-model", "--prompts"])
        .arg(&prompts)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no-such-model"), "{err}");
    assert!(err.contains(MODEL_NAME), "lists the served names: {err}");
    assert!(
        std::fs::read_to_string(&out).unwrap_or_default().is_empty(),
        "nothing written"
    );
}

#[test]
fn a_server_killed_mid_run_stops_the_run_and_a_rerun_resumes_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (prompts, _) = prompt_set(tmp.path(), 8);
    let expected = reference(8);
    let mut server = LlamaServer::start(1, 1).unwrap();
    let out = tmp.path().join("gens.jsonl");

    // One request in flight: the records are appended 4 at a time (a few of the endpoint's
    // in-flight capacity); each append then stalls.
    let child = toxdrift()
        .env("TOXDRIFT_TEST_STALL_MS", "400")
        .args(["generate", "--endpoint", &server.base_url()])
        .args(["--served-model", MODEL_NAME, "--max-in-flight", "1"])
        .args(["--max-new-tokens", &NEW_TOKENS.to_string()])
        .args(["--retry-budget", "3", "--prompts"])
        .arg(&prompts)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&out)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 4
    {
        assert!(t0.elapsed().as_secs() < 120, "no records appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a dead server is not bad input: {err}"
    );
    assert!(
        err.contains(&server.root_url()) || err.contains(&server.base_url()),
        "names the endpoint: {err}"
    );
    let kept = records(&out).len();
    assert!((4..8).contains(&kept), "{kept} records kept");

    server.restart().unwrap();
    ok(&generate(&[server.base_url()], &prompts, &out, 1, &[]));
    assert_matches_reference(&out, &expected);
}

#[test]
fn a_study_model_behind_an_endpoint_runs_and_its_manifest_names_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LlamaServer::start(1, 1).unwrap();
    let root = common::root();
    let study = tmp.path().join("study.toml");
    std::fs::write(
        &study,
        format!(
            r#"
name = "remote"
[prompts]
rtp = {{ path = "{root}/tests/fixtures/samples/rtp/prompts.jsonl" }}
ceb = {{ path = "{root}/tests/fixtures/samples/CEB-Continuation-T" }}
random = 3
severe = 2
per_axis = 1
[classifier]
path = "{root}/tests/fixtures/classifier/vocab-merges"
[generation]
max_new_tokens = 12
dtype = "f32"
[sampler]
chains = 2
tune = 100
draws = 100
[[family]]
name = "mixed"
models = [
  {{ name = "tiny-llama", role = "base", path = "{root}/tests/fixtures/gen/llama" }},
  {{ name = "gemma-remote", role = "community", endpoint = {{ url = "{url}", served_model = "{MODEL_NAME}", max_in_flight = 2 }} }},
]
[[comparison]]
id = "c"
pairs = [["tiny-llama", "gemma-remote"]]
"#,
            root = root.display(),
            url = server.base_url(),
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    common::run_study(&study, &out);
    let unit = common::unit_dir(&out.join("units/generate"), "gemma-remote").unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(unit.join("manifest.json")).unwrap()).unwrap();
    let engine = &manifest["outputs"]["engine"];
    assert_eq!(engine["backend"], "remote:llamacpp", "{manifest}");
    assert_eq!(engine["model"], MODEL_NAME);
    assert!(
        engine["settings"].to_string().contains(&server.base_url())
            || engine["settings"].to_string().contains(&server.root_url()),
        "{engine}"
    );
    assert_eq!(
        manifest["outputs"]["records"], 9,
        "3 random + 2 severe + 4 axes x 1"
    );
    let recs = records(&unit.join("generations.jsonl"));
    assert_eq!(recs.len(), 9);
    assert!(recs.iter().all(|r| r["completion_token_ids"].is_array()));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("gemma-remote"), "{report}");
}

/// A proxy in front of a real server: the first `fail` connections get a 500 for their first
/// request (and are closed); every other connection is piped to the server as it is.
fn faulty_proxy(
    upstream: u16,
    fail: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let failed = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = failed.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { break };
            let mut head = vec![0u8; 65536];
            let Ok(n) = client.read(&mut head) else {
                continue;
            };
            head.truncate(n);
            if counter.load(Ordering::SeqCst) < fail {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"error":{"code":500,"message":"injected","type":"server_error"}}"#;
                let _ = write!(
                    client,
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            if server.write_all(&head).is_err() {
                continue;
            }
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(Shutdown::Write);
            });
        }
    });
    (port, failed)
}

#[test]
fn a_server_answering_500_for_a_while_is_retried_and_the_records_are_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (prompts, _) = prompt_set(tmp.path(), 4);
    let expected = reference(4);
    let server = LlamaServer::start(1, 1).unwrap();
    let (port, failed) = faulty_proxy(server.port(), 3);
    let out = tmp.path().join("gens.jsonl");
    ok(&generate(
        &[format!("http://127.0.0.1:{port}/v1")],
        &prompts,
        &out,
        1,
        &[],
    ));
    assert_eq!(
        failed.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "three 500s were served"
    );
    assert_matches_reference(&out, &expected);
}
