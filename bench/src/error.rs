//! Why a bench could not run.

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or directory could not be prepared.
    #[error("bench: {what}: {source}")]
    Io {
        /// What, with its path.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An invocation failed.
    #[error("bench: scenario {scenario}: {function} failed: {status}")]
    Invocation {
        /// The scenario.
        scenario: String,
        /// The function.
        function: String,
        /// The agent's answer.
        status: String,
    },
    /// A precondition or a wait failed.
    #[error("bench: {0}")]
    Setup(String),
}

/// Wraps an I/O error with what was being done, e.g. `creating <path>`.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}
