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

use super::{Offer, SUCCESS_PAGE, Session};
use crate::host_gate::{builtin_host_names, check_host};

/// Reads a capture body: at most 64 KiB, within 10 s.
pub async fn read_capture_body(req: Request) -> Result<(http::request::Parts, Bytes), StatusCode> {
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

/// Offers a browser request to a session and builds the browser's reply.
pub async fn capture_response(session: &Session, path: &str, req: Request) -> Response {
    let (parts, body) = match read_capture_body(req).await {
        Ok(x) => x,
        Err(status) => return status.into_response(),
    };
    let query = parts.uri.query().unwrap_or("");
    match session.offer(&parts.method, path, query, &parts.headers, &body) {
        Offer::Captured => {
            tracing::info!(port = session.port, "oauth callback captured");
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

/// The router of a session's own listener: every request goes to the capture logic after
/// the Host gate (loopback names with the session's port).
pub(super) fn router(session: Arc<Session>) -> Router {
    async fn handle(State(session): State<Arc<Session>>, req: Request) -> Response {
        if let Err(e) = check_host(req.headers(), &builtin_host_names(), session.port) {
            return (e.status(), axum::Json(ErrorResponse::new(e.message()))).into_response();
        }
        let path = req.uri().path().to_string();
        capture_response(&session, &path, req).await
    }
    Router::new().fallback(handle).with_state(session)
}
