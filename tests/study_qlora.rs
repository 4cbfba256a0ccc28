//! The study's switch for the paper's 4-bit setting: `[finetune] base_4bit = true` trains the
//! LoRA over a bitsandbytes NF4 base (QLoRA) and refuses a base that is not one.

use crate::common::*;
use std::path::Path;

fn study(base: &Path) -> String {
    let f = root().join("tests/fixtures");
    let f = f.display();
    let base = base.display();
    format!(
        r#"name = "qlora"
out = "out"

[prompts]
rtp = {{ path = "{f}/samples/rtp/prompts.jsonl" }}
ceb = {{ path = "{f}/samples/CEB-Continuation-T" }}
random = 4
severe = 2
per_axis = 1

[classifier]
path = "{f}/classifier/vocab-merges"

[generation]
max_new_tokens = 6
dtype = "f32"

[sampler]
chains = 2
tune = 50
draws = 50

[finetune]
data = {{ path = "{f}/samples/dolly/databricks-dolly-15k.jsonl" }}
max_records = 8
max_seq_len = 64
grad_accum = 2
lr = 1e-2
base_4bit = true

[[family]]
name = "tiny"
models = [
  {{ name = "instruct-4bit", role = "instruct", path = "{base}" }},
  {{ name = "instruct-4bit-dolly", role = "dolly-tuned", finetune_from = "instruct-4bit" }},
]

[[comparison]]
id = "c2"
title = "instruct vs its QLoRA Dolly fine-tune"
pairs = [["instruct-4bit", "instruct-4bit-dolly"]]
"#
    )
}

#[test]
fn base_4bit_trains_qlora_on_an_nf4_base_and_refuses_a_full_precision_one() {
    let tmp = tempfile::tempdir().unwrap();
    let base = root().join("tests/fixtures/bnb/nf4-dq");
    let file = tmp.path().join("study.toml");
    std::fs::write(&file, study(&base)).unwrap();
    run_study(&file, &tmp.path().join("out"));
    let ft = unit_dir(
        &tmp.path().join("out/units/finetune"),
        "instruct-4bit-dolly",
    )
    .unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ft.join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["base_model_name_or_path"].as_str(),
        Some(base.display().to_string().as_str()),
        "the adapter names its 4-bit base"
    );
    let report = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    assert!(report.contains("instruct-4bit-dolly"), "{report}");

    // The same switch on a full-precision base: refused, naming the setting and the model.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("study.toml");
    std::fs::write(&file, study(&root().join("tests/fixtures/gen/llama31"))).unwrap();
    let o = toxdrift()
        .arg("run")
        .arg(&file)
        .arg("--no-progress")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("base_4bit") && err.contains("model `instruct-4bit-dolly`"),
        "{err}"
    );
}
