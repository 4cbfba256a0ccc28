//! CEB-Continuation-T (`Song-SW/CEB`, `data/CEB-Continuation-T/{race,gender,age,religion}.json`):
//! typed records, one file per bias axis, each a JSON array of records with nine string fields.
//!
//! The `prompt` field is used verbatim: it already holds the instruction wrapper, and some prompts
//! have their first character clipped (`"s a society, …"`). That is the benchmark as published, so
//! it is kept.

use crate::error::{Error, Problem, Result};
use crate::jsonl::{self, Field, LoadReport, Loaded, OnBadRecord, Ty, req};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One of the four CEB bias axes the paper uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CebAxis {
    /// `race.json`, axis `race_ethnicity`.
    Race,
    /// `gender.json`, axis `gender_and_sex`.
    Gender,
    /// `age.json`, axis `age`.
    Age,
    /// `religion.json`, axis `religion`.
    Religion,
}

impl CebAxis {
    /// The four axes in the paper's order.
    pub const ALL: [CebAxis; 4] = [
        CebAxis::Race,
        CebAxis::Gender,
        CebAxis::Age,
        CebAxis::Religion,
    ];

    /// The subset name in a prompt set (`race`, `gender`, `age`, `religion`).
    pub fn subset(self) -> &'static str {
        match self {
            CebAxis::Race => "race",
            CebAxis::Gender => "gender",
            CebAxis::Age => "age",
            CebAxis::Religion => "religion",
        }
    }

    /// The file name in `data/CEB-Continuation-T/`.
    pub fn file_name(self) -> &'static str {
        match self {
            CebAxis::Race => "race.json",
            CebAxis::Gender => "gender.json",
            CebAxis::Age => "age.json",
            CebAxis::Religion => "religion.json",
        }
    }

    /// The value of the records' `axis` field.
    pub fn axis_value(self) -> &'static str {
        match self {
            CebAxis::Race => "race_ethnicity",
            CebAxis::Gender => "gender_and_sex",
            CebAxis::Age => "age",
            CebAxis::Religion => "religion",
        }
    }

    /// The axis whose file is named `name` (`race.json`) or whose subset is `name` (`race`).
    pub fn from_name(name: &str) -> Option<CebAxis> {
        let stem = name.strip_suffix(".json").unwrap_or(name);
        CebAxis::ALL.into_iter().find(|a| a.subset() == stem)
    }
}

/// One CEB-Continuation-T record: the nine string fields of the published files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CebRecord {
    /// The prompt the model continues (instruction wrapper included): used verbatim.
    pub prompt: String,
    /// `race_ethnicity`, `gender_and_sex`, `age` or `religion`.
    pub axis: String,
    /// The HolisticBias bucket (`asian`, `transgender`, `old`, …).
    pub bucket: String,
    /// The identity descriptor.
    pub descriptor: String,
    /// `male`, `female` or `neutral`.
    pub noun_gender: String,
    /// The HolisticBias sentence template.
    pub template: String,
    /// The prompt before the GPT rewrite.
    pub old_prompt: String,
    /// The original HolisticBias text.
    pub original_text: String,
    /// The GPT-rewritten continuation start.
    pub gpt_rewrite_text: String,
}

const CEB_FIELDS: &[Field] = &[
    req("prompt", Ty::Str),
    req("axis", Ty::Str),
    req("bucket", Ty::Str),
    req("descriptor", Ty::Str),
    req("noun_gender", Ty::Str),
    req("template", Ty::Str),
    req("old_prompt", Ty::Str),
    req("original_text", Ty::Str),
    req("gpt_rewrite_text", Ty::Str),
];

/// The records of one CEB file.
#[derive(Debug, Clone, PartialEq)]
pub struct CebFile {
    /// The axis.
    pub axis: CebAxis,
    /// Where it was read from.
    pub path: PathBuf,
    /// The accepted records in file order, each with its 0-based index in the array.
    pub records: Vec<(usize, CebRecord)>,
    /// Counts and the first skipped records.
    pub report: LoadReport,
}

/// The four CEB-Continuation-T files.
#[derive(Debug, Clone, PartialEq)]
pub struct CebSet {
    files: Vec<CebFile>,
}

impl CebSet {
    /// Loads `race.json`, `gender.json`, `age.json` and `religion.json` from `dir`.
    pub fn from_dir(dir: impl AsRef<Path>, policy: OnBadRecord) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Layout {
                path: dir.to_path_buf(),
                message: "not a directory (expected the CEB-Continuation-T directory holding \
                          race.json, gender.json, age.json and religion.json)"
                    .into(),
            });
        }
        let missing: Vec<&str> = CebAxis::ALL
            .iter()
            .map(|a| a.file_name())
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Layout {
                path: dir.to_path_buf(),
                message: format!("missing CEB file(s): {}", missing.join(", ")),
            });
        }
        Self::from_files(&CebAxis::ALL.map(|a| dir.join(a.file_name())), policy)
    }

    /// Loads the four files from explicit paths; each file's axis comes from its name
    /// (`race.json`, …), and each axis must appear exactly once.
    pub fn from_files(paths: &[PathBuf], policy: OnBadRecord) -> Result<Self> {
        let mut files: Vec<CebFile> = Vec::with_capacity(4);
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let axis = CebAxis::from_name(&name).ok_or_else(|| Error::Layout {
                path: path.clone(),
                message: "not a CEB-Continuation-T file name (race.json, gender.json, age.json, \
                          religion.json)"
                    .into(),
            })?;
            if files.iter().any(|f| f.axis == axis) {
                return Err(Error::Layout {
                    path: path.clone(),
                    message: format!("a second file for axis `{}`", axis.subset()),
                });
            }
            files.push(load_ceb_file(path, axis, policy)?);
        }
        if let Some(a) = CebAxis::ALL
            .into_iter()
            .find(|a| !files.iter().any(|f| f.axis == *a))
        {
            return Err(Error::Layout {
                path: paths.first().cloned().unwrap_or_default(),
                message: format!("no file given for CEB axis `{}`", a.subset()),
            });
        }
        files.sort_by_key(|f| f.axis);
        Ok(Self { files })
    }

    /// Builds a set from already loaded files (one per axis).
    pub fn from_loaded(mut files: Vec<CebFile>) -> Result<Self> {
        for a in CebAxis::ALL {
            let n = files.iter().filter(|f| f.axis == a).count();
            if n != 1 {
                return Err(Error::Layout {
                    path: PathBuf::new(),
                    message: format!("{n} files for CEB axis `{}` (need exactly one)", a.subset()),
                });
            }
        }
        files.sort_by_key(|f| f.axis);
        Ok(Self { files })
    }

    /// The file of one axis.
    pub fn file(&self, axis: CebAxis) -> &CebFile {
        // from_* guarantee one file per axis, sorted in CebAxis order.
        &self.files[axis as usize]
    }

    /// The four files in the paper's order.
    pub fn files(&self) -> &[CebFile] {
        &self.files
    }
}

/// Loads one CEB-Continuation-T file whose records must all have `axis`'s `axis` value.
pub fn load_ceb_file(
    path: impl AsRef<Path>,
    axis: CebAxis,
    policy: OnBadRecord,
) -> Result<CebFile> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let loaded = parse_ceb_slice(&bytes, path, Some(axis), policy)?;
    Ok(CebFile {
        axis,
        path: path.to_path_buf(),
        records: loaded.records,
        report: loaded.report,
    })
}

/// Parses the bytes of a CEB-Continuation-T file. `name` is the path used in error messages;
/// when `axis` is given, every record's `axis` field must match it. Records come with their
/// 0-based index in the array.
pub fn parse_ceb_slice(
    bytes: &[u8],
    name: &Path,
    axis: Option<CebAxis>,
    policy: OnBadRecord,
) -> Result<Loaded<(usize, CebRecord)>> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::ArrayRecord {
        path: name.to_path_buf(),
        line: line_of(bytes, e.valid_up_to()),
        index: record_index_at(bytes, e.valid_up_to()),
        problem: Box::new(Problem::InvalidUtf8 {
            valid_up_to: e.valid_up_to(),
        }),
    })?;
    let values: Value = serde_json::from_str(text).map_err(|e| {
        let offset = offset_of(text, e.line(), e.column());
        Error::ArrayRecord {
            path: name.to_path_buf(),
            line: e.line().max(1),
            index: record_index_at(bytes, offset),
            problem: Box::new(Problem::Malformed(e.to_string())),
        }
    })?;
    let Value::Array(items) = values else {
        return Err(Error::Layout {
            path: name.to_path_buf(),
            message: "not a JSON array of records".into(),
        });
    };
    let starts = record_starts(bytes);
    let mut out = Loaded {
        records: Vec::with_capacity(items.len()),
        report: LoadReport::default(),
    };
    for (index, item) in items.into_iter().enumerate() {
        let line = starts.get(index).map_or(1, |&o| line_of(bytes, o));
        match check_record(item, axis) {
            Ok(rec) => {
                out.report.records += 1;
                out.records.push((index, rec));
            }
            Err(problem) => match policy {
                OnBadRecord::Skip => out.report.skip(line, problem),
                OnBadRecord::Fail => {
                    return Err(Error::ArrayRecord {
                        path: name.to_path_buf(),
                        line,
                        index,
                        problem: Box::new(problem),
                    });
                }
            },
        }
    }
    Ok(out)
}

fn check_record(item: Value, axis: Option<CebAxis>) -> std::result::Result<CebRecord, Problem> {
    if let Some(p) = jsonl::check(&item, CEB_FIELDS, "") {
        return Err(p);
    }
    let rec: CebRecord =
        serde_json::from_value(item).map_err(|e| Problem::Malformed(e.to_string()))?;
    if jsonl::blank(&rec.prompt) {
        return Err(Problem::EmptyText("prompt".into()));
    }
    if let Some(a) = axis
        && rec.axis != a.axis_value()
    {
        return Err(Problem::UnexpectedValue {
            field: "axis".into(),
            expected: a.axis_value().into(),
            found: rec.axis,
        });
    }
    Ok(rec)
}

/// 1-based line of a byte offset.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Byte offset of a 1-based line and column (as serde_json reports them).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1).min(l.len());
        }
        offset += l.len();
    }
    text.len()
}

/// Byte offsets where each element of the top-level array starts (a string-aware scan).
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut expect_value = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        if depth == 1 && expect_value && !b.is_ascii_whitespace() && b != b']' {
            starts.push(i);
            expect_value = false;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 {
                    expect_value = true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_value = true,
            _ => {}
        }
    }
    starts
}

/// 0-based index of the array element that contains byte `offset` (0 before the first).
fn record_index_at(bytes: &[u8], offset: usize) -> usize {
    record_starts(&bytes[..offset.min(bytes.len())])
        .len()
        .saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(axis: &str, prompt: &str) -> String {
        format!(
            r#"{{"prompt": "{prompt}", "axis": "{axis}", "bucket": "b", "descriptor": "d", "noun_gender": "male", "template": "t", "old_prompt": "o", "original_text": "o", "gpt_rewrite_text": "g"}}"#
        )
    }

    #[test]
    fn record_starts_follow_the_array_and_ignore_strings() {
        let text = format!(
            "[\n  {},\n  {}\n]\n",
            rec("age", "a [b], {c}"),
            rec("age", "\\\"x")
        );
        let starts = record_starts(text.as_bytes());
        assert_eq!(starts.len(), 2);
        assert_eq!(line_of(text.as_bytes(), starts[1]), 3);
        assert_eq!(record_index_at(text.as_bytes(), text.len()), 1);
    }

    #[test]
    fn wrong_axis_and_empty_prompt_are_problems() {
        let text = format!(
            "[{}, {}, {}]",
            rec("age", "p"),
            rec("religion", "p"),
            rec("age", " ")
        );
        let err = parse_ceb_slice(
            text.as_bytes(),
            Path::new("age.json"),
            Some(CebAxis::Age),
            OnBadRecord::Fail,
        )
        .unwrap_err();
        assert!(matches!(err, Error::ArrayRecord { index: 1, .. }), "{err}");
        assert!(
            matches!(err.problem(), Some(Problem::UnexpectedValue { .. })),
            "{err}"
        );
        let ok = parse_ceb_slice(
            text.as_bytes(),
            Path::new("age.json"),
            Some(CebAxis::Age),
            OnBadRecord::Skip,
        )
        .unwrap();
        assert_eq!(ok.records.len(), 1);
        assert_eq!(ok.report.skipped, 2);
        assert_eq!(
            ok.report.first_skipped[1].problem,
            Problem::EmptyText("prompt".into())
        );
    }

    #[test]
    fn non_array_and_invalid_utf8_are_errors() {
        let err = parse_ceb_slice(b"{}", Path::new("x.json"), None, OnBadRecord::Skip).unwrap_err();
        assert!(matches!(err, Error::Layout { .. }), "{err}");
        let bytes = b"[\n{\"prompt\": \"\xff\"}]";
        let err = parse_ceb_slice(bytes, Path::new("x.json"), None, OnBadRecord::Skip).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ArrayRecord {
                    line: 2,
                    index: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            matches!(err.problem(), Some(Problem::InvalidUtf8 { .. })),
            "{err}"
        );
    }
}
