//! `ApiJson`: the request body extractor with the API's limits and error shape.

use axum::extract::FromRequest;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body: read under the route's size limit (413 beyond it), with unknown fields and
/// syntax errors answered 400 in the API's error shape (axum's own `Json` says 422).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let read = bytes::Bytes::from_request(req, state);
        // The head arrived in time (hyper's header timeout); the body must not trickle either.
        let body = match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body too slow",
                ));
            }
            Ok(Err(rejection)) => {
                let status = rejection.status();
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request body too large".to_string()
                } else {
                    "cannot read request body".to_string()
                };
                return Err(ApiError::new(status, message));
            }
            Ok(Ok(b)) => b,
        };
        serde_json::from_slice(&body).map(ApiJson).map_err(|e| {
            ApiError::bad_request(format!("invalid json body: {}", json_error_text(&e)))
        })
    }
}

/// serde's message without echoing input values (which may be secrets).
fn json_error_text(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    // "unknown field `x`, expected ..." and "missing field `x`" name fields, not values.
    if msg.starts_with("unknown field") || msg.starts_with("missing field") {
        return msg.split(" at line").next().unwrap_or(&msg).to_string();
    }
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "malformed json".into()
        }
        serde_json::error::Category::Data => "a field has the wrong type or value".into(),
        serde_json::error::Category::Io => "cannot read body".into(),
    }
}
