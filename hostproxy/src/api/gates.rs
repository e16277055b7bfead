//! The gates of SPEC.md 4.1, run before any handler and before the body is read.
//!
//! Order matters and is fixed: Host (400/403) → OPTIONS (405) → browser requests (403) →
//! unknown path (404) → token (401) → content type (415) → declared size (413). A wrong
//! method on a known route (405) is answered by routing, after the token gate.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clawker_protocol::api::{self, routes};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::{AppState, Auth};
use crate::auth::{Identity, TunnelPeer};
use crate::host_gate::{check_host, check_host_name};

/// Which gates a path gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `/health`: Host only.
    Public,
    /// `/cb/…`: reached by the host browser; Host only.
    Browser,
    /// Everything else: every gate.
    Api,
}

pub fn classify(path: &str) -> RouteClass {
    if path == routes::HEALTH {
        RouteClass::Public
    } else if path.starts_with(routes::CB_PREFIX) {
        RouteClass::Browser
    } else {
        RouteClass::Api
    }
}

/// Gate 2: anything a browser adds to a cross-site or scripted request.
fn is_browser_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers.keys().any(|k| k.as_str().starts_with("sec-fetch-"))
}

/// Gate 3: `Authorization: Bearer <token>`, compared in constant time; `None` accepts any
/// bearer token (mock-proxy without `--token`).
pub fn check_token(headers: &HeaderMap, token: Option<&str>) -> Result<(), ApiError> {
    let unauthorized =
        || ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unauthorized());
    };
    let value = value.as_bytes();
    let presented = value
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
        .map(|_| &value[7..])
        .ok_or_else(unauthorized)?;
    let Some(token) = token else {
        return if presented.is_empty() {
            Err(unauthorized())
        } else {
            Ok(())
        };
    };
    if bool::from(presented.ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

/// Gate 4: `application/json`, optionally with a UTF-8 charset.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| match p.trim().split_once('=') {
        Some((k, v)) => {
            k.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        None => p.trim().is_empty(),
    })
}

/// The routes that carry an upstream's own bodies and replies (SPEC.md 13).
fn is_egress(route: &str) -> bool {
    route == routes::GIT_EGRESS || route == routes::EGRESS
}

fn body_limit(path: &str) -> usize {
    if path == routes::SSH_AGENT {
        api::MAX_AGENT_BODY
    } else {
        api::MAX_BODY
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Runs the gates for one request; `Ok` carries who is asking (for API routes) and means
/// the request may reach routing.
pub fn check(state: &AppState, req: &Request) -> Result<Option<Identity>, ApiError> {
    let headers = req.headers();
    let path = req.uri().path();
    let tunnel = req.extensions().get::<TunnelPeer>();
    match tunnel {
        // Through the tunnel the request names the container's own listener, nothing else.
        Some(t) => match t.listen {
            Some(l) => check_host(headers, &tunnel_host_names(l), l.port())?,
            None => check_host_name(headers, &tunnel_host_names(LOOPBACK_ANY))?,
        },
        None => check_host(headers, &state.allowed_hosts, state.settings.port)?,
    }
    let class = classify(path);
    if class != RouteClass::Api {
        return Ok(None);
    }
    // SPEC 4.1: OPTIONS is 405, a CORS preflight included; no CORS header is ever sent.
    if req.method() == Method::OPTIONS {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ));
    }
    if is_browser_request(headers) {
        return Err(ApiError::forbidden(
            "browser requests are not allowed on the api",
        ));
    }
    // A path that is no route is 404 with or without a token: the routes are public, and
    // nothing past this point can run for it anyway.
    if req.extensions().get::<MatchedPath>().is_none() {
        return Err(ApiError::not_found("not found"));
    }
    let identity = match (tunnel, &state.auth) {
        // The stream's identity is the attached container's; a token sent on it is not
        // looked at, so it can neither widen nor change who is asking.
        (Some(t), _) => t.identity.clone(),
        (None, Auth::Token(t)) => match check_token(headers, Some(t.expose())) {
            Ok(()) => Identity::user(),
            Err(e) => presented_token(headers)
                .and_then(|p| state.tokens.as_ref()?.authenticate(p))
                .ok_or(e)?,
        },
        (None, Auth::AnyBearer) => {
            check_token(headers, None)?;
            Identity::user()
        }
        (None, Auth::Disabled) => Identity::user(),
    };
    let egress = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| is_egress(m.as_str()));
    // Egress carries git's own bodies (any type, any size, streamed): SPEC.md 13.
    if req.method() == Method::POST && !egress {
        if !is_json_content_type(headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type must be application/json",
            ));
        }
        if declared_length(headers).is_some_and(|n| n > body_limit(path) as u64) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
    }
    Ok(Some(identity))
}

/// The names a tunnel request's `Host` may carry: its listen address, and `localhost` for a
/// loopback one.
fn tunnel_host_names(listen: std::net::SocketAddr) -> Vec<clawker_protocol::host::HostName> {
    use clawker_protocol::host::HostName;
    let mut names = vec![HostName::Ip(listen.ip())];
    if listen.ip().is_loopback() {
        names.push(HostName::Name("localhost".into()));
    }
    names
}

/// The loopback listener of a container end whose address is not known here.
const LOOPBACK_ANY: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The bearer token as sent, when there is exactly one well-formed one.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return None;
    };
    let v = v.to_str().ok()?;
    let (scheme, token) = v.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case("bearer ") && !token.is_empty()).then_some(token)
}

/// The gates as axum middleware, plus a log line per request that names the route
/// template, never the concrete path (it may hold a session id).
/// The most of a refused request's declared body read and thrown away before the answer
/// (a little over a megabyte: what a confused client sends; beyond it, no waiting).
const DISCARD_LIMIT: u64 = 1024 * 1024 + 64 * 1024;
/// How long that may take.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// A refused request's body is never looked at, but a body of moderate declared size is
/// read and dropped (chunk by chunk, nothing kept) before the answer goes out, bounded in
/// bytes and time: a connection closed with unread bytes in it is reset, and a client still
/// writing its body would then see the reset instead of the 4xx. Larger bodies, or ones
/// without a declared length, are not read at all (hyper closes those connections).
async fn discard_refused_body(req: Request, declared: Option<u64>) {
    if !declared.is_some_and(|n| n > 0 && n <= DISCARD_LIMIT) {
        return;
    }
    let mut stream = req.into_body().into_data_stream();
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        use futures_util::StreamExt;
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > DISCARD_LIMIT {
                break;
            }
        }
    })
    .await;
}

pub async fn api_gates(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let mut req = req;
    let api = classify(req.uri().path()) == RouteClass::Api;
    let mut response = match check(&state, &req) {
        Ok(identity) => {
            if let Some(id) = identity {
                req.extensions_mut().insert(id);
            }
            next.run(req).await
        }
        Err(e) => {
            if classify(req.uri().path()) == RouteClass::Api && route != "unmatched" {
                state.audit.deny_unauthenticated(&route, &e.message);
            }
            let declared = declared_length(req.headers());
            discard_refused_body(req, declared).await;
            e.into_response()
        }
    };
    // Extractor rejections (a duplicated query field, a path that is not UTF-8) come back
    // from axum as text/plain; the API answers every failure in its JSON error shape.
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // An upstream's own error reply (egress) goes to the container as the upstream sent it.
    if api
        && !is_egress(&route)
        && (status.is_client_error() || status.is_server_error())
        && !is_json
    {
        let reason = status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_ascii_lowercase();
        response = ApiError::new(status, reason).into_response();
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_gate::headers;

    #[test]
    fn content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(
                is_json_content_type(&headers(&[("content-type", ok)])),
                "{ok}"
            );
        }
        for bad in [
            "text/plain",
            "application/json; charset=latin1",
            "application/jsonx",
            "multipart/form-data",
            "application/json; boundary=x",
        ] {
            assert!(
                !is_json_content_type(&headers(&[("content-type", bad)])),
                "{bad}"
            );
        }
        assert!(!is_json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn tokens() {
        let t = "a".repeat(64);
        assert!(
            check_token(
                &headers(&[("authorization", &format!("Bearer {t}"))]),
                Some(&t)
            )
            .is_ok()
        );
        assert!(
            check_token(
                &headers(&[("authorization", &format!("bearer {t}"))]),
                Some(&t)
            )
            .is_ok()
        );
        assert!(check_token(&headers(&[("authorization", "Bearer nope")]), Some(&t)).is_err());
        assert!(
            check_token(
                &headers(&[("authorization", &format!("Basic {t}"))]),
                Some(&t)
            )
            .is_err()
        );
        assert!(check_token(&HeaderMap::new(), Some(&t)).is_err());
        let two = headers(&[
            ("authorization", &format!("Bearer {t}")),
            ("authorization", &format!("Bearer {t}")),
        ]);
        assert!(check_token(&two, Some(&t)).is_err());
        assert!(check_token(&headers(&[("authorization", "Bearer anything")]), None).is_ok());
        assert!(check_token(&headers(&[("authorization", "Bearer ")]), None).is_err());
        assert!(check_token(&HeaderMap::new(), None).is_err());
    }

    #[test]
    fn classes() {
        assert_eq!(classify("/health"), RouteClass::Public);
        assert_eq!(classify("/health/"), RouteClass::Api);
        assert_eq!(classify("/cb/abc/callback"), RouteClass::Browser);
        assert_eq!(classify("/open/url"), RouteClass::Api);
    }
}
