//! `/callback/register`, `/callback/{id}/data`, `DELETE /callback/{id}` and the browser's
//! `/cb/{id}/…` on the daemon's own port.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::response::Response;
use clawker_protocol::Secret;
use clawker_protocol::api::{
    self, CallbackDataResponse, CallbackRegisterRequest, CallbackRegisterResponse, SuccessResponse,
    routes,
};
use clawker_protocol::credential::has_forbidden_char;
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::state::AppState;
use crate::audit::Decision;
use crate::auth::Identity;
use crate::auth::{SCOPED_MAX_SESSIONS, SCOPED_REGISTER_PER_MINUTE};
use crate::callback::{Registration, capture_response, not_found_page};

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
    // Without a state anyone who reaches the port first takes the login (SPEC.md 4.2).
    if req.state.is_none() && !state.settings.callback_allow_stateless {
        return Err(ApiError::bad_request(
            "state is required: the daemon refuses callbacks without state unless callback.allow_stateless is set in its config",
        ));
    }
    // The budget is spent only by a request that could be carried out.
    if id.is_scoped()
        && let Err(wait) = state.token_limits.try_acquire(
            &id.name,
            routes::CALLBACK_REGISTER,
            SCOPED_REGISTER_PER_MINUTE,
        )
    {
        state.audit.record(Decision {
            token: &id.name,
            route: routes::CALLBACK_REGISTER,
            action: "register",
            host: Some(format!("port {port}")),
            allowed: false,
            reason: Some("rate limited".into()),
            ..Default::default()
        });
        return Err(ApiError::too_many(
            "too many callback registrations: try again later",
            wait,
        ));
    }
    state
        .approve(
            &id,
            crate::approval::Use {
                scope: "callback".into(),
                also: None,
                what: "take a login callback".into(),
                target: format!("port {port}"),
                hold: None,
            },
        )
        .await?;
    let registered = state.sessions.register(Registration {
        port,
        path,
        ttl: Duration::from_secs(ttl),
        state: req.state,
        owner: id.owner_key(),
        owner_cap: id.is_scoped().then_some(SCOPED_MAX_SESSIONS),
    });
    state.audit.record(Decision {
        token: &id.name,
        route: routes::CALLBACK_REGISTER,
        action: "register",
        host: Some(format!("port {port}")),
        allowed: registered.is_ok(),
        reason: registered.as_ref().err().map(ToString::to_string),
        ..Default::default()
    });
    let (session_id, session) = registered?;
    // Answered once it is on disk (a login in flight survives the daemon's death), without a
    // runtime worker waiting on the disk.
    state.sessions.saved().await;
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
        .get_owned(&id, &who.owner_key())
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
    if state.sessions.get_owned(&id, &who.owner_key()).is_some() {
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
        Some(session) => capture_response(session.as_ref(), path, req).await,
        None => not_found_page(),
    }
}
