//! The library's error type. Every variant names the file, line, column or field at fault, so the
//! binary can print the chain and a user knows what to fix without reading source code.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A NIfTI file whose header or data cannot be trusted.
    #[error("{path}: invalid NIfTI: {reason}")]
    Nifti { path: PathBuf, reason: String },

    /// A volume whose values cannot go through an operation (constant, NaN, wrong shape, ...).
    #[error("{what}: {reason}")]
    Volume { what: String, reason: String },

    /// A CSV table that cannot be read at all (missing column, unknown format).
    #[error("{path}: {reason}")]
    Table { path: PathBuf, reason: String },

    /// One bad cell in a CSV table. `line` is the 1-based physical line (the header is line 1).
    #[error("{path}:{line}: column `{column}`: {reason}")]
    Row { path: PathBuf, line: u64, column: String, reason: String },

    /// A scan of a scan list that cannot be matched to exactly one table row.
    #[error("{scan}: {reason}")]
    Match { scan: String, reason: String },

    /// A split file that would let a subject leak between train, validation and test.
    #[error("{path}: {reason}")]
    Split { path: PathBuf, reason: String },

    /// A bad argument or configuration value.
    #[error("invalid {field}: {reason}")]
    Config { field: String, reason: String },

    /// A checkpoint whose keys or shapes do not fit the model; `reason` lists every problem.
    #[error("{path}: {reason}")]
    Weights { path: PathBuf, reason: String },

    /// A tokenizer that cannot be built or cannot encode.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },

    /// A compute device this binary cannot use: not built in, or absent.
    #[error("--device {device}: {reason}")]
    Device { device: String, reason: String },

    /// An input larger than adfit reads (`--max-input`), or data this machine cannot hold.
    #[error("{path}: {reason}")]
    Limit { path: PathBuf, reason: String },

    /// An output folder another adfit process is writing.
    #[error("{path}: {reason}")]
    Busy { path: PathBuf, reason: String },

    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn nifti(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Nifti { path: path.into(), reason: reason.into() }
    }

    pub fn volume(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Volume { what: what.into(), reason: reason.into() }
    }

    pub fn table(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Table { path: path.into(), reason: reason.into() }
    }

    pub fn row(path: impl Into<PathBuf>, line: u64, column: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Row { path: path.into(), line, column: column.into(), reason: reason.into() }
    }

    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config { field: field.into(), reason: reason.into() }
    }
}
