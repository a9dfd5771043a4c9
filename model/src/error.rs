//! What a projection reports, and what the database refused.

use std::fmt;

/// Result type of projection code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error a projection reports; it fails the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "host",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(variant)
)]
pub enum Error {
    /// The event's payload is not what the projection expects.
    #[cfg_attr(feature = "host", component(name = "invalid-event"))]
    InvalidEvent(String),
    /// Anything else.
    #[cfg_attr(feature = "host", component(name = "failed"))]
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidEvent(message) => write!(f, "invalid event: {message}"),
            Error::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::Failed(format!("JSON: {error}"))
    }
}

impl From<SqlError> for Error {
    fn from(error: SqlError) -> Self {
        Error::Failed(error.to_string())
    }
}

/// A batch that failed at the event with `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "host",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(record)
)]
pub struct HandleError {
    /// Position of the event that could not be applied.
    pub position: i64,
    /// Why.
    pub error: Error,
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event at position {}: {}", self.position, self.error)
    }
}

impl std::error::Error for HandleError {}

/// A statement the database refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// SQLSTATE on PostgreSQL, extended result code name on SQLite.
    pub code: String,
    /// The database's message.
    pub message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQL error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for SqlError {}
