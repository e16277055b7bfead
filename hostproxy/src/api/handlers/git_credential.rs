//! `POST /git/credential`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use clawker_protocol::Secret;
use clawker_protocol::api::{
    GitCredentialAction, GitCredentialRequest, GitCredentialResponse, routes,
};
use clawker_protocol::credential::{
    CAPABILITIES, CredentialFields, has_forbidden_char, is_valid_credential_host,
};

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::state::AppState;
use crate::audit::Decision;
use crate::auth::Identity;
use crate::auth::SCOPED_GIT_PER_MINUTE;
use crate::backends::GitError;

/// Validates a credential request against the policy, returning what git will be given:
/// every attribute of SPEC.md 4.3 that the action uses, each checked for CR, LF and NUL.
pub fn validate_credential(
    state: &AppState,
    req: &GitCredentialRequest,
) -> Result<CredentialFields, ApiError> {
    let mut fields = req.fields();
    if let Some(name) = fields.forbidden_field() {
        return Err(ApiError::bad_request(format!(
            "{name} contains a carriage return, newline or nul"
        )));
    }
    if req
        .capability
        .iter()
        .any(|c| !CAPABILITIES.contains(&c.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown capability: git's credential protocol has {}",
            CAPABILITIES.join(" and ")
        )));
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
    fields.protocol = Some(protocol);
    fields.host = Some(host);
    // Old clients (upstream's shell helper) send every attribute, the missing ones as "":
    // an empty attribute is an absent one (issue #27), or git would match on it — a `get`
    // with `path=` finds nothing, an `erase` with `password=` erases nothing. An empty
    // username and password are kept on `store` only, where git stores them as given
    // (SPEC.md 4.3).
    fields.drop_empty(req.action == GitCredentialAction::Store);
    if req.action == GitCredentialAction::Get {
        // What a `get` may carry: who and where, the server's challenges, the capabilities
        // and a helper's state between rounds. Secrets are not needed to look one up.
        fields.password = None;
        fields.password_expiry_utc = None;
        fields.oauth_refresh_token = None;
        fields.authtype = None;
        fields.credential = None;
        fields.ephemeral = None;
        fields.r#continue = None;
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
        state.audit.record(Decision {
            token: &id.name,
            route: routes::GIT_CREDENTIAL,
            action: req.action.as_str(),
            host: audit_host.clone(),
            allowed: false,
            reason,
            ..Default::default()
        });
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
        return Err(deny(ApiError::too_many(
            "too many credential requests: try again later",
            wait,
        )));
    }
    // The user's answer, when the config asks for this use, before any slot is taken and
    // before git runs (SPEC.md 14). A `get` may be for a push: `git-push:HOST` asks too.
    let write = req.action != GitCredentialAction::Get;
    state
        .approve(
            &id,
            crate::approval::Use {
                scope: format!("{}:{host_ok}", if write { "git-store" } else { "git" }),
                also: (!write).then(|| format!("git-push:{host_ok}")),
                what: format!("git credential {}", req.action.as_str()),
                target: host_ok.to_string(),
                hold: None,
            },
        )
        .await?;
    let _mine = state
        .identity_slot(&id, routes::GIT_CREDENTIAL)
        .map_err(deny)?;
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
    state.audit.record(Decision {
        token: &id.name,
        route: routes::GIT_CREDENTIAL,
        action: req.action.as_str(),
        host: Some(host.clone()),
        allowed: true,
        reason: Some(outcome.into()),
        ..Default::default()
    });
    tracing::info!(
        action = req.action.as_str(),
        host,
        ok = result.is_ok(),
        "git credential"
    );
    match result {
        Ok(Some(mut found)) => {
            found.protocol = found.protocol.or(Some(req.protocol));
            found.host = found.host.or(Some(req.host));
            // A password always comes with a username (SPEC.md 4.2); a bearer `credential`
            // needs none.
            if found.password.is_some() && found.username.is_none() {
                found.username = Some(Secret::new(String::new()));
            }
            Ok(Json(GitCredentialResponse::found(found)))
        }
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
