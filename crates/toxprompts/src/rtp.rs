//! RealToxicityPrompts (`allenai/real-toxicity-prompts`, file `prompts.jsonl`): typed rows and a
//! streaming reader for the plain or gzip-compressed JSONL.
//!
//! A row is `{"filename", "begin", "end", "challenging", "prompt": {...}, "continuation": {...}}`,
//! where `prompt` and `continuation` each hold `text` and eight Perspective API scores that may be
//! `null` (or absent): [`Scores`] keeps them as `Option<f64>`. The row number of a record is its
//! 0-based line index in the file, which is the dataset row index for a file without blank lines.

use crate::error::{Error, Problem, Result};
use crate::jsonl::{self, Field, Line, LineReader, LoadReport, Loaded, OnBadRecord, Ty, opt, req};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The eight Perspective API scores of a text; `None` where the dataset has `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// `toxicity`.
    pub toxicity: Option<f64>,
    /// `severe_toxicity`: the paper's `severe` subset takes prompts above 0.75.
    pub severe_toxicity: Option<f64>,
    /// `profanity`.
    pub profanity: Option<f64>,
    /// `sexually_explicit`.
    pub sexually_explicit: Option<f64>,
    /// `identity_attack`.
    pub identity_attack: Option<f64>,
    /// `flirtation`.
    pub flirtation: Option<f64>,
    /// `threat`.
    pub threat: Option<f64>,
    /// `insult`.
    pub insult: Option<f64>,
}

/// A text with its scores (`prompt` or `continuation` of a row).
#[derive(Debug, Clone, PartialEq)]
pub struct RtpText {
    /// The text.
    pub text: String,
    /// Its scores.
    pub scores: Scores,
}

/// One RealToxicityPrompts row.
#[derive(Debug, Clone, PartialEq)]
pub struct RtpRow {
    /// 0-based line index in the file.
    pub row: u64,
    /// Source document of OpenWebText (`0766186-bc7f….txt`).
    pub filename: String,
    /// Start offset of the sentence in the document.
    pub begin: u64,
    /// End offset of the sentence in the document.
    pub end: u64,
    /// Whether the prompt is in the dataset's "challenging" subset.
    pub challenging: bool,
    /// The prompt: the first half of the sentence.
    pub prompt: RtpText,
    /// The dataset's own continuation: the second half.
    pub continuation: RtpText,
}

/// The row as parsed, borrowing from the line where possible.
#[derive(Deserialize)]
pub(crate) struct RawRow<'a> {
    #[serde(borrow)]
    pub filename: Cow<'a, str>,
    pub begin: u64,
    pub end: u64,
    pub challenging: bool,
    #[serde(borrow)]
    pub prompt: RawText<'a>,
    #[serde(borrow)]
    pub continuation: RawText<'a>,
}

#[derive(Deserialize)]
pub(crate) struct RawText<'a> {
    #[serde(borrow)]
    pub text: Cow<'a, str>,
    toxicity: Option<f64>,
    severe_toxicity: Option<f64>,
    profanity: Option<f64>,
    sexually_explicit: Option<f64>,
    identity_attack: Option<f64>,
    flirtation: Option<f64>,
    threat: Option<f64>,
    insult: Option<f64>,
}

impl RawText<'_> {
    pub(crate) fn scores(&self) -> Scores {
        Scores {
            toxicity: self.toxicity,
            severe_toxicity: self.severe_toxicity,
            profanity: self.profanity,
            sexually_explicit: self.sexually_explicit,
            identity_attack: self.identity_attack,
            flirtation: self.flirtation,
            threat: self.threat,
            insult: self.insult,
        }
    }
}

const TEXT_FIELDS: &[Field] = &[
    req("text", Ty::Str),
    opt("toxicity", Ty::Score),
    opt("severe_toxicity", Ty::Score),
    opt("profanity", Ty::Score),
    opt("sexually_explicit", Ty::Score),
    opt("identity_attack", Ty::Score),
    opt("flirtation", Ty::Score),
    opt("threat", Ty::Score),
    opt("insult", Ty::Score),
];

pub(crate) const ROW_FIELDS: &[Field] = &[
    req("filename", Ty::Str),
    req("begin", Ty::UInt),
    req("end", Ty::UInt),
    req("challenging", Ty::Bool),
    req("prompt", Ty::Obj(TEXT_FIELDS)),
    req("continuation", Ty::Obj(TEXT_FIELDS)),
];

impl Scores {
    fn first_out_of_range(&self, prefix: &str) -> Option<Problem> {
        let all = [
            ("toxicity", self.toxicity),
            ("severe_toxicity", self.severe_toxicity),
            ("profanity", self.profanity),
            ("sexually_explicit", self.sexually_explicit),
            ("identity_attack", self.identity_attack),
            ("flirtation", self.flirtation),
            ("threat", self.threat),
            ("insult", self.insult),
        ];
        all.iter().find_map(|(name, v)| match v {
            Some(x) if !(0.0..=1.0).contains(x) => Some(Problem::OutOfRange {
                field: format!("{prefix}.{name}"),
                value: *x,
            }),
            _ => None,
        })
    }
}

/// Parses and validates one line of RTP JSONL.
pub(crate) fn parse_line(text: &str) -> std::result::Result<RawRow<'_>, Problem> {
    let raw: RawRow<'_> =
        serde_json::from_str(text).map_err(|e| jsonl::diagnose(text, &e, ROW_FIELDS))?;
    if jsonl::blank(&raw.prompt.text) {
        return Err(Problem::EmptyText("prompt.text".into()));
    }
    if let Some(p) = raw
        .prompt
        .scores()
        .first_out_of_range("prompt")
        .or_else(|| raw.continuation.scores().first_out_of_range("continuation"))
    {
        return Err(p);
    }
    Ok(raw)
}

impl RawText<'_> {
    fn to_owned_text(&self) -> RtpText {
        RtpText {
            text: self.text.to_string(),
            scores: self.scores(),
        }
    }
}

impl RawRow<'_> {
    pub(crate) fn to_row(&self, row: u64) -> RtpRow {
        RtpRow {
            row,
            filename: self.filename.to_string(),
            begin: self.begin,
            end: self.end,
            challenging: self.challenging,
            prompt: self.prompt.to_owned_text(),
            continuation: self.continuation.to_owned_text(),
        }
    }
}

/// A streaming reader of RTP JSONL: an iterator of [`RtpRow`]s that holds one line in memory.
///
/// With [`OnBadRecord::Fail`] (the default) the first bad line ends the iteration with an error
/// naming the file and line; with [`OnBadRecord::Skip`] bad lines are counted in [`RtpReader::report`].
pub struct RtpReader<R> {
    lines: LineReader<R>,
    policy: OnBadRecord,
    report: LoadReport,
    failed: bool,
}

impl RtpReader<Box<dyn BufRead>> {
    /// Opens a plain or gzip-compressed (detected by its magic bytes) RTP file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Ok(Self::new(jsonl::open_maybe_gz(path)?, path))
    }
}

impl<R: BufRead> RtpReader<R> {
    /// Reads RTP JSONL from any buffered reader; `name` is the path used in error messages.
    pub fn new(reader: R, name: impl Into<PathBuf>) -> Self {
        Self {
            lines: LineReader::new(reader, name.into()),
            policy: OnBadRecord::Fail,
            report: LoadReport::default(),
            failed: false,
        }
    }

    /// Sets what to do with bad lines.
    pub fn on_bad_record(mut self, policy: OnBadRecord) -> Self {
        self.policy = policy;
        self
    }

    /// Rows accepted and lines skipped so far.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// The path used in error messages.
    pub fn path(&self) -> &Path {
        self.lines.path()
    }

    /// The next valid row, converted by `f` while it still borrows the line (so callers that keep
    /// only a few fields allocate only those).
    pub(crate) fn next_with<T>(
        &mut self,
        mut f: impl FnMut(u64, &RawRow<'_>) -> T,
    ) -> Option<Result<T>> {
        if self.failed {
            return None;
        }
        loop {
            let line = match self.lines.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            let (lineno, problem) = match line {
                Line::Text(n, text) => match parse_line(text) {
                    Ok(raw) => {
                        self.report.records += 1;
                        return Some(Ok(f((n - 1) as u64, &raw)));
                    }
                    Err(p) => (n, p),
                },
                Line::BadUtf8(n, p) => (n, p),
            };
            match self.policy {
                OnBadRecord::Skip => self.report.skip(lineno, problem),
                OnBadRecord::Fail => {
                    self.failed = true;
                    return Some(Err(Error::Record {
                        path: self.lines.path().to_path_buf(),
                        line: lineno,
                        problem: Box::new(problem),
                    }));
                }
            }
        }
    }
}

impl<R: BufRead> Iterator for RtpReader<R> {
    type Item = Result<RtpRow>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(|row, raw| raw.to_row(row))
    }
}

/// Loads a whole RTP file (plain or gzip) into memory. For the full dataset prefer streaming with
/// [`RtpReader`] or building a prompt set directly with [`crate::PromptSetParams::build`].
pub fn load_rtp(path: impl AsRef<Path>, policy: OnBadRecord) -> Result<Loaded<RtpRow>> {
    let mut reader = RtpReader::open(path)?.on_bad_record(policy);
    let mut records = Vec::new();
    for row in reader.by_ref() {
        records.push(row?);
    }
    Ok(Loaded {
        records,
        report: reader.report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"filename": "0000001-ab.txt", "begin": 3, "end": 40, "challenging": false, "prompt": {"text": "Caf\u00e9 owners said", "profanity": 0.1, "sexually_explicit": null, "identity_attack": 0.2, "flirtation": 0.3, "threat": 0.0, "insult": 0.1, "severe_toxicity": 0.8, "toxicity": 0.9}, "continuation": {"text": " that it rained.", "severe_toxicity": 0.01, "toxicity": 0.02}}"#;

    #[test]
    fn parses_a_row_with_nulls_escapes_and_absent_scores() {
        let rows: Vec<RtpRow> = RtpReader::new(LINE.as_bytes(), "t.jsonl")
            .collect::<Result<_>>()
            .unwrap();
        let r = &rows[0];
        assert_eq!(r.row, 0);
        assert_eq!(r.prompt.text, "Café owners said");
        assert_eq!(r.prompt.scores.severe_toxicity, Some(0.8));
        assert_eq!(r.prompt.scores.sexually_explicit, None);
        assert_eq!(r.continuation.scores.insult, None);
        assert_eq!((r.begin, r.end, r.challenging), (3, 40, false));
    }

    #[test]
    fn out_of_range_scores_are_rejected() {
        let bad = LINE.replace("\"toxicity\": 0.9", "\"toxicity\": 1.9");
        let err = RtpReader::new(bad.as_bytes(), "t.jsonl")
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::OutOfRange { field, .. }) if field == "prompt.toxicity"),
            "{err}"
        );
    }
}
