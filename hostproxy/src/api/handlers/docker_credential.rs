//! `POST /docker/credential` (SPEC.md 10): the host's Docker registry credentials, behind
//! the scope `docker:REGISTRY`; `get` and `list` only, unless the config allows `store` or
//! `erase`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use clawker_protocol::api::{
    DockerCredentialAction, DockerCredentialRequest, DockerCredentialResponse, docker_registry,
    routes,
};

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::state::AppState;
use crate::audit::Decision;
use crate::auth::Identity;
use crate::backends::{DockerError, DockerReply};

/// Longest username or secret accepted for `store`.
const MAX_FIELD: usize = 16 * 1024;

pub async fn docker_credential(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ApiJson(req): ApiJson<DockerCredentialRequest>,
) -> Result<Json<DockerCredentialResponse>, ApiError> {
    let registry = req.server_url.as_deref().and_then(docker_registry);
    let decided = decide(&state, &id, &req, registry.as_deref()).await;
    state.audit.record(Decision {
        token: &id.name,
        route: routes::DOCKER_CREDENTIAL,
        action: req.action.verb(),
        host: registry.clone(),
        allowed: decided.is_ok(),
        reason: decided.as_ref().err().map(|e| e.message.clone()),
        ..Default::default()
    });
    decided.map(Json)
}

/// Validates, applies scope and policy, then asks the store: a refusal has run no helper.
async fn decide(
    state: &AppState,
    id: &Identity,
    req: &DockerCredentialRequest,
    registry: Option<&str>,
) -> Result<DockerCredentialResponse, ApiError> {
    let empty = DockerCredentialResponse {
        success: true,
        server_url: None,
        username: None,
        secret: None,
        servers: Default::default(),
    };
    if req.action == DockerCredentialAction::List {
        if req.server_url.is_some() || req.username.is_some() || req.secret.is_some() {
            return Err(ApiError::bad_request("list takes no other field"));
        }
        if !id.may_docker_any() {
            return Err(ApiError::forbidden(
                "this token may not list docker credentials (scope docker:REGISTRY)",
            ));
        }
        state
            .approve(
                id,
                crate::approval::Use {
                    scope: "docker:*".into(),
                    also: None,
                    what: "docker credential list".into(),
                    target: "every registry it may see".into(),
                    hold: None,
                },
            )
            .await?;
        let reply = run(state, id, req, None).await?;
        let DockerReply::List(all) = reply else {
            return Err(store_failed(DockerError::BadReply));
        };
        // Only the registries this identity may see.
        let servers = all.into_iter().filter(|(r, _)| id.may_docker(r)).collect();
        return Ok(DockerCredentialResponse { servers, ..empty });
    }
    let registry = registry.ok_or_else(|| {
        ApiError::bad_request(
            "server_url must name a registry (host[:port], optionally with https://)",
        )
    })?;
    let write = req.action != DockerCredentialAction::Get;
    if !write && (req.username.is_some() || req.secret.is_some()) {
        return Err(ApiError::bad_request(format!(
            "{} takes only server_url",
            req.action.verb()
        )));
    }
    if req.action == DockerCredentialAction::Store {
        let (Some(user), Some(secret)) = (&req.username, &req.secret) else {
            return Err(ApiError::bad_request("store needs username and secret"));
        };
        for (what, v) in [
            ("username", user.expose().as_str()),
            ("secret", secret.expose().as_str()),
        ] {
            if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "the {what} is too long or contains control characters"
                )));
            }
        }
    }
    if !id.may_docker(registry) {
        return Err(ApiError::forbidden(format!(
            "this token may not use the credentials of {registry} (scope docker:{registry})"
        )));
    }
    let allowed = match req.action {
        DockerCredentialAction::Store => state.settings.docker_allow_store,
        DockerCredentialAction::Erase => state.settings.docker_allow_erase,
        _ => true,
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "{} is not allowed by the daemon's config (docker.allow_{})",
            req.action.verb(),
            req.action.verb()
        )));
    }
    state
        .approve(
            id,
            crate::approval::Use {
                scope: format!("docker:{registry}"),
                also: None,
                what: format!("docker credential {}", req.action.verb()),
                target: registry.to_string(),
                hold: None,
            },
        )
        .await?;
    match run(state, id, req, Some(registry)).await? {
        DockerReply::Found { username, secret } => Ok(DockerCredentialResponse {
            server_url: Some(registry.to_string()),
            username: Some(username),
            secret: Some(secret),
            ..empty
        }),
        DockerReply::NotFound => Err(ApiError::not_found("no credential found")),
        DockerReply::Done | DockerReply::List(_) => Ok(empty),
    }
}

/// Runs the host's store, within the identity's rate budget and the cap of helpers
/// running at once (SPEC.md 11).
async fn run(
    state: &AppState,
    id: &Identity,
    req: &DockerCredentialRequest,
    registry: Option<&str>,
) -> Result<DockerReply, ApiError> {
    if id.is_scoped()
        && let Err(wait) = state.token_limits.try_acquire(
            &id.name,
            routes::DOCKER_CREDENTIAL,
            crate::auth::SCOPED_DOCKER_PER_MINUTE,
        )
    {
        return Err(ApiError::too_many(
            "too many docker credential requests: try again later",
            wait,
        ));
    }
    let _mine = state.identity_slot(id, routes::DOCKER_CREDENTIAL)?;
    let Ok(_slot) = state.docker_slots.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many docker credential requests at once: retry shortly",
        ));
    };
    state
        .backends
        .docker
        .run(
            req.action,
            registry,
            req.username.as_ref(),
            req.secret.as_ref(),
        )
        .await
        .map_err(store_failed)
}

fn store_failed(e: DockerError) -> ApiError {
    tracing::warn!(error = %e, "docker credential store failed");
    match e {
        DockerError::Timeout(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the host's credential helper did not answer in time",
        ),
        DockerError::NoHelper => ApiError::forbidden(e.to_string()),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the host's docker credential store failed",
        ),
    }
}
