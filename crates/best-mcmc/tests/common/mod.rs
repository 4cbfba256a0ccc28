//! Fixture loading shared by the integration tests.
#![allow(dead_code)]

use serde_json::Value;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/best");

pub fn load(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

pub fn scores() -> (Vec<f64>, Vec<f64>, u64, u64) {
    let s = load("scores.json");
    (
        f64s(&s["baseline"]),
        f64s(&s["candidate"]),
        s["toxic_baseline"].as_u64().unwrap(),
        s["toxic_candidate"].as_u64().unwrap(),
    )
}

pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}
