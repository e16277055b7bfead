//! What a browser reaching a callback sees: the per-port listener, the capture of one
//! request, and the static pages.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use clawker_protocol::api::{self, ErrorResponse};

use super::session::{Capture, Incoming, Offer};
use crate::host_gate::{builtin_host_names, check_host};

/// The page the browser sees after a capture. Static: it reflects nothing from the request.
pub const SUCCESS_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Login complete</title></head><body><h1>Login complete</h1><p>You can close this tab and return to your terminal.</p></body></html>";

/// Reads a capture body: at most 64 KiB, within 10 s.
async fn read_capture_body(req: Request) -> Result<(http::request::Parts, Bytes), StatusCode> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, api::MAX_BODY);
    let collected = tokio::time::timeout(
        Duration::from_secs(10),
        http_body_util::BodyExt::collect(limited),
    )
    .await
    .map_err(|_| StatusCode::REQUEST_TIMEOUT)?
    .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
    Ok((parts, collected.to_bytes()))
}

/// Offers a browser request (for `path`) to `target` and builds the browser's reply.
pub async fn capture_response(target: &dyn Capture, path: &str, req: Request) -> Response {
    let (parts, body) = match read_capture_body(req).await {
        Ok(x) => x,
        Err(status) => return status.into_response(),
    };
    let incoming = Incoming {
        method: &parts.method,
        path,
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
    };
    match target.offer(&incoming) {
        Offer::Captured => {
            tracing::info!(port = target.port(), "oauth callback captured");
            success_page()
        }
        Offer::AlreadyCaptured => success_page(),
        Offer::NotForUs => not_found_page(),
    }
}

pub fn success_page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(SUCCESS_PAGE),
    )
        .into_response()
}

pub fn not_found_page() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><title>Not found</title><h1>Not found</h1>"),
    )
        .into_response()
}

/// The router of one port's listener: every request goes to the capture logic after the
/// Host gate (loopback names with that port).
pub(super) fn router(target: Arc<dyn Capture>) -> Router {
    async fn handle(State(target): State<Arc<dyn Capture>>, req: Request) -> Response {
        if let Err(e) = check_host(req.headers(), &builtin_host_names(), target.port()) {
            return (e.status(), axum::Json(ErrorResponse::new(e.message()))).into_response();
        }
        let path = req.uri().path().to_string();
        capture_response(target.as_ref(), &path, req).await
    }
    Router::new().fallback(handle).with_state(target)
}
