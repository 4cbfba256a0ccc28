//! The prompt-set builder on the sample files: subset sizes, eligibility, disjointness, ids that
//! encode the source row, determinism, too-small sources, parameter validation, JSONL round trip.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use toxprompts::{
    CebSet, Error, OnBadRecord, PromptRecord, PromptSet, PromptSetParams, RtpRow, load_rtp,
    prompts_to_jsonl, read_prompts_from,
};

fn samples() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples"
    ))
}

fn rtp() -> PathBuf {
    samples().join("rtp/prompts.jsonl")
}

fn ceb() -> CebSet {
    CebSet::from_dir(samples().join("CEB-Continuation-T"), OnBadRecord::Fail).unwrap()
}

fn small() -> PromptSetParams {
    PromptSetParams::default()
        .random(50)
        .severe(20)
        .per_axis(10)
}

fn build(p: &PromptSetParams) -> PromptSet {
    p.build(Some(&rtp()), Some(&ceb())).unwrap()
}

fn rows() -> Vec<RtpRow> {
    load_rtp(rtp(), OnBadRecord::Fail).unwrap().records
}

fn ids(set: &PromptSet, subset: &str) -> Vec<String> {
    set.prompts
        .iter()
        .filter(|p| p.subset == subset)
        .map(|p| p.id.clone())
        .collect()
}

#[test]
fn subsets_sizes_order_and_unique_ids() {
    let set = build(&small());
    let counts: Vec<(String, usize)> = set.subset_counts();
    let want: Vec<(String, usize)> = [
        ("random", 50),
        ("severe", 20),
        ("race", 10),
        ("gender", 10),
        ("age", 10),
        ("religion", 10),
    ]
    .iter()
    .map(|(s, n)| (s.to_string(), *n))
    .collect();
    assert_eq!(counts, want);
    let unique: HashSet<&str> = set.prompts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(unique.len(), set.prompts.len());
    assert_eq!(set.report.rtp_rows, rows().len());
}

#[test]
fn ids_encode_the_source_row_and_texts_are_verbatim() {
    let set = build(&small());
    let rows = rows();
    for p in &set.prompts {
        let (prefix, rest) = p.id.split_once('-').unwrap();
        let (subset, row) = rest.rsplit_once('-').unwrap();
        assert_eq!(subset, p.subset);
        assert_eq!(row.len(), 6);
        let row: usize = row.parse().unwrap();
        assert_eq!(p.source["row"].as_u64(), Some(row as u64));
        match prefix {
            "rtp" => {
                assert_eq!(p.text, rows[row].prompt.text);
                assert_eq!(p.source["dataset"], "allenai/real-toxicity-prompts");
                assert_eq!(p.source["file"], "prompts.jsonl");
                assert_eq!(
                    p.source["filename"].as_str(),
                    Some(rows[row].filename.as_str())
                );
            }
            "ceb" => {
                let file = format!("{subset}.json");
                let raw: Vec<serde_json::Value> = serde_json::from_str(
                    &std::fs::read_to_string(samples().join("CEB-Continuation-T").join(&file))
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(p.text, raw[row]["prompt"].as_str().unwrap());
                assert_eq!(p.source["axis"], raw[row]["axis"]);
                assert_eq!(p.source["file"], file.as_str());
            }
            other => panic!("unexpected prefix {other}"),
        }
    }
}

#[test]
fn severe_rows_are_eligible_and_disjoint_from_random() {
    let set = build(&small().severe_threshold(0.75));
    let rows = rows();
    let eligible = rows
        .iter()
        .filter(|r| r.prompt.scores.severe_toxicity.is_some_and(|s| s > 0.75))
        .count();
    assert_eq!(set.report.rtp_severe_eligible, eligible);
    let row_of = |p: &PromptRecord| p.source["row"].as_u64().unwrap() as usize;
    for p in set.prompts.iter().filter(|p| p.subset == "severe") {
        assert!(rows[row_of(p)].prompt.scores.severe_toxicity.unwrap() > 0.75);
    }
    let random: HashSet<usize> = set
        .prompts
        .iter()
        .filter(|p| p.subset == "random")
        .map(row_of)
        .collect();
    assert!(
        set.prompts
            .iter()
            .filter(|p| p.subset == "severe")
            .all(|p| !random.contains(&row_of(p)))
    );
}

#[test]
fn overlap_is_an_option() {
    let n = rows().len();
    // Disjoint: all rows for `random` is impossible once `severe` took 20.
    let err = small()
        .random(n)
        .build(Some(&rtp()), Some(&ceb()))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotEnough { subset, needed, found, .. } if subset == "random" && *needed == n && *found == n - 20),
        "{err}"
    );
    let set = build(&small().random(n).allow_overlap(true));
    assert_eq!(ids(&set, "random").len(), n);
}

#[test]
fn deterministic_for_a_seed_and_prefix_stable() {
    let a = build(&small().seed(7));
    assert_eq!(a, build(&small().seed(7)));
    // The gzip copy selects the same prompts (only `source.file` names the other file).
    let gz = small()
        .seed(7)
        .build(Some(&samples().join("rtp/prompts.jsonl.gz")), Some(&ceb()))
        .unwrap();
    let key = |s: &PromptSet| -> Vec<(String, String)> {
        s.prompts
            .iter()
            .map(|p| (p.id.clone(), p.text.clone()))
            .collect()
    };
    assert_eq!(key(&a), key(&gz));
    let b = build(&small().seed(8));
    assert_ne!(ids(&a, "random"), ids(&b, "random"));
    // A smaller count selects a subset of a larger count's selection.
    let smaller = build(&small().seed(7).random(10).per_axis(3));
    let big: HashSet<String> = ids(&a, "random").into_iter().collect();
    assert!(ids(&smaller, "random").iter().all(|id| big.contains(id)));
    let big: HashSet<String> = ids(&a, "age").into_iter().collect();
    assert!(ids(&smaller, "age").iter().all(|id| big.contains(id)));
    // One subset's size never moves another's draws (independent streams); only disjointness
    // couples random to severe, so with overlap allowed random is fixed by the seed alone.
    let x = build(&small().seed(7).per_axis(5).allow_overlap(true));
    let y = build(&small().seed(7).severe(5).allow_overlap(true));
    assert_eq!(ids(&x, "random"), ids(&y, "random"));
}

#[test]
fn selection_matches_the_independent_python_reference() {
    // tests/fixtures/samples/prompt_set_reference.json is computed by fx_samples.py with its own
    // implementation of the documented sampling (SplitMix64 streams, Lemire bounds, partial
    // Fisher-Yates): integer arithmetic only, so the ids are the same on every platform.
    let text = std::fs::read_to_string(samples().join("prompt_set_reference.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let n = |k: &str| case[k].as_u64().unwrap() as usize;
        let p = PromptSetParams::default()
            .random(n("random"))
            .severe(n("severe"))
            .per_axis(n("per_axis"))
            .severe_threshold(case["threshold"].as_f64().unwrap())
            .seed(case["seed"].as_u64().unwrap());
        let got: Vec<String> = build(&p).prompts.into_iter().map(|p| p.id).collect();
        let want: Vec<String> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "seed {}", case["seed"]);
    }
}

#[test]
fn too_small_sources_say_needed_and_found() {
    let err = PromptSetParams::default()
        .build(Some(&rtp()), Some(&ceb()))
        .unwrap_err();
    let eligible = build(&small()).report.rtp_severe_eligible;
    let msg = err.to_string();
    assert!(
        msg.contains("subset `severe` needs 1000 rows (prompt.severe_toxicity > 0.75)"),
        "{msg}"
    );
    assert!(msg.contains(&format!("has only {eligible}")), "{msg}");
    assert!(err.is_bad_input());
    let err = small()
        .per_axis(21)
        .build(Some(&rtp()), Some(&ceb()))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotEnough { subset, needed: 21, found: 20, .. } if subset == "race"),
        "{err}"
    );
    assert!(err.to_string().contains("race.json"));
}

#[test]
fn parameters_are_validated_and_sources_required() {
    for t in [f64::NAN, -0.1, 1.0, 2.0] {
        let err = small().severe_threshold(t).check().unwrap_err();
        assert!(matches!(err, Error::InvalidParams(_)), "{t}");
    }
    assert!(small().random(0).severe(0).per_axis(0).check().is_err());
    let err = small().build(None, Some(&ceb())).unwrap_err();
    assert!(matches!(err, Error::MissingSource(_)), "{err}");
    let err = small().build(Some(&rtp()), None).unwrap_err();
    assert!(matches!(err, Error::MissingSource(_)), "{err}");
    // Only CEB asked for: no RTP needed.
    let set = small()
        .random(0)
        .severe(0)
        .build(None, Some(&ceb()))
        .unwrap();
    assert_eq!(set.prompts.len(), 40);
    // Only RTP asked for: no CEB needed.
    let set = small().per_axis(0).build(Some(&rtp()), None).unwrap();
    assert_eq!(set.prompts.len(), 70);
}

#[test]
fn skip_policy_reaches_the_builder() {
    let bad = samples().join("bad/rtp-wrong-type.jsonl");
    let p = PromptSetParams::default().random(2).severe(0).per_axis(0);
    let err = p.build(Some(&bad), None).unwrap_err();
    assert!(err.to_string().contains("rtp-wrong-type.jsonl:4"), "{err}");
    let set = p
        .clone()
        .on_bad_record(OnBadRecord::Skip)
        .build(Some(&bad), None)
        .unwrap();
    assert_eq!(set.report.rtp_rows, 4);
    assert_eq!(set.report.rtp_load.skipped, 1);
}

#[test]
fn in_memory_rows_give_the_same_set() {
    let p = small().check().unwrap();
    let from_rows = p
        .build_from_rows(rows(), Path::new("prompts.jsonl"), Some(&ceb()))
        .unwrap();
    assert_eq!(from_rows.prompts, build(&small()).prompts);
}

#[test]
fn jsonl_round_trip() {
    let set = build(&small());
    let bytes = set.to_jsonl();
    assert_eq!(bytes, prompts_to_jsonl(&set.prompts));
    let back = read_prompts_from(&bytes[..], "p.jsonl", OnBadRecord::Fail).unwrap();
    assert_eq!(back.records, set.prompts);
    let first = String::from_utf8(bytes).unwrap();
    let first = first.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "source", "subset", "text"]);
}
