//! Every bad-input case on the sample files: malformed JSON, missing field, wrong type, invalid
//! UTF-8, empty text, duplicate id, corrupt gzip — as an error naming file and line (fail policy)
//! and as a counted skip (skip policy). Never a panic.

use std::io::Write;
use std::path::PathBuf;
use toxprompts::{
    CebAxis, Error, OnBadRecord, Problem, RtpReader, load_ceb_file, load_rtp, read_prompts,
};

fn bad(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples/bad"
    ))
    .join(name)
}

fn fail_rtp(name: &str) -> Error {
    load_rtp(bad(name), OnBadRecord::Fail).expect_err(name)
}

/// Checks the error names the file and line 4, and the skip policy keeps the other 4 lines.
fn check_rtp(name: &str, want: impl Fn(&Problem) -> bool) {
    let err = fail_rtp(name);
    let msg = err.to_string();
    assert!(msg.contains(&format!("{name}:4: ")), "{msg}");
    assert!(err.is_bad_input());
    assert_eq!(err.line(), Some(4));
    assert!(
        want(err.problem().expect("a record problem")),
        "{name}: {err}"
    );

    let loaded = load_rtp(bad(name), OnBadRecord::Skip).expect(name);
    assert_eq!(loaded.records.len(), 4, "{name}");
    assert_eq!(loaded.report.records, 4);
    assert_eq!(loaded.report.skipped, 1);
    assert_eq!(loaded.report.first_skipped[0].line, 4);
    // Row numbers are line indices, so the row after the skipped one keeps its number.
    let rows: Vec<u64> = loaded.records.iter().map(|r| r.row).collect();
    assert_eq!(rows, [0, 1, 2, 4]);
}

#[test]
fn rtp_malformed_line() {
    check_rtp("rtp-malformed.jsonl", |p| {
        matches!(p, Problem::Malformed(_))
    });
}

#[test]
fn rtp_missing_field() {
    check_rtp("rtp-missing-field.jsonl", |p| {
        *p == Problem::MissingField("prompt".into())
    });
    check_rtp("rtp-missing-nested-field.jsonl", |p| {
        *p == Problem::MissingField("prompt.text".into())
    });
}

#[test]
fn rtp_wrong_type() {
    check_rtp(
        "rtp-wrong-type.jsonl",
        |p| matches!(p, Problem::WrongType { field, found: "a string", .. } if field == "prompt.severe_toxicity"),
    );
}

#[test]
fn rtp_invalid_utf8() {
    check_rtp(
        "rtp-invalid-utf8.jsonl",
        |p| matches!(p, Problem::InvalidUtf8 { valid_up_to } if *valid_up_to > 0),
    );
}

#[test]
fn rtp_empty_text() {
    check_rtp("rtp-empty-text.jsonl", |p| {
        *p == Problem::EmptyText("prompt.text".into())
    });
}

#[test]
fn rtp_reader_stops_after_the_first_error() {
    let mut r = RtpReader::open(bad("rtp-malformed.jsonl")).unwrap();
    assert!(r.by_ref().take(3).all(|x| x.is_ok()));
    assert!(r.next().unwrap().is_err());
    assert!(r.next().is_none());
}

fn check_prompts(name: &str, want: impl Fn(&Problem) -> bool) {
    let err = read_prompts(bad(name), OnBadRecord::Fail).expect_err(name);
    assert!(err.to_string().contains(&format!("{name}:4: ")), "{err}");
    assert!(err.is_bad_input());
    assert!(want(err.problem().unwrap()), "{name}: {err}");
    let loaded = read_prompts(bad(name), OnBadRecord::Skip).unwrap();
    assert_eq!(loaded.records.len(), 4);
    assert_eq!(loaded.report.skipped, 1);
    assert_eq!(loaded.report.first_skipped[0].line, 4);
}

#[test]
fn prompts_every_bad_case() {
    check_prompts("prompts-malformed.jsonl", |p| {
        matches!(p, Problem::Malformed(_))
    });
    check_prompts("prompts-missing-field.jsonl", |p| {
        *p == Problem::MissingField("text".into())
    });
    check_prompts(
        "prompts-wrong-type.jsonl",
        |p| matches!(p, Problem::WrongType { field, expected: "a string", found: "an unsigned integer" } if field == "id"),
    );
    check_prompts("prompts-invalid-utf8.jsonl", |p| {
        matches!(p, Problem::InvalidUtf8 { .. })
    });
    check_prompts("prompts-empty-text.jsonl", |p| {
        *p == Problem::EmptyText("text".into())
    });
    check_prompts("prompts-duplicate-id.jsonl", |p| {
        *p == Problem::DuplicateId {
            id: "custom-001".into(),
            first_line: 2,
        }
    });
}

/// The line where the third record (index 2) of a pretty-printed sample array starts.
fn third_record_line(name: &str) -> usize {
    let text = std::fs::read_to_string(bad(name)).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| *l == "    {")
        .nth(2)
        .map(|(i, _)| i + 1)
        .unwrap()
}

#[test]
fn ceb_bad_records_name_file_line_and_index() {
    for (name, want) in [
        (
            "ceb-missing-field.json",
            Problem::MissingField("axis".into()),
        ),
        (
            "ceb-wrong-type.json",
            Problem::WrongType {
                field: "descriptor".into(),
                expected: "a string",
                found: "an unsigned integer",
            },
        ),
        ("ceb-empty-text.json", Problem::EmptyText("prompt".into())),
    ] {
        let line = third_record_line(name);
        let err = load_ceb_file(bad(name), CebAxis::Age, OnBadRecord::Fail).expect_err(name);
        assert!(
            err.to_string()
                .contains(&format!("{name}:{line}: record 2: ")),
            "{err}"
        );
        assert_eq!(err.problem(), Some(&want));
        let ok = load_ceb_file(bad(name), CebAxis::Age, OnBadRecord::Skip).unwrap();
        assert_eq!(ok.records.len(), 2);
        assert_eq!(ok.report.skipped, 1);
        assert_eq!(ok.report.first_skipped[0].line, line);
    }
    // A truncated file cannot be skipped around: it is always an error, with the line.
    for policy in [OnBadRecord::Fail, OnBadRecord::Skip] {
        let err = load_ceb_file(bad("ceb-malformed.json"), CebAxis::Age, policy).unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::Malformed(_))),
            "{err}"
        );
        assert!(err.line().unwrap() > 1);
        assert!(err.is_bad_input());
    }
    // A file of the wrong axis.
    let race = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples/CEB-Continuation-T/race.json"
    );
    let err = load_ceb_file(race, CebAxis::Age, OnBadRecord::Fail).unwrap_err();
    assert!(
        matches!(err.problem(), Some(Problem::UnexpectedValue { .. })),
        "{err}"
    );
}

#[test]
fn corrupt_and_truncated_gzip_is_a_gzip_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples/rtp/prompts.jsonl.gz"
    ))
    .unwrap();
    let truncated = dir.path().join("t.jsonl.gz");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let err = load_rtp(&truncated, OnBadRecord::Skip).unwrap_err();
    assert!(matches!(err, Error::Gzip { .. }), "{err}");
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("t.jsonl.gz"));

    let corrupt = dir.path().join("c.jsonl.gz");
    let mut bytes = good.clone();
    for b in bytes.iter_mut().skip(20).take(200) {
        *b ^= 0x5a;
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    let err = load_rtp(&corrupt, OnBadRecord::Skip).unwrap_err();
    assert!(matches!(err, Error::Gzip { .. }), "{err}");
}

#[test]
fn missing_file_and_directory_are_bad_input() {
    let err = load_rtp("/nonexistent/prompts.jsonl", OnBadRecord::Fail).unwrap_err();
    assert!(err.is_bad_input() && err.to_string().contains("/nonexistent/prompts.jsonl"));
    let dir = tempfile::tempdir().unwrap();
    let err = toxprompts::CebSet::from_dir(dir.path(), OnBadRecord::Fail).unwrap_err();
    assert!(
        err.to_string().contains("missing CEB file(s): race.json"),
        "{err}"
    );
}

#[test]
fn garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"\0\0\x1f\n[]\n{}\n\"s\"\n{\"prompt\":{}}\n\xff\xfe\n1e999\n{\"filename\":1}\n")
        .unwrap();
    drop(f);
    let loaded = load_rtp(&path, OnBadRecord::Skip).unwrap();
    assert_eq!((loaded.records.len(), loaded.report.skipped), (0, 8));
    let loaded = read_prompts(&path, OnBadRecord::Skip).unwrap();
    assert_eq!(loaded.report.skipped, 8);
}
