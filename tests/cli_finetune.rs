//! `toxdrift finetune` end to end on the tiny Llama fixture: a PEFT adapter, a resumable run,
//! exit code 2 on bad input.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn finetune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_toxdrift"))
        .arg("finetune")
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run toxdrift")
}

#[test]
fn finetune_writes_a_peft_adapter_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("adapter");
    let model = fixtures().join("lora/llama");
    let data = fixtures().join("samples/dolly/databricks-dolly-15k.jsonl");
    let common = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-len",
        "48",
        "--limit",
        "16",
        "--r",
        "4",
        "--alpha",
        "8",
        "--batch-size",
        "2",
        "--grad-accum",
        "2",
        "--checkpoint-every",
        "2",
    ];
    let o = finetune(&common);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    assert!(out.join("adapter_model.safetensors").is_file());
    assert!(String::from_utf8_lossy(&o.stderr).contains("truncated"));
    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4);
    // --resume from the newest checkpoint (step 2) redoes steps 3 and 4 only.
    let mut resume: Vec<&str> = common.to_vec();
    resume.push("--resume");
    let o = finetune(&resume);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log2 = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    assert_eq!(log2.lines().count(), 4);
}

#[test]
fn bad_input_exits_with_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"instruction\":\"x\",\"context\":\"\"}\n").unwrap();
    let model = fixtures().join("lora/llama");
    let out = tmp.path().join("o");
    let o = finetune(&[
        "--model",
        model.to_str().unwrap(),
        "--data",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.jsonl:1"));
    let o = finetune(&[
        "--model",
        model.to_str().unwrap(),
        "--data",
        fixtures()
            .join("samples/dolly/databricks-dolly-15k.jsonl")
            .to_str()
            .unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--r",
        "0",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn phi3_defaults_to_its_fused_targets() {
    // Without --targets the model family's projections are trained: Phi-3's fused four (the
    // Llama seven would fail with "`q_proj` matches no linear module").
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("adapter");
    let model = fixtures().join("lora/phi3");
    let data = fixtures().join("samples/dolly/databricks-dolly-15k.jsonl");
    let o = finetune(&[
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-len",
        "32",
        "--limit",
        "4",
        "--r",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--max-steps",
        "1",
        "--checkpoint-every",
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    let mut targets: Vec<&str> = cfg["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],
        "{cfg}"
    );
    assert!(out.join("adapter_model.safetensors").is_file());
}

#[test]
fn unset_flags_take_the_paper_recipe() {
    // No --r / --alpha / --dropout / --targets: adapter_config.json has the paper's LoRA
    // (r 16, alpha 16, dropout 0, the Llama seven) and names the model as given.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("adapter");
    let model = fixtures().join("lora/llama");
    let data = fixtures().join("samples/dolly/databricks-dolly-15k.jsonl");
    let o = finetune(&[
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-len",
        "24",
        "--limit",
        "2",
        "--max-steps",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["r"], 16, "{cfg}");
    assert_eq!(cfg["lora_alpha"].as_f64(), Some(16.0), "{cfg}");
    assert_eq!(cfg["lora_dropout"].as_f64(), Some(0.0), "{cfg}");
    assert_eq!(cfg["use_rslora"], false, "{cfg}");
    assert_eq!(cfg["base_model_name_or_path"], model.to_str().unwrap());
    let mut targets: Vec<&str> = cfg["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj"
        ]
    );
    // One step of the paper's loop: 2 records in one micro-batch of 2, at the paper's lr
    // after its 5 warm-up steps (step 1 of a warm-up runs at lr 0).
    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    let step: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(step["lr"].as_f64(), Some(0.0), "{step}");
}

#[test]
fn help_names_the_paper_defaults() {
    let o = Command::new(env!("CARGO_BIN_EXE_toxdrift"))
        .args(["finetune", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for want in ["[default: 16, the paper's]", "[default: 2e-4, the paper's]"] {
        assert!(help.contains(want), "{want} not in:\n{help}");
    }
}

#[test]
fn init_adapter_sets_the_lora_shape_and_conflicts_exit_2() {
    // A rank-8 adapter (alpha 32, three targets, rsLoRA), made by a first run.
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("lora/llama");
    let data = fixtures().join("samples/dolly/databricks-dolly-15k.jsonl");
    let first = tmp.path().join("first");
    let base = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--max-len",
        "32",
        "--limit",
        "4",
        "--max-steps",
        "1",
        "--checkpoint-every",
        "0",
    ];
    let mut args = base.to_vec();
    let first_s = first.to_str().unwrap().to_string();
    args.extend([
        "--out",
        &first_s,
        "--r",
        "8",
        "--alpha",
        "32",
        "--targets",
        "q_proj,v_proj,down_proj",
        "--rslora",
    ]);
    let o = finetune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Without LoRA flags the second run trains at the adapter's shape, not the paper's r 16.
    let second = tmp.path().join("second");
    let second_s = second.to_str().unwrap().to_string();
    let mut args = base.to_vec();
    args.extend(["--out", &second_s, "--init-adapter", &first_s]);
    let o = finetune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["r"], 8);
    assert_eq!(cfg["lora_alpha"], 32.0);
    assert_eq!(cfg["use_rslora"], true);
    let mut targets: Vec<String> = serde_json::from_value(cfg["target_modules"].clone()).unwrap();
    targets.sort();
    assert_eq!(targets, ["down_proj", "q_proj", "v_proj"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("r 8, alpha 32"));
    // An explicit flag that agrees is fine; one that conflicts exits 2 naming both values.
    let mut args = base.to_vec();
    let third = tmp.path().join("third");
    let third_s = third.to_str().unwrap().to_string();
    args.extend([
        "--out",
        &third_s,
        "--init-adapter",
        &first_s,
        "--rank",
        "16",
    ]);
    let o = finetune(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("r = 8") && err.contains("r = 16") && err.contains("adapter_config.json"),
        "{err}"
    );
    let mut args = base.to_vec();
    args.extend([
        "--out",
        &third_s,
        "--init-adapter",
        &first_s,
        "--targets",
        "q_proj",
    ]);
    let o = finetune(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("target_modules = down_proj,q_proj,v_proj")
            && err.contains("target_modules = q_proj"),
        "{err}"
    );
    let mut args = base.to_vec();
    args.extend(["--out", &third_s, "--init-adapter", &first_s, "--r", "8"]);
    let o = finetune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
