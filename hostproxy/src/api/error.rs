//! `ApiError`: the status and lowercase message a client sees, in the API's JSON shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clawker_protocol::api::ErrorResponse;

use crate::backends::BindError;
use crate::callback::RegisterError;
use crate::host_gate::HostRejection;

/// A failure with the status and the lowercase message the client sees.
///
/// 5xx messages name what failed on the host, never internals (paths, errors of git).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A 429 with `Retry-After` (whole seconds, at least 1).
    pub fn too_many(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, message);
        e.retry_after = Some(wait.as_secs().max(1));
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(ErrorResponse::new(self.message))).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::TooMany(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            }
            RegisterError::Bind(BindError::InUse(_)) | RegisterError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            RegisterError::Bind(BindError::Other { .. }) | RegisterError::Random => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot listen for the callback",
            ),
        }
    }
}

impl From<HostRejection> for ApiError {
    fn from(e: HostRejection) -> Self {
        ApiError::new(e.status(), e.message())
    }
}
