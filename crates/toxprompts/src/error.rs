//! The crate's error type and the per-record [`Problem`] it reports.

use hub_source::HubError;
use std::path::PathBuf;

/// What is wrong with one record: a line of a JSONL file, or one element of a CEB JSON array.
///
/// Field names are dotted paths from the record's top level (`prompt.severe_toxicity`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The bytes are not valid UTF-8.
    #[error("invalid UTF-8 after {valid_up_to} valid bytes")]
    InvalidUtf8 {
        /// How many bytes of the line (or file) are valid before the first bad one.
        valid_up_to: usize,
    },
    /// Not valid JSON: a syntax error or a truncated object.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(String),
    /// A field holds the wrong JSON type (or a number that does not fit).
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType {
        /// Dotted path of the field (`(record)` for the record itself).
        field: String,
        /// What the schema wants.
        expected: &'static str,
        /// What the record holds.
        found: &'static str,
    },
    /// A score is outside `[0, 1]`.
    #[error("field `{field}`: {value} is not a score in [0, 1]")]
    OutOfRange {
        /// Dotted path of the field.
        field: String,
        /// The value found.
        value: f64,
    },
    /// A field holds a value other than the one this file must have (a CEB `axis` in the wrong file).
    #[error("field `{field}`: expected `{expected}`, found `{found}`")]
    UnexpectedValue {
        /// Dotted path of the field.
        field: String,
        /// The value the file requires.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A text field is empty or only whitespace.
    #[error("field `{0}` is empty")]
    EmptyText(String),
    /// The record's id was already used by an earlier record.
    #[error("duplicate id `{id}` (first used on line {first_line})")]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// The 1-based line of its first use.
        first_line: usize,
    },
}

/// Everything that can go wrong in `toxprompts`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O failure on a named path (a missing input file is bad input, see [`Error::is_bad_input`]).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file starts like gzip but its compressed stream is corrupt or truncated.
    #[error("{}: corrupt gzip stream: {source}", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// One line of a JSONL file is bad (with the fail-fast policy).
    #[error("{}:{line}: {problem}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (boxed to keep the error small).
        problem: Box<Problem>,
    },
    /// One record of a CEB JSON array is bad (with the fail-fast policy), or the file is not JSON.
    #[error("{}:{line}: record {index}: {problem}", path.display())]
    ArrayRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line where the record starts (or where the JSON error is).
        line: usize,
        /// 0-based index of the record in the array.
        index: usize,
        /// What is wrong (boxed to keep the error small).
        problem: Box<Problem>,
    },
    /// A CEB file or directory does not have the expected shape (not a JSON array, a file missing).
    #[error("{}: {message}", path.display())]
    Layout {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The source has fewer eligible rows than a subset asks for.
    #[error(
        "subset `{subset}` needs {needed} rows ({criterion}) but {} has only {found}",
        source_path.display()
    )]
    NotEnough {
        /// The subset being drawn.
        subset: String,
        /// Rows asked for.
        needed: usize,
        /// Eligible rows found.
        found: usize,
        /// What makes a row eligible.
        criterion: String,
        /// The source file.
        source_path: PathBuf,
    },
    /// A prompt-set parameter is invalid (a threshold outside `[0, 1)`, nothing to build, ...).
    #[error("invalid prompt-set parameters: {0}")]
    InvalidParams(String),
    /// A prompt set needs a source that was not given (RTP rows asked for, no RTP file).
    #[error("missing source: {0}")]
    MissingSource(String),
    /// Resolving a file on the Hugging Face hub or in its cache failed (boxed to keep the error
    /// small; `Error::from(HubError)` builds it).
    #[error(transparent)]
    Hub(Box<HubError>),
}

impl From<HubError> for Error {
    fn from(e: HubError) -> Self {
        Error::Hub(Box::new(e))
    }
}

impl Error {
    /// True when the user's input is at fault (a bad or missing file, a bad parameter, a file absent
    /// from the offline cache); false for internal or environmental failures (I/O errors other than
    /// a missing or unreadable file, network failures).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::InvalidData
            ),
            Error::Hub(e) => e.is_bad_input(),
            Error::Gzip { .. }
            | Error::Record { .. }
            | Error::ArrayRecord { .. }
            | Error::Layout { .. }
            | Error::NotEnough { .. }
            | Error::InvalidParams(_)
            | Error::MissingSource(_) => true,
        }
    }

    /// The per-record problem, when the error is about one record.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Record { problem, .. } | Error::ArrayRecord { problem, .. } => Some(&**problem),
            _ => None,
        }
    }

    /// The 1-based line, when the error is about one line or record.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Record { line, .. } | Error::ArrayRecord { line, .. } => Some(*line),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
