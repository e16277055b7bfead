//! `GET /health` and `GET /status`.

use axum::Json;
use axum::extract::{Extension, State};
use clawker_protocol::api::{HealthResponse, StatusResponse, routes};

use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::audit::Decision;
use crate::auth::Identity;

pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        service: clawker_protocol::SERVICE_NAME.into(),
        version: state.version.into(),
    })
}

/// The daemon's pid, addresses and every identity's session count: the user's alone
/// (their token; `hostproxy status`), never a scoped token's or a container's (SPEC.md 11).
pub async fn status(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
) -> Result<Json<StatusResponse>, ApiError> {
    if id.is_scoped() {
        state.audit.record(Decision {
            token: &id.name,
            route: routes::STATUS,
            action: "status",
            allowed: false,
            reason: Some("only the user".into()),
            ..Default::default()
        });
        return Err(ApiError::forbidden(
            "only the user's own token may read the daemon's status",
        ));
    }
    Ok(Json(StatusResponse {
        success: true,
        service: clawker_protocol::SERVICE_NAME.into(),
        version: state.version.into(),
        pid: std::process::id(),
        port: state.settings.port,
        listen: state.listen.iter().map(ToString::to_string).collect(),
        uptime_secs: state.started.elapsed().as_secs(),
        sessions: state.sessions.len(),
    }))
}
