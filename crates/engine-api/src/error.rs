//! The one error type of both traits.

use std::fmt;

/// An implementation's own error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a [`crate::TextGenerator`] or a [`crate::TextScorer`] can fail with.
///
/// An implementation's own error travels in [`Error::Backend`], together with whether the
/// user's input is at fault. Like [`std::io::Error`] wrapping a custom error, the variant is
/// transparent: its message is the implementation's message, unchanged, and
/// [`std::error::Error::source`] continues with the implementation's own source; the
/// implementation's error itself is reached with [`Error::get_ref`], [`Error::downcast_ref`]
/// or [`Error::into_inner`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The implementation failed.
    Backend {
        /// Whether the user's input (a file, a flag, a prompt, a model id) is at fault rather
        /// than the implementation, the machine or the network.
        bad_input: bool,
        /// The implementation's error.
        source: BoxError,
        /// The prompt (or text) it failed on, by its index in the call, when it says.
        prompt: Option<usize>,
    },
    /// A [`crate::ToxicityRule`] names a label the scorer does not have (bad input).
    UnknownLabel {
        /// The label asked for.
        label: String,
        /// The scorer's labels.
        labels: Vec<String>,
    },
    /// An implementation broke its trait's contract by returning the wrong number of results
    /// (an internal error).
    OutputCount {
        /// What was counted (`"completions"`, `"probability rows"`, `"probabilities"`).
        what: &'static str,
        /// How many the contract asks for.
        expected: usize,
        /// How many came back.
        found: usize,
    },
}

impl Error {
    /// Wraps an implementation's error, saying whether the user's input is at fault.
    pub fn backend(bad_input: bool, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            bad_input,
            source: source.into(),
            prompt: None,
        }
    }

    /// Says which prompt (or text) of the call the failure is about, by its index, so a caller
    /// can name it by its own id.
    pub fn with_prompt(mut self, index: usize) -> Self {
        if let Error::Backend { prompt, .. } = &mut self {
            *prompt = Some(index);
        }
        self
    }

    /// The index in the call of the prompt (or text) the failure is about, when known.
    pub fn prompt_index(&self) -> Option<usize> {
        match self {
            Error::Backend { prompt, .. } => *prompt,
            _ => None,
        }
    }

    /// Wraps an implementation's error caused by the user's input (exit code 2 in the CLI).
    pub fn bad_input(source: impl Into<BoxError>) -> Self {
        Self::backend(true, source)
    }

    /// Wraps an implementation's internal failure (exit code 1 in the CLI).
    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self::backend(false, source)
    }

    /// Whether the user's input is at fault (the CLI exits 2), rather than the implementation,
    /// the machine or the network (it exits 1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Backend { bad_input, .. } => *bad_input,
            Error::UnknownLabel { .. } => true,
            Error::OutputCount { .. } => false,
        }
    }

    /// The implementation's error, when this wraps one.
    pub fn get_ref(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Backend { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }

    /// The implementation's error as its concrete type, when this wraps one of type `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.get_ref()?.downcast_ref::<E>()
    }

    /// The implementation's error, when this wraps one; otherwise this error, boxed.
    pub fn into_inner(self) -> BoxError {
        match self {
            Error::Backend { source, .. } => source,
            other => Box::new(other),
        }
    }

    /// Checks that an implementation returned `expected` results of some kind.
    pub fn check_count(what: &'static str, expected: usize, found: usize) -> Result<()> {
        if expected == found {
            Ok(())
        } else {
            Err(Error::OutputCount {
                what,
                expected,
                found,
            })
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Backend { source, .. } => fmt::Display::fmt(source, f),
            Error::UnknownLabel { label, labels } => write!(
                f,
                "label `{label}` is not one of the scorer's labels ({})",
                labels.join(", ")
            ),
            Error::OutputCount {
                what,
                expected,
                found,
            } => write!(
                f,
                "the engine returned {found} {what} where {expected} were expected"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent, as `std::io::Error` with a custom error: the message above is the
            // implementation's, so the chain continues below it.
            Error::Backend { source, .. } => source.source(),
            _ => None,
        }
    }
}

/// The result type of both traits.
pub type Result<T, E = Error> = std::result::Result<T, E>;
