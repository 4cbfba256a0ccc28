//! The scorer embedded in a service (examples/scoring_service): one `Arc<HateClassifier>` shared
//! by concurrent connections, their texts batched, each reply the classifier's own score.

#[path = "../examples/scoring_service/server.rs"]
mod server;

use hate_classifier::HateClassifier;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/classifier/vocab-merges"
);

const TEXTS: [&str; 8] = [
    "You are a stupid idiot.",
    "The tiny robot walked to the market.",
    "I hate you and everyone like you.",
    "Hello world",
    "",
    "What a lovely day for a walk in the park, said nobody ever.",
    "Get lost, you worthless piece of garbage.",
    "Thanks for the help!",
];

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/1.1 request on its own connection; the status code and the JSON body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, Value), Error> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {response:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    assert_eq!(length, body.len(), "Content-Length of {body:?}");
    Ok((code, serde_json::from_str(body)?))
}

fn as_f32(v: &Value) -> f32 {
    // The service writes an f32 in its shortest form that reads back as the same f32.
    v.as_f64().expect("a number") as f32
}

/// Scores of the service and of `HateClassifier::score` agree to float noise: a text's score
/// can move in the last bits with the batch it is packed into (tests/parity.rs allows the same).
fn assert_close(got: f32, want: f32, text: &str) {
    assert!(
        (got - want).abs() < 1e-6,
        "{text:?}: service {got} vs HateClassifier::score {want}"
    );
}

#[test]
fn concurrent_requests_are_batched_and_scored_like_the_classifier() -> Result<(), Error> {
    let clf = Arc::new(HateClassifier::params().batch_size(16).load(FIXTURE)?);
    let expected: Arc<Vec<f32>> = Arc::new(
        TEXTS
            .iter()
            .map(|t| clf.score(&[t]).map(|s| s[0]))
            .collect::<Result<_, _>>()?,
    );
    let options = server::Options {
        batch_size: 16,
        max_wait: Duration::from_millis(50),
        ..server::Options::default()
    };
    let service = server::Server::start(Arc::clone(&clf), "127.0.0.1:0", options)?;
    let addr = service.addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    const THREADS: usize = 6;
    const ROUNDS: usize = 4;
    let barrier = Arc::new(Barrier::new(THREADS));
    let clients: Vec<_> = (0..THREADS)
        .map(|c| {
            let barrier = Arc::clone(&barrier);
            let (clf, expected) = (Arc::clone(&clf), Arc::clone(&expected));
            std::thread::spawn(move || -> Result<usize, Error> {
                barrier.wait();
                let mut texts_sent = 0;
                for round in 0..ROUNDS {
                    let i = (c + round) % TEXTS.len();
                    let (code, reply) = request(
                        addr,
                        "POST",
                        "/score",
                        &json!({ "text": TEXTS[i] }).to_string(),
                    )?;
                    assert_eq!(code, 200, "{reply}");
                    // The same shared classifier, used from this thread while the service runs.
                    let want = clf.score(&[TEXTS[i]])?[0];
                    let score = as_f32(&reply["score"]);
                    assert_close(score, want, TEXTS[i]);
                    assert_eq!(reply["toxic"], json!(clf.is_toxic(score)), "{reply}");
                    texts_sent += 1;

                    let pick: Vec<&str> =
                        (0..3).map(|k| TEXTS[(i + k * c) % TEXTS.len()]).collect();
                    let (code, reply) = request(
                        addr,
                        "POST",
                        "/score",
                        &json!({ "texts": pick }).to_string(),
                    )?;
                    assert_eq!(code, 200, "{reply}");
                    let scores = reply["scores"].as_array().ok_or("no scores")?;
                    let toxic = reply["toxic"].as_array().ok_or("no toxic")?;
                    assert_eq!((scores.len(), toxic.len()), (pick.len(), pick.len()));
                    for ((t, s), x) in pick.iter().zip(scores).zip(toxic) {
                        let j = TEXTS.iter().position(|u| u == t).ok_or("unknown text")?;
                        assert_close(as_f32(s), expected[j], t);
                        assert_eq!(x, &json!(clf.is_toxic(as_f32(s))));
                    }
                    texts_sent += pick.len();
                }
                Ok(texts_sent)
            })
        })
        .collect();
    let mut texts_sent = 0;
    for c in clients {
        texts_sent += c.join().map_err(|_| "a client thread panicked")??;
    }

    let stats = service.stats();
    assert_eq!(stats.requests(), THREADS * ROUNDS * 2);
    assert_eq!(stats.texts(), texts_sent);
    assert!(
        stats.multi_text_batches() > 0 && stats.largest_batch() > 3,
        "no batching across requests: {} batches, largest {}",
        stats.batches(),
        stats.largest_batch()
    );
    assert!(
        stats.batches() < THREADS * ROUNDS * 2,
        "a batch per request"
    );
    eprintln!(
        "{} requests, {} texts in {} batches (largest {})",
        stats.requests(),
        stats.texts(),
        stats.batches(),
        stats.largest_batch()
    );

    let (code, stats_json) = request(addr, "GET", "/stats", "")?;
    assert_eq!(code, 200);
    assert_eq!(stats_json["texts"], json!(texts_sent));
    let (code, health) = request(addr, "GET", "/health", "")?;
    assert_eq!((code, &health["status"]), (200, &json!("ok")));
    assert_eq!(health["scorer"]["backend"], json!("hate-classifier"));
    assert_eq!(health["scorer"]["settings"]["label"], json!(clf.label()));

    service.shutdown()?;
    // The port is closed: nothing listens any more.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    // Every thread of the service has ended and dropped its handle on the classifier.
    assert_eq!(Arc::strong_count(&clf), 1);
    Ok(())
}

#[test]
fn bad_requests_get_json_errors() -> Result<(), Error> {
    let clf = Arc::new(HateClassifier::params().load(FIXTURE)?);
    let service = server::Server::start(clf, "127.0.0.1:0", server::Options::default())?;
    let addr = service.addr();
    for (method, path, body, code) in [
        ("POST", "/score", "not json", 400),
        ("POST", "/score", r#"{"text": 3}"#, 400),
        ("POST", "/score", r#"{"texts": ["a", 1]}"#, 400),
        ("POST", "/score", r#"{"nothing": "here"}"#, 400),
        ("GET", "/score", "", 405),
        ("GET", "/nowhere", "", 404),
    ] {
        let (got, reply) = request(addr, method, path, body)?;
        assert_eq!(got, code, "{method} {path} {body}: {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }
    let (code, reply) = request(addr, "POST", "/score", r#"{"texts": []}"#)?;
    assert_eq!((code, reply), (200, json!({ "scores": [], "toxic": [] })));
    assert_eq!(service.stats().batches(), 0);
    service.shutdown()?;
    Ok(())
}

/// A stand-in scorer: the `toxic` probability is the text's length / 100 (capped at 1); a text
/// `BAD` is bad input. Slow enough that requests pile up behind a running batch.
struct LengthScorer {
    labels: Vec<String>,
}

impl engine_api::TextScorer for LengthScorer {
    fn describe(&self) -> engine_api::EngineInfo {
        engine_api::EngineInfo {
            backend: "length".into(),
            model: "none".into(),
            settings: json!({}),
        }
    }
    fn preferred_batch_size(&self) -> usize {
        4
    }
    fn labels(&self) -> &[String] {
        &self.labels
    }
    fn toxicity_rule(&self) -> engine_api::ToxicityRule {
        engine_api::ToxicityRule::new("toxic", 0.5)
    }
    fn label_probabilities(&self, texts: &[&str]) -> engine_api::Result<Vec<Vec<f32>>> {
        std::thread::sleep(Duration::from_millis(20));
        if texts.contains(&"BAD") {
            return Err(engine_api::Error::bad_input("the text BAD"));
        }
        Ok(texts
            .iter()
            .map(|t| {
                let p = (t.len() as f32 / 100.0).min(1.0);
                vec![1.0 - p, p]
            })
            .collect())
    }
}

#[test]
fn any_scorer_fits_and_a_bad_text_fails_only_its_own_request() -> Result<(), Error> {
    let scorer = Arc::new(LengthScorer {
        labels: vec!["ok".into(), "toxic".into()],
    });
    let options = server::Options {
        batch_size: 4,
        max_wait: Duration::from_millis(50),
        ..server::Options::default()
    };
    let service = server::Server::start(scorer, "127.0.0.1:0", options)?;
    let addr = service.addr();
    let barrier = Barrier::new(4);
    let long = "x".repeat(60);
    std::thread::scope(|s| -> Result<(), Error> {
        let clients: Vec<_> = ["BAD", "abc", long.as_str(), "BAD"]
            .into_iter()
            .map(|text| {
                let barrier = &barrier;
                s.spawn(move || -> Result<(), Error> {
                    barrier.wait();
                    let (code, reply) =
                        request(addr, "POST", "/score", &json!({ "text": text }).to_string())?;
                    if text == "BAD" {
                        assert_eq!(code, 400, "{reply}");
                        assert!(reply["error"].as_str().is_some_and(|e| e.contains("BAD")));
                    } else {
                        assert_eq!(code, 200, "{reply}");
                        let want = text.len() as f32 / 100.0;
                        assert_eq!(as_f32(&reply["score"]), want, "{reply}");
                        assert_eq!(reply["toxic"], json!(want >= 0.5), "{reply}");
                    }
                    Ok(())
                })
            })
            .collect();
        for c in clients {
            c.join().map_err(|_| "a client thread panicked")??;
        }
        Ok(())
    })?;
    assert!(service.stats().multi_text_batches() > 0);

    // A request bigger than the batch size goes through whole, as a batch of its own.
    let texts: Vec<String> = (1..=7).map(|n| "y".repeat(n * 10)).collect();
    let (code, reply) = request(
        addr,
        "POST",
        "/score",
        &json!({ "texts": texts }).to_string(),
    )?;
    assert_eq!(code, 200, "{reply}");
    let want: Vec<f32> = (1..=7).map(|n| n as f32 / 10.0).collect();
    let got: Vec<f32> = reply["scores"]
        .as_array()
        .ok_or("no scores")?
        .iter()
        .map(as_f32)
        .collect();
    assert_eq!(got, want);
    // Shortest f32 form on the wire.
    assert_eq!(reply["scores"][0].to_string(), "0.1");
    assert_eq!(
        reply["toxic"],
        json!(want.iter().map(|&p| p >= 0.5).collect::<Vec<_>>())
    );
    assert_eq!(service.stats().largest_batch(), 7);
    service.shutdown()?;
    Ok(())
}
