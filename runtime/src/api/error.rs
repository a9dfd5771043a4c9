//! One error type for every endpoint. Database text never reaches a client:
//! it goes to the log, the client gets a status and a plain message.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::decide::CommandError;
use crate::deploy::DeployError;
use crate::host::GuestFailure;
use crate::reads::ReadError;
use crate::source::SourceError;
use crate::store::StoreError;
use crate::worker::WorkerError;

/// An HTTP error response.
#[derive(Debug)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What a user should read.
    pub message: String,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn unavailable(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!("database error: {detail}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is unavailable; see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "status": self.status.as_u16(), "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if self.code == "busy" {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::VersionConflict { .. } => Self::new(StatusCode::CONFLICT, "version_conflict", e.to_string()),
            SourceError::Invalid(m) => Self::bad_request(m),
            SourceError::Busy(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            SourceError::Storage(m) => {
                tracing::error!("{m}");
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", m)
            }
            SourceError::OutcomeUnknown(_) => {
                tracing::error!("{e}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outcome_unknown",
                    "the connection to the database was lost while the append was committing: it may have been \
                     appended or not. Send the same request again with the same Idempotency-Key to get its answer \
                     (or read the stream to see); without a key, sending it again may append it twice",
                )
            }
            other => Self::unavailable(&other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::not_found(m),
            StoreError::Invalid(m) => Self::bad_request(m),
            StoreError::Limit(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "limit", m),
            StoreError::Deadline(m) => Self::new(StatusCode::GATEWAY_TIMEOUT, "query_timeout", m),
            other => Self::unavailable(&other),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotFound(m) => Self::not_found(m),
            ReadError::BadRequest(m) => Self::bad_request(m),
            ReadError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            ReadError::Timeout(m) => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", m),
            ReadError::Stopped(m) => Self::new(StatusCode::CONFLICT, "projection_stopped", m),
            ReadError::Paused(m) => Self::new(StatusCode::CONFLICT, "projection_paused", m),
            ReadError::Busy(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            ReadError::PositionUnknown(m) => Self::new(StatusCode::BAD_REQUEST, "position_unknown", m),
            ReadError::Store(e) => e.into(),
            ReadError::Source(e) => e.into(),
            ReadError::Guest(failure) => failure.into(),
            ReadError::Internal(m) => {
                tracing::error!("internal error: {m}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
            }
        }
    }
}

/// A projection's call failed (its `query`, or a dead letter applied again).
impl From<GuestFailure> for ApiError {
    fn from(failure: GuestFailure) -> Self {
        match failure {
            GuestFailure::Rejected { message, .. } => Self::new(StatusCode::BAD_REQUEST, "query_rejected", message),
            GuestFailure::Store(e) => e.into(),
            GuestFailure::Timeout(limit) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "query_timeout",
                format!("the query ran past its {limit:?} limit"),
            ),
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "query_failed", other.to_string()),
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Unknown(_) => Self::not_found(e.to_string()),
            DeployError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            DeployError::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_module", m),
            DeployError::Store(e) => e.into(),
            DeployError::Worker(WorkerError::NotFound(m)) => Self::not_found(m),
            DeployError::Worker(WorkerError::Conflict(m)) => Self::new(StatusCode::CONFLICT, "conflict", m),
            DeployError::Worker(WorkerError::NotStoppedAt(m)) => Self::new(StatusCode::CONFLICT, "not_stopped_at", m),
            DeployError::Worker(WorkerError::Guest(failure)) => failure.into(),
            DeployError::Worker(WorkerError::Store(e)) => e.into(),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::UnknownDecider(_) => Self::new(StatusCode::NOT_FOUND, "unknown_decider", e.to_string()),
            CommandError::Invalid(m) => Self::bad_request(m),
            CommandError::Rejected(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", m),
            CommandError::InvalidCommand(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_command", m),
            CommandError::Conflict { .. } => Self::new(StatusCode::CONFLICT, "command_conflict", e.to_string()),
            CommandError::KeyReused(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", e.to_string())
            }
            CommandError::Failed { .. } | CommandError::Decider(_) => {
                tracing::warn!("{e}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "decider_failed", e.to_string())
            }
            CommandError::Source(e) => e.into(),
            CommandError::Internal(m) => {
                tracing::error!("internal error: {m}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = e.status();
        match e {
            JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
                Self::new(status, "invalid_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(status, "unsupported_media_type", e.body_text()),
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "payload_too_large",
                format!("the request body is over the limit of {} MiB", super::BODY_LIMIT >> 20),
            ),
            _ => Self::new(status, "invalid_body", e.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}
