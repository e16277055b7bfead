//! The OpenAPI 3 document of the daemon's HTTP API, generated from the wire types
//! (`cargo xtask openapi` writes it to `docs/openapi.json`; CI checks it is current).
//!
//! The functions below are never called: they only carry each route's description.
#![allow(dead_code)]

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::*;

#[utoipa::path(get, path = "/health", tag = "daemon", security(()),
    responses((status = 200, description = "the daemon is up", body = HealthResponse),
              (status = 400, description = "missing or malformed Host", body = ErrorResponse),
              (status = 403, description = "Host not allowed", body = ErrorResponse)))]
fn health() {}

#[utoipa::path(get, path = "/status", tag = "daemon",
    responses((status = 200, description = "pid, port, listen addresses, uptime, live sessions", body = StatusResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "a scoped token or a container: only the user may read it", body = ErrorResponse)))]
fn status() {}

#[utoipa::path(post, path = "/open/url", tag = "browser", request_body = OpenUrlRequest,
    responses((status = 200, description = "opened in the host's browser", body = OpenUrlResponse),
              (status = 400, description = "missing, invalid, not http(s), userinfo or control characters", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "refused by policy, or by the user (`denied on the host`, `no answer on the host within Ns`; SPEC.md 14)", body = ErrorResponse),
              (status = 413, description = "body over 64 KiB", body = ErrorResponse),
              (status = 415, description = "not application/json", body = ErrorResponse),
              (status = 429, description = "rate limited", body = ErrorResponse),
              (status = 500, description = "the launcher failed", body = ErrorResponse)))]
fn open_url() {}

#[utoipa::path(post, path = "/notify", tag = "notify", request_body = NotifyRequest,
    responses((status = 200, description = "shown by the host's notifier", body = SuccessResponse),
              (status = 400, description = "empty or too long title, too long body, control characters", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "the token may not notify (scope notify), or the user did not allow it", body = ErrorResponse),
              (status = 413, description = "body over 64 KiB", body = ErrorResponse),
              (status = 415, description = "not application/json", body = ErrorResponse),
              (status = 429, description = "more than 6 a minute, or 4 asks of this identity waiting for the user", body = ErrorResponse),
              (status = 500, description = "the notifier failed", body = ErrorResponse)))]
fn notify() {}

#[utoipa::path(post, path = "/git/credential", tag = "git", request_body = GitCredentialRequest,
    responses((status = 200, description = "get: the credential; store/erase: done", body = GitCredentialResponse),
              (status = 400, description = "invalid field", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "protocol, host or action not allowed, or the user did not allow it", body = ErrorResponse),
              (status = 404, description = "no credential found", body = ErrorResponse),
              (status = 413, description = "body over 64 KiB", body = ErrorResponse),
              (status = 415, description = "not application/json", body = ErrorResponse),
              (status = 429, description = "too many at once, or 4 asks of this identity waiting for the user", body = ErrorResponse),
              (status = 500, description = "git failed", body = ErrorResponse),
              (status = 504, description = "git did not answer in time", body = ErrorResponse)))]
fn git_credential() {}

#[utoipa::path(post, path = "/docker/credential", tag = "docker", request_body = DockerCredentialRequest,
    responses((status = 200, description = "get: the credential; list: the registries the token may see; store/erase: done", body = DockerCredentialResponse),
              (status = 400, description = "not a registry, or fields the action does not take", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "the token may not use this registry (scope docker:REGISTRY), list without any docker: scope, store/erase not allowed by the config, or the user did not allow it", body = ErrorResponse),
              (status = 404, description = "no credential found", body = ErrorResponse),
              (status = 413, description = "body over 64 KiB", body = ErrorResponse),
              (status = 415, description = "not application/json", body = ErrorResponse),
              (status = 429, description = "too many requests (per minute for a scoped token, helpers running at once, or 4 asks waiting for the user)", body = ErrorResponse),
              (status = 500, description = "the host's credential store failed", body = ErrorResponse),
              (status = 504, description = "the credential helper did not answer in time", body = ErrorResponse)))]
fn docker_credential() {}

#[utoipa::path(post, path = "/ssh/agent", tag = "ssh", request_body = SshAgentRequest,
    responses((status = 200, description = "the agent's framed reply (or SSH_AGENT_FAILURE from the filter), base64", body = SshAgentResponse),
              (status = 400, description = "not exactly one frame, or over 256 KiB", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "the token may not use the agent, or the user did not allow it", body = ErrorResponse),
              (status = 413, description = "body over 512 KiB", body = ErrorResponse),
              (status = 415, description = "not application/json", body = ErrorResponse),
              (status = 429, description = "4 asks of this identity waiting for the user", body = ErrorResponse),
              (status = 502, description = "the agent's reply was invalid", body = ErrorResponse),
              (status = 503, description = "no agent on the host", body = ErrorResponse)))]
fn ssh_agent() {}

#[utoipa::path(post, path = "/callback/register", tag = "oauth", request_body = CallbackRegisterRequest,
    responses((status = 200, description = "listening on the port", body = CallbackRegisterResponse),
              (status = 400, description = "bad port, path, timeout or state", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "the token may not register callbacks, or the user did not allow it", body = ErrorResponse),
              (status = 409, description = "port in use on the host", body = ErrorResponse),
              (status = 413, description = "body over 64 KiB", body = ErrorResponse),
              (status = 415, description = "not application/json", body = ErrorResponse),
              (status = 429, description = "too many sessions, or 4 asks waiting for the user", body = ErrorResponse),
              (status = 500, description = "cannot listen", body = ErrorResponse)))]
fn callback_register() {}

#[utoipa::path(get, path = "/callback/{id}/data", tag = "oauth",
    params(("id" = String, Path, description = "session id"),
           ("wait" = Option<u32>, Query, description = "seconds to hold the request for the callback (at most 60)", minimum = 0)),
    responses((status = 200, description = "received or not yet", body = CallbackDataResponse),
              (status = 400, description = "wait is not a number", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 404, description = "unknown or expired session", body = ErrorResponse)))]
fn callback_data() {}

#[utoipa::path(delete, path = "/callback/{id}", tag = "oauth",
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, description = "deleted (idempotent)", body = SuccessResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse)))]
fn callback_delete() {}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[utoipa::path(get, path = "/git/{host}/{path}", tag = "egress",
    params(("host" = String, Path, description = "git's credential host: HOST, or HOST:PORT when not 443"),
           ("path" = String, Path, description = "several segments: REPO/info/refs (with ?service=git-upload-pack or git-receive-pack)")),
    responses((status = 200, description = "the upstream's reply, streamed as it arrives (git's smart HTTP, not JSON)"),
              (status = 400, description = "not a host, or not a plain path", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "no git:HOST (fetch) or git-push:HOST (push) scope, host not allowed, not allowed by the user, or the upstream refused the host's credential", body = ErrorResponse),
              (status = 404, description = "not git's smart HTTP", body = ErrorResponse),
              (status = 502, description = "the upstream failed, or this build has no egress", body = ErrorResponse)))]
fn git_egress_refs() {}

#[utoipa::path(post, path = "/git/{host}/{path}", tag = "egress",
    params(("host" = String, Path, description = "git's credential host: HOST, or HOST:PORT when not 443"),
           ("path" = String, Path, description = "several segments: REPO/git-upload-pack or REPO/git-receive-pack")),
    responses((status = 200, description = "the upstream's reply, streamed as it arrives (git's smart HTTP, not JSON); the request body is git's, any type and size, streamed"),
              (status = 400, description = "not a host, or not a plain path", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "no git:HOST (fetch) or git-push:HOST (push) scope, host not allowed, not allowed by the user, or the upstream refused the host's credential", body = ErrorResponse),
              (status = 404, description = "not git's smart HTTP", body = ErrorResponse),
              (status = 502, description = "the upstream failed, or this build has no egress", body = ErrorResponse)))]
fn git_egress_rpc() {}

#[utoipa::path(get, path = "/egress/{name}/{path}", tag = "egress",
    params(("name" = String, Path, description = "an [[egress]] name of the daemon's config"),
           ("path" = String, Path, description = "several segments: the upstream's path after its base URL")),
    responses((status = 200, description = "the upstream's own reply (any status, any type), streamed as it arrives; the daemon added the key"),
              (status = 400, description = "not a plain path", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "an undeclared name, method or path, no egress:NAME scope, or not allowed by the user", body = ErrorResponse),
              (status = 429, description = "over the egress's rate, 16 open at once, or 4 asks waiting", body = ErrorResponse),
              (status = 502, description = "the upstream failed, or the host has no secret for it", body = ErrorResponse)))]
fn egress_get() {}

#[utoipa::path(post, path = "/egress/{name}/{path}", tag = "egress",
    params(("name" = String, Path, description = "an [[egress]] name of the daemon's config"),
           ("path" = String, Path, description = "several segments: the upstream's path after its base URL")),
    responses((status = 200, description = "the upstream's own reply (any status, any type), streamed as it arrives; the daemon added the key. Every method the egress declares is carried the same way"),
              (status = 400, description = "not a plain path", body = ErrorResponse),
              (status = 401, description = "missing or invalid token", body = ErrorResponse),
              (status = 403, description = "an undeclared name, method or path, no egress:NAME scope, or not allowed by the user", body = ErrorResponse),
              (status = 429, description = "over the egress's rate, 16 open at once, or 4 asks waiting", body = ErrorResponse),
              (status = 502, description = "the upstream failed, or the host has no secret for it", body = ErrorResponse)))]
fn egress_post() {}

#[derive(OpenApi)]
#[openapi(
    info(title = "hostproxy", description = "Host daemon for Docker containers: open URLs, OAuth callbacks, git credentials, SSH agent. Every API route needs `Authorization: Bearer <token>`; requests with `Origin` or `Sec-Fetch-*` are refused; the `Host` header must be an allowed name with the served port."),
    paths(health, status, open_url, notify, git_credential, docker_credential, ssh_agent, callback_register, callback_data, callback_delete, git_egress_refs, git_egress_rpc, egress_get, egress_post),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// The document, pretty-printed JSON with a trailing newline.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut s = doc.to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}
