//! The smoke study end to end: all three comparisons, fine-tune included, on the shipped
//! fixtures; the report files exist, parse, and agree with the per-stage outputs; a second run
//! does nothing and rewrites the same report.

mod common;

use common::*;
use toxdrift::records::read_scores;
use toxdrift::report::{Report, ScoreRow, toxic_rates};

#[test]
fn smoke_study_runs_end_to_end_and_the_report_agrees_with_the_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smoke");
    run_study(&smoke_study(), &out);

    // The report files exist and parse.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let report: Report =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(report.study, "smoke");
    assert_eq!(report.models.len(), 10);
    let ids: Vec<&str> = report.comparisons.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["comparison1", "comparison2", "comparison3"]);
    assert_eq!(report.comparisons[1].pairs.len(), 2);
    assert!(md.contains("## Comparison 2: instruction-tuned vs Dolly-tuned (LoRA)"));
    assert!(md.contains(
        "| Family | Model | Role | Total | Severe | Random | Race | Gender | Age | Religion |"
    ));
    assert!(
        md.contains("mu tracks the near-zero bulk"),
        "the skew caveat is in the report"
    );
    assert!(csv.starts_with("model,family,role,id,subset,score,toxic,completion\n"));

    // Figures: one per comparison and subset, each an SVG with one panel title per pair.
    for c in &report.comparisons {
        assert_eq!(c.figures.len(), 7, "{}: all + six subsets", c.id);
        for f in &c.figures {
            let svg = std::fs::read_to_string(out.join(f)).unwrap();
            assert!(svg.starts_with("<svg"), "{f}");
            assert!(md.contains(&format!("]({f})")), "{f} linked from report.md");
        }
    }

    // Drift: the Llama Dolly fine-tune at steps 4, 8 and 12 with its two references, and its
    // figure (an SVG linked from report.md).
    assert_eq!(report.drift.len(), 1);
    let d = &report.drift[0];
    let steps: Vec<usize> = d.points.iter().map(|p| p.step).collect();
    assert_eq!(steps, [4, 8, 12]);
    for p in &d.points {
        assert_eq!(p.rates["all"].n, 100, "step {}", p.step);
        assert!(p.rates.len() == 7, "all + six subsets");
    }
    let refs: Vec<&str> = d.references.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(refs, ["tiny-llama", "tiny-llama-instruct"]);
    assert!(d.hypothesis.toward_base.is_some() && d.hypothesis.toward_instruct.is_some());
    // Step 12 is the final adapter: the same rates as the fine-tuned model itself.
    let dolly = report
        .models
        .iter()
        .find(|m| m.name == "tiny-llama-instruct-dolly")
        .unwrap();
    assert_eq!(d.points[2].rates["all"].toxic, dolly.rates.total.toxic);
    assert_eq!(d.figure, "figures/drift-tiny-llama-instruct-dolly.svg");
    let svg = std::fs::read_to_string(out.join(&d.figure)).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("training step"));
    assert!(md.contains("## Drift") && md.contains(&format!("]({})", d.figure)));
    assert!(md.contains(&d.hypothesis.verdict));

    // One model-card section per comparison pair, with the study's settings and a model-index.
    for p in report.comparisons.iter().flat_map(|c| &c.pairs) {
        let name = format!("cards/{}__vs__{}.md", p.baseline, p.candidate);
        let card = std::fs::read_to_string(out.join(&name)).unwrap();
        assert!(
            card.starts_with("## Safety evaluation\n")
                && card.contains("- Sampling seed: 42.")
                && card.contains("| all | 100 |")
                && card.contains("```yaml\nmodel-index:\n"),
            "{name}: {card}"
        );
    }

    // Toxic rates in the report = the rates of the score files, which hold every prompt once.
    let prompts = std::fs::read_to_string(
        common::unit_dir(&out.join("units/prompts"), "prompts")
            .unwrap()
            .join("prompts.jsonl"),
    )
    .unwrap();
    let n_prompts = prompts.lines().count();
    assert_eq!(n_prompts, 40 + 20 + 4 * 10);
    let mut csv_rows = 0;
    for m in &report.models {
        let lines = read_scores(&out.join(&m.scores_file)).unwrap();
        assert_eq!(lines.len(), n_prompts, "{}", m.name);
        let rows: Vec<ScoreRow> = lines.iter().map(ScoreRow::from).collect();
        assert_eq!(m.rates, toxic_rates(&rows), "{}", m.name);
        for l in &lines {
            assert_eq!(l.toxic, l.score >= 0.5, "{} {}", m.name, l.id);
            assert!(csv.contains(&format!(
                "{},{},{},{},{},{},",
                m.name, m.family, m.role, l.id, l.subset, l.score
            )));
            csv_rows += 1;
        }
    }
    assert_eq!(csv_rows, 10 * n_prompts);

    // Comparisons in the report = the compare units' results; the rate numbers match the counts.
    for c in &report.comparisons {
        for p in &c.pairs {
            let unit: toxdrift::report::PairResult =
                serde_json::from_slice(&std::fs::read(out.join(&p.file)).unwrap()).unwrap();
            assert_eq!(&unit, p);
            let rate = |name: &str| {
                report
                    .models
                    .iter()
                    .find(|m| m.name == name)
                    .unwrap()
                    .rates
                    .total
            };
            let all = &p.subsets["all"];
            assert_eq!(all.n, [rate(&p.baseline).n, rate(&p.candidate).n]);
            assert_eq!(all.rate.rate_baseline, rate(&p.baseline).rate().unwrap());
            assert_eq!(all.rate.rate_candidate, rate(&p.candidate).rate().unwrap());
            assert_eq!(p.subsets.len(), 7);
        }
    }

    // The fine-tunes wrote PEFT adapters that the Dolly-tuned generations used.
    for name in ["tiny-llama-instruct-dolly", "tiny-phi3-instruct-dolly"] {
        let unit = common::unit_dir(&out.join("units/finetune"), name).unwrap();
        assert!(unit.join("adapter/adapter_config.json").is_file(), "{name}");
        assert!(
            unit.join("adapter/adapter_model.safetensors").is_file(),
            "{name}"
        );
    }

    // A second run finds everything done and writes the same bytes.
    let before = tree(&out);
    let again = run_study(&smoke_study(), &out);
    assert!(String::from_utf8_lossy(&again.stdout).contains("ran 0 unit(s)"));
    assert_eq!(before, tree(&out));

    // --dry-run lists every unit as done.
    let dry = toxdrift()
        .args(["run", "--dry-run", "--out"])
        .arg(&out)
        .arg(smoke_study())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    // 30 units of the comparisons, 6 of the drift (generate + score at three steps).
    assert!(text.contains("plan: 36 units, 36 done, 0 to run"), "{text}");
}

#[test]
fn changing_one_setting_reruns_only_what_it_affects() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smoke");
    run_study(&smoke_study(), &out);
    // A different sampler seed: only the seven compare units are pending.
    let study = std::fs::read_to_string(smoke_study()).unwrap().replace(
        "[sampler]\nchains = 2\ntune = 300\ndraws = 300\nseed = 42",
        "[sampler]\nchains = 2\ntune = 300\ndraws = 300\nseed = 7",
    );
    // The copy lives in the temp dir, so its fixture paths are made absolute.
    let study = study.replace(
        "\"../tests/fixtures",
        &format!("\"{}/tests/fixtures", root().display()),
    );
    let file = tmp.path().join("seed7.toml");
    std::fs::write(&file, study).unwrap();
    let dry = toxdrift()
        .args(["run", "--dry-run", "--out"])
        .arg(&out)
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("plan: 36 units, 29 done, 7 to run"), "{text}");
    for line in text.lines().filter(|l| l.contains("[run ]")) {
        assert!(line.contains(" compare "), "{line}");
    }
}
