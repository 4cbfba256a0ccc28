//! The crate's error type.

use std::fmt;

/// Which of the two compared groups a datum belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// The first group (the reference model, `mu1`).
    Baseline,
    /// The second group (the model under test, `mu2`).
    Candidate,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Group::Baseline => "baseline",
            Group::Candidate => "candidate",
        })
    }
}

/// Everything that can go wrong when fitting or summarising a comparison.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A group holds no observation.
    #[error("the {group} group is empty")]
    EmptyGroup {
        /// The empty group.
        group: Group,
    },
    /// An observation is NaN or infinite.
    #[error("{group} score #{index} is not finite ({value})")]
    NonFinite {
        /// The group holding it.
        group: Group,
        /// Its 0-based position in the group.
        index: usize,
        /// The value.
        value: f64,
    },
    /// An observation lies outside [0, 1] although the scores were declared probabilities.
    #[error(
        "{group} score #{index} = {value} is outside [0, 1] (scores were declared probabilities)"
    )]
    OutOfRange {
        /// The group holding it.
        group: Group,
        /// Its 0-based position in the group.
        index: usize,
        /// The value.
        value: f64,
    },
    /// Every observation of a group is the same number: the scale has no posterior to estimate
    /// (the likelihood grows without bound as sigma goes to 0).
    #[error(
        "every {group} score equals {value} (zero spread): BEST needs some variation in each group"
    )]
    ConstantGroup {
        /// The constant group.
        group: Group,
        /// The common value.
        value: f64,
    },
    /// A count for the rate comparison is impossible (more successes than trials, or no trial).
    #[error("{group}: {successes} toxic out of {trials} is not a valid count")]
    BadCount {
        /// The group.
        group: Group,
        /// Number of toxic outputs.
        successes: u64,
        /// Number of outputs.
        trials: u64,
    },
    /// A parameter of the builder or of a summary is invalid (checked before any sampling).
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// The parameter's name as in the builder.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No initial point with a finite log density and gradient was found for a chain.
    #[error("chain {chain}: no initial point with a finite log density after {tries} tries")]
    Initialization {
        /// The chain.
        chain: usize,
        /// How many jittered points were tried.
        tries: usize,
    },
    /// The step-size search ran away (towards 0 or infinity): the posterior is improper or the
    /// log density is broken at the current point.
    #[error("chain {chain}: step size search failed ({reason})")]
    StepSize {
        /// The chain.
        chain: usize,
        /// Details.
        reason: String,
    },
    /// A sampler thread panicked (a bug: please report it).
    #[error("chain {chain}: sampler thread panicked")]
    ThreadPanic {
        /// The chain.
        chain: usize,
    },
    /// Writing draws (CSV) failed.
    #[error("cannot write draws: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the user's input (data or parameters) is at fault, as opposed to an internal or
    /// I/O failure. The CLI maps `true` to exit code 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::EmptyGroup { .. }
                | Error::NonFinite { .. }
                | Error::OutOfRange { .. }
                | Error::ConstantGroup { .. }
                | Error::BadCount { .. }
                | Error::InvalidParam { .. }
        )
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
