//! The GPU check program (examples/gpu_check.rs, which tools/gpu-check.sh runs on cuda:0) in its
//! dry form: on the CPU, on the small Llama fixture (and its adapter), the classifier and LoRA
//! fixtures, and a two-row benchmark of the tiny Llama standing in for the peer-bench one. The
//! JSON it writes must hold every kind of result, passing, with its numbers; a broken fixture
//! must become an `error` result without hiding the others.

#[allow(dead_code)]
#[path = "../examples/gpu_check.rs"]
mod gpu_check;

use clap::Parser;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn args(extra: &[&str]) -> gpu_check::Args {
    let mut v = vec!["gpu_check", "--device", "cpu", "--dry"];
    v.extend_from_slice(extra);
    gpu_check::Args::try_parse_from(v).unwrap()
}

fn of<'a>(report: &'a Value, check: &str) -> Vec<&'a Value> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["check"] == check)
        .collect()
}

#[test]
fn dry_run_reports_every_check_with_its_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    // The peer-bench layout (llama110m/, prompts.jsonl) around the tiny Llama fixture.
    let peer = tmp.path().join("peer");
    copy_dir(
        &root().join("tests/fixtures/gen/llama"),
        &peer.join("llama110m"),
    );
    std::fs::write(
        peer.join("prompts.jsonl"),
        "{\"id\": \"p0\", \"text\": \"The tiny robot walked\"}\n\
         {\"id\": \"p1\", \"text\": \"A quiet neighbour argued with the city council\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("report.json");
    let a = args(&[
        "--out",
        out.to_str().unwrap(),
        "--root",
        root().to_str().unwrap(),
        "--families",
        "llama",
        "--dtypes",
        "bf16",
        "--peer",
        peer.to_str().unwrap(),
        "--bench-batches",
        "2",
        "--bench-new-tokens",
        "4",
        "--bench-reps",
        "1",
        "--bench-dtypes",
        "f32",
        "--study-prompts",
        "5",
    ]);
    let report = gpu_check::run(&a).unwrap();
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // The file holds the returned report (compared without the floats, which serde_json's
    // default parser may round in the last digit).
    assert_eq!(on_disk["summary"], report["summary"]);
    let names = |r: &Value| -> Vec<(Value, Value, Value)> {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["check"].clone(), x["name"].clone(), x["status"].clone()))
            .collect()
    };
    assert_eq!(names(&on_disk), names(&report));
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["dry"], true);
    assert_eq!(report["summary"]["fail"], 0, "{report:#}");
    assert_eq!(report["summary"]["error"], 0, "{report:#}");

    for check in [
        "device_probe",
        "family_logits",
        "family_greedy_f32",
        "family_greedy_bf16",
        "adapter_logits",
        "adapter_greedy",
        "classifier",
        "lora_gradient",
        "lora_train",
        "real_greedy",
        "study_time",
        "bench",
    ] {
        let rows = of(&report, check);
        assert!(!rows.is_empty(), "no {check} result");
        for r in rows {
            assert_eq!(r["device"], "cpu", "{r}");
            if r["status"] == "skip" {
                assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
                continue;
            }
            assert_eq!(r["status"], "pass", "{r}");
            assert_eq!(r["pass"], true, "{r}");
            assert!(r["dtype"].is_string(), "{r}");
            assert!(r["numbers"].is_object(), "{r}");
        }
    }
    // Only the llama family (and its adapter, unmerged and merged) ran.
    assert_eq!(of(&report, "family_logits").len(), 1);
    assert_eq!(of(&report, "adapter_logits").len(), 2);
    let logits = of(&report, "family_logits")[0];
    assert_eq!(logits["name"], "llama");
    let d = logits["numbers"]["max_abs_diff"].as_f64().unwrap();
    assert!(d < 1e-4, "{d}");
    assert_eq!(logits["tolerance"]["max_abs_diff"], 1e-4);
    let bf16 = of(&report, "family_greedy_bf16")[0];
    let tf = &bf16["numbers"]["teacher_forced"];
    assert_eq!(tf["positions"], 200, "4 rows of 50 tokens");
    assert!(tf["relative_l2_logit_error"].as_f64().unwrap() > 0.0);
    assert!(tf["top1_agreement"].as_f64().unwrap() >= 0.9);
    assert_eq!(bf16["tolerance"]["relative_l2_logit_error"], 0.05);
    // LoRA: a gradient step and a training run per fixture.
    let train = of(&report, "lora_train");
    assert!(train.iter().any(|r| r["name"] == "llama"));
    for r in &train {
        assert!(r["numbers"]["steps"].as_u64().unwrap() >= 5, "{r}");
    }
    // The benchmark: exactly 4 new tokens for both rows, timed, ids kept for the side-by-side.
    let bench: Vec<&Value> = of(&report, "bench")
        .into_iter()
        .filter(|r| r["name"] == "peer-llama")
        .collect();
    assert_eq!(bench.len(), 1);
    let b = bench[0];
    assert_eq!(
        (b["batch"].as_u64(), b["dtype"].as_str()),
        (Some(2), Some("f32"))
    );
    let ids = b["token_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|r| r.as_array().unwrap().len() == 4));
    assert!(b["numbers"]["new_tokens_per_s"].as_f64().unwrap() > 0.0);
    // The GGUF point is a recorded skip, never silently absent.
    let gguf: Vec<&Value> = of(&report, "bench")
        .into_iter()
        .filter(|r| r["name"] == "gemma-3-270m-gguf")
        .collect();
    assert_eq!(gguf.len(), 1);
    assert_eq!(gguf[0]["status"], "skip");
    assert_eq!(of(&report, "real_greedy")[0]["status"], "skip");
    // The study-time run: 5 real prompts, `--batch-size auto`, which on the CPU is one batch
    // of up to 16.
    let study = of(&report, "study_time");
    assert_eq!(study.len(), 1);
    let n = &study[0]["numbers"];
    assert_eq!(
        (n["prompts"].as_u64(), n["batches"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(study[0]["batch"], "auto");
    assert!(n["new_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_broken_fixture_is_an_error_result_and_the_rest_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let fx_gen = tmp.path().join("tests/fixtures/gen");
    copy_dir(
        &root().join("tests/fixtures/gen/llama"),
        &fx_gen.join("llama"),
    );
    copy_dir(
        &root().join("tests/fixtures/gen/llama"),
        &fx_gen.join("broken"),
    );
    std::fs::write(fx_gen.join("broken/reference.json"), "{\"input_ids\": 3}").unwrap();
    let out = tmp.path().join("report.json");
    let a = args(&[
        "--out",
        out.to_str().unwrap(),
        "--root",
        tmp.path().to_str().unwrap(),
        "--checks",
        "families",
        "--dtypes",
        "f16",
    ]);
    let report = gpu_check::run(&a).unwrap();
    assert_eq!(report["summary"]["error"], 1, "{report:#}");
    let err: Vec<&Value> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "error")
        .collect();
    assert_eq!(err[0]["name"], "broken");
    assert!(
        err[0]["reason"]
            .as_str()
            .unwrap()
            .contains("reference.json"),
        "{}",
        err[0]
    );
    let llama: Vec<&Value> = of(&report, "family_logits")
        .into_iter()
        .filter(|r| r["name"] == "llama")
        .collect();
    assert_eq!(llama[0]["status"], "pass");
    assert_eq!(of(&report, "family_greedy_f16")[0]["status"], "pass");
}
