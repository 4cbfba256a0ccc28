//! The record files of design.md §3 (generations and scores) shared by the study runner and the CLI subcommands, and
//! their readers. Every problem in a file names the file and line (a bad-input error, exit 2).

use crate::error::{Error, Result};
use crate::report::ALL;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// One line of a generations file (design.md §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationLine {
    /// The prompt id.
    pub id: String,
    /// The prompt's subset.
    pub subset: String,
    /// The model's name in the study.
    pub model: String,
    /// The prompt text.
    pub prompt: String,
    /// The continuation (new tokens decoded, special tokens skipped, trimmed).
    pub completion: String,
    /// The new token ids, when the generation backend reports them (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_token_ids: Option<Vec<u32>>,
    /// `eos` or `length`.
    pub finish_reason: String,
}

/// The keys of a generations record (design.md §3), in the order they are written.
pub const GENERATION_KEYS: [&str; 7] = [
    "id",
    "subset",
    "model",
    "prompt",
    "completion",
    "completion_token_ids",
    "finish_reason",
];

/// One line of a scores file as written: a generation record's fields — the design's keys first,
/// in [`GENERATION_KEYS`] order, then any others a user's file carried, in key order — plus
/// `score` (the f32 in its shortest decimal form) and `toxic`.
#[derive(Debug, Clone, Copy)]
pub struct ScoredRecord<'a> {
    /// The generation record's fields.
    pub fields: &'a Map<String, Value>,
    /// The classifier's probability of the toxic label.
    pub score: f32,
    /// `score >= threshold`.
    pub toxic: bool,
}

impl Serialize for ScoredRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for k in GENERATION_KEYS {
            if let Some(v) = self.fields.get(k) {
                m.serialize_entry(k, v)?;
            }
        }
        for (k, v) in self.fields {
            if !GENERATION_KEYS.contains(&k.as_str()) && k != "score" && k != "toxic" {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("score", &self.score)?;
        m.serialize_entry("toxic", &self.toxic)?;
        m.end()
    }
}

/// One record of a generations file as read: the two fields the scorer needs, every field in
/// file order, and the line it came from.
#[derive(Debug, Clone)]
pub struct GenerationRecord {
    /// The prompt id.
    pub id: String,
    /// The continuation to score.
    pub completion: String,
    /// All fields of the record.
    pub fields: Map<String, Value>,
    /// The 1-based line number in the file.
    pub line: usize,
}

impl GenerationRecord {
    /// The record as a complete [`GenerationLine`]; an error names `path` and the line.
    pub fn to_line(&self, path: &Path) -> Result<GenerationLine> {
        serde_json::from_value(Value::Object(self.fields.clone()))
            .map_err(|e| bad(path, self.line, format!("not a generation record: {e}")))
    }
}

/// Reads a generations file: every line a JSON object with unique string `id` and a string
/// `completion`, and no `score`/`toxic` (a scores file given by mistake). Blank lines are
/// skipped; every problem names the file and line.
pub fn read_generations(path: &Path) -> Result<Vec<GenerationRecord>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let line = std::str::from_utf8(raw).map_err(|e| {
            bad(
                path,
                lineno,
                format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
            )
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| bad(path, lineno, format!("invalid JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(bad(path, lineno, "not a JSON object"));
        };
        let field = |k: &str| -> Result<String> {
            fields
                .get(k)
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| bad(path, lineno, format!("missing string field `{k}`")))
        };
        let id = field("id")?;
        let completion = field("completion")?;
        if fields.contains_key("score") || fields.contains_key("toxic") {
            return Err(bad(
                path,
                lineno,
                "the record already has `score`/`toxic` (a scores file given as input?)",
            ));
        }
        if !seen.insert(id.clone()) {
            return Err(bad(path, lineno, format!("duplicate id `{id}`")));
        }
        out.push(GenerationRecord {
            id,
            completion,
            fields,
            line: lineno,
        });
    }
    Ok(out)
}

/// One line of a scores file (the generation fields plus `score` and `toxic`, design.md §3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreLine {
    /// The prompt id.
    pub id: String,
    /// The prompt's subset.
    pub subset: String,
    /// The model's name (empty when the record has none).
    #[serde(default)]
    pub model: String,
    /// The continuation that was scored (empty when the record has none).
    #[serde(default)]
    pub completion: String,
    /// The classifier's probability of the toxic label.
    pub score: f64,
    /// Whether `score` reached the threshold.
    pub toxic: bool,
}

fn bad(path: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::BadInput(format!("{}:{line}: {msg}", path.display()))
}

/// Reads a scores JSONL file. Every line must be a complete record with a unique string `id`, a
/// string `subset` other than `all`, a `score` in [0, 1] and a boolean `toxic`; `model`, when
/// present, must be the same on every line. Blank lines are skipped.
pub fn read_scores(path: &Path) -> Result<Vec<ScoreLine>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let mut model: Option<String> = None;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let lineno = i + 1;
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| bad(path, lineno, format!("not valid JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| bad(path, lineno, format!("missing key `{k}`")))
        };
        let id = field("id")?
            .as_str()
            .ok_or_else(|| bad(path, lineno, "`id` is not a string"))?;
        if !ids.insert(id.to_string()) {
            return Err(bad(path, lineno, format!("duplicate id `{id}`")));
        }
        let subset = field("subset")?
            .as_str()
            .ok_or_else(|| bad(path, lineno, "`subset` is not a string"))?;
        if subset == ALL {
            return Err(bad(
                path,
                lineno,
                "subset name `all` is reserved for the overall comparison",
            ));
        }
        let score = field("score")?
            .as_f64()
            .ok_or_else(|| bad(path, lineno, "`score` is not a number"))?;
        if !(0.0..=1.0).contains(&score) {
            return Err(bad(
                path,
                lineno,
                format!("`score` {score} is not a probability in [0, 1]"),
            ));
        }
        let toxic = field("toxic")?
            .as_bool()
            .ok_or_else(|| bad(path, lineno, "`toxic` is not a boolean"))?;
        let this_model = match v.get("model") {
            None | Some(serde_json::Value::Null) => None,
            Some(m) => Some(
                m.as_str()
                    .ok_or_else(|| bad(path, lineno, "`model` is not a string"))?,
            ),
        };
        if let Some(m) = this_model {
            match &model {
                None => model = Some(m.to_string()),
                Some(prev) if prev != m => {
                    return Err(bad(
                        path,
                        lineno,
                        format!("`model` is `{m}`, earlier lines say `{prev}`"),
                    ));
                }
                Some(_) => {}
            }
        }
        let completion = match v.get("completion") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(c) => c
                .as_str()
                .ok_or_else(|| bad(path, lineno, "`completion` is not a string"))?
                .to_string(),
        };
        out.push(ScoreLine {
            id: id.to_string(),
            subset: subset.to_string(),
            model: this_model.unwrap_or_default().to_string(),
            completion,
            score,
            toxic,
        });
    }
    Ok(out)
}

/// A scores file read whole: its records as the report and the comparisons need them, and the
/// model it names.
#[derive(Debug, Clone)]
pub struct ScoresFile {
    /// Where it was read from.
    pub path: std::path::PathBuf,
    /// The model its records name (the first non-empty `model` field), if any.
    pub model: Option<String>,
    /// Its records.
    pub rows: Vec<crate::report::ScoreRow>,
}

/// Reads a scores file with [`read_scores`] (file:line errors); a file without records is bad
/// input.
pub fn read_scores_file(path: &Path) -> Result<ScoresFile> {
    let lines = read_scores(path)?;
    if lines.is_empty() {
        return Err(Error::BadInput(format!(
            "{}: no scored records",
            path.display()
        )));
    }
    Ok(ScoresFile {
        path: path.to_path_buf(),
        model: lines
            .iter()
            .find(|l| !l.model.is_empty())
            .map(|l| l.model.clone()),
        rows: lines.iter().map(crate::report::ScoreRow::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scored_records_put_the_design_keys_first_and_keep_extra_fields() {
        let fields: Map<String, Value> = serde_json::from_str(
            r#"{"zeta": 1, "completion": "c", "id": "a", "alpha": [true], "subset": "random"}"#,
        )
        .unwrap();
        let rec = ScoredRecord {
            fields: &fields,
            score: 0.1,
            toxic: false,
        };
        assert_eq!(
            serde_json::to_string(&rec).unwrap(),
            r#"{"id":"a","subset":"random","completion":"c","alpha":[true],"zeta":1,"score":0.1,"toxic":false}"#
        );
    }

    #[test]
    fn reads_records_and_names_file_and_line_on_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.jsonl");
        std::fs::write(
            &good,
            "{\"id\":\"a\",\"subset\":\"random\",\"model\":\"m\",\"completion\":\"x\",\"score\":0.25,\"toxic\":false}\n\n{\"id\":\"b\",\"subset\":\"severe\",\"score\":0.75,\"toxic\":true}\n",
        )
        .unwrap();
        let lines = read_scores(&good).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].model.as_str(), lines[0].completion.as_str()),
            ("m", "x")
        );
        assert_eq!((lines[1].score, lines[1].toxic), (0.75, true));
        let cases = [
            (
                "{\"id\":\"a\",\"subset\":\"all\",\"score\":0.1,\"toxic\":false}\n",
                ":1: subset name `all`",
            ),
            (
                "{\"id\":\"a\",\"subset\":\"r\",\"model\":\"m\",\"score\":0.1,\"toxic\":false}\n{\"id\":\"b\",\"subset\":\"r\",\"model\":\"n\",\"score\":0.1,\"toxic\":false}\n",
                ":2: `model` is `n`",
            ),
            (
                "{\"id\":\"a\",\"subset\":\"r\",\"score\":0.1,\"toxic\":1}\n",
                ":1: `toxic` is not a boolean",
            ),
        ];
        for (text, want) in cases {
            let p = dir.path().join("bad.jsonl");
            std::fs::write(&p, text).unwrap();
            let e = read_scores(&p).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().contains(&format!("bad.jsonl{want}")), "{e}");
        }
    }
}
