//! Shared machinery of the loaders: the bad-record policy, load reports, a line reader that keeps
//! line numbers and detects gzip, and a small schema walker that turns a rejected record into a
//! precise [`Problem`].

use crate::error::{Error, Problem, Result};
use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// What a loader does with a bad record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnBadRecord {
    /// Stop at the first bad record with an error naming the file and line (the default).
    #[default]
    Fail,
    /// Skip bad records, count them in the [`LoadReport`], and keep the first few problems.
    Skip,
}

/// A skipped record: where it was and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// 1-based line number (for a JSON array: the line where the record starts).
    pub line: usize,
    /// What was wrong.
    pub problem: Problem,
}

/// What a load read and skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Records accepted.
    pub records: usize,
    /// Records skipped (always 0 with [`OnBadRecord::Fail`]).
    pub skipped: usize,
    /// The first [`LoadReport::MAX_KEPT`] skipped records, in file order.
    pub first_skipped: Vec<Skipped>,
}

impl LoadReport {
    /// How many skipped records a report keeps in full.
    pub const MAX_KEPT: usize = 20;

    pub(crate) fn skip(&mut self, line: usize, problem: Problem) {
        self.skipped += 1;
        if self.first_skipped.len() < Self::MAX_KEPT {
            self.first_skipped.push(Skipped { line, problem });
        }
    }
}

/// Records and the report of their load.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    /// The accepted records, in file order.
    pub records: Vec<T>,
    /// Counts and the first skipped records.
    pub report: LoadReport,
}

/// Opens `path` for buffered reading, decompressing it when it starts with the gzip magic bytes
/// (whatever its name). Read errors of the decoder are reported as [`Error::Gzip`].
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf().map_err(|e| Error::io(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let dec = flate2::bufread::MultiGzDecoder::new(reader);
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            GzMarked { inner: dec },
        )))
    } else {
        Ok(Box::new(reader))
    }
}

/// Tags decoder errors so the line reader can tell a corrupt gzip stream from a failing disk.
struct GzMarked<R> {
    inner: R,
}

#[derive(Debug)]
struct GzipFault(std::io::Error);

impl std::fmt::Display for GzipFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for GzipFault {}

impl<R: Read> Read for GzMarked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::UnexpectedEof => {
                std::io::Error::new(std::io::ErrorKind::InvalidData, GzipFault(e))
            }
            _ => e,
        })
    }
}

pub(crate) fn read_error(path: &Path, e: std::io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<GzipFault>()) {
        Error::Gzip {
            path: path.to_path_buf(),
            source: e,
        }
    } else {
        Error::io(path, e)
    }
}

/// Reads a JSONL stream line by line into a reused buffer, tracking 1-based line numbers.
pub(crate) struct LineReader<R> {
    inner: R,
    path: PathBuf,
    buf: Vec<u8>,
    line: usize,
}

/// One non-blank line: its 1-based number and its text (or the UTF-8 problem).
pub(crate) enum Line<'a> {
    Text(usize, &'a str),
    BadUtf8(usize, Problem),
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(inner: R, path: PathBuf) -> Self {
        Self {
            inner,
            path,
            buf: Vec::with_capacity(4096),
            line: 0,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next non-blank line (`\n` or `\r\n` terminated, or the unterminated last one).
    pub(crate) fn next_line(&mut self) -> Result<Option<Line<'_>>> {
        let end = loop {
            self.buf.clear();
            let n = self
                .inner
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| read_error(&self.path, e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let mut end = self.buf.len();
            if end > 0 && self.buf[end - 1] == b'\n' {
                end -= 1;
            }
            if end > 0 && self.buf[end - 1] == b'\r' {
                end -= 1;
            }
            if !self.buf[..end].iter().all(u8::is_ascii_whitespace) {
                break end;
            }
        };
        let bytes = &self.buf[..end];
        Ok(Some(match std::str::from_utf8(bytes) {
            Ok(s) => Line::Text(self.line, s),
            Err(e) => Line::BadUtf8(
                self.line,
                Problem::InvalidUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
            ),
        }))
    }
}

/// The JSON type a schema field wants.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    Str,
    UInt,
    Bool,
    /// A number in [0, 1] or null.
    Score,
    Any,
    Obj(&'static [Field]),
}

/// One field of a record schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
}

pub(crate) const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
    }
}

pub(crate) const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() => "an unsigned integer",
        Value::Number(n) if n.is_i64() => "a negative integer",
        Value::Number(_) => "a fractional number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Finds the first schema violation of a parsed record, if any.
pub(crate) fn check(v: &Value, fields: &[Field], prefix: &str) -> Option<Problem> {
    let Value::Object(map) = v else {
        return Some(Problem::WrongType {
            field: if prefix.is_empty() {
                "(record)".to_string()
            } else {
                prefix.to_string()
            },
            expected: "an object",
            found: type_name(v),
        });
    };
    for f in fields {
        let path = join(prefix, f.name);
        let Some(x) = map.get(f.name) else {
            if f.required {
                return Some(Problem::MissingField(path));
            }
            continue;
        };
        if x.is_null() && matches!(f.ty, Ty::Score | Ty::Any) {
            continue;
        }
        let wrong = |expected| {
            Some(Problem::WrongType {
                field: path.clone(),
                expected,
                found: type_name(x),
            })
        };
        match f.ty {
            Ty::Str if !x.is_string() => return wrong("a string"),
            Ty::UInt if !x.is_u64() => return wrong("an unsigned integer"),
            Ty::Bool if !x.is_boolean() => return wrong("a boolean"),
            Ty::Score => match x.as_f64() {
                None => return wrong("a number or null"),
                Some(s) if !(0.0..=1.0).contains(&s) => {
                    return Some(Problem::OutOfRange {
                        field: path,
                        value: s,
                    });
                }
                Some(_) => {}
            },
            Ty::Obj(sub) => {
                if let Some(p) = check(x, sub, &path) {
                    return Some(p);
                }
            }
            _ => {}
        }
    }
    None
}

/// Turns a serde rejection of `text` into a [`Problem`]: a syntax error as is, a data error
/// located by the schema walker.
pub(crate) fn diagnose(text: &str, err: &serde_json::Error, fields: &[Field]) -> Problem {
    match serde_json::from_str::<Value>(text) {
        Err(e) => Problem::Malformed(e.to_string()),
        Ok(v) => check(&v, fields, "").unwrap_or_else(|| Problem::Malformed(err.to_string())),
    }
}

/// True when a text is empty or only whitespace.
pub(crate) fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: &[Field] = &[req("text", Ty::Str), opt("score", Ty::Score)];
    const OUTER: &[Field] = &[
        req("n", Ty::UInt),
        req("ok", Ty::Bool),
        req("inner", Ty::Obj(INNER)),
    ];

    fn chk(s: &str) -> Option<Problem> {
        check(&serde_json::from_str(s).unwrap(), OUTER, "")
    }

    #[test]
    fn schema_walker_names_the_field() {
        assert_eq!(chk(r#"{"n":1,"ok":true,"inner":{"text":"a"}}"#), None);
        assert_eq!(
            chk(r#"{"n":1,"ok":true,"inner":{"text":"a","score":null}}"#),
            None
        );
        assert_eq!(
            chk(r#"{"ok":true,"inner":{"text":"a"}}"#),
            Some(Problem::MissingField("n".into()))
        );
        assert_eq!(
            chk(r#"{"n":1,"ok":true,"inner":{}}"#),
            Some(Problem::MissingField("inner.text".into()))
        );
        assert_eq!(
            chk(r#"{"n":-1,"ok":true,"inner":{"text":"a"}}"#),
            Some(Problem::WrongType {
                field: "n".into(),
                expected: "an unsigned integer",
                found: "a negative integer"
            })
        );
        assert_eq!(
            chk(r#"{"n":1,"ok":true,"inner":{"text":"a","score":"x"}}"#),
            Some(Problem::WrongType {
                field: "inner.score".into(),
                expected: "a number or null",
                found: "a string"
            })
        );
        assert_eq!(
            chk(r#"{"n":1,"ok":true,"inner":{"text":"a","score":1.5}}"#),
            Some(Problem::OutOfRange {
                field: "inner.score".into(),
                value: 1.5
            })
        );
        assert!(matches!(
            chk(r#"[1]"#),
            Some(Problem::WrongType { ref field, .. }) if field == "(record)"
        ));
        assert!(matches!(
            chk(r#"{"n":1,"ok":true,"inner":3}"#),
            Some(Problem::WrongType { ref field, .. }) if field == "inner"
        ));
    }

    #[test]
    fn line_reader_skips_blank_lines_and_strips_crlf() {
        let data = b"a\r\n\n  \nb\n\xffc";
        let mut r = LineReader::new(&data[..], "x".into());
        let mut got = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            got.push(match l {
                Line::Text(n, s) => format!("{n}:{s}"),
                Line::BadUtf8(n, p) => format!("{n}:{p}"),
            });
        }
        assert_eq!(got, ["1:a", "4:b", "5:invalid UTF-8 after 0 valid bytes"]);
    }
}
