//! Drift sources and bad drift sections: a checkpoint directory in HF Trainer's layout and the
//! revisions of a hub adapter repo (in an offline cache) read as drift sources and run end to
//! end; a drift model that is not fine-tuned and an empty checkpoint directory are bad input
//! naming the study file's line (exit code 2).

use crate::common::*;
use std::path::Path;
use toxdrift::plan::{Plan, Stage};
use toxdrift::report::Report;
use toxdrift::study::{DriftSource, Study};

/// A small study on the fixtures: the tiny Llama base and instruct models, a drift over the
/// checkpoints in `ckpts` applied to the instruct model.
fn study_text(ckpts: &Path) -> String {
    let fx = root().join("tests/fixtures");
    format!(
        r#"name = "drift"
out = "out"

[prompts]
rtp = {{ path = "{fx}/samples/rtp/prompts.jsonl" }}
ceb = {{ path = "{fx}/samples/CEB-Continuation-T" }}
random = 6
severe = 3
severe_threshold = 0.75
per_axis = 2
seed = 42

[classifier]
path = "{fx}/classifier/vocab-merges"

[generation]
batch_size = 8
max_new_tokens = 6
dtype = "f32"

[[family]]
name = "tiny-Llama"
models = [
  {{ name = "llama", role = "base", path = "{fx}/gen/llama" }},
  {{ name = "llama-instruct", role = "instruct", path = "{fx}/gen/llama31" }},
]

[[drift]]
name = "trainer-run"
base = "llama-instruct"
checkpoints = {{ path = "{ckpts}" }}
references = ["llama", "llama-instruct"]
"#,
        fx = fx.display(),
        ckpts = ckpts.display()
    )
}

/// `dir/checkpoint-<step>/` for each step, holding the fixture LoRA adapter (HF Trainer's layout,
/// plus the trainer's own files that a drift ignores).
fn trainer_dir(dir: &Path, steps: &[usize]) {
    let lora = root().join("tests/fixtures/gen/llama-lora");
    for s in steps {
        let ck = dir.join(format!("checkpoint-{s}"));
        std::fs::create_dir_all(&ck).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(lora.join(f), ck.join(f)).unwrap();
        }
        std::fs::write(ck.join("trainer_state.json"), "{}").unwrap();
    }
    std::fs::create_dir_all(dir.join("runs")).unwrap();
}

#[test]
fn a_trainer_checkpoint_directory_is_a_drift_source() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpts = tmp.path().join("trainer-out");
    trainer_dir(&ckpts, &[500, 1000, 1500]);
    let file = tmp.path().join("study.toml");
    std::fs::write(&file, study_text(&ckpts)).unwrap();

    let study = Study::load(&file, None).unwrap();
    let d = &study.drifts[0];
    assert_eq!(d.source, DriftSource::Directory(ckpts.clone()));
    let steps: Vec<usize> = d.points.iter().map(|p| p.step).collect();
    assert_eq!(steps, [500, 1000, 1500], "by step, not by name");
    let plan = Plan::new(&study);
    assert!(
        plan.unit(Stage::DriftGenerate, "trainer-run@step-1000")
            .is_some()
    );
    assert!(
        plan.unit(Stage::DriftScore, "trainer-run@step-1500")
            .is_some()
    );

    let out = tmp.path().join("out");
    run_study(&file, &out);
    let report: Report =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let d = &report.drift[0];
    assert_eq!(d.name, "trainer-run");
    assert_eq!(d.points.len(), 3);
    let n = 6 + 3 + 4 * 2;
    for p in &d.points {
        let all = &p.rates["all"];
        assert_eq!(all.n, n);
        assert!(
            all.hdi_low <= all.rate && all.rate <= all.hdi_high,
            "{all:?}"
        );
    }
    // The same adapter at every step: the same rates, so no change.
    assert_eq!(d.points[0].rates, d.points[2].rates);
    assert_eq!(d.hypothesis.change["all"].mean, 0.0);
    assert_eq!(d.references.len(), 2);
    assert_eq!(
        d.hypothesis.toward_base.as_ref().unwrap().reference,
        "llama"
    );
    let svg = std::fs::read_to_string(out.join(&d.figure)).unwrap();
    assert!(svg.starts_with("<svg"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Drift") && md.contains("### trainer-run (on llama-instruct)"));
}

fn load_err(dir: &Path, text: &str) -> (String, i32) {
    let file = dir.join("study.toml");
    std::fs::write(&file, text).unwrap();
    let e = Study::load(&file, None).unwrap_err();
    (e.to_string(), e.exit_code())
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_drift_model_that_is_not_fine_tuned_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpts = tmp.path().join("ck");
    trainer_dir(&ckpts, &[1, 2]);
    let text = study_text(&ckpts).replace(
        "[[drift]]\nname = \"trainer-run\"\nbase = \"llama-instruct\"\ncheckpoints",
        "[[drift]]\nmodel = \"llama-instruct\"\nsteps = [2, 4]\nx",
    );
    let text = text.replace("\nx = {", "\n#");
    let (e, code) = load_err(tmp.path(), &text);
    assert_eq!(code, 2, "{e}");
    let line = line_of(&text, "model = \"llama-instruct\"");
    assert!(e.contains(&format!("study.toml:{line}:")), "{e}");
    assert!(e.contains("not fine-tuned by this study"), "{e}");

    // Through the CLI: exit code 2 and the same message.
    let o = toxdrift()
        .arg("run")
        .arg(tmp.path().join("study.toml"))
        .arg("--no-progress")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not fine-tuned by this study"));
}

#[test]
fn an_empty_checkpoint_directory_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpts = tmp.path().join("empty");
    std::fs::create_dir_all(&ckpts).unwrap();
    let text = study_text(&ckpts);
    let (e, code) = load_err(tmp.path(), &text);
    assert_eq!(code, 2, "{e}");
    let line = line_of(&text, "checkpoints = {");
    assert!(e.contains(&format!("study.toml:{line}:")), "{e}");
    assert!(e.contains("no checkpoint-<step>/ directory"), "{e}");

    // One checkpoint is not a curve; a checkpoint without its adapter is named.
    trainer_dir(&ckpts, &[10]);
    let (e, _) = load_err(tmp.path(), &text);
    assert!(e.contains("a drift needs at least 2"), "{e}");
    std::fs::create_dir_all(ckpts.join("checkpoint-20")).unwrap();
    let (e, code) = load_err(tmp.path(), &text);
    assert_eq!(code, 2);
    assert!(
        e.contains("checkpoint-20") && e.contains("adapter_config.json"),
        "{e}"
    );
}

#[test]
fn unknown_references_and_missing_base_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpts = tmp.path().join("ck");
    trainer_dir(&ckpts, &[1, 2]);
    let text = study_text(&ckpts).replace("[\"llama\", \"llama-instruct\"]", "[\"nope\"]");
    let (e, code) = load_err(tmp.path(), &text);
    assert_eq!(code, 2);
    assert!(e.contains("`nope` is not a model of this study"), "{e}");
    let text = study_text(&ckpts).replace("base = \"llama-instruct\"\n", "");
    let (e, _) = load_err(tmp.path(), &text);
    assert!(e.contains("needs `base"), "{e}");
}

#[test]
fn revisions_of_a_hub_adapter_repo_are_a_drift_source() {
    use toxdrift::hub_source::{HubRepo, layout};
    let tmp = tempfile::tempdir().unwrap();
    // An adapter repo in a Hugging Face cache (offline), tagged at two training steps.
    let cache = tmp.path().join("hf/hub");
    let repo = HubRepo::model("me/tiny-adapter").unwrap();
    let lora = root().join("tests/fixtures/gen/llama-lora");
    for (tag, commit) in [
        ("step-200", "1111111111111111111111111111111111111111"),
        ("step-400", "2222222222222222222222222222222222222222"),
    ] {
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            layout::put_file(&cache, &repo, commit, f, &lora.join(f)).unwrap();
        }
        layout::set_ref(&cache, &repo, tag, commit).unwrap();
    }
    let text = study_text(Path::new("/unused")).replace(
        r#"checkpoints = { path = "/unused" }"#,
        r#"checkpoints = { hub = "me/tiny-adapter", revisions = ["step-200", "step-400"] }"#,
    );
    assert!(text.contains("revisions"), "{text}");
    let file = tmp.path().join("study.toml");
    std::fs::write(&file, &text).unwrap();
    let study = Study::load(&file, None).unwrap();
    let d = &study.drifts[0];
    assert_eq!(d.source, DriftSource::Revisions("me/tiny-adapter".into()));
    let steps: Vec<usize> = d.points.iter().map(|p| p.step).collect();
    assert_eq!(
        steps,
        [200, 400],
        "the step is the revision's trailing number"
    );

    let out = tmp.path().join("out");
    let o = toxdrift()
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Report =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let d = &report.drift[0];
    assert_eq!(d.points.len(), 2);
    assert_eq!(d.points[0].step, 200);
    // The same adapter at both revisions: the same rates.
    assert_eq!(d.points[0].rates, d.points[1].rates);
}
