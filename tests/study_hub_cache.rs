//! A study whose prompts, models, adapter, classifier and fine-tune data all come from the hub,
//! run offline (`HF_HUB_OFFLINE=1`) from a Hugging Face cache laid out in a temp directory
//! (`<HF_HOME>/hub/{models,datasets}--owner--name/snapshots/<rev>/…`, `refs/main`).

use crate::common::*;
use hub_source::{HubRepo, layout};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn a_hub_only_study_runs_offline_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hf").join("hub");
    let fx = root().join("tests/fixtures");
    let dataset = |id: &str| HubRepo::dataset(id).unwrap();
    let model = |id: &str| HubRepo::model(id).unwrap();
    // (repo, path in the repo, file or directory under tests/fixtures), each at REV = main.
    for (repo, in_repo, src) in [
        (
            dataset("allenai/real-toxicity-prompts"),
            "prompts.jsonl",
            "samples/rtp/prompts.jsonl",
        ),
        (
            dataset("Song-SW/CEB"),
            "data/CEB-Continuation-T",
            "samples/CEB-Continuation-T",
        ),
        (
            dataset("databricks/databricks-dolly-15k"),
            "databricks-dolly-15k.jsonl",
            "samples/dolly/databricks-dolly-15k.jsonl",
        ),
        (model("tiny-org/llama"), "", "gen/llama"),
        (model("tiny-org/llama-chat"), "", "gen/llama31"),
        (model("tiny-org/llama-chat-lora"), "", "gen/llama-lora"),
        (
            model("tiny-org/hate-classifier"),
            "",
            "classifier/vocab-merges",
        ),
    ] {
        let src = fx.join(src);
        if src.is_dir() {
            layout::put_dir(&hub, &repo, REV, in_repo, &src).unwrap();
        } else {
            layout::put_file(&hub, &repo, REV, in_repo, &src).unwrap();
        }
        layout::set_ref(&hub, &repo, "main", REV).unwrap();
    }

    let study = r#"
name = "hub-cache"
out = "out"
[prompts]
rtp = { hub = "allenai/real-toxicity-prompts" }
ceb = { hub = "Song-SW/CEB", revision = "main" }
random = 10
severe = 5
per_axis = 3
[classifier]
hub = "tiny-org/hate-classifier"
[generation]
max_new_tokens = 8
dtype = "f32"
[sampler]
chains = 2
tune = 100
draws = 100
[finetune]
data = { hub = "databricks/databricks-dolly-15k" }
max_records = 8
max_steps = 2
grad_accum = 2
max_seq_len = 64
[[family]]
name = "tiny"
models = [
  { name = "base", role = "base", hub = "tiny-org/llama" },
  { name = "chat", role = "instruct", hub = "tiny-org/llama-chat" },
  { name = "chat-dolly", role = "dolly-tuned", finetune_from = "chat" },
  { name = "chat-community", role = "community", hub = "tiny-org/llama-chat", adapter = { hub = "tiny-org/llama-chat-lora" } },
]
[[comparison]]
id = "c1"
pairs = [["base", "chat"]]
[[comparison]]
id = "c2"
pairs = [["chat", "chat-dolly"]]
[[comparison]]
id = "c3"
pairs = [["chat", "chat-community"]]
"#;
    let file = tmp.path().join("study.toml");
    std::fs::write(&file, study).unwrap();
    let o = toxdrift()
        .arg("run")
        .arg(&file)
        .arg("--no-progress")
        .env("HF_HOME", tmp.path().join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: toxdrift::report::Report =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(report.models.len(), 4);
    for m in &report.models {
        assert_eq!(m.rates.total.n, 10 + 5 + 4 * 3, "{}", m.name);
    }
    let chat = report.models.iter().find(|m| m.name == "chat").unwrap();
    assert_eq!(chat.source, "hub:tiny-org/llama-chat@main");

    // A model missing from the cache is an error naming the repository, not a download.
    let broken = study.replace("tiny-org/llama\" }", "tiny-org/not-cached\" }");
    std::fs::write(&file, broken).unwrap();
    let o = toxdrift()
        .arg("run")
        .arg(&file)
        .arg("--no-progress")
        .env("HF_HOME", tmp.path().join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tiny-org/not-cached"), "{err}");
}
