//! The facade's error type and the CLI's exit codes.

use std::path::PathBuf;

/// Everything that can go wrong in the facade and the CLI.
///
/// The model crates' errors are boxed: they carry paths and hub coordinates, and a small
/// `Result` keeps every stage cheap to return from.
///
/// Each variant wraps one crate's error or names the file at fault; [`Error::exit_code`]
/// tells bad input (exit code 2) from an internal failure (exit code 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The user's input is wrong: a flag, a file's content, a study file.
    #[error("{0}")]
    BadInput(String),
    /// A broken invariant of toxdrift itself (a bug, not the user's input): exit code 1.
    #[error("internal error: {0}")]
    Internal(String),
    /// An I/O failure on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Loading sources or building the prompt set (`toxprompts`).
    #[error(transparent)]
    Prompts(#[from] toxprompts::Error),
    /// Fitting or summarising a comparison (`best-mcmc`).
    #[error(transparent)]
    Best(#[from] best_mcmc::Error),
    /// Loading a model or generating (`gen-engine`).
    #[error(transparent)]
    Gen(Box<gen_engine::Error>),
    /// Loading the classifier or scoring (`hate-classifier`).
    #[error(transparent)]
    Classifier(Box<hate_classifier::Error>),
    /// A generation or scoring engine behind the [`engine_api`] seams.
    #[error(transparent)]
    Engine(#[from] engine_api::Error),
    /// An engine failed on one prompt or record, named by its id.
    #[error("prompt `{id}`: {source}")]
    OnPrompt {
        /// The prompt's (or record's) id.
        id: String,
        /// The engine's error.
        source: engine_api::Error,
    },
    /// Fine-tuning (`lora-train`).
    #[error(transparent)]
    Train(Box<lora_train::Error>),
    /// A failure while working on one model of a study, named with its study line.
    #[error("model `{model}` ({at}): {source}")]
    Model {
        /// The model's name in the study.
        model: String,
        /// `file:line:column` of its entry in the study file.
        at: String,
        /// What went wrong.
        source: Box<Error>,
    },
    /// Another run holds the output directory's lock.
    #[error(
        "{}: another toxdrift run (pid {pid}) is using this output directory; wait for it to \
         finish, or pass --wait to queue behind it",
        dir.display()
    )]
    Locked {
        /// The output directory.
        dir: PathBuf,
        /// The process holding the lock, as it recorded itself.
        pid: String,
    },
}

impl Error {
    /// The process exit code for this error: 2 for bad input, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadInput(_) => 2,
            Error::Prompts(e) if e.is_bad_input() => 2,
            Error::Best(e) if e.is_bad_input() => 2,
            Error::Gen(e) if e.is_bad_input() => 2,
            Error::Classifier(e) if e.is_bad_input() => 2,
            Error::Train(e) if e.is_bad_input() => 2,
            Error::Engine(e) if e.is_bad_input() => 2,
            Error::OnPrompt { source, .. } if source.is_bad_input() => 2,
            Error::Model { source, .. } => source.exit_code(),
            Error::Locked { .. } => 2,
            _ => 1,
        }
    }

    /// Names the study model this error happened on (no-op if it already names one).
    pub fn for_model(self, model: &crate::study::Model) -> Self {
        match self {
            Error::Model { .. } => self,
            e => Error::Model {
                model: model.name.clone(),
                at: model.at.clone(),
                source: Box::new(e),
            },
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The facade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<gen_engine::Error> for Error {
    fn from(e: gen_engine::Error) -> Self {
        Error::Gen(Box::new(e))
    }
}

impl From<hate_classifier::Error> for Error {
    fn from(e: hate_classifier::Error) -> Self {
        Error::Classifier(Box::new(e))
    }
}

impl From<lora_train::Error> for Error {
    fn from(e: lora_train::Error) -> Self {
        Error::Train(Box::new(e))
    }
}
