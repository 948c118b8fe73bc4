//! Library error type. Every error names the file (or source) it is about.

use std::fmt;

/// Errors from reading images and what is inside them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on a named file. The message already carries the OS
    /// error, so it is not also chained as a `source` (which `{:#}` would print twice).
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    /// The content is malformed: truncated, corrupt header or table, impossible values.
    #[error("{path}: {msg}")]
    Corrupt { path: String, msg: String },
    /// Well-formed but uses a feature imgcheck does not implement.
    #[error("{path}: unsupported: {msg}")]
    Unsupported { path: String, msg: String },
    /// Deliberately refused: VHDX, a backing file or extent outside the allowed directory,
    /// an external data file, encryption.
    #[error("{path}: refused: {msg}")]
    Refused { path: String, msg: String },
    /// A read outside the virtual disk.
    #[error("{path}: read of {len} bytes at offset {offset} is past the end of the {size}-byte virtual disk")]
    OutOfRange {
        path: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// Anything else (usage errors, output errors).
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            err: source,
        }
    }
    pub fn corrupt(path: impl fmt::Display, msg: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.to_string(),
            msg: msg.into(),
        }
    }
    pub fn unsupported(path: impl fmt::Display, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.to_string(),
            msg: msg.into(),
        }
    }
    pub fn refused(path: impl fmt::Display, msg: impl Into<String>) -> Self {
        Error::Refused {
            path: path.to_string(),
            msg: msg.into(),
        }
    }
}
