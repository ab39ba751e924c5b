//! Errors: [`ServerError`] for starting and running the server, [`Error`] for refusing one
//! request. Every refusal leaves as an [`ApiError`] JSON body whose status follows from its
//! code; internal failures are logged here and answered with a generic `internal` body, so no
//! database or library text ever reaches a client.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nightjar_api::{ApiError, ErrorCode};

/// Why the server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory could not be created or the listen address could not be bound.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The database could not be opened or queried.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database schema could not be brought up to date.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The configuration cannot work (for example a database URL of an unsupported kind).
    #[error("configuration: {0}")]
    Config(String),
    /// Stored server state (the OPAQUE server setup) is unreadable.
    #[error("corrupt server state: {0}")]
    Corrupt(&'static str),
}

/// A refused or failed request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A refusal the client should see as is.
    #[error("{0}")]
    Refused(Box<ApiError>),
    /// The database failed; logged, answered as `internal`.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Another internal failure; logged, answered as `internal`.
    #[error("internal: {0}")]
    Internal(&'static str),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A refusal with `code` and a one-sentence `message`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused(Box::new(ApiError::new(code, message)))
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "missing, unknown, expired or revoked session token",
        )
    }

    pub(crate) fn list_conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::DeviceListConflict, message)
    }

    pub(crate) fn epoch_conflict(current_epoch: u64) -> Self {
        let mut e = ApiError::new(
            ErrorCode::EpochConflict,
            "another commit already took this epoch",
        );
        e.current_epoch = Some(current_epoch);
        Self::Refused(Box::new(e))
    }

    pub(crate) fn rate_limited(retry_after_ms: u64) -> Self {
        let mut e = ApiError::new(ErrorCode::RateLimited, "too many requests; slow down");
        e.retry_after_ms = Some(retry_after_ms);
        Self::Refused(Box::new(e))
    }

    /// The body a client gets for this error; internal failures are logged first.
    pub(crate) fn into_api_error(self) -> ApiError {
        match self {
            Self::Refused(e) => *e,
            Self::Database(e) => {
                tracing::error!(error = %e, "database failure");
                internal()
            }
            Self::Internal(what) => {
                tracing::error!(error = what, "internal failure");
                internal()
            }
        }
    }
}

fn internal() -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        "the server failed to handle this request",
    )
}

/// Renders an [`ApiError`] with its status code (and `Retry-After` for rate limits).
pub(crate) fn api_error_response(error: ApiError) -> Response {
    let status =
        StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry_after = error.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
    let mut response = (status, axum::Json(error)).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        api_error_response(self.into_api_error())
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        // The rejection's own text names serde's complaint (a field, a type); it holds no
        // internal state, but a fixed sentence per kind keeps answers predictable.
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::bad_request("expected a JSON body with content-type application/json")
            }
            JsonRejection::JsonSyntaxError(_) => Self::bad_request("the body is not valid JSON"),
            JsonRejection::JsonDataError(e) => Self::bad_request(format!(
                "the JSON body does not match the expected shape: {}",
                e.body_text()
            )),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::too_large("the request body is larger than the server accepts")
            }
            _ => Self::bad_request("the request body could not be read"),
        }
    }
}

impl From<BytesRejection> for Error {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large("the request body is larger than the server accepts")
        } else {
            Self::bad_request("the request body could not be read")
        }
    }
}

impl From<PathRejection> for Error {
    fn from(_: PathRejection) -> Self {
        Self::bad_request("malformed path parameter")
    }
}

impl From<QueryRejection> for Error {
    fn from(_: QueryRejection) -> Self {
        Self::bad_request("malformed query string")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak() {
        let e = Error::Database(sqlx::Error::Protocol("secret table layout".into()));
        let body = e.into_api_error();
        assert_eq!(body.code, ErrorCode::Internal);
        assert!(!body.message.contains("secret"));
    }

    #[test]
    fn rate_limit_sets_retry_after() {
        let response = Error::rate_limited(1500).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn epoch_conflict_carries_epoch() {
        match Error::epoch_conflict(7).into_api_error() {
            ApiError {
                code: ErrorCode::EpochConflict,
                current_epoch: Some(7),
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }
}
