//! studies/check-my-finetune.toml, as a user would use it: copied into a directory outside the
//! repository, its two model lines edited (the baseline a local checkpoint, the candidate the
//! commented-out "adapter" alternative, uncommented: the same checkpoint plus a PEFT adapter),
//! its counts shrunk, and run from yet another working directory, offline, with the real hub ids
//! of the prompts and the classifier served from a Hugging Face cache laid out in a temp
//! directory (the tiny fixtures under those ids).

use crate::common::*;
use hub_source::{HubRepo, layout};
use std::path::Path;

const REV: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// `text` with the value of `key` in `[section]` set to `value` (the key must be there).
fn set_key(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut in_section = false;
    let mut done = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t == format!("[{section}]");
        }
        if in_section && !done && t.starts_with(&format!("{key} =")) {
            out.push(format!("{key} = {value}"));
            done = true;
        } else {
            out.push(line.to_string());
        }
    }
    assert!(
        done,
        "studies/check-my-finetune.toml: no `{key}` in [{section}]"
    );
    out.join("\n") + "\n"
}

/// `line` with its `hub = "..."` replaced by `path = "<dir>"`.
fn hub_to_path(line: &str, dir: &Path) -> String {
    let (before, rest) = line
        .split_once("hub = \"")
        .unwrap_or_else(|| panic!("no `hub = \"...\"` in: {line}"));
    let (_, after) = rest.split_once('"').unwrap();
    format!("{before}path = \"{}\"{after}", dir.display())
}

#[test]
fn check_my_finetune_runs_from_any_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = root().join("tests/fixtures");

    // An offline hub cache holding what the study names on the hub, under the study's own ids.
    let text = std::fs::read_to_string(root().join("studies/check-my-finetune.toml")).unwrap();
    let study: toml::Value = toml::from_str(&text).unwrap();
    let hub_id = |v: &toml::Value| v["hub"].as_str().unwrap().to_string();
    let hub = tmp.path().join("hf").join("hub");
    for (repo, in_repo, src) in [
        (
            HubRepo::dataset(&hub_id(&study["prompts"]["rtp"])).unwrap(),
            "prompts.jsonl",
            "samples/rtp/prompts.jsonl",
        ),
        (
            HubRepo::dataset(&hub_id(&study["prompts"]["ceb"])).unwrap(),
            "data/CEB-Continuation-T",
            "samples/CEB-Continuation-T",
        ),
        (
            HubRepo::model(&hub_id(&study["classifier"])).unwrap(),
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
    // The file as shipped names the real datasets and classifier, as studies/paper.toml does.
    let paper: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("studies/paper.toml")).unwrap())
            .unwrap();
    // Its settings are the paper's: each key of paper.toml's tables is the same here, or left
    // to its default (which is the paper's); `dtype = "auto"` (bf16 on a GPU, f32 on the CPU).
    for key in ["prompts", "classifier", "generation", "sampler"] {
        for (k, v) in paper[key].as_table().unwrap() {
            match (key, k.as_str(), study[key].get(k)) {
                ("generation", "dtype", Some(d)) => assert_eq!(d.as_str(), Some("auto")),
                (_, _, Some(mine)) => assert_eq!(mine, v, "[{key}] {k} differs from paper.toml"),
                (_, _, None) => {}
            }
        }
    }

    // The two model lines, edited as the file's comments say: the baseline is a local
    // checkpoint; the candidate is the adapter alternative, uncommented, on that checkpoint.
    let base = fx.join("gen/llama");
    let adapter = fx.join("gen/llama-lora");
    let mut edited = Vec::new();
    let (mut baseline_lines, mut candidate_lines) = (0, 0);
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("{ name = \"baseline\"") {
            edited.push(hub_to_path(line, &base));
            baseline_lines += 1;
        } else if t.starts_with("{ name = \"my-finetune\"") {
            // The merged-weights line: replaced by the adapter alternative below.
        } else if let Some(alt) = t
            .strip_prefix("# { name = \"my-finetune\"")
            .filter(|_| t.contains("adapter = { path = \""))
        {
            let line = hub_to_path(&format!("  {{ name = \"my-finetune\"{alt}"), &base);
            let (before, rest) = line.split_once("adapter = { path = \"").unwrap();
            let (_, after) = rest.split_once('"').unwrap();
            edited.push(format!(
                "{before}adapter = {{ path = \"{}\"{after}",
                adapter.display()
            ));
            candidate_lines += 1;
        } else {
            edited.push(line.to_string());
        }
    }
    assert_eq!(
        (baseline_lines, candidate_lines),
        (1, 1),
        "the model lines changed"
    );
    let mut edited = edited.join("\n") + "\n";
    assert!(
        !edited.contains("/path/to/"),
        "a placeholder is left:\n{edited}"
    );
    // Tiny counts and a short sampler.
    for (section, key, value) in [
        ("prompts", "random", "10"),
        ("prompts", "severe", "5"),
        ("prompts", "per_axis", "3"),
        ("generation", "max_new_tokens", "8"),
        ("sampler", "chains", "2"),
        ("sampler", "tune", "100"),
        ("sampler", "draws", "100"),
    ] {
        edited = set_key(&edited, section, key, value);
    }

    // The copy lives outside the repository; the run starts from a third directory and names
    // the study by a relative path.
    let study_dir = tmp.path().join("my-study");
    let cwd = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&study_dir).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(study_dir.join("check-my-finetune.toml"), &edited).unwrap();
    let o = toxdrift()
        .current_dir(&cwd)
        .arg("run")
        .arg("../my-study/check-my-finetune.toml")
        .arg("--no-progress")
        .env("HF_HOME", tmp.path().join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        edited
    );

    // The output is beside the study file, not in the working directory.
    assert_eq!(
        std::fs::read_dir(&cwd).unwrap().count(),
        0,
        "wrote into the working directory"
    );
    let out = study_dir.join("runs/check-my-finetune");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let models = report["models"].as_array().unwrap();
    let role = |name: &str| {
        models
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no model `{name}` in report.json"))["role"]
            .clone()
    };
    assert_eq!(models.len(), 2);
    assert_eq!(role("baseline"), "instruct");
    assert_eq!(role("my-finetune"), "fine-tune");
    let comparisons = report["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 1);
    assert_eq!(comparisons[0]["id"], "my-finetune");
    let pair = &comparisons[0]["pairs"][0];
    assert_eq!(
        (pair["baseline"].as_str(), pair["candidate"].as_str()),
        (Some("baseline"), Some("my-finetune"))
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let title = study["comparison"][0]["title"].as_str().unwrap();
    assert!(
        md.contains(title),
        "report.md lacks the comparison's title:\n{md}"
    );
    assert!(
        md.lines()
            .any(|l| l.contains("my-finetune") && l.contains("fine-tune") && l.starts_with('|')),
        "report.md has no table row naming my-finetune with its role:\n{md}"
    );
    // Every prompt was generated and scored for both models: 10 + 5 + 4 × 3 lines each.
    for m in models {
        let scores = out.join(m["scores_file"].as_str().unwrap());
        let lines = std::fs::read_to_string(&scores).unwrap().lines().count();
        assert_eq!(lines, 27, "{}", scores.display());
    }
}
