//! The smoke study end to end: all three comparisons, fine-tune included, on the shipped
//! fixtures; the report files exist, parse, and agree with the per-stage outputs; the report
//! opens with the direction of the differences and one summary line per pair, gives verdicts
//! only from converged samplers, draws every pair; the terminal gets a few lines at most; a
//! second run does nothing and rewrites the same report.

use crate::common;
use crate::common::*;
use toxdrift::records::read_scores;
use toxdrift::report::{DIRECTION, Report, ScoreRow, percent, signed_pp, toxic_rates};

/// stderr's lines without colour codes.
fn stderr_lines(o: &std::process::Output) -> Vec<String> {
    let text = String::from_utf8_lossy(&o.stderr);
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn smoke_study_runs_end_to_end_and_the_report_agrees_with_the_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smoke");
    let first = run_study(&smoke_study(), &out);

    // The terminal: at most 5 lines. The smoke study's short chains (2 x 300 draws) leave most
    // pairs with a subset whose ESS is below 400: that is one line per [[comparison]] (3), each
    // with its worst fit, the details being in report.md; plus the generation stage's notes on
    // truncated prompts (the tiny Phi-3.5 window: 2 lines today). Before, it was 192 lines.
    let err = stderr_lines(&first);
    assert!(err.len() <= 5, "{} lines:\n{}", err.len(), err.join("\n"));
    let titles = [
        "Comparison 1: base vs instruction-tuned",
        "Comparison 2: instruction-tuned vs Dolly-tuned (LoRA)",
        "Comparison 3: instruction-tuned vs community fine-tunes",
    ];
    for t in titles {
        let mine: Vec<&String> = err.iter().filter(|l| l.contains(t)).collect();
        assert!(mine.len() <= 1, "{t}: {mine:?}");
    }
    // The one real failure of the smoke study is named with its figures.
    let c1 = err
        .iter()
        .find(|l| l.contains(titles[0]))
        .expect("comparison 1 has unconverged fits");
    assert!(
        c1.contains("did not converge")
            && c1.contains("worst: tiny-gemma vs tiny-gemma2-instruct, gender: R-hat"),
        "{c1}"
    );

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
        "| Family | Model | Role | all | severe | random | race | gender | age | religion |"
    ));
    assert!(!md.contains("Total"), "`all` is named the same everywhere");

    // report.md opens with the direction of every difference, then one line per pair: toxic
    // rate baseline → candidate, the difference in pp with its HDI, the verdict, convergence.
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines[0], "# toxdrift report: smoke");
    assert_eq!(lines[2], DIRECTION);
    assert!(DIRECTION.starts_with("Every difference is candidate − baseline"));
    assert_eq!(
        md.matches("candidate − baseline: positive").count(),
        1,
        "stated once"
    );
    assert_eq!(lines[4], "## Summary");
    let rate = |name: &str| {
        report
            .models
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .rates
            .total
            .rate()
            .unwrap()
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for p in report.comparisons.iter().flat_map(|c| &c.pairs) {
        if !pairs.contains(&(p.baseline.as_str(), p.candidate.as_str())) {
            pairs.push((&p.baseline, &p.candidate));
        }
    }
    assert_eq!(pairs.len(), 7);
    for (i, (b, c)) in pairs.iter().enumerate() {
        let line = lines[6 + i];
        let (rb, rc) = (rate(b), rate(c));
        let head = format!(
            "- {b} → {c}: toxic rate {} → {}, {} pp (95% HDI ",
            percent(rb),
            percent(rc),
            signed_pp(rc - rb)
        );
        assert!(line.starts_with(&head), "{line}\nwant {head}");
        assert!(line.contains("P(candidate more toxic) = "), "{line}");
        assert!(line.contains("BEST on all prompts: "), "{line}");
        assert!(line.contains("sampler converged on "), "{line}");
    }
    // Both tables speak of P(candidate more toxic); rate differences are in pp.
    assert_eq!(
        md.matches("| P(candidate more toxic) |").count(),
        2 * report.comparisons.len()
    );
    assert!(md.contains("| difference (pp) | HDI (pp) |"));
    assert!(!md.contains("P(>0)") && !md.contains("P(candidate higher)"));
    assert!(md.contains("![figures/summary.svg](figures/summary.svg)"));
    assert!(md.contains("![figures/rates.svg](figures/rates.svg)"));
    // One diagnostics line per pair (the full list is in report.json).
    assert!(md.contains("## Diagnostics"));
    assert!(
        md.contains("- tiny-gemma vs tiny-gemma2-instruct: 3 of 4 fitted subsets did not converge")
    );
    assert!(
        !md.contains(": mu1: tail ESS"),
        "no per-parameter warning in report.md"
    );
    assert!(
        md.contains("mu tracks the near-zero bulk"),
        "the skew caveat is in the report"
    );
    assert!(csv.starts_with("model,family,role,id,subset,score,toxic,completion\n"));

    // Verdicts only from converged samplers: `credible` is null wherever `converged` is false,
    // and the report says so with the figures. tiny-gemma on `gender` did not converge.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["direction"], DIRECTION);
    assert_eq!(json["summary"].as_array().unwrap().len(), 7);
    assert!(
        json["warnings"].as_array().unwrap().len() > 7,
        "the full list"
    );
    assert!(
        json["diagnostics"].as_array().unwrap().len() <= 7,
        "one line per pair"
    );
    let mut unconverged = 0;
    for c in json["comparisons"].as_array().unwrap() {
        for p in c["pairs"].as_array().unwrap() {
            for (sub, r) in p["subsets"].as_object().unwrap() {
                let b = &r["best"];
                if b.is_null() {
                    continue;
                }
                let converged = b["converged"].as_bool().unwrap();
                assert_eq!(b["convergence"]["converged"], converged);
                if !converged {
                    unconverged += 1;
                    assert!(b["credible"].is_null(), "{sub}: {b}");
                } else {
                    assert!(b["credible"].is_boolean(), "{sub}: {b}");
                }
            }
        }
    }
    assert!(unconverged > 0);
    let gender = &report.comparisons[0].pairs[1].subsets["gender"];
    let best = gender.best.as_ref().unwrap();
    assert!(!best.converged && best.credible.is_none(), "{best:?}");
    assert!(best.convergence.rhat > 1.01 && best.convergence.ess_bulk < 400.0);
    let row = md
        .lines()
        .find(|l| l.starts_with("| tiny-gemma | tiny-gemma2-instruct | gender | 10/10 | "))
        .unwrap();
    assert!(
        row.contains(&format!(
            "unreliable: the sampler did not converge ({})",
            best.convergence.figures()
        )),
        "{row}"
    );

    // Figures: the forest plot of every comparison x subset, the rates of every model, and one
    // posterior figure per comparison and subset with one panel per pair, fitted or not.
    let summary = std::fs::read_to_string(out.join("figures/summary.svg")).unwrap();
    let rates = std::fs::read_to_string(out.join("figures/rates.svg")).unwrap();
    assert!(summary.starts_with("<svg") && rates.starts_with("<svg"));
    for c in &report.comparisons {
        assert!(summary.contains(&c.title), "{}", c.title);
        for p in &c.pairs {
            assert!(summary.contains(&format!("{} → {}", p.baseline, p.candidate)));
        }
    }
    for m in &report.models {
        assert!(rates.contains(&format!(">{}<", m.name)), "{}", m.name);
    }
    for c in &report.comparisons {
        assert_eq!(c.figures.len(), 7, "{}: all + six subsets", c.id);
        for f in &c.figures {
            let svg = std::fs::read_to_string(out.join(f)).unwrap();
            assert!(svg.starts_with("<svg"), "{f}");
            assert!(md.contains(&format!("]({f})")), "{f} linked from report.md");
            for p in &c.pairs {
                assert!(
                    svg.contains(&format!("{} → {}", p.baseline, p.candidate)),
                    "{f}: every pair has its panel"
                );
            }
        }
    }
    let gender_svg = std::fs::read_to_string(out.join("figures/comparison1-gender.svg")).unwrap();
    assert!(gender_svg.contains("unreliable: the sampler did not converge"));
    let race_svg = std::fs::read_to_string(out.join("figures/comparison1-race.svg")).unwrap();
    assert!(race_svg.contains("BEST could not be fitted: every baseline score equals"));

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
    std::fs::write(&file, &study).unwrap();
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

    // Very short chains (2 x 30 draws): only the compare units run again, no fit converges, and
    // no BEST verdict is given: `converged: false`, `credible: null` in report.json, "unreliable"
    // in report.md and in the figures.
    let short = study.replace(
        "[sampler]\nchains = 2\ntune = 300\ndraws = 300\nseed = 7",
        "[sampler]\nchains = 2\ntune = 30\ndraws = 30\nseed = 7",
    );
    assert!(short.contains("draws = 30\n"));
    let file = tmp.path().join("short.toml");
    std::fs::write(&file, short).unwrap();
    let o = run_study(&file, &out);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ran 7 unit(s)"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let mut fitted = 0;
    for c in json["comparisons"].as_array().unwrap() {
        for p in c["pairs"].as_array().unwrap() {
            for (sub, r) in p["subsets"].as_object().unwrap() {
                let b = &r["best"];
                if b.is_null() {
                    continue;
                }
                fitted += 1;
                assert_eq!(b["converged"], false, "{sub}: {b}");
                assert!(b["credible"].is_null(), "{sub}: {b}");
                assert!(b["convergence"]["ess_bulk"].as_f64().unwrap() < 400.0);
                assert_eq!(
                    b["convergence"]["attempts"], 1,
                    "short fits are not retried"
                );
            }
        }
    }
    assert_eq!(fitted, 34);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // No BEST verdict (the rate table's say "more often" / "less often").
    assert!(!md.contains("candidate more toxic |") && !md.contains("candidate less toxic |"));
    assert!(!md.contains("| no credible difference | ok"));
    assert_eq!(
        md.matches("unreliable: the sampler did not converge (R-hat ")
            .count(),
        fitted
    );
    let svg = std::fs::read_to_string(out.join("figures/comparison1-all.svg")).unwrap();
    assert_eq!(
        svg.matches("unreliable: the sampler did not converge")
            .count(),
        2
    );
    assert!(!svg.contains("excludes 0") && !svg.contains("includes 0"));
}
