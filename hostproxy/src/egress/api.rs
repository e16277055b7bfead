//! `ANY /egress/NAME/PATH…` (SPEC.md 13): a declared API upstream, called by the container
//! through the daemon, which drops whatever the container put where a credential goes and
//! adds the host's secret. Request and reply stream (SSE and chunked replies pass through as
//! they arrive); redirects go back to the container, never followed with the secret.
//!
//! Order: declared name → scope `egress:NAME` → declared method and path → rate and
//! concurrency per identity → the user's answer when asked for → the secret → upstream.
//! Nothing is sent before the last.

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clawker_protocol::api::routes;

use crate::api::{ApiError, AppState};
use crate::audit::Decision;
use crate::auth::Identity;
use crate::config::{EgressDecl, SecretHeader};

/// `/egress/NAME/PATH…` → (`NAME`, `/PATH…`).
fn split(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/egress/")?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

/// A plain path: printable ASCII, no `..` or `.` segment, no `//`, and no encoded `.`, `/` or
/// `\` (`/v1/%2e%2e/admin` would pass a `/v1/*` path and mean `/admin` upstream).
fn plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e))
        && !path.contains("//")
        && !path.split('/').any(|s| s == ".." || s == ".")
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

/// The container's headers for the upstream: the credential's places emptied, the secret
/// put in its header.
fn upstream_headers(from: &HeaderMap, d: &EgressDecl, secret: &str) -> Result<HeaderMap, ApiError> {
    let secret_header = match &d.header {
        SecretHeader::Named(h) => Some(h),
        SecretHeader::Bearer => None,
    };
    let mut out = super::request_headers(from, secret_header);
    let (name, value) = match &d.header {
        SecretHeader::Named(h) => (h.clone(), secret.to_string()),
        SecretHeader::Bearer => (header::AUTHORIZATION, format!("Bearer {secret}")),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "the host's secret is not a header value",
        )
    })?;
    value.set_sensitive(true);
    out.insert(name, value);
    Ok(out)
}

/// The reply's headers for the container: hop-by-hop and cookies dropped, and any header
/// that echoes the secret.
fn reply_headers(h: &mut HeaderMap, secret: &str) {
    super::clean_reply(h);
    let echoed: Vec<header::HeaderName> = h
        .iter()
        .filter(|(_, v)| {
            v.as_bytes()
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in echoed {
        h.remove(k);
    }
}

pub async fn egress(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    req: Request,
) -> Response {
    let Some((name, path)) = split(req.uri().path()).map(|(n, p)| (n.to_string(), p.to_string()))
    else {
        return ApiError::not_found("not found").into_response();
    };
    let method = req.method().clone();
    let audit = |allowed: bool, reason: String| {
        state.audit.record(Decision {
            token: &id.name,
            route: routes::EGRESS,
            action: method.as_str(),
            host: Some(name.clone()),
            key: Some(path.clone()),
            allowed,
            reason: Some(reason),
        });
    };
    let (req, meter) = super::Meter::start(req);
    match call(&state, &id, &name, &path, req).await {
        Ok(r) => {
            let ok = !r.status().is_server_error();
            meter.audited(r, state.audit.clone(), move |a, reason| {
                a.record(Decision {
                    token: &id.name,
                    route: routes::EGRESS,
                    action: method.as_str(),
                    host: Some(name),
                    key: Some(path),
                    allowed: ok,
                    reason: Some(reason),
                });
            })
        }
        Err(e) => {
            audit(false, e.message.clone());
            e.into_response()
        }
    }
}

async fn call(
    state: &AppState,
    id: &Identity,
    name: &str,
    path: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(d) = state.settings.egress.iter().find(|d| d.name == name) else {
        return Err(ApiError::forbidden(format!(
            "no egress {name:?} is declared on the host ([[egress]] in the daemon's config)"
        )));
    };
    if !id.may_egress(name) {
        return Err(ApiError::forbidden(format!(
            "this container may not use egress {name} (scope egress:{name})"
        )));
    }
    if !plain(path) {
        return Err(ApiError::bad_request("the path is not a plain path"));
    }
    if !d.allows(req.method(), path) {
        return Err(ApiError::forbidden(format!(
            "{} {path} is not declared for egress {name} (methods, paths)",
            req.method()
        )));
    }
    if let Err(wait) = state.token_limits.try_acquire(
        &format!("{}|{name}", id.owner_key()),
        routes::EGRESS,
        d.rate_per_minute,
    ) {
        return Err(ApiError::too_many(
            "too many egress requests: try again later",
            wait,
        ));
    }
    let slot = state
        .identity_slots
        .try_acquire(&id.owner_key(), routes::EGRESS, super::EGRESS_RUNNING)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many egress requests open at once from this container",
            )
        })?;
    state
        .approve(
            id,
            crate::approval::Use {
                scope: format!("egress:{name}"),
                also: None,
                what: format!("call {name}"),
                target: format!("{} {path}", req.method()),
                hold: None,
            },
        )
        .await?;
    let secret = state.egress.secrets.get(d).await.map_err(|e| {
        tracing::warn!(egress = name, error = %e, "egress secret unavailable");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the host has no secret for egress {name}: {e}"),
        )
    })?;
    let base = d.upstream.as_str().trim_end_matches('/');
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri: http::Uri = format!("{base}{path}{query}")
        .parse()
        .map_err(|_| ApiError::bad_request("the upstream URL is not valid"))?;
    let (parts, body) = req.into_parts();
    let headers = upstream_headers(&parts.headers, d, secret.expose())?;
    let mut up = http::Request::builder()
        .method(parts.method)
        .uri(uri)
        .body(body)
        .map_err(|_| ApiError::bad_request("the request is not valid"))?;
    *up.headers_mut() = headers;
    let resp = state
        .backends
        .upstream
        .send(up, d.ca_file.as_deref())
        .await
        .map_err(|e| {
            tracing::warn!(egress = name, error = %e, "egress upstream failed");
            ApiError::new(StatusCode::BAD_GATEWAY, format!("the upstream failed: {e}"))
        })?;
    let (mut head, body) = resp.into_parts();
    reply_headers(&mut head.headers, secret.expose());
    head.version = http::Version::HTTP_11;
    Ok(Response::from_parts(
        head,
        Body::new(super::Held::new(body, slot)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_split_and_plain_paths_only() {
        assert_eq!(
            split("/egress/openai/v1/chat"),
            Some(("openai", "/v1/chat"))
        );
        assert_eq!(split("/egress/openai"), Some(("openai", "/")));
        assert!(plain("/v1/chat/completions"));
        for p in [
            "/v1/../admin",
            "/v1//x",
            "/./x",
            "/a\\b",
            "/v1/%2e%2e/admin",
            "/v1/%2E./x",
            "/v1%2fadmin",
        ] {
            assert!(!plain(p), "{p}");
        }
    }

    #[test]
    fn the_secret_replaces_what_the_container_sent_and_never_comes_back() {
        let f: crate::config::EgressFile = toml::from_str(
            "name = \"a\"\nupstream = \"https://api.example.com\"\nheader = \"x-api-key\"\nsecret.env = \"K\"\n",
        )
        .unwrap();
        let d = EgressDecl::from_file(&f).unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-api-key", "placeholder"),
            ("authorization", "Bearer stolen"),
            ("cookie", "c=1"),
            ("proxy-authorization", "p"),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let out = upstream_headers(&h, &d, "sk-real").unwrap();
        assert_eq!(out.get("x-api-key").unwrap(), "sk-real");
        assert!(out.get("authorization").is_none() && out.get("cookie").is_none());
        assert_eq!(out.len(), 3);
        let mut reply = HeaderMap::new();
        reply.insert("x-echo", HeaderValue::from_static("key=sk-real;"));
        reply.insert("set-cookie", HeaderValue::from_static("s=1"));
        reply.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        reply_headers(&mut reply, "sk-real");
        assert_eq!(reply.len(), 1);
    }
}
