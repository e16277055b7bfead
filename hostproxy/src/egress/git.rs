//! `GET|POST /git/HOST/PATH…` (SPEC.md 13): git's smart HTTP, carried to `https://HOST/PATH…`
//! with the credential of the host's own `git credential fill`. The container's git holds no
//! password and runs no credential helper: a refused credential is a 403 to it, never a 401
//! that would make it ask its own.
//!
//! Order: parse (only `info/refs?service=…`, `git-upload-pack`, `git-receive-pack`) → scope
//! (`git:HOST[/PREFIX]` fetches, `git-push:HOST[/PREFIX]` pushes) → the daemon's git host
//! policy → rate and concurrency per identity → the user's answer when asked for → upstream. Nothing is sent before the last.
//! Like git: a GET goes first without a credential, a 401 brings `fill` and the request
//! again with it, `approve` after it worked and `reject` when the server refused it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawker_protocol::api::{GitCredentialAction, routes};
use clawker_protocol::credential::{CredentialFields, is_valid_credential_host};

use super::HeldKey;
use crate::api::{ApiError, AppState};
use crate::audit::Decision;
use crate::auth::Identity;

/// What a request does to the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `git-upload-pack`: fetch, clone.
    Fetch,
    /// `git-receive-pack`: push.
    Push,
}

/// A parsed egress request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// git's credential host: lower case, `:PORT` when not 443.
    pub host: String,
    /// The repository's path (`org/repo.git`), without the service suffix.
    pub repo: String,
    /// The path after the host, as sent (`/org/repo.git/info/refs`).
    pub path: String,
    pub query: Option<String>,
    pub service: Service,
}

const SMART_ONLY: &str = "only git's smart HTTP protocol is carried: …/info/refs?service=git-upload-pack|git-receive-pack, …/git-upload-pack, …/git-receive-pack";

/// Parses `/git/HOST/PATH…`: a 404 for what is not git's smart HTTP, a 400 for a malformed
/// host or path.
pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Target, ApiError> {
    let rest = path
        .strip_prefix("/git/")
        .ok_or_else(|| ApiError::not_found(SMART_ONLY))?;
    let (host, tail) = rest
        .split_once('/')
        .ok_or_else(|| ApiError::not_found(SMART_ONLY))?;
    if !is_valid_credential_host(host) || !is_upstream_host(host) {
        return Err(ApiError::bad_request(
            "the host is not a host name (HOST or HOST:PORT)",
        ));
    }
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(":443").unwrap_or(&host).to_string();
    let path = format!("/{tail}");
    // No percent-encoding at all: `acme/%2e%2e/other` would pass a `git-push:HOST/acme/`
    // prefix here and mean `other/` to the server.
    if tail.is_empty()
        || path.contains('%')
        || path.contains("//")
        || path.split('/').any(|s| s == ".." || s == ".")
        || !path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
    {
        return Err(ApiError::bad_request(
            "the repository path is not a plain path",
        ));
    }
    let (service, suffix) = match (method, query) {
        (&Method::GET, Some("service=git-upload-pack")) => (Service::Fetch, "/info/refs"),
        (&Method::GET, Some("service=git-receive-pack")) => (Service::Push, "/info/refs"),
        (&Method::POST, None) if path.ends_with("/git-upload-pack") => {
            (Service::Fetch, "/git-upload-pack")
        }
        (&Method::POST, None) if path.ends_with("/git-receive-pack") => {
            (Service::Push, "/git-receive-pack")
        }
        _ => return Err(ApiError::not_found(SMART_ONLY)),
    };
    let repo = path
        .strip_suffix(suffix)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::not_found(SMART_ONLY))?
        .trim_start_matches('/')
        .to_string();
    Ok(Target {
        host,
        repo,
        path,
        query: query.map(str::to_string),
        service,
    })
}

/// `NAME[:PORT]` or `IP[:PORT]` (`[v6]:PORT`): what an upstream URL's authority may be, no
/// user info, no empty or odd labels.
fn is_upstream_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, _)) if !n.ends_with(']') && n.contains(':') => (h, None),
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return false;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn upstream_headers(from: &HeaderMap) -> HeaderMap {
    super::request_headers(from, None)
}

/// `Authorization: Basic …` for a credential with a password.
fn basic(c: &CredentialFields) -> Option<HeaderValue> {
    let pass = c.password.as_ref()?;
    let user = c
        .username
        .as_ref()
        .map(|u| u.expose().as_str())
        .unwrap_or("");
    let token = B64.encode(format!("{user}:{}", pass.expose()));
    let mut v = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

pub async fn git_egress(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    req: Request,
) -> Response {
    let t = match parse(req.method(), req.uri().path(), req.uri().query()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let action = match t.service {
        Service::Fetch => "fetch",
        Service::Push => "push",
    };
    let shown = format!("{}/{}", t.host, t.repo);
    let audit = |allowed: bool, reason: String| {
        state.audit.record(Decision {
            token: &id.name,
            route: routes::GIT_EGRESS,
            action,
            host: Some(shown.clone()),
            allowed,
            reason: Some(reason),
            ..Default::default()
        });
    };
    let (req, meter) = super::Meter::start(req);
    match proxy(&state, &id, &t, req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            meter.audited(resp, state.audit.clone(), move |a, reason| {
                a.record(Decision {
                    token: &id.name,
                    route: routes::GIT_EGRESS,
                    action,
                    host: Some(shown),
                    allowed: ok,
                    reason: Some(reason),
                    ..Default::default()
                });
            })
        }
        Err(e) => {
            audit(false, e.message.clone());
            e.into_response()
        }
    }
}

async fn proxy(
    state: &AppState,
    id: &Identity,
    t: &Target,
    req: Request,
) -> Result<Response, ApiError> {
    let push = t.service == Service::Push;
    if !id.may_git_egress(&t.host, &t.repo, push) {
        return Err(ApiError::forbidden(format!(
            "this container may not {} {}/{} (scope {}:{})",
            if push { "push to" } else { "fetch" },
            t.host,
            t.repo,
            if push { "git-push" } else { "git" },
            t.host
        )));
    }
    let policy = &state.settings.git;
    if !policy
        .allowed_protocols
        .iter()
        .any(|p| p.eq_ignore_ascii_case("https"))
    {
        return Err(ApiError::forbidden("protocol https is not allowed"));
    }
    if let Some(hosts) = &policy.allowed_hosts
        && !hosts.iter().any(|h| h == &t.host)
    {
        return Err(ApiError::forbidden("host is not allowed"));
    }
    if let Err(wait) = state.token_limits.try_acquire(
        &format!("{}|{}", id.owner_key(), t.host),
        routes::GIT_EGRESS,
        super::GIT_EGRESS_PER_MINUTE,
    ) {
        return Err(ApiError::too_many(
            "too many git requests: try again later",
            wait,
        ));
    }
    let slot = state
        .identity_slots
        .try_acquire(&id.owner_key(), routes::GIT_EGRESS, super::EGRESS_RUNNING)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many git requests open at once from this container",
            )
        })?;
    state
        .approve(
            id,
            crate::approval::Use {
                scope: format!("{}:{}", if push { "git-push" } else { "git" }, t.host),
                also: None,
                what: if push { "git push" } else { "git fetch" }.into(),
                target: format!("{}/{}", t.host, t.repo),
                // One git command makes two or three requests: one answer covers them.
                hold: Some(Duration::from_secs(60)),
            },
        )
        .await?;
    let uri: http::Uri = format!(
        "https://{}{}{}",
        t.host,
        t.path,
        t.query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    )
    .parse()
    .map_err(|_| ApiError::bad_request("the upstream URL is not valid"))?;
    let key: HeldKey = (id.owner_key(), t.host.clone(), t.repo.clone());
    let (parts, body) = req.into_parts();
    let headers = upstream_headers(&parts.headers);
    let build = |cred: Option<&CredentialFields>, body: Body| {
        let mut r = http::Request::builder()
            .method(parts.method.clone())
            .uri(uri.clone())
            .body(body)
            .expect("a request from parts that were valid");
        *r.headers_mut() = headers.clone();
        if let Some(v) = cred.and_then(basic) {
            r.headers_mut().insert(header::AUTHORIZATION, v);
        }
        r
    };
    let ca = state.egress.ca_file.clone();
    let send = |r| {
        let ca = ca.clone();
        async move {
            state
                .backends
                .upstream
                .send(r, ca.as_deref())
                .await
                .map_err(upstream_failed)
        }
    };
    let held = state.egress.get(&key);
    let resp = if parts.method == Method::GET {
        let first = send(build(held.as_ref(), Body::empty())).await?;
        if first.status() == StatusCode::UNAUTHORIZED && held.is_none() {
            let Some(cred) = fill(state, t, first.headers()).await? else {
                return Err(no_credential(t));
            };
            let again = send(build(Some(&cred), Body::empty())).await?;
            settle(state, &key, &cred, again.status());
            again
        } else {
            if let Some(c) = &held {
                settle(state, &key, c, first.status());
            }
            first
        }
    } else {
        let r = send(build(held.as_ref(), body)).await?;
        if let Some(c) = &held {
            settle(state, &key, c, r.status());
        }
        r
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        return Err(match held {
            Some(_) => ApiError::forbidden(format!(
                "{} refused the host's credential (rejected on the host): update it there",
                t.host
            )),
            None => no_credential(t),
        });
    }
    let (mut head, body) = resp.into_parts();
    super::clean_reply(&mut head.headers);
    // An upstream HTTP/2 reply has no Connection semantics; hyper frames the body for the
    // container's HTTP/1.1 as it arrives.
    head.version = http::Version::HTTP_11;
    Ok(Response::from_parts(
        head,
        Body::new(super::Held::new(Body::new(body), slot)),
    ))
}

fn upstream_failed(e: String) -> ApiError {
    tracing::warn!(error = %e, "git egress: upstream failed");
    ApiError::new(StatusCode::BAD_GATEWAY, format!("the upstream failed: {e}"))
}

fn no_credential(t: &Target) -> ApiError {
    ApiError::forbidden(format!(
        "{} asks for a login and the host's git has no credential for it: store one on the host (git credential approve, or log in once with git there)",
        t.host
    ))
}

/// The host's `git credential fill` for `t` (the server's challenges passed on, as git does).
async fn fill(
    state: &AppState,
    t: &Target,
    challenge: &HeaderMap,
) -> Result<Option<CredentialFields>, ApiError> {
    let ask = CredentialFields {
        protocol: Some("https".into()),
        host: Some(t.host.clone()),
        // The repository, as the container's git would send it; the host's own git drops it
        // unless the host's credential.useHttpPath (for this host or all) asks for it.
        path: Some(t.repo.clone()),
        wwwauth: challenge
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.contains(['\r', '\n', '\0']))
            .map(str::to_string)
            .collect(),
        ..CredentialFields::default()
    };
    let Ok(_slot) = state.git_slots.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many credential requests at once: retry shortly",
        ));
    };
    match state
        .backends
        .git
        .run_as_host(GitCredentialAction::Get, ask)
        .await
    {
        Ok(Some(mut c)) if c.password.is_some() => {
            c.protocol = Some("https".into());
            c.host = Some(t.host.clone());
            c.path = Some(t.repo.clone());
            c.wwwauth.clear();
            Ok(Some(c))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "git credential fill failed for egress");
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "git credential fill failed on the host",
            ))
        }
    }
}

/// After an upstream answer with `cred`: kept and `approve`d when it worked, `reject`ed and
/// forgotten when the server refused it (git's own bookkeeping). Runs in the background.
fn settle(state: &AppState, key: &HeldKey, cred: &CredentialFields, status: StatusCode) {
    let action = if status == StatusCode::UNAUTHORIZED {
        state.egress.drop_held(key);
        GitCredentialAction::Erase
    } else if status.is_success() {
        let fresh = state.egress.get(key).is_none();
        state.egress.put(key.clone(), cred.clone());
        if !fresh {
            return;
        }
        GitCredentialAction::Store
    } else {
        return;
    };
    let (state, cred) = (state.clone(), cred.clone());
    tokio::spawn(async move {
        if let Err(e) = state.backends.git.run_as_host(action, cred).await {
            tracing::warn!(error = %e, "git credential approve/reject failed");
        }
    });
}

#[cfg(test)]
#[path = "git_tests.rs"]
mod tests;
