//! A study whose prompts, models, adapter, classifier and fine-tune data all come from the hub,
//! run offline (`HF_HUB_OFFLINE=1`) from a Hugging Face cache laid out in a temp directory
//! (`<HF_HOME>/hub/{models,datasets}--owner--name/snapshots/<rev>/…`, `refs/main`).

mod common;

use common::*;
use std::path::Path;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// Copies the files of `src` (recursively) into the cache snapshot of `repo`.
fn cache_repo(hub: &Path, kind: &str, repo: &str, files: &[(&Path, &str)]) {
    let dir = hub.join(format!("{kind}--{}", repo.replace('/', "--")));
    let snap = dir.join("snapshots").join(REV);
    for (src, dst) in files {
        let to = snap.join(dst);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src, &to).unwrap();
    }
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), REV).unwrap();
}

fn cache_dir(hub: &Path, kind: &str, repo: &str, src: &Path) {
    let files: Vec<(std::path::PathBuf, String)> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (p, name)
        })
        .collect();
    let refs: Vec<(&Path, &str)> = files
        .iter()
        .map(|(p, n)| (p.as_path(), n.as_str()))
        .collect();
    cache_repo(hub, kind, repo, &refs);
}

#[test]
fn a_hub_only_study_runs_offline_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hf").join("hub");
    let fx = root().join("tests/fixtures");
    let samples = fx.join("samples");
    cache_repo(
        &hub,
        "datasets",
        "allenai/real-toxicity-prompts",
        &[(&samples.join("rtp/prompts.jsonl"), "prompts.jsonl")],
    );
    let ceb: Vec<(std::path::PathBuf, String)> = ["race", "gender", "age", "religion"]
        .iter()
        .map(|a| {
            (
                samples.join(format!("CEB-Continuation-T/{a}.json")),
                format!("data/CEB-Continuation-T/{a}.json"),
            )
        })
        .collect();
    let ceb: Vec<(&Path, &str)> = ceb.iter().map(|(p, n)| (p.as_path(), n.as_str())).collect();
    cache_repo(&hub, "datasets", "Song-SW/CEB", &ceb);
    cache_repo(
        &hub,
        "datasets",
        "databricks/databricks-dolly-15k",
        &[(
            &samples.join("dolly/databricks-dolly-15k.jsonl"),
            "databricks-dolly-15k.jsonl",
        )],
    );
    cache_dir(&hub, "models", "tiny-org/llama", &fx.join("gen/llama"));
    cache_dir(
        &hub,
        "models",
        "tiny-org/llama-chat",
        &fx.join("gen/llama31"),
    );
    cache_dir(
        &hub,
        "models",
        "tiny-org/llama-chat-lora",
        &fx.join("gen/llama-lora"),
    );
    cache_dir(
        &hub,
        "models",
        "tiny-org/hate-classifier",
        &fx.join("classifier/vocab-merges"),
    );

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
