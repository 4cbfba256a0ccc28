//! The prompts JSONL contract (design.md §3): one `{"id", "subset", "text", "source"}` object per
//! line. Built prompt sets are written in it, and users can hand in their own prompts in it
//! (`id` and `text` required, `subset` defaulting to `custom`, `source` any JSON or absent).

use crate::error::{Error, Problem, Result};
use crate::jsonl::{self, Field, Line, LineReader, LoadReport, Loaded, OnBadRecord, Ty, opt, req};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// The subset name given to prompts whose file has no `subset` field.
pub const DEFAULT_SUBSET: &str = "custom";

fn default_subset() -> String {
    DEFAULT_SUBSET.to_string()
}

/// One prompt of a prompt set: what generation reads and every later stage carries along.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// Unique id within the set. Built sets use `rtp-<subset>-<row>` and `ceb-<subset>-<row>`
    /// (`rtp-severe-000017` is row 17 of the RTP file).
    pub id: String,
    /// The subset it belongs to (`random`, `severe`, `race`, `gender`, `age`, `religion`, or a
    /// user's own).
    #[serde(default = "default_subset")]
    pub subset: String,
    /// The prompt text, verbatim.
    pub text: String,
    /// Where the prompt came from ([`RtpSource`], [`CebSource`], or anything a user put there);
    /// `null` when unknown.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub source: Value,
}

/// The `source` of a prompt drawn from RealToxicityPrompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtpSource {
    /// `allenai/real-toxicity-prompts`.
    pub dataset: String,
    /// The file it was read from (file name only).
    pub file: String,
    /// 0-based row (line index) in that file.
    pub row: u64,
    /// The row's `filename` (OpenWebText document).
    pub filename: String,
    /// The row's `begin`.
    pub begin: u64,
    /// The row's `end`.
    pub end: u64,
    /// The row's `challenging` flag.
    pub challenging: bool,
    /// `prompt.toxicity`.
    pub toxicity: Option<f64>,
    /// `prompt.severe_toxicity`.
    pub severe_toxicity: Option<f64>,
}

/// The `source` of a prompt drawn from CEB-Continuation-T.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CebSource {
    /// `Song-SW/CEB`.
    pub dataset: String,
    /// The file it was read from (`race.json`, …).
    pub file: String,
    /// 0-based index of the record in the file's array.
    pub row: u64,
    /// The record's `axis`.
    pub axis: String,
    /// The record's `bucket`.
    pub bucket: String,
    /// The record's `descriptor`.
    pub descriptor: String,
    /// The record's `noun_gender`.
    pub noun_gender: String,
    /// The record's `template`.
    pub template: String,
}

const PROMPT_FIELDS: &[Field] = &[
    req("id", Ty::Str),
    req("text", Ty::Str),
    opt("subset", Ty::Str),
    opt("source", Ty::Any),
];

/// Parses and validates one prompts line (duplicates are checked by the caller).
fn parse_line(text: &str) -> std::result::Result<PromptRecord, Problem> {
    let rec: PromptRecord =
        serde_json::from_str(text).map_err(|e| jsonl::diagnose(text, &e, PROMPT_FIELDS))?;
    if jsonl::blank(&rec.id) {
        return Err(Problem::EmptyText("id".into()));
    }
    if jsonl::blank(&rec.text) {
        return Err(Problem::EmptyText("text".into()));
    }
    if jsonl::blank(&rec.subset) {
        return Err(Problem::EmptyText("subset".into()));
    }
    Ok(rec)
}

/// Reads a prompts JSONL file (plain or gzip). Ids must be unique: with [`OnBadRecord::Skip`] a
/// repeated id is skipped and the first record with it kept.
pub fn read_prompts(path: impl AsRef<Path>, policy: OnBadRecord) -> Result<Loaded<PromptRecord>> {
    let path = path.as_ref();
    read_prompts_from(jsonl::open_maybe_gz(path)?, path, policy)
}

/// Reads prompts JSONL from any buffered reader; `name` is the path used in error messages.
pub fn read_prompts_from<R: BufRead>(
    reader: R,
    name: impl Into<PathBuf>,
    policy: OnBadRecord,
) -> Result<Loaded<PromptRecord>> {
    let mut lines = LineReader::new(reader, name.into());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Loaded {
        records: Vec::new(),
        report: LoadReport::default(),
    };
    while let Some(line) = lines.next_line()? {
        let (lineno, result) = match line {
            Line::Text(n, text) => (n, parse_line(text)),
            Line::BadUtf8(n, p) => (n, Err(p)),
        };
        let result = result.and_then(|rec| match seen.get(&rec.id) {
            Some(&first_line) => Err(Problem::DuplicateId {
                id: rec.id,
                first_line,
            }),
            None => Ok(rec),
        });
        match result {
            Ok(rec) => {
                seen.insert(rec.id.clone(), lineno);
                out.report.records += 1;
                out.records.push(rec);
            }
            Err(problem) => match policy {
                OnBadRecord::Skip => out.report.skip(lineno, problem),
                OnBadRecord::Fail => {
                    return Err(Error::Record {
                        path: lines.path().to_path_buf(),
                        line: lineno,
                        problem: Box::new(problem),
                    });
                }
            },
        }
    }
    Ok(out)
}

/// Writes prompts as JSONL, one object per line.
pub fn write_prompts<W: Write>(mut w: W, prompts: &[PromptRecord]) -> std::io::Result<()> {
    for p in prompts {
        serde_json::to_writer(&mut w, p)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// The prompts as JSONL bytes (for an atomic whole-file write).
pub fn prompts_to_jsonl(prompts: &[PromptRecord]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(prompts.len() * 256);
    // Writing JSON values of plain structs into a Vec cannot fail.
    for p in prompts {
        if serde_json::to_writer(&mut buf, p).is_ok() {
            buf.push(b'\n');
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_defaults() {
        let p = vec![
            PromptRecord {
                id: "a".into(),
                subset: "random".into(),
                text: "Hello \"there\" — café".into(),
                source: serde_json::json!({"dataset": "x", "row": 3}),
            },
            PromptRecord {
                id: "b".into(),
                subset: "custom".into(),
                text: "Bye".into(),
                source: Value::Null,
            },
        ];
        let bytes = prompts_to_jsonl(&p);
        assert!(!String::from_utf8_lossy(&bytes).contains("\"source\":null"));
        let back = read_prompts_from(&bytes[..], "p.jsonl", OnBadRecord::Fail).unwrap();
        assert_eq!(back.records, p);
        let minimal =
            read_prompts_from(&br#"{"id":"x","text":"t"}"#[..], "p", OnBadRecord::Fail).unwrap();
        assert_eq!(minimal.records[0].subset, DEFAULT_SUBSET);
        assert_eq!(minimal.records[0].source, Value::Null);
    }

    #[test]
    fn null_subset_is_a_type_error() {
        let err = read_prompts_from(
            &br#"{"id":"x","text":"t","subset":null}"#[..],
            "p",
            OnBadRecord::Fail,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("p:1: field `subset`"), "{err}");
    }
}
