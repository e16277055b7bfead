//! The handlers of SPEC.md 4.2. Each validates first, so a rejected request has had no
//! effect: the browser is not opened, git is not run, the agent is not contacted.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawker_protocol::Secret;
use clawker_protocol::agent::{self, FAILURE_FRAME, Verdict};
use clawker_protocol::api::routes;
use clawker_protocol::api::{
    self, CallbackDataResponse, CallbackRegisterRequest, CallbackRegisterResponse,
    GitCredentialAction, GitCredentialRequest, GitCredentialResponse, HealthResponse,
    OpenUrlRequest, OpenUrlResponse, SshAgentRequest, SshAgentResponse, StatusResponse,
    SuccessResponse,
};
use clawker_protocol::credential::{
    CredentialFields, has_forbidden_char, is_valid_credential_host,
};
use clawker_protocol::urls::{UrlError, canonical_url, check_url_policy};
use serde::Deserialize;

use crate::app::{ApiError, ApiJson, AppState};
use crate::backends::{AgentError, GitError};
use crate::sessions::{Registration, capture_response, not_found_page};
use crate::tokens::Identity;

pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        service: clawker_protocol::SERVICE_NAME.into(),
        version: state.version.into(),
    })
}

pub async fn status(State(state): State<AppState>) -> Json<StatusResponse> {
    Json(StatusResponse {
        success: true,
        service: clawker_protocol::SERVICE_NAME.into(),
        version: state.version.into(),
        pid: std::process::id(),
        port: state.settings.port,
        listen: state.listen.iter().map(ToString::to_string).collect(),
        uptime_secs: state.started.elapsed().as_secs(),
        sessions: state.sessions.len(),
    })
}

/// A 429 with `Retry-After`.
fn too_many(message: &str, wait: Duration) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message);
    e.retry_after = Some(wait.as_secs().max(1));
    e
}

/// Requests per minute a scoped token may make on `/git/credential` and `/callback/register`.
const SCOPED_GIT_PER_MINUTE: u32 = 60;
const SCOPED_REGISTER_PER_MINUTE: u32 = 10;
/// Live callback sessions per scoped token (the global cap still applies).
const SCOPED_MAX_SESSIONS: usize = 4;

/// The status a URL refusal gets: 403 for policy, 400 for malformed input.
fn url_error(e: UrlError) -> ApiError {
    match e {
        UrlError::InternalHost => ApiError::forbidden(e.to_string()),
        other => ApiError::bad_request(other.to_string()),
    }
}

pub async fn open_url(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ApiJson(req): ApiJson<OpenUrlRequest>,
) -> Result<Json<OpenUrlResponse>, ApiError> {
    let result = open_url_decide(&state, &id, &req.url).await;
    let (host, refusal) = match &result {
        Ok((host, _)) => (Some(host.clone()), None),
        Err((host, e)) => (host.clone(), Some(e.message.clone())),
    };
    state.audit.record(
        &id.name,
        routes::OPEN_URL,
        "open",
        host.clone(),
        None,
        refusal.is_none(),
        refusal,
    );
    let (_, url) = result.map_err(|(_, e)| e)?;
    tracing::info!(host, "opened url");
    Ok(Json(OpenUrlResponse { success: true, url }))
}

/// Validates, applies the policy and launches; errors carry the URL's host for the audit log.
async fn open_url_decide(
    state: &AppState,
    id: &Identity,
    raw: &str,
) -> Result<(String, String), (Option<String>, ApiError)> {
    if !id.may_open() {
        return Err((
            None,
            ApiError::forbidden("this token may not open urls (scope open)"),
        ));
    }
    let url = canonical_url(raw).map_err(|e| (None, url_error(e)))?;
    let parsed = url::Url::parse(&url).map_err(|_| (None, ApiError::bad_request("invalid url")))?;
    let host = parsed.host_str().unwrap_or("").to_string();
    check_url_policy(&parsed, &state.settings.open_allowed_hosts)
        .map_err(|e| (Some(host.clone()), url_error(e)))?;
    let limited = if id.is_scoped() {
        state.token_limits.try_acquire(
            &id.name,
            routes::OPEN_URL,
            state.settings.open_rate_per_minute,
        )
    } else {
        state.open_limiter.try_acquire()
    };
    if let Err(wait) = limited {
        return Err((
            Some(host),
            too_many("too many urls opened: try again later", wait),
        ));
    }
    if let Err(e) = state.backends.launcher.open(&url).await {
        tracing::warn!(error = %e, "url launcher failed");
        return Err((
            Some(host),
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the browser launcher failed on the host",
            ),
        ));
    }
    Ok((host, url))
}

/// Validates a credential request against the policy, returning what git will be given.
pub fn validate_credential(
    state: &AppState,
    req: &GitCredentialRequest,
) -> Result<CredentialFields, ApiError> {
    let fields: [(&str, Option<&str>); 5] = [
        ("protocol", Some(&req.protocol)),
        ("host", Some(&req.host)),
        ("path", req.path.as_deref()),
        (
            "username",
            req.username.as_ref().map(|s| s.expose().as_str()),
        ),
        (
            "password",
            req.password.as_ref().map(|s| s.expose().as_str()),
        ),
    ];
    for (name, value) in fields {
        if value.is_some_and(has_forbidden_char) {
            return Err(ApiError::bad_request(format!(
                "{name} contains a carriage return, newline or nul"
            )));
        }
    }
    if req.protocol.is_empty() {
        return Err(ApiError::bad_request("protocol is empty"));
    }
    if req.host.is_empty() {
        return Err(ApiError::bad_request("host is empty"));
    }
    if !is_valid_credential_host(&req.host) {
        return Err(ApiError::bad_request("host is not a valid host name"));
    }
    let policy = &state.settings.git;
    let protocol = req.protocol.to_ascii_lowercase();
    if !policy
        .allowed_protocols
        .iter()
        .any(|p| p.eq_ignore_ascii_case(&protocol))
    {
        return Err(ApiError::forbidden(format!(
            "protocol {protocol} is not allowed"
        )));
    }
    let host = req.host.to_ascii_lowercase();
    if let Some(hosts) = &policy.allowed_hosts
        && !hosts.iter().any(|h| h == &host)
    {
        return Err(ApiError::forbidden("host is not allowed"));
    }
    match req.action {
        GitCredentialAction::Get => {}
        GitCredentialAction::Store if !policy.allow_store => {
            return Err(ApiError::forbidden(
                "store is not allowed: enable git.allow_store in the daemon config",
            ));
        }
        GitCredentialAction::Erase if !policy.allow_erase => {
            return Err(ApiError::forbidden(
                "erase is not allowed: enable git.allow_erase in the daemon config",
            ));
        }
        GitCredentialAction::Store | GitCredentialAction::Erase => {}
    }
    let mut fields = CredentialFields {
        protocol: Some(protocol),
        host: Some(host),
        path: req.path.clone(),
        username: req.username.clone(),
        password: None,
        password_expiry_utc: None,
    };
    if req.action != GitCredentialAction::Get {
        fields.password = req.password.clone();
    }
    Ok(fields)
}

pub async fn git_credential(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ApiJson(req): ApiJson<GitCredentialRequest>,
) -> Result<Json<GitCredentialResponse>, ApiError> {
    let audit_host = (!has_forbidden_char(&req.host)).then(|| req.host.to_ascii_lowercase());
    let deny = |e: ApiError| {
        let reason = Some(e.message.clone());
        state.audit.record(
            &id.name,
            routes::GIT_CREDENTIAL,
            req.action.as_str(),
            audit_host.clone(),
            None,
            false,
            reason,
        );
        e
    };
    let fields = validate_credential(&state, &req).map_err(deny)?;
    let host_ok = fields.host.as_deref().unwrap_or("");
    if !id.may_git(host_ok, req.action != GitCredentialAction::Get) {
        return Err(deny(ApiError::forbidden(format!(
            "this token may not {} credentials for this host (scope {}:HOST)",
            req.action.as_str(),
            if req.action == GitCredentialAction::Get {
                "git"
            } else {
                "git-store"
            }
        ))));
    }
    if id.is_scoped()
        && let Err(wait) =
            state
                .token_limits
                .try_acquire(&id.name, routes::GIT_CREDENTIAL, SCOPED_GIT_PER_MINUTE)
    {
        return Err(deny(too_many(
            "too many credential requests: try again later",
            wait,
        )));
    }
    let Ok(_slot) = state.git_slots.try_acquire() else {
        return Err(deny(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many credential requests at once: retry shortly",
        )));
    };
    let host = fields.host.clone().unwrap_or_default();
    let result = state.backends.git.run(req.action, fields).await;
    let outcome = match &result {
        Ok(Some(_)) => "found",
        Ok(None) if req.action == GitCredentialAction::Get => "not found",
        Ok(None) => "done",
        Err(GitError::Timeout(_)) => "git timed out",
        Err(_) => "git failed",
    };
    state.audit.record(
        &id.name,
        routes::GIT_CREDENTIAL,
        req.action.as_str(),
        Some(host.clone()),
        None,
        true,
        Some(outcome.into()),
    );
    tracing::info!(
        action = req.action.as_str(),
        host,
        ok = result.is_ok(),
        "git credential"
    );
    match result {
        Ok(Some(found)) => Ok(Json(GitCredentialResponse {
            success: true,
            protocol: found.protocol.or(Some(req.protocol)),
            host: found.host.or(Some(req.host)),
            username: Some(found.username.unwrap_or_else(|| Secret::new(String::new()))),
            password: found.password,
            password_expiry_utc: found.password_expiry_utc,
        })),
        Ok(None) if req.action == GitCredentialAction::Get => {
            Err(ApiError::not_found("no credential found"))
        }
        Ok(None) => Ok(Json(GitCredentialResponse::done())),
        Err(GitError::Timeout(_)) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "git did not answer in time",
        )),
        Err(e) => {
            tracing::warn!(error = %e, "git credential failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "git credential failed on the host",
            ))
        }
    }
}

/// Applies the agent filter to one framed request: either the agent's reply or, for a
/// refused message, `SSH_AGENT_FAILURE` produced here without contacting the agent.
///
/// `frame` has been checked to be exactly one frame by the caller.
async fn relay_agent_frame(
    state: &AppState,
    id: &Identity,
    frame: Vec<u8>,
) -> Result<Vec<u8>, AgentError> {
    let body = &frame[4..];
    let mut verdict = state.settings.agent_policy.decide(body);
    let (action, key) = describe_agent_request(body);
    let allowed_keys = id.ssh_keys();
    let mut refusal =
        (verdict == Verdict::Refuse).then(|| "not allowed by the agent policy".to_string());
    // A token limited to some keys may only sign with those.
    if verdict == Verdict::Forward
        && body.first() == Some(&agent::msg::SIGN_REQUEST)
        && let Some(keys) = &allowed_keys
        && !key.as_ref().is_some_and(|k| keys.contains(k))
    {
        verdict = Verdict::Refuse;
        refusal = Some("this token may not use this key".to_string());
    }
    state.audit.record(
        &id.name,
        routes::SSH_AGENT,
        &action,
        None,
        key,
        refusal.is_none(),
        refusal,
    );
    match verdict {
        Verdict::Refuse => {
            tracing::info!(
                message = body.first().copied(),
                "agent message refused by policy"
            );
            Ok(FAILURE_FRAME.to_vec())
        }
        Verdict::Forward => {
            let kind = body.first().copied();
            let reply = state.backends.agent.request(frame).await?;
            match (&allowed_keys, kind.as_ref()) {
                (Some(keys), Some(&agent::msg::REQUEST_IDENTITIES)) => {
                    Ok(filter_identities(&reply, keys))
                }
                _ => Ok(reply),
            }
        }
    }
}

/// Re-encodes an IDENTITIES_ANSWER frame with only the keys whose fingerprint is in `keys`.
fn filter_identities(frame: &[u8], keys: &std::collections::BTreeSet<String>) -> Vec<u8> {
    let parse = || -> Option<Vec<u8>> {
        let body = agent::single_frame(frame).ok()?;
        let (&kind, rest) = body.split_first()?;
        if kind != agent::msg::IDENTITIES_ANSWER {
            return None;
        }
        let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let mut rest = &rest[4..];
        let mut kept: Vec<&[u8]> = Vec::new();
        for _ in 0..n {
            let start = rest;
            let (blob, after) = agent::read_string(rest)?;
            let (_comment, after) = agent::read_string(after)?;
            if keys.contains(&crate::audit::fingerprint(blob)) {
                kept.push(&start[..start.len() - after.len()]);
            }
            rest = after;
        }
        let mut out = vec![agent::msg::IDENTITIES_ANSWER];
        out.extend_from_slice(&(kept.len() as u32).to_be_bytes());
        for k in kept {
            out.extend_from_slice(k);
        }
        Some(agent::frame(&out))
    };
    parse().unwrap_or_else(|| FAILURE_FRAME.to_vec())
}

/// An agent request as the audit log names it, with the key's fingerprint for signatures.
pub(crate) fn describe_agent_request(body: &[u8]) -> (String, Option<String>) {
    use clawker_protocol::agent::{SignPurpose, msg, sign_purpose};
    let printable = |s: &str| {
        s.chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect::<String>()
    };
    match body.first().copied() {
        Some(msg::REQUEST_IDENTITIES) => ("list".into(), None),
        Some(msg::SIGN_REQUEST) => {
            let key = agent::read_string(&body[1..]).map(|(k, _)| crate::audit::fingerprint(k));
            let purpose = match sign_purpose(body) {
                SignPurpose::UserAuth => "sign:userauth".to_string(),
                SignPurpose::SshSig(ns) => format!("sign:sshsig:{}", printable(&ns)),
                SignPurpose::Other => "sign:other".to_string(),
            };
            (purpose, key)
        }
        Some(msg::EXTENSION) => (
            format!(
                "extension:{}",
                printable(agent::extension_name(body).unwrap_or("?"))
            ),
            None,
        ),
        Some(n) => (format!("message:{n}"), None),
        None => ("empty".into(), None),
    }
}

pub async fn ssh_agent(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ApiJson(req): ApiJson<SshAgentRequest>,
) -> Result<Json<SshAgentResponse>, ApiError> {
    if !id.may_ssh() {
        return Err(ApiError::forbidden(
            "this token may not use the ssh agent (scope ssh)",
        ));
    }
    let frame = B64
        .decode(req.data.expose())
        .map_err(|_| ApiError::bad_request("data is not valid base64"))?;
    agent::single_frame(&frame).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let reply = relay_agent_frame(&state, &id, frame)
        .await
        .map_err(|e| match e {
            AgentError::NoSocket | AgentError::Unreachable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no ssh agent on the host: start one and set SSH_AUTH_SOCK for the daemon",
            ),
            AgentError::BadReply => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the host ssh agent sent an invalid reply",
            ),
        })?;
    Ok(Json(SshAgentResponse {
        success: true,
        data: Secret::new(B64.encode(reply)),
    }))
}

pub async fn callback_register(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ApiJson(req): ApiJson<CallbackRegisterRequest>,
) -> Result<Json<CallbackRegisterResponse>, ApiError> {
    if !id.may_callback() {
        return Err(ApiError::forbidden(
            "this token may not register callbacks (scope callback)",
        ));
    }
    if id.is_scoped()
        && let Err(wait) = state.token_limits.try_acquire(
            &id.name,
            routes::CALLBACK_REGISTER,
            SCOPED_REGISTER_PER_MINUTE,
        )
    {
        return Err(too_many(
            "too many callback registrations: try again later",
            wait,
        ));
    }
    let port = u16::try_from(req.port)
        .ok()
        .filter(|p| u32::from(*p) >= api::MIN_CALLBACK_PORT)
        .ok_or_else(|| ApiError::bad_request("port must be between 1024 and 65535"))?;
    if port == state.sessions.daemon_port() {
        return Err(ApiError::bad_request("port is the daemon's own port"));
    }
    let path = req
        .path
        .unwrap_or_else(|| api::DEFAULT_CALLBACK_PATH.to_string());
    api::validate_callback_path(&path)
        .map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
    let ttl = match req.timeout_seconds {
        None => api::DEFAULT_CALLBACK_TTL_SECS,
        Some(0) => return Err(ApiError::bad_request("timeout_seconds must be at least 1")),
        Some(t) => t.min(api::MAX_CALLBACK_TTL_SECS),
    };
    if req
        .state
        .as_ref()
        .is_some_and(|s| s.expose().is_empty() || has_forbidden_char(s.expose()))
    {
        return Err(ApiError::bad_request(
            "state must be non-empty printable text",
        ));
    }
    let registered = state.sessions.register(Registration {
        port,
        path,
        ttl: Duration::from_secs(ttl),
        state: req.state,
        owner: id.name.clone(),
        owner_cap: id.is_scoped().then_some(SCOPED_MAX_SESSIONS),
    });
    state.audit.record(
        &id.name,
        routes::CALLBACK_REGISTER,
        "register",
        Some(format!("port {port}")),
        None,
        registered.is_ok(),
        registered.as_ref().err().map(ToString::to_string),
    );
    let (session_id, session) = registered?;
    tracing::info!(port, ttl_secs = ttl, "callback session registered");
    Ok(Json(CallbackRegisterResponse {
        success: true,
        session_id: Secret::new(session_id),
        expires_at: humantime::format_rfc3339_seconds(session.expires_at).to_string(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    wait: Option<String>,
}

pub async fn callback_data(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<CallbackDataResponse>, ApiError> {
    let wait = match q.wait.as_deref() {
        None | Some("") => 0,
        Some(w) => w
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("wait must be a whole number of seconds"))?
            .min(api::MAX_WAIT_SECS),
    };
    let unknown = || ApiError::not_found("unknown or expired callback session");
    // Another token's session is indistinguishable from an unknown one.
    let session = state
        .sessions
        .get_owned(&id, &who.name)
        .ok_or_else(unknown)?;
    let data = match session.data() {
        Some(d) => Some(d),
        None if wait > 0 => {
            let got = session.wait(Duration::from_secs(wait)).await;
            if got.is_none() && state.sessions.get(&id).is_none() {
                return Err(unknown());
            }
            got
        }
        None => None,
    };
    Ok(Json(CallbackDataResponse {
        received: data.is_some(),
        callback: data.map(|d| (*d).clone()),
    }))
}

pub async fn callback_delete(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> Json<SuccessResponse> {
    // Another token's session: answered like an unknown id (200, idempotent), left alone.
    if state.sessions.get_owned(&id, &who.name).is_some() {
        state.sessions.remove(&id);
    }
    Json(SuccessResponse::OK)
}

/// `/cb/{id}/{path…}`: the browser reaching the daemon directly (when the redirect points
/// at the daemon rather than at the container's port).
pub async fn cb_capture(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    cb(&state, &id, &format!("/{path}"), req).await
}

pub async fn cb_capture_root(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    cb(&state, &id, "/", req).await
}

async fn cb(state: &AppState, id: &str, path: &str, req: Request) -> Response {
    match state.sessions.get(id) {
        Some(session) => capture_response(&session, path, req).await,
        None => not_found_page(),
    }
}
