//! Parity with transformers: token ids and `pipeline("text-classification", top_k=2,
//! truncation=True)` scores recorded by tools/fixtures/fx_classifier.py.

use hate_classifier::{Backend, HateClassifier};
use serde_json::Value;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/classifier"
);

fn reference() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn texts(r: &Value) -> Vec<String> {
    r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn check(name: &str, backend: Backend, batch_size: usize) {
    let r = reference();
    let texts = texts(&r);
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let m = &r["models"][name];
    let clf = HateClassifier::params()
        .backend(backend)
        .batch_size(batch_size)
        .load(format!("{FIXTURES}/{name}"))
        .unwrap();
    assert_eq!(clf.max_len(), r["max_length"].as_u64().unwrap() as usize);
    assert_eq!(clf.labels(), ["nothate", "hate"]);

    let ids = clf.encode(&refs).unwrap();
    for (i, (got, want)) in ids
        .iter()
        .zip(m["input_ids"].as_array().unwrap())
        .enumerate()
    {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, &want, "{name}: token ids of text {i} {:?}", texts[i]);
    }
    assert!(
        ids.iter().any(|i| i.len() == clf.max_len()),
        "a text is truncated"
    );

    let scores = clf.score(&refs).unwrap();
    let want: Vec<f64> = m["hate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), want.len());
    let worst = scores
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    eprintln!("{name} ({backend:?}, batch {batch_size}): worst |Δscore| vs transformers {worst:e}");
    assert!(
        worst < 1e-5,
        "{name} ({backend:?}, batch {batch_size}): worst |Δscore| {worst:e}"
    );
    assert!(want.iter().any(|&s| s >= 0.5) && want.iter().any(|&s| s < 0.5));

    let pooled = clf.embed(&refs[..4]).unwrap();
    for (got, want) in pooled.iter().zip(m["pooled"].as_array().unwrap()) {
        let want = want.as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want) {
            assert!(
                (*a as f64 - b.as_f64().unwrap()).abs() < 1e-5,
                "{name}: pooled embedding"
            );
        }
    }
}

#[test]
fn tokenizer_json_checkpoint_matches_transformers() {
    check("tok-json", Backend::Auto, 32);
}

#[test]
fn vocab_merges_checkpoint_matches_transformers() {
    check("vocab-merges", Backend::Auto, 32);
}

#[test]
fn candle_backend_matches_transformers() {
    check("tok-json", Backend::Candle, 32);
    check("vocab-merges", Backend::Candle, 5);
}

#[test]
fn one_text_per_call_and_odd_batches_give_the_same_scores() {
    let r = reference();
    let texts = texts(&r);
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let dir = format!("{FIXTURES}/vocab-merges");
    let batched = HateClassifier::params().batch_size(7).load(&dir).unwrap();
    let all = batched.score(&refs).unwrap();
    for (t, s) in refs.iter().zip(&all) {
        let one = batched.score(&[t]).unwrap()[0];
        assert!((one - s).abs() < 1e-6, "{t:?}: {one} vs {s}");
    }
    assert!(batched.score(&[]).unwrap().is_empty());
}

#[test]
fn other_labels_and_thresholds() {
    let dir = format!("{FIXTURES}/tok-json");
    let hate = HateClassifier::params().load(&dir).unwrap();
    let not = HateClassifier::params()
        .label("nothate")
        .threshold(0.25)
        .load(&dir)
        .unwrap();
    let t = [
        "Hello world",
        "You are a stupid idiot and nobody likes you.",
    ];
    let (a, b) = (hate.score(&t).unwrap(), not.score(&t).unwrap());
    for (x, y) in a.iter().zip(&b) {
        assert!((x + y - 1.0).abs() < 1e-6);
    }
    assert_eq!(hate.threshold(), 0.5);
    assert!(hate.is_toxic(0.5) && !hate.is_toxic(0.4999));
    assert!(not.is_toxic(0.25) && !not.is_toxic(0.2));
    let probs = hate.probabilities(&t).unwrap();
    assert_eq!(probs[0].len(), 2);
    assert!((probs[0][1] - a[0]).abs() < 1e-7);
}

#[test]
fn classifier_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<HateClassifier>();
    let dir = format!("{FIXTURES}/tok-json");
    let clf = std::sync::Arc::new(HateClassifier::from_pretrained(&dir).unwrap());
    let want = clf.score(&["Hello world"]).unwrap()[0];
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let c = clf.clone();
            std::thread::spawn(move || c.score(&["Hello world"]).unwrap()[0])
        })
        .collect();
    for h in handles {
        assert!((h.join().unwrap() - want).abs() < 1e-7);
    }
}
